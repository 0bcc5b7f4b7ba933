/* A row of ulysses_perf checked against the CPU reference (driver.h). */
#include "driver.h"

#include <stdlib.h>
#include <string.h>

/* One more call into poisoned outputs through each of comms[0..nComms), the
 * real rows of every tensor of this rank gathered into dense tensors, then
 * each against the CPU reference of all ranks' dense inputs (each rank
 * rebuilds them from their seeds). The padding rows of outputs (capacity
 * mode) are the library's scratch: not checked. */
int benchCheckRow(benchContext* c, benchRow* row, const ulyssesComm_t* comms, int nComms,
                    double* wrong) {
  const benchOp* op = c->config->op;
  int nRanks = c->nRanks;
  unsigned char* got[BENCH_MAX_COMMS][ULYSSES_MAX_TENSORS];
  memset(got, 0, sizeof got);
  for (int k = 0; k < nComms; k++) {
    for (int t = 0; t < row->nTensors; t++)
      if (row->recvBytes[t] > 0)
        CUDACHECK(
            cudaMemsetAsync(row->call.recvbuffs[t], BENCH_POISON, row->recvBytes[t], c->stream));
    row->call.comm = comms[k];
    ULYSSESCHECK(op->run(&row->call));
    CUDACHECK(cudaStreamSynchronize(c->stream));
    for (int t = 0; t < row->nTensors; t++) {
      refGqaShape shape = benchShapeOf(&row->layouts[t], nRanks, row->lengths);
      got[k][t] = benchHostAlloc(benchSideBytes(op->direction, 0, &shape, c->rank));
      HOSTCHECK(got[k][t]);
      BENCHCHECK(
          benchCopyRealRows(&row->recvRows[t], got[k][t], row->call.recvbuffs[t], 0, c->stream));
    }
  }

  void** inputs = calloc((size_t)nRanks, sizeof(void*));
  void** outputs = calloc((size_t)nRanks, sizeof(void*));
  HOSTCHECK(inputs);
  HOSTCHECK(outputs);
  *wrong = 0;
  for (int t = 0; t < row->nTensors; t++) {
    refGqaShape shape = benchShapeOf(&row->layouts[t], nRanks, row->lengths);
    for (int p = 0; p < nRanks; p++) {
      size_t inputBytes = benchSideBytes(op->direction, 1, &shape, p);
      inputs[p] = benchHostAlloc(inputBytes);
      outputs[p] = benchHostAlloc(benchSideBytes(op->direction, 0, &shape, p));
      HOSTCHECK(inputs[p]);
      HOSTCHECK(outputs[p]);
      benchFillDense(&shape, inputs[p], inputBytes, benchDataSeed(c->config->seed, p, t));
    }
    if (shape.queryHeads > 0 && op->direction == ulyssesOpSeqToHead)
      refGqaSeqToHead(&shape, (const void* const*)inputs, outputs);
    else if (shape.queryHeads > 0 && op->direction == ulyssesOpHeadToSeq)
      refGqaHeadToSeq(&shape, (const void* const*)inputs, outputs);
    else
      op->reference(&shape.kv, (const void* const*)inputs, outputs);
    size_t outputBytes = benchSideBytes(op->direction, 0, &shape, c->rank);
    for (int k = 0; k < nComms; k++) {
      *wrong += benchCountWrong(got[k][t], outputs[c->rank], outputBytes, c->config->elementSize);
      free(got[k][t]);
    }
    for (int p = 0; p < nRanks; p++) {
      free(inputs[p]);
      free(outputs[p]);
    }
  }
  free(inputs);
  free(outputs);
  return 0;
}

int benchCheckAsyncError(ulyssesComm_t comm, int64_t totalLength) {
  ulyssesResult_t asyncError = ulyssesSuccess;
  ULYSSESCHECK(ulyssesCommGetAsyncError(comm, &asyncError));
  if (asyncError != ulyssesSuccess) {
    benchReportFailure(__FILE__, __LINE__, "asynchronous error at Ltot %lld: %s: %s",
                       (long long)totalLength, ulyssesGetErrorString(asyncError),
                       ulyssesGetLastError());
    return 1;
  }
  return 0;
}
