/* A row of ulysses_perf (driver.h): the ranks' lengths, the plan, the
 * buffers and where the real rows lie in them, the inputs' data. */
#include "driver.h"

#include <stdlib.h>
#include <string.h>

/* Shares of totalLength proportional to weights; the rounding remainder (less
 * than nRanks rows) goes one row each to the first ranks. */
static void splitByWeights(int64_t totalLength, const int64_t* weights, int nRanks,
                           int64_t* lengths) {
  int64_t weightSum = 0, assigned = 0;
  for (int r = 0; r < nRanks; r++) weightSum += weights[r];
  for (int r = 0; r < nRanks; r++) {
    lengths[r] = (int64_t)((__int128)totalLength * weights[r] / weightSum);
    assigned += lengths[r];
  }
  for (int r = 0; assigned < totalLength; r = (r + 1) % nRanks, assigned++) lengths[r]++;
}

int benchLengths(benchPattern pattern, uint64_t seed, int64_t totalLength, int nRanks,
                 int64_t* lengths) {
  int64_t* weights = malloc(sizeof(int64_t) * (size_t)nRanks);
  HOSTCHECK(weights);
  uint64_t state = seed;
  for (int r = 0; r < nRanks; r++) {
    switch (pattern) {
      case BENCH_LENGTHS_SKEW: weights[r] = r + 1; break;
      case BENCH_LENGTHS_RANDOM: weights[r] = 1 + (int64_t)(refRandom(&state) % 1000); break;
      case BENCH_LENGTHS_ONE: weights[r] = r == 0 && nRanks > 1 ? nRanks - 1 : 1; break;
      default: weights[r] = 1; break;
    }
  }
  splitByWeights(totalLength, weights, nRanks, lengths);
  free(weights);
  return 0;
}

refGqaShape benchShapeOf(const ulyssesLayout_t* layout, int nRanks, const int64_t* lengths) {
  refGqaShape shape;
  memset(&shape, 0, sizeof shape);
  shape.kv.nRanks = nRanks;
  shape.kv.lengths = lengths;
  shape.kv.batch = layout->batch;
  shape.kv.heads = layout->heads;
  shape.kv.headDim = layout->headDim;
  shape.kv.elementSize = layout->elementSize;
  shape.kv.packed = layout->packed;
  shape.kv.sbhd = layout->order == ulyssesOrderSBHD;
  shape.queryHeads = layout->queryHeads;
  shape.type = layout->dataType == ulyssesTypeFloat32   ? REF_FLOAT32
               : layout->dataType == ulyssesTypeFloat16 ? REF_FLOAT16
                                                        : REF_BFLOAT16;
  return shape;
}

/* The heads of rank's head-side tensor: its group of the plain split, or the
 * kv heads its query heads read. */
static int64_t headSideHeads(const refGqaShape* shape, int rank) {
  return shape->queryHeads > 0 ? refKvCount(shape, rank) : refHeadCount(&shape->kv, rank);
}

/* The head-side heads of every rank, summed: H for a plain tensor, more for
 * kv heads that several ranks share (each replica counts). */
static int64_t headSideHeadsSum(const refGqaShape* shape) {
  int64_t sum = 0;
  for (int j = 0; j < shape->kv.nRanks; j++) sum += headSideHeads(shape, j);
  return sum;
}

size_t benchSideBytes(ulyssesOp_t direction, int isSend, const refGqaShape* gqaShape, int rank) {
  const refShape* shape = &gqaShape->kv;
  if (direction == ulyssesOpAllGather)
    return isSend ? refSeqBytes(shape, rank) : refGatherBytes(shape);
  if (rowsOnSequenceSide(direction, isSend)) return refSeqBytes(shape, rank);
  return (size_t)(shape->batch * refTotalLength(shape) * shape->packed *
                  headSideHeads(gqaShape, rank) * shape->headDim * shape->elementSize);
}

void benchFillDense(const refGqaShape* shape, void* buffer, size_t bytes, uint64_t seed) {
  if (shape->queryHeads > 0)
    refFillFloats(buffer, bytes / (size_t)shape->kv.elementSize, shape->type, seed);
  else
    refFillPattern(buffer, bytes, seed);
}

uint64_t benchDataSeed(uint64_t seed, int rank, int tensor) {
  return seed * 0x9E3779B97F4A7C15ull + (uint64_t)rank * ULYSSES_MAX_TENSORS + (uint64_t)tensor + 1;
}

void* benchHostAlloc(size_t bytes) { return malloc(bytes > 0 ? bytes : 1); }

int benchDeviceAlloc(void** pointer, size_t bytes) {
  *pointer = NULL;
  if (bytes > 0) CUDACHECK(cudaMalloc(pointer, bytes));
  return 0;
}

/* Where the real rows of rank's send (isSend) or receive tensor lie in its
 * buffer: L_r rows (Ltot on the head side and for the gathered tensor) in
 * slots of C_r (Ctot) rows, rows.h's model. */
static sideRows realRowsOf(ulyssesOp_t direction, int isSend, const refGqaShape* realGqaShape,
                           const refShape* slotShape, int rank) {
  const refShape* realShape = &realGqaShape->kv;
  int sequenceSide = rowsOnSequenceSide(direction, isSend);
  int64_t heads = sequenceSide || direction == ulyssesOpAllGather
                      ? realShape->heads
                      : headSideHeads(realGqaShape, rank);
  sideRows r;
  r.rowBytes = (size_t)(realShape->packed * heads * realShape->headDim * realShape->elementSize);
  r.batch = realShape->batch;
  r.realRows = sequenceSide ? realShape->lengths[rank] : refTotalLength(realShape);
  r.slotRows = sequenceSide ? slotShape->lengths[rank] : refTotalLength(slotShape);
  r.sequenceFirst = realShape->sbhd;
  return r;
}

/* The dense host tensor is [B, L, ...] or [L, B, ...]; one copy per run of
 * real rows, or one in all where the buffer is dense. */
int benchCopyRealRows(const sideRows* r, unsigned char* dense, unsigned char* buffer,
                      int toDevice, cudaStream_t stream) {
  if (sideRowsDenseBytes(r) == 0) return 0;
  int64_t runs = r->realRows == r->slotRows ? 1 : sideRowsRunCount(r);
  for (int64_t run = 0; run < runs; run++) {
    size_t bufferOffset, denseOffset, bytes;
    sideRowsRun(r, run, &bufferOffset, &denseOffset, &bytes);
    if (runs == 1) bytes = sideRowsDenseBytes(r);
    if (toDevice)
      CUDACHECK(cudaMemcpyAsync(buffer + bufferOffset, dense + denseOffset, bytes,
                                cudaMemcpyHostToDevice, stream));
    else
      CUDACHECK(cudaMemcpyAsync(dense + denseOffset, buffer + bufferOffset, bytes,
                                cudaMemcpyDeviceToHost, stream));
  }
  CUDACHECK(cudaStreamSynchronize(stream)); /* before dense is freed or read */
  return 0;
}

/* Every fill goes on the bench's stream, which is non-blocking and so not
 * ordered after the legacy default stream that cudaMemset and cudaMemcpy use.
 * The dense input of this rank is scattered into its real rows; the padding
 * rows (capacity mode) get BENCH_INPUT_PADDING, which the library must never
 * read as data. */
static int fillInputs(benchContext* c, benchRow* row) {
  for (int t = 0; t < row->nTensors; t++) {
    void* sendbuff = (void*)(uintptr_t)row->call.sendbuffs[t];
    if (row->sendBytes[t] > 0)
      CUDACHECK(cudaMemsetAsync(sendbuff, BENCH_INPUT_PADDING, row->sendBytes[t], c->stream));
    size_t realBytes = sideRowsDenseBytes(&row->sendRows[t]);
    if (realBytes == 0) continue;
    unsigned char* host = benchHostAlloc(realBytes);
    HOSTCHECK(host);
    refGqaShape shape = benchShapeOf(&row->layouts[t], c->nRanks, row->lengths);
    benchFillDense(&shape, host, realBytes, benchDataSeed(c->config->seed, c->rank, t));
    BENCHCHECK(benchCopyRealRows(&row->sendRows[t], host, sendbuff, 1, c->stream));
    free(host);
  }
  CUDACHECK(cudaStreamSynchronize(c->stream));
  return 0;
}

/* The wire bytes of the same call with every kv tensor expanded to its
 * queryHeads heads and split as a plain tensor (expandKV before the
 * exchange): from a second plan, which is host data only. */
static int expandedWire(benchContext* c, benchRow* row, ulyssesSegment_t* segments) {
  ulyssesLayout_t expanded[ULYSSES_MAX_TENSORS];
  for (int t = 0; t < row->nTensors; t++) {
    expanded[t] = row->layouts[t];
    if (expanded[t].queryHeads > 0) expanded[t].heads = expanded[t].queryHeads;
    expanded[t].queryHeads = 0;
    expanded[t].dataType = ulyssesTypeOpaque;
  }
  ulyssesPlan_t plan = NULL;
  if (c->config->capacityMode)
    ULYSSESCHECK(ulyssesPlanCreateCapacity(&plan, c->nRanks, c->rank, row->slots,
                                           row->deviceLocalLength, row->nTensors, expanded));
  else
    ULYSSESCHECK(ulyssesPlanCreateExact(&plan, c->nRanks, c->rank, row->lengths, row->nTensors,
                                        expanded));
  row->expandWireBytes = 0;
  for (int t = 0; t < row->nTensors; t++) {
    segments[0].size = sizeof(ulyssesSegment_t);
    ULYSSESCHECK(ulyssesGetSegments(plan, c->config->op->direction, t, 0, segments));
    for (int p = 0; p < c->nRanks; p++) row->expandWireBytes += (double)segments[p].bytes;
  }
  ULYSSESCHECK(ulyssesPlanDestroy(plan));
  return 0;
}

/* --path onepass: every output from the collective ulyssesMemAlloc on the
 * row's comm, tensor by tensor on every rank. It takes one size on every rank,
 * so each tensor gets the largest rank's output; a tensor whose output is
 * empty on every rank gets none (a size of 0 is refused; such a tensor keeps
 * the exchange on the staged path, which the path column then shows). */
static int allocateSymmetricOutputs(benchContext* c, benchRow* row) {
  double largest[BENCH_STATS];
  for (int t = 0; t < row->nTensors; t++) largest[t] = (double)row->recvBytes[t];
  BENCHCHECK(benchAllReduce(c, largest, row->nTensors, ncclMax));
  row->symmetricComm = row->call.comm;
  for (int t = 0; t < row->nTensors; t++) {
    size_t bytes = (size_t)largest[t];
    if (bytes == 0) continue;
    ulyssesResult_t result = ulyssesMemAlloc(row->symmetricComm, bytes, &row->call.recvbuffs[t]);
    if (result != ulyssesSuccess) {
      benchReportFailure(__FILE__, __LINE__,
                         "--path onepass: ulyssesMemAlloc of %zu bytes (tensor %d's output at "
                         "Ltot %lld) failed: %s: %s (it needs ncclMemAlloc, that is cuMem, and on "
                         "a comm that can take one pass an NCCL symmetric window; --path staged "
                         "needs neither)",
                         bytes, t, (long long)row->totalLength, ulyssesGetErrorString(result),
                         ulyssesGetLastError());
      return 1;
    }
  }
  return 0;
}

/* The row's path from ulyssesGetExchangePath on every rank. The ranks must
 * agree: one rank in one pass and another staged would wait for each other
 * forever, so a disagreement fails the row before its first call. */
static int exchangePath(benchContext* c, benchRow* row) {
  const benchCall* call = &row->call;
  ULYSSESCHECK(ulyssesGetExchangePath(call->plan, c->config->op->direction, call->nTensors,
                                      call->recvbuffs, call->comm, &row->path, &row->pathReason));
  double path = row->path == ulyssesPathOnePass ? 1.0 : 0.0;
  double extremes[2] = {path, -path}; /* the maximum and minus the minimum */
  BENCHCHECK(benchAllReduce(c, extremes, 2, ncclMax));
  if (extremes[0] != -extremes[1]) {
    benchReportFailure(__FILE__, __LINE__,
                       "at Ltot %lld the ranks' exchanges would take different paths; this "
                       "rank's: %s (%s)",
                       (long long)row->totalLength, benchPathName(row->path), row->pathReason);
    return 1;
  }
  return 0;
}

int benchSetupRow(benchContext* c, int64_t totalLength, benchRow* row) {
  const benchConfig* config = c->config;
  const benchOp* op = config->op;
  int nRanks = c->nRanks, rank = c->rank;
  memset(row, 0, sizeof *row);
  row->totalLength = totalLength;
  row->lengths = malloc(sizeof(int64_t) * (size_t)nRanks);
  row->slots = malloc(sizeof(int64_t) * (size_t)nRanks);
  HOSTCHECK(row->lengths);
  HOSTCHECK(row->slots);
  BENCHCHECK(benchLengths(config->pattern, config->seed, totalLength, nRanks, row->lengths));
  for (int r = 0; r < nRanks; r++)
    if (row->lengths[r] > row->maxLength) row->maxLength = row->lengths[r];
  for (int r = 0; r < nRanks; r++)
    row->slots[r] = config->capacityMode ? row->maxLength : row->lengths[r];

  row->nTensors = op->layouts(config, row->layouts);
  benchCall* call = &row->call;
  call->nTensors = row->nTensors;
  call->comm = c->comm;
  call->stream = c->stream;
  if (config->capacityMode) {
    CUDACHECK(cudaMalloc((void**)&row->deviceLocalLength, sizeof(int64_t)));
    CUDACHECK(cudaMemcpyAsync(row->deviceLocalLength, &row->lengths[rank], sizeof(int64_t),
                              cudaMemcpyHostToDevice, c->stream));
    CUDACHECK(cudaStreamSynchronize(c->stream));
    ULYSSESCHECK(ulyssesPlanCreateCapacity(&call->plan, nRanks, rank, row->slots,
                                           row->deviceLocalLength, row->nTensors, row->layouts));
  } else {
    ULYSSESCHECK(ulyssesPlanCreateExact(&call->plan, nRanks, rank, row->lengths, row->nTensors,
                                        row->layouts));
  }

  ulyssesSegment_t* segments = malloc(sizeof(ulyssesSegment_t) * (size_t)nRanks);
  HOSTCHECK(segments);
  for (int t = 0; t < row->nTensors; t++) {
    refGqaShape realShape = benchShapeOf(&row->layouts[t], nRanks, row->lengths);
    refGqaShape slotShape = benchShapeOf(&row->layouts[t], nRanks, row->slots);
    ULYSSESCHECK(ulyssesGetBufferSizes(call->plan, op->direction, t, &row->sendBytes[t],
                                       &row->recvBytes[t]));
    row->sendRows[t] = realRowsOf(op->direction, 1, &realShape, &slotShape.kv, rank);
    row->recvRows[t] = realRowsOf(op->direction, 0, &realShape, &slotShape.kv, rank);
    if (sideRowsSpan(&row->sendRows[t]) > row->sendBytes[t] ||
        sideRowsSpan(&row->recvRows[t]) > row->recvBytes[t]) {
      benchReportFailure(__FILE__, __LINE__,
                         "tensor %d: ulyssesGetBufferSizes gives %zu send and %zu receive bytes; "
                         "the real rows span %zu and %zu",
                         t, row->sendBytes[t], row->recvBytes[t],
                         sideRowsSpan(&row->sendRows[t]), sideRowsSpan(&row->recvRows[t]));
      return 1;
    }
    void* sendbuff = NULL;
    BENCHCHECK(benchDeviceAlloc(&sendbuff, row->sendBytes[t]));
    if (!config->onePass) BENCHCHECK(benchDeviceAlloc(&call->recvbuffs[t], row->recvBytes[t]));
    call->sendbuffs[t] = sendbuff;
    double gathered = (double)refGatherBytes(&realShape.kv);
    row->gatheredBytes += gathered;
    /* Padded: every slice padded to maxLength, the heads the library moves
     * (a shared kv head once per rank that reads it). */
    double replication = op->direction == ulyssesOpAllGather
                             ? 1.0
                             : (double)headSideHeadsSum(&realShape) / (double)realShape.kv.heads;
    row->paddedGatheredBytes +=
        gathered / (double)totalLength * (double)row->maxLength * nRanks * replication;
    segments[0].size = sizeof(ulyssesSegment_t);
    ULYSSESCHECK(ulyssesGetSegments(call->plan, op->direction, t, 0, segments));
    for (int p = 0; p < nRanks; p++) row->wireBytes += (double)segments[p].bytes;
    if (row->layouts[t].queryHeads > 0) row->grouped = 1;
  }
  if (row->grouped) BENCHCHECK(expandedWire(c, row, segments));
  free(segments);
  if (config->onePass) BENCHCHECK(allocateSymmetricOutputs(c, row));
  ULYSSESCHECK(ulyssesGetWorkspaceSize(call->plan, op->direction, &call->workspaceSize));
  BENCHCHECK(benchDeviceAlloc(&call->workspace, call->workspaceSize));
  BENCHCHECK(exchangePath(c, row));
  return fillInputs(c, row);
}

int benchFreeRowDevice(benchRow* row) {
  /* ulyssesMemFree needs the calls that use the outputs completed. */
  if (row->symmetricComm != NULL) CUDACHECK(cudaStreamSynchronize(row->call.stream));
  for (int t = 0; t < row->nTensors; t++) {
    CUDACHECK(cudaFree((void*)(uintptr_t)row->call.sendbuffs[t]));
    if (row->symmetricComm != NULL)
      ULYSSESCHECK(ulyssesMemFree(row->symmetricComm, row->call.recvbuffs[t]));
    else
      CUDACHECK(cudaFree(row->call.recvbuffs[t]));
  }
  CUDACHECK(cudaFree(row->call.workspace));
  CUDACHECK(cudaFree(row->deviceLocalLength));
  ULYSSESCHECK(ulyssesPlanDestroy(row->call.plan));
  return 0;
}

void benchFreeRowHost(benchRow* row) {
  free(row->lengths);
  free(row->slots);
}
