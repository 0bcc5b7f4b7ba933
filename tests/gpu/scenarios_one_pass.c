/* The GPU suite's one-pass group: one pass asked for, outputs from
 * ulyssesMemAlloc. */
#include "suite.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*------------------------------------------------------------------------
 * One pass asked for (config.onePass = 1, outputs from ulyssesMemAlloc) on
 * this launcher's setup: one rank, or ranks sharing one GPU over sockets,
 * where NCCL has no symmetric memory. The library must take the staged path
 * and say why, and the exchange must still be exact. ulyssesMemAlloc itself
 * may be refused there (NCCL's call): then with a clear NCCL error.
 *----------------------------------------------------------------------*/
static void runOnePassRequestedScenario(const Suite* suite, int argument) {
  (void)argument;
  ncclComm_t nccl = suite->nccl;
  setScenario("one pass requested: comm");
  ulyssesConfig_t config = ULYSSES_CONFIG_INITIALIZER;
  config.onePass = 1;
  ulyssesComm_t comm = NULL;
  ULY_CHECK(ulyssesCommCreate(&comm, nccl, &config));
  int64_t lengths[MAX_RANKS];
  for (int r = 0; r < gRanks; r++) lengths[r] = r + 2;
  const ulyssesLayout_t layout = LAYOUT(2, 6, 4, 2, 1, BSHD);
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
    if (gRank == 0) printf("rank 0: ulyssesMemAlloc refused here: %s\n", ulyssesGetLastError());
  } else {
    setScenario("one pass requested: the path");
    ulyssesPath_t path = ulyssesPathOnePass;
    const char* reason = NULL;
    ULY_CHECK(ulyssesGetExchangePath(plan, ulyssesOpSeqToHead, 1, &output, comm, &path, &reason));
    gChecks++;
    if (path != ulyssesPathStaged || reason == NULL || *reason == '\0')
      reportFailure("path %d (\"%s\"): this setup has no load/store peers", (int)path,
                    reason != NULL ? reason : "(null)");
    if (gRank == 0) printf("rank 0: one pass requested, path staged: %s\n", reason);
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
      reportFailure("the output in ulyssesMemAlloc memory differs from the reference");
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
