/* ulysses_perf's timing (driver.h): the reductions over the ranks, CUDA
 * events around -n calls after -w warm-ups, NCCL's own collective of the
 * same bytes, and a row as a whole. */
#include "driver.h"

#include <string.h>

int benchAllReduce(benchContext* c, double* values, int count, ncclRedOp_t op) {
  CUDACHECK(cudaMemcpyAsync(c->deviceStats, values, sizeof(double) * (size_t)count,
                            cudaMemcpyHostToDevice, c->stream));
  NCCLCHECK(ncclAllReduce(c->deviceStats, c->deviceStats, (size_t)count, ncclDouble, op, c->nccl,
                          c->stream));
  CUDACHECK(cudaMemcpyAsync(values, c->deviceStats, sizeof(double) * (size_t)count,
                            cudaMemcpyDeviceToHost, c->stream));
  CUDACHECK(cudaStreamSynchronize(c->stream));
  return 0;
}

int benchBarrier(benchContext* c) {
  double one = 1.0;
  return benchAllReduce(c, &one, 1, ncclSum);
}

/* Microseconds per call of enqueue(argument) on this rank: -n calls back to
 * back after -w warm-ups, between two CUDA events; the ranks start together.
 * enqueue returns 0 or 1, as a CHECK macro does. */
static int timeCalls(benchContext* c, int (*enqueue)(void* argument), void* argument,
                     double* microseconds) {
  const benchConfig* config = c->config;
  for (int64_t i = 0; i < config->warmups; i++) BENCHCHECK(enqueue(argument));
  BENCHCHECK(benchBarrier(c));
  cudaEvent_t start, stop;
  CUDACHECK(cudaEventCreate(&start));
  CUDACHECK(cudaEventCreate(&stop));
  CUDACHECK(cudaEventRecord(start, c->stream));
  for (int64_t i = 0; i < config->iterations; i++) BENCHCHECK(enqueue(argument));
  CUDACHECK(cudaEventRecord(stop, c->stream));
  CUDACHECK(cudaEventSynchronize(stop));
  float milliseconds = 0;
  CUDACHECK(cudaEventElapsedTime(&milliseconds, start, stop));
  CUDACHECK(cudaEventDestroy(start));
  CUDACHECK(cudaEventDestroy(stop));
  *microseconds = (double)milliseconds * 1000.0 / (double)config->iterations;
  return 0;
}

typedef struct {
  const benchOp* op;
  const benchCall* call;
} timedExchange;

static int enqueueExchange(void* argument) {
  const timedExchange* exchange = argument;
  ULYSSESCHECK(exchange->op->run(exchange->call));
  return 0;
}

/* The library call of the row through comm, timed. */
static int timeRow(benchContext* c, benchRow* row, ulyssesComm_t comm, double* microseconds) {
  row->call.comm = comm;
  timedExchange exchange = {c->config->op, &row->call};
  return timeCalls(c, enqueueExchange, &exchange, microseconds);
}

/* NCCL's own collective of the same bytes: the baseline of the xnccl column. */
typedef struct {
  const benchContext* context;
  void* sendbuff;
  void* recvbuff;
  size_t chunkBytes; /* what each rank sends each peer (all-gather: contributes) */
} ncclBaseline;

static int enqueueNccl(void* argument) {
  const ncclBaseline* b = argument;
  const benchContext* c = b->context;
  if (c->config->op->direction == ulyssesOpAllGather) {
    NCCLCHECK(
        ncclAllGather(b->sendbuff, b->recvbuff, b->chunkBytes, ncclUint8, c->nccl, c->stream));
  } else if (c->ncclAlltoAll != NULL) {
    NCCLCHECK(
        c->ncclAlltoAll(b->sendbuff, b->recvbuff, b->chunkBytes, ncclUint8, c->nccl, c->stream));
  } else {
    /* alltoall_perf's fallback: one group of a send and a receive per peer. */
    NCCLCHECK(ncclGroupStart());
    for (int p = 0; p < c->nRanks; p++) {
      size_t offset = (size_t)p * b->chunkBytes;
      NCCLCHECK(ncclSend((const unsigned char*)b->sendbuff + offset, b->chunkBytes, ncclUint8, p,
                         c->nccl, c->stream));
      NCCLCHECK(ncclRecv((unsigned char*)b->recvbuff + offset, b->chunkBytes, ncclUint8, p, c->nccl,
                         c->stream));
    }
    NCCLCHECK(ncclGroupEnd());
  }
  return 0;
}

/* NCCL's collective of rankBytes per rank (the size column), split equally
 * into nRanks chunks of whole elements, timed as the exchange is; *sentBytes
 * gets what one rank actually sends (or contributes). */
static int timeNccl(benchContext* c, double rankBytes, double* microseconds, double* sentBytes) {
  size_t elementSize = (size_t)c->config->elementSize;
  ncclBaseline b = {c, NULL, NULL, 0};
  b.chunkBytes = (size_t)(rankBytes / c->nRanks / (double)elementSize) * elementSize;
  int allGather = c->config->op->direction == ulyssesOpAllGather;
  size_t sendBytes = b.chunkBytes * (allGather ? 1 : (size_t)c->nRanks);
  /* Never NULL, even for an empty chunk, so NCCL's argument checks always pass. */
  BENCHCHECK(benchDeviceAlloc(&b.sendbuff, sendBytes > 0 ? sendBytes : 16));
  BENCHCHECK(benchDeviceAlloc(&b.recvbuff, b.chunkBytes > 0 ? b.chunkBytes * (size_t)c->nRanks : 16));
  if (sendBytes > 0) CUDACHECK(cudaMemsetAsync(b.sendbuff, 0, sendBytes, c->stream));
  BENCHCHECK(timeCalls(c, enqueueNccl, &b, microseconds));
  CUDACHECK(cudaFree(b.sendbuff));
  CUDACHECK(cudaFree(b.recvbuff));
  *sentBytes = (double)sendBytes;
  return 0;
}

int benchRunRow(benchContext* c, int64_t totalLength) {
  const benchConfig* config = c->config;
  int both = config->checkPlans == 2;
  ulyssesComm_t comms[BENCH_MAX_COMMS] = {c->comm, c->checkedComm};
  int nComms = both ? 2 : 1;
  benchRow row;
  BENCHCHECK(benchSetupRow(c, totalLength, &row));
  double times[BENCH_MAX_COMMS] = {0, 0}; /* check off, on (-k 2) */
  for (int k = 0; k < nComms; k++) BENCHCHECK(timeRow(c, &row, comms[k], &times[k]));
  rowResult r;
  memset(&r, 0, sizeof r);
  r.checked = config->check && row.gatheredBytes <= BENCH_CHECK_MAX_BYTES;
  if (r.checked) BENCHCHECK(benchCheckRow(c, &row, comms, nComms, &r.wrong));
  for (int k = 0; k < nComms; k++) BENCHCHECK(benchCheckAsyncError(comms[k], totalLength));
  r.bytes = config->op->bytes(row.gatheredBytes, c->nRanks);
  r.padded = config->op->bytes(row.paddedGatheredBytes, c->nRanks);
  /* The exchange's buffers go before NCCL's are made: the peak is one set. */
  BENCHCHECK(benchFreeRowDevice(&row));
  double ncclTime = 0;
  BENCHCHECK(timeNccl(c, r.bytes, &ncclTime, &r.ncclBytes));

  /* Maxima of the times and of their negatives (the minimum), one reduction. */
  double maxima[4] = {times[0], times[1], ncclTime, -times[0]};
  BENCHCHECK(benchAllReduce(c, maxima, 4, ncclMax));
  r.slowest = maxima[0];
  r.slowestChecked = maxima[1];
  r.ncclTime = maxima[2];
  r.minTime = -maxima[3];
  double sums[4] = {r.wrong, row.wireBytes, row.expandWireBytes, times[0]};
  BENCHCHECK(benchAllReduce(c, sums, 4, ncclSum));
  r.wrong = sums[0];
  r.wire = sums[1] / c->nRanks;
  r.expandWire = sums[2] / c->nRanks;
  r.avgTime = sums[3] / c->nRanks;
  r.algbw = r.slowest > 0 ? r.bytes / (r.slowest * 1e-6) / 1e9 : 0;
  r.busbw = r.algbw * (double)(c->nRanks - 1) / (double)c->nRanks;
  c->rows++;
  c->busBandwidthSum += r.busbw;
  c->checkOverheadSum += r.slowestChecked - r.slowest;
  c->checkRatioSum += r.slowest > 0 ? r.slowestChecked / r.slowest : 0;
  c->ncclRatioSum += r.ncclTime > 0 ? r.slowest / r.ncclTime : 0;
  if (r.checked) {
    c->rowsChecked++;
    c->wrongTotal += r.wrong;
  }
  if (row.path == ulyssesPathOnePass) c->onePassRows++;
  if (c->rank == 0) benchPrintRow(c, &row, &r);
  benchFreeRowHost(&row);
  return 0;
}
