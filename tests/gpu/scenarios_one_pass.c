/* The GPU suite's one-pass group: one pass asked for, outputs from
 * ulyssesMemAlloc. */
#include "suite.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*------------------------------------------------------------------------
 * One pass asked for (config.onePass = 1, outputs from ulyssesMemAlloc).
 * The path is the library's to choose, and it says which and why: one pass
 * where NCCL granted the device comm and the outputs' symmetric windows (the
 * ranks in one load/store team: NVLink, or ranks sharing a GPU over NCCL's
 * multi-rank P2P), staged elsewhere (one rank; ranks over sockets, where
 * NCCL has no symmetric memory). So the scenario checks what holds on
 * either: a reason always, the staged path for one rank, the same path on
 * every rank, and the exchange into ulyssesMemAlloc memory exact with
 * nothing written past the output. ULYSSES_TEST_EXPECT_PATH=onepass or
 * staged, where the run knows what NCCL grants, makes the path of more than
 * one rank a check too. ulyssesMemAlloc itself may be refused (NCCL's call):
 * then with a clear NCCL error.
 *----------------------------------------------------------------------*/
/* The smallest and the largest path of the ranks, all-reduced on nccl. */
static void pathRange(ncclComm_t nccl, ulyssesPath_t path, int* smallest, int* largest) {
  int* device = NULL;
  int host[2] = {(int)path, (int)path};
  CUDA_CHECK(cudaMalloc((void**)&device, 2 * sizeof(int)));
  CUDA_CHECK(cudaMemcpyAsync(device, host, 2 * sizeof(int), cudaMemcpyHostToDevice, gStream));
  NCCL_CHECK(ncclAllReduce(device, device, 1, ncclInt32, ncclMin, nccl, gStream));
  NCCL_CHECK(ncclAllReduce(device + 1, device + 1, 1, ncclInt32, ncclMax, nccl, gStream));
  CUDA_CHECK(cudaMemcpyAsync(host, device, 2 * sizeof(int), cudaMemcpyDeviceToHost, gStream));
  CUDA_CHECK(cudaStreamSynchronize(gStream));
  CUDA_CHECK(cudaFree(device));
  *smallest = host[0];
  *largest = host[1];
}

static const char* pathName(ulyssesPath_t path) {
  return path == ulyssesPathOnePass ? "one pass" : path == ulyssesPathStaged ? "staged" : "unknown";
}

static void runOnePassRequestedScenario(const Suite* suite, int argument) {
  (void)argument;
  ncclComm_t nccl = suite->nccl;
  /* Where the run knows what NCCL grants (the device run's P2P steps), it
   * says so, and the path must be that one. */
  const char* expected = getenv("ULYSSES_TEST_EXPECT_PATH");
  setScenario("one pass requested: comm");
  ulyssesConfig_t config = ULYSSES_CONFIG_INITIALIZER;
  config.onePass = 1;
  ulyssesComm_t comm = NULL;
  ULY_CHECK(ulyssesCommCreate(&comm, nccl, &config));
  int64_t lengths[MAX_RANKS];
  for (int r = 0; r < gRanks; r++) lengths[r] = r + 2;
  /* 8 heads: every rank receives some at P <= 8, so no empty output sends
   * the call to the staged path. */
  const ulyssesLayout_t layout = LAYOUT(2, 8, 4, 2, 1, BSHD);
  Case c;
  caseInit(&c, 1, &layout, lengths, lengths, 0);
  const refShape shape = c.shapes[0];
  ulyssesPlan_t plan = makePlan(&c, NULL);
  /* The same size on every rank (collective): every head of every row. */
  size_t outBytes = refHeadSideBytes(&shape, gRank);
  size_t allocBytes = (size_t)(shape.batch * refTotalLength(&shape) * shape.heads *
                                shape.headDim * shape.elementSize);
  setScenario("one pass requested: ulyssesMemAlloc");
  void* output = NULL;
  ulyssesResult_t allocated = ulyssesMemAlloc(comm, allocBytes, &output);
  gChecks++;
  if (allocated != ulyssesSuccess) {
    if (allocated != ulyssesErrorNcclError || *ulyssesGetLastError() == '\0')
      reportFailure("ulyssesMemAlloc: %s (\"%s\")", ulyssesGetErrorString(allocated),
                    ulyssesGetLastError());
    if (expected != NULL && strcmp(expected, "onepass") == 0 && gRanks > 1)
      reportFailure("ulyssesMemAlloc refused where ULYSSES_TEST_EXPECT_PATH=onepass: %s",
                    ulyssesGetLastError());
    if (gRank == 0) printf("rank 0: ulyssesMemAlloc refused here: %s\n", ulyssesGetLastError());
  } else {
    setScenario("one pass requested: the path");
    ulyssesPath_t path = ulyssesPathOnePass;
    const char* reason = NULL;
    ULY_CHECK(ulyssesGetExchangePath(plan, ulyssesOpSeqToHead, 1, &output, comm, &path, &reason));
    gChecks += 3;
    if (path != ulyssesPathStaged && path != ulyssesPathOnePass)
      reportFailure("ulyssesGetExchangePath gives path %d, not a ulyssesPath_t", (int)path);
    if (reason == NULL || *reason == '\0')
      reportFailure("the %s path comes without a reason", pathName(path));
    if (gRanks == 1 && path != ulyssesPathStaged)
      reportFailure("one rank has no peer to write to, yet the path is %s (\"%s\")",
                    pathName(path), reason != NULL ? reason : "(null)");
    int smallest = 0, largest = 0;
    pathRange(nccl, path, &smallest, &largest);
    if (smallest != largest)
      reportFailure("the ranks disagree on the path (some staged, some one pass); this rank's: "
                    "%s (\"%s\")", pathName(path), reason != NULL ? reason : "(null)");
    if (expected != NULL && *expected != '\0') {
      gChecks++;
      ulyssesPath_t expectedPath = strcmp(expected, "onepass") == 0  ? ulyssesPathOnePass
                                   : strcmp(expected, "staged") == 0 ? ulyssesPathStaged
                                                                     : (ulyssesPath_t)-1;
      if (expectedPath == (ulyssesPath_t)-1)
        reportFailure("ULYSSES_TEST_EXPECT_PATH=%s: it must be onepass or staged", expected);
      else if (gRanks > 1 && path != expectedPath)
        reportFailure("the path is %s (\"%s\"), not the %s that ULYSSES_TEST_EXPECT_PATH names",
                      pathName(path), reason != NULL ? reason : "(null)", expected);
    }
    if (gRank == 0)
      printf("rank 0: one pass requested, %d rank(s): path %s: %s\n", gRanks, pathName(path),
             reason != NULL ? reason : "(null)");
    setScenario("one pass requested: the exchange into ulyssesMemAlloc memory");
    unsigned char** inputs = allocSide(&c, 0, SIDE_SEQ);
    fillSide(&c, 0, SIDE_SEQ, inputs, mixSeed(4000, 0));
    unsigned char** expected = allocSide(&c, 0, SIDE_HEAD);
    refExchange(&c, 0, ulyssesOpSeqToHead, inputs, expected);
    void* input = NULL;
    CUDA_CHECK(cudaMalloc(&input, refSeqBytes(&shape, gRank)));
    CUDA_CHECK(cudaMemcpyAsync(input, inputs[gRank], refSeqBytes(&shape, gRank),
                               cudaMemcpyHostToDevice, gStream));
    CUDA_CHECK(cudaMemsetAsync(output, 0x5a, allocBytes, gStream));
    DevBuf ws;
    workspaceCreate(&ws, plan, ulyssesOpSeqToHead);
    ULY_CHECK(ulyssesSeqToHead(plan, input, output, ws.user, ws.bytes, comm, gStream));
    unsigned char* got = xmalloc(allocBytes);
    CUDA_CHECK(cudaMemcpyAsync(got, output, allocBytes, cudaMemcpyDeviceToHost, gStream));
    CUDA_CHECK(cudaStreamSynchronize(gStream));
    gChecks++;
    if (memcmp(got, expected[gRank], outBytes) != 0)
      reportFailure("the output in ulyssesMemAlloc memory (path %s) differs from the reference",
                    pathName(path));
    for (size_t i = outBytes; i < allocBytes; i++)
      if (got[i] != 0x5a) {
        reportFailure("byte %zu past the output was written", i);
        break;
      }
    checkNoAsyncError(comm);
    free(got);
    bufFree(&ws);
    CUDA_CHECK(cudaFree(input));
    freePerRank(inputs);
    freePerRank(expected);
    ULY_CHECK(ulyssesMemFree(comm, output));
  }
  ULY_CHECK(ulyssesPlanDestroy(plan));
  ULY_CHECK(ulyssesCommDestroy(comm));
}


void addOnePassScenarios(ScenarioList* list) {
  scenarioAdd(list, "one-pass", runOnePassRequestedScenario, 0, 0, "one-pass-requested");
}
