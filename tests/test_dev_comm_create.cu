/* What kernels/one_pass.cu asks of ncclDevCommCreate, against a stand-in for
 * it: from NCCL 2.29 the requirements must carry the size, magic and version
 * NCCL_DEV_COMM_REQUIREMENTS_INITIALIZER writes (NCCL refuses them
 * otherwise), one LSA barrier per block and a control buffer of one slot per
 * rank. Built against the NCCL headers the library is; no GPU. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
/* cmocka.h needs the headers above; it has no C++ linkage of its own. */
extern "C" {
#include <cmocka.h>
}

#include <nccl.h>
#include <nccl_device.h>

#include "one_pass_index.h"
#include "one_pass_launch.h"

static ncclDevCommRequirements seen;
static ncclDevResourceRequirements seenControl;
static int createCalls, destroyCalls;

extern "C" ncclResult_t ncclDevCommCreate(ncclComm_t comm, ncclDevCommRequirements const* reqs,
                                          ncclDevComm* outDevComm) {
  (void)comm;
  createCalls++;
  seen = *reqs;
  if (reqs->resourceRequirementsList != nullptr) {
    seenControl = *reqs->resourceRequirementsList;
    *reqs->resourceRequirementsList->outBufferHandle = 7;
  }
  memset(outDevComm, 0, sizeof *outDevComm);
  outDevComm->lsaSize = 3;
  return ncclSuccess;
}

extern "C" ncclResult_t ncclDevCommDestroy(ncclComm_t comm, ncclDevComm const* devComm) {
  (void)comm;
  (void)devComm;
  destroyCalls++;
  return ncclSuccess;
}

static void testRequirementsAsNcclWantsThem(void** state) {
  (void)state;
  const int nRanks = 4;
  void* devComm = nullptr;
  int lsaRanks = 0;
  assert_int_equal(ulyssesOnePassDevCommCreate(nullptr, nRanks, &devComm, &lsaRanks), ncclSuccess);
  assert_int_equal(createCalls, 1);
  assert_non_null(devComm);
  assert_int_equal(lsaRanks, 3);
#ifdef NCCL_DEV_COMM_REQUIREMENTS_INITIALIZER
  assert_int_equal(seen.size, sizeof(ncclDevCommRequirements));
  assert_int_equal(seen.magic, NCCL_API_MAGIC);
  assert_int_equal(seen.version, NCCL_VERSION_CODE);
#endif
  assert_int_equal(seen.lsaBarrierCount, ULYSSES_ONE_PASS_BLOCKS);
  assert_int_equal(seen.barrierCount, 0);
  assert_non_null(seen.resourceRequirementsList);
  assert_null(seenControl.next);
  assert_int_equal(seenControl.bufferSize, sizeof(ulyssesOnePassSlot) * nRanks);
  assert_int_equal(seenControl.bufferAlign, 16);
  assert_non_null(seenControl.outBufferHandle);
  assert_int_equal(ulyssesOnePassDevCommDestroy(nullptr, devComm), ncclSuccess);
  assert_int_equal(destroyCalls, 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(testRequirementsAsNcclWantsThem),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
