/* The one-pass entry points (ulyssesMemAlloc, ulyssesMemFree,
 * ulyssesGetExchangePath) through the public API, against
 * tests/fake_runtime.c in place of CUDA and NCCL: their argument checks,
 * what they ask of NCCL, what is left after a failure, and the path an
 * exchange takes with its reason in the return value and under
 * ULYSSES_DEBUG=INFO. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
/* cmocka.h needs the headers above. */
#include <cmocka.h>

#include "fake_runtime.h"
#include "ulysses.h"

static void expectCode(ulyssesResult_t got, ulyssesResult_t want, const char* words) {
  if (got != want)
    fail_msg("expected %s, got %s (%s)", ulyssesGetErrorString(want), ulyssesGetErrorString(got),
             ulyssesGetLastError());
  if (words != NULL && strstr(ulyssesGetLastError(), words) == NULL)
    fail_msg("the message \"%s\" does not say \"%s\"", ulyssesGetLastError(), words);
}

/* A comm of nRanks on the fake, ULYSSES_ONE_PASS as given (NULL: unset). */
static ulyssesComm_t createComm(int nRanks, int rank, const char* onePass) {
  fakeReset(nRanks, rank);
  if (onePass == NULL)
    unsetenv("ULYSSES_ONE_PASS");
  else
    setenv("ULYSSES_ONE_PASS", onePass, 1);
  ulyssesComm_t comm = NULL;
  assert_int_equal(ulyssesCommCreate(&comm, fakeComm(), NULL), ulyssesSuccess);
  unsetenv("ULYSSES_ONE_PASS");
  return comm;
}

/* A comm that can take one pass: one pass on, the kernel built, and NCCL's
 * device comm created (the fake's answer). */
static ulyssesComm_t createReadyComm(int nRanks, int rank) {
  fakeReset(nRanks, rank);
  fake.onePassKernelBuilt = 1;
  ulyssesConfig_t config = ULYSSES_CONFIG_INITIALIZER;
  config.onePass = 1;
  ulyssesComm_t comm = NULL;
  assert_int_equal(ulyssesCommCreate(&comm, fakeComm(), &config), ulyssesSuccess);
  assert_int_equal(fake.liveDevComms, 1);
  return comm;
}

/* Where the comm can take one pass, the memory is registered as a symmetric
 * window; elsewhere it is plain ncclMemAlloc memory, since NCCL refuses
 * symmetric windows on comms without symmetric support (seen on the one-GPU
 * socket setup), and the exchanges take the staged path there anyway. */
static void testMemAllocRegistersASymmetricWindow(void** state) {
  (void)state;
  ulyssesComm_t plain = createComm(4, 1, "1");
  void* memory = NULL;
  fake.failNextWindowRegister = ncclInvalidUsage; /* as NCCL would: never asked */
  expectCode(ulyssesMemAlloc(plain, 1000, &memory), ulyssesSuccess, NULL);
  assert_int_equal(fake.liveAllocations, 1);
  assert_int_equal(fake.liveWindows, 0);
  expectCode(ulyssesMemFree(plain, memory), ulyssesSuccess, NULL);
  assert_int_equal(fake.liveAllocations, 0);
  assert_int_equal(ulyssesCommDestroy(plain), ulyssesSuccess);

  ulyssesComm_t comm = createReadyComm(4, 1);
  void* ptr = NULL;
  expectCode(ulyssesMemAlloc(comm, 1000, &ptr), ulyssesSuccess, NULL);
  assert_non_null(ptr);
  assert_int_equal(fake.liveAllocations, 1);
  assert_int_equal(fake.liveWindows, 1);
  assert_int_equal(fake.lastWindowFlags, NCCL_WIN_COLL_SYMMETRIC);
  memset(ptr, 0xab, 1000);
  expectCode(ulyssesMemFree(comm, ptr), ulyssesSuccess, NULL);
  assert_int_equal(fake.liveAllocations, 0);
  assert_int_equal(fake.liveWindows, 0);
  /* Freed once, it is no longer this comm's. */
  expectCode(ulyssesMemFree(comm, ptr), ulyssesErrorInvalidArgument, "not an allocation");
  expectCode(ulyssesMemFree(comm, NULL), ulyssesSuccess, NULL);
  assert_int_equal(ulyssesCommDestroy(comm), ulyssesSuccess);
}

static void testMemAllocArguments(void** state) {
  (void)state;
  ulyssesComm_t comm = createComm(2, 0, NULL);
  void* ptr = (void*)&ptr;
  expectCode(ulyssesMemAlloc(comm, 64, NULL), ulyssesErrorNullPointer, "ptr is NULL");
  expectCode(ulyssesMemAlloc(comm, 0, &ptr), ulyssesErrorInvalidArgument, "size is 0");
  expectCode(ulyssesMemAlloc(NULL, 64, &ptr), ulyssesErrorNullPointer, "comm is NULL");
  assert_ptr_equal(ptr, (void*)&ptr);
  char ordinary[64];
  expectCode(ulyssesMemFree(comm, ordinary), ulyssesErrorInvalidArgument, "not an allocation");
  /* Another comm's allocation is not this one's. */
  void* mine = NULL;
  expectCode(ulyssesMemAlloc(comm, 64, &mine), ulyssesSuccess, NULL);
  ulyssesComm_t other = NULL;
  assert_int_equal(ulyssesCommCreate(&other, fakeComm(), NULL), ulyssesSuccess);
  expectCode(ulyssesMemFree(other, mine), ulyssesErrorInvalidArgument, "not an allocation");
  assert_int_equal(ulyssesCommDestroy(other), ulyssesSuccess);
  expectCode(ulyssesMemFree(comm, mine), ulyssesSuccess, NULL);
  assert_int_equal(fake.liveAllocations, 0);
  assert_int_equal(ulyssesCommDestroy(comm), ulyssesSuccess);
}

/* A failed NCCL call leaves nothing allocated or registered, and *ptr alone. */
static void testMemAllocFailuresLeaveNothing(void** state) {
  (void)state;
  ulyssesComm_t comm = createReadyComm(2, 0);
  void* ptr = NULL;
  fake.failNextMemAlloc = ncclSystemError;
  expectCode(ulyssesMemAlloc(comm, 64, &ptr), ulyssesErrorNcclError, "ncclMemAlloc");
  assert_null(ptr);
  fake.failNextWindowRegister = ncclUnhandledCudaError;
  expectCode(ulyssesMemAlloc(comm, 64, &ptr), ulyssesErrorNcclError, "symmetric window");
  assert_null(ptr);
  assert_int_equal(fake.liveAllocations, 0);
  assert_int_equal(fake.liveWindows, 0);
  assert_int_equal(ulyssesCommDestroy(comm), ulyssesSuccess);
}

/* What the caller did not free, ulyssesCommDestroy frees. */
static void testCommDestroyFreesWhatIsLeft(void** state) {
  (void)state;
  ulyssesComm_t comm = createReadyComm(2, 1);
  void* ptrs[3];
  for (int i = 0; i < 3; i++)
    expectCode(ulyssesMemAlloc(comm, 128, &ptrs[i]), ulyssesSuccess, NULL);
  expectCode(ulyssesMemFree(comm, ptrs[1]), ulyssesSuccess, NULL);
  assert_int_equal(fake.liveAllocations, 2);
  assert_int_equal(ulyssesCommDestroy(comm), ulyssesSuccess);
  assert_int_equal(fake.liveAllocations, 0);
  assert_int_equal(fake.liveWindows, 0);
  assert_int_equal(fake.liveDevComms, 0);
}

static ulyssesPlan_t planOf(int nRanks, int rank) {
  static const int64_t lengths[4] = {3, 0, 2, 5};
  ulyssesLayout_t layout = {.size = sizeof(ulyssesLayout_t),
                            .batch = 2,
                            .heads = 8,
                            .headDim = 4,
                            .elementSize = 2,
                            .packed = 1,
                            .order = ulyssesOrderBSHD};
  ulyssesPlan_t plan = NULL;
  assert_int_equal(ulyssesPlanCreateExact(&plan, nRanks, rank, lengths, 1, &layout),
                   ulyssesSuccess);
  return plan;
}

/* Runs ulyssesGetExchangePath of seq->head with standard error captured
 * into log. */
static ulyssesResult_t pathWithLog(ulyssesPlan_t plan, void* const* recvbuffs, ulyssesComm_t comm,
                                   ulyssesPath_t* path, const char** reason, char* log,
                                   size_t logBytes) {
  fflush(stderr);
  int saved = dup(2);
  FILE* capture = tmpfile();
  assert_non_null(capture);
  dup2(fileno(capture), 2);
  ulyssesResult_t result =
      ulyssesGetExchangePath(plan, ulyssesOpSeqToHead, 1, recvbuffs, comm, path, reason);
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  rewind(capture);
  size_t got = fread(log, 1, logBytes - 1, capture);
  log[got] = '\0';
  fclose(capture);
  return result;
}

/* Off by default; turned on in a build without the NCCL kernel (the fake's
 * default), staged: each says so, in the reason and the log. */
static void testExchangePathAndItsReason(void** state) {
  (void)state;
  static const char* const settings[] = {NULL, "0", "1"};
  static const char* const expected[] = {"one pass is off", "one pass is off",
                                         "no one-pass kernel"};
  for (int i = 0; i < 3; i++) {
    ulyssesComm_t comm = createComm(4, 2, settings[i]);
    ulyssesPlan_t plan = planOf(4, 2);
    void* output = NULL;
    expectCode(ulyssesMemAlloc(comm, 1 << 16, &output), ulyssesSuccess, NULL);
    ulyssesPath_t path = ulyssesPathOnePass;
    const char* reason = NULL;
    char log[1024];
    expectCode(pathWithLog(plan, &output, comm, &path, &reason, log, sizeof log), ulyssesSuccess,
               NULL);
    assert_int_equal(path, ulyssesPathStaged);
    assert_non_null(reason);
    assert_non_null(strstr(reason, expected[i]));
    if (strstr(log, "ulysses INFO [rank 2] seq->head: staged path: ") == NULL ||
        strstr(log, expected[i]) == NULL)
      fail_msg("the log says \"%s\"", log);
    /* reason may be NULL. */
    expectCode(ulyssesGetExchangePath(plan, ulyssesOpSeqToHead, 1, &output, comm, &path, NULL),
               ulyssesSuccess, NULL);
    ulyssesPlanDestroy(plan);
    assert_int_equal(ulyssesCommDestroy(comm), ulyssesSuccess);
  }
}

/* Built against 2.28, the loaded NCCL must be that release; from 2.29, at
 * least the compiled one (one_pass.h, ULYSSES_ONE_PASS_VERSIONED_NCCL). */
#if NCCL_VERSION_CODE < 22900
#define NEWER_LOADED_PATH ulyssesPathStaged
#define NEWER_LOADED_REASON "not the 2.28 release"
#define NEWER_LOADED_CREATED 0
#define OLDER_LOADED_REASON "not the 2.28 release"
#else
#define NEWER_LOADED_PATH ulyssesPathOnePass
#define NEWER_LOADED_REASON "one pass:"
#define NEWER_LOADED_CREATED 1
#define OLDER_LOADED_REASON "older than the one"
#endif

/* With the kernel built, what the comm learnt at creation decides: the
 * loaded NCCL's version, ncclDevCommCreate's failure, an LSA team smaller
 * than the comm, or one pass; config.onePass = 0 wins over the environment
 * and asks NCCL nothing, nor does a loaded NCCL that cannot run the kernel. */
static void testDeviceCommDecides(void** state) {
  (void)state;
  struct {
    ncclResult_t devComm;
    int lsaRanks, configOnePass, loadedNccl;
    ulyssesPath_t path;
    const char* reason;
    int created;
  } cases[] = {
      {ncclInvalidUsage, 0, ULYSSES_CONFIG_UNDEF_INT, 0, ulyssesPathStaged,
       "ncclDevCommCreate failed", 1},
      {ncclSuccess, 2, ULYSSES_CONFIG_UNDEF_INT, 0, ulyssesPathStaged, "LSA team is smaller", 1},
      {ncclSuccess, 0, ULYSSES_CONFIG_UNDEF_INT, 0, ulyssesPathOnePass, "one pass:", 1},
      {ncclSuccess, 0, 0, 0, ulyssesPathStaged, "one pass is off", 0},
      {ncclSuccess, 0, ULYSSES_CONFIG_UNDEF_INT, NCCL_VERSION_CODE + 1, NEWER_LOADED_PATH,
       NEWER_LOADED_REASON, NEWER_LOADED_CREATED},
      {ncclSuccess, 0, ULYSSES_CONFIG_UNDEF_INT, NCCL_VERSION_CODE - 1, ulyssesPathStaged,
       OLDER_LOADED_REASON, 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    fakeReset(4, 2);
    fake.onePassKernelBuilt = 1;
    fake.devCommResult = cases[i].devComm;
    fake.lsaRanks = cases[i].lsaRanks;
    fake.loadedNcclVersion = cases[i].loadedNccl;
    setenv("ULYSSES_ONE_PASS", "1", 1);
    ulyssesConfig_t config = ULYSSES_CONFIG_INITIALIZER;
    config.onePass = cases[i].configOnePass;
    ulyssesComm_t comm = NULL;
    assert_int_equal(ulyssesCommCreate(&comm, fakeComm(), &config), ulyssesSuccess);
    unsetenv("ULYSSES_ONE_PASS");
    assert_int_equal(fakeCount(FAKE_DEV_COMM_CREATE), cases[i].created);
    ulyssesPlan_t plan = planOf(4, 2);
    void* output = NULL;
    expectCode(ulyssesMemAlloc(comm, 1 << 16, &output), ulyssesSuccess, NULL);
    ulyssesPath_t path;
    const char* reason = NULL;
    expectCode(ulyssesGetExchangePath(plan, ulyssesOpSeqToHead, 1, &output, comm, &path, &reason),
               ulyssesSuccess, NULL);
    if (path != cases[i].path || strstr(reason, cases[i].reason) == NULL)
      fail_msg("case %zu: path %d: %s", i, path, reason);
    ulyssesPlanDestroy(plan);
    assert_int_equal(ulyssesCommDestroy(comm), ulyssesSuccess);
    assert_int_equal(fake.liveDevComms, 0);
    assert_int_equal(fake.liveWindows, 0);
  }
}

/* The comm's creation logs the NCCL loaded and the one the library was
 * built against, since only the pair tells whether one pass can run. */
static void testCommCreateNamesBothNccls(void** state) {
  (void)state;
  fakeReset(2, 0);
  fake.loadedNcclVersion = 23300;
  fflush(stderr);
  int saved = dup(2);
  FILE* capture = tmpfile();
  assert_non_null(capture);
  dup2(fileno(capture), 2);
  ulyssesComm_t comm = NULL;
  ulyssesResult_t created = ulyssesCommCreate(&comm, fakeComm(), NULL);
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  rewind(capture);
  char log[2048];
  size_t got = fread(log, 1, sizeof log - 1, capture);
  log[got] = '\0';
  fclose(capture);
  assert_int_equal(created, ulyssesSuccess);
  char expected[96];
  snprintf(expected, sizeof expected, "NCCL 23300 loaded (built against %d)", NCCL_VERSION_CODE);
  if (strstr(log, expected) == NULL) fail_msg("the log \"%s\" does not say \"%s\"", log, expected);
  assert_int_equal(ulyssesCommDestroy(comm), ulyssesSuccess);
}

static void testExchangePathArguments(void** state) {
  (void)state;
  ulyssesComm_t comm = createComm(4, 2, "1");
  ulyssesPlan_t plan = planOf(4, 2);
  ulyssesPlan_t otherRank = planOf(4, 1);
  char buffer[4096];
  void* outputs[1] = {buffer};
  ulyssesPath_t path;
  const char* reason;
  expectCode(ulyssesGetExchangePath(plan, ulyssesOpSeqToHead, 1, outputs, comm, NULL, &reason),
             ulyssesErrorNullPointer, "path is NULL");
  expectCode(ulyssesGetExchangePath(NULL, ulyssesOpSeqToHead, 1, outputs, comm, &path, &reason),
             ulyssesErrorNullPointer, "plan is NULL");
  expectCode(ulyssesGetExchangePath(plan, (ulyssesOp_t)3, 1, outputs, comm, &path, &reason),
             ulyssesErrorInvalidArgument, "op is 3");
  expectCode(ulyssesGetExchangePath(plan, ulyssesOpSeqToHead, 2, outputs, comm, &path, &reason),
             ulyssesErrorLayoutMismatch, "nTensors is 2");
  expectCode(ulyssesGetExchangePath(plan, ulyssesOpSeqToHead, 1, NULL, comm, &path, &reason),
             ulyssesErrorNullPointer, "recvbuffs is NULL");
  void* nullOutputs[1] = {NULL};
  expectCode(ulyssesGetExchangePath(plan, ulyssesOpSeqToHead, 1, nullOutputs, comm, &path, &reason),
             ulyssesErrorNullPointer, "recvbuffs[0] is NULL");
  expectCode(
      ulyssesGetExchangePath(otherRank, ulyssesOpSeqToHead, 1, outputs, comm, &path, &reason),
      ulyssesErrorCommMismatch, NULL);
  expectCode(ulyssesGetExchangePath(plan, ulyssesOpSeqToHead, 1, outputs, NULL, &path, &reason),
             ulyssesErrorNullPointer, "comm is NULL");
  ulyssesPlanDestroy(otherRank);
  ulyssesPlanDestroy(plan);
  assert_int_equal(ulyssesCommDestroy(comm), ulyssesSuccess);
}

int main(void) {
  /* Read once, at the first log call. */
  setenv("ULYSSES_DEBUG", "INFO", 1);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(testMemAllocRegistersASymmetricWindow),
      cmocka_unit_test(testMemAllocArguments),
      cmocka_unit_test(testMemAllocFailuresLeaveNothing),
      cmocka_unit_test(testCommDestroyFreesWhatIsLeft),
      cmocka_unit_test(testExchangePathAndItsReason),
      cmocka_unit_test(testDeviceCommDecides),
      cmocka_unit_test(testExchangePathArguments),
      cmocka_unit_test(testCommCreateNamesBothNccls),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
