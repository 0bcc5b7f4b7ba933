/* The GPU suite's stress group: random exchanges on several streams, and the
 * soak (the same for a given time). */
#include "suite.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*------------------------------------------------------------------------
 * Stress: many small exchanges with random lengths (exact and capacity,
 * zeros included) and random shapes (heads, head dim, element size, packed,
 * order, batch, several tensors, kv tensors with queryHeads and a float
 * dataType), seq->head and head->seq interleaved, spread over
 * STRESS_STREAMS streams: iteration i runs on stream i % STRESS_STREAMS with
 * that slot's own buffers, workspace and device length, and is checked (a
 * download on the same stream, then a byte-for-byte comparison with the
 * reference) only when its slot comes round again, so up to STRESS_STREAMS
 * exchanges are in flight at once. One host thread enqueues everything, in
 * the same order on every rank (every random draw is the same on every
 * rank), which is the order NCCL needs.
 *
 * Bounded: the iteration count falls with P, and every STRESS_VOTE_EVERY
 * iterations the ranks all-reduce (max) a vote to stop, cast when a rank has
 * run past the time budget or seen too many failures; the vote keeps them in
 * step.
 *----------------------------------------------------------------------*/
enum {
  STRESS_STREAMS = 3,
  STRESS_VOTE_EVERY = 16,
  STRESS_MAX_LENGTH = 6,
  STRESS_MAX_FAILURES = 20,
  STRESS_ALIGN = 256,
};

static long stressIterations(int nRanks) {
  if (nRanks <= 2) return 400;
  if (nRanks == 3) return 260;
  if (nRanks == 4) return 200;
  return nRanks >= 16 ? 60 : 960 / nRanks; /* 120 for P = 8 */
}

static double stressBudgetMs(int nRanks) { return nRanks > 4 ? 45e3 : 30e3; }

typedef struct {
  cudaStream_t stream;
  unsigned char* device; /* every buffer of one exchange, each with its guards */
  unsigned char* upload; /* pinned: what is uploaded before the exchange */
  unsigned char* actual; /* pinned: what is downloaded after it */
  unsigned char* expect; /* what actual must hold where it is checked */
  size_t capacityBytes, used;
  int64_t* deviceLength; /* capacity mode: this rank's length */
  int64_t* hostLength;   /* pinned */
  int busy;
  long iteration;
  char description[256];
  Case c; /* in place: its shapes point at its lengths */
  ulyssesPlan_t plan;
  DevBuf send[MAX_TENSORS], recv[MAX_TENSORS], ws;
  sideRows outMaps[MAX_TENSORS];
} StressSlot;

typedef struct {
  long iterations, capacity, headToSeq, kv, multi, emptyLengths;
  double bytes; /* of this rank's send and receive buffers, every exchange */
} StressCounts;

static int64_t pick(uint64_t* state, int64_t n) {
  return (int64_t)(refRandom(state) % (uint64_t)n);
}

static ulyssesDataType_t pickFloatType(uint64_t* state) {
  static const ulyssesDataType_t types[3] = {ulyssesTypeFloat32, ulyssesTypeFloat16,
                                             ulyssesTypeBfloat16};
  return types[pick(state, 3)];
}

static int64_t pickHeadDim(uint64_t* state) {
  static const int64_t dims[7] = {1, 2, 3, 4, 5, 8, 16};
  return dims[pick(state, 7)];
}

static ulyssesLayout_t stressPlainLayout(uint64_t* state) {
  static const int64_t sizes[5] = {1, 2, 4, 8, 16};
  ulyssesLayout_t l;
  memset(&l, 0, sizeof l);
  l.size = sizeof l;
  l.batch = 1 + pick(state, 2);
  l.heads = 1 + pick(state, 8);
  l.headDim = pickHeadDim(state);
  l.elementSize = sizes[pick(state, 5)];
  l.packed = pick(state, 3) == 0 ? 3 : 1;
  l.order = pick(state, 2) ? ulyssesOrderSBHD : ulyssesOrderBSHD;
  int typed = pick(state, 2); /* a dataType on a plain tensor changes nothing */
  if (typed && l.elementSize == 4) l.dataType = ulyssesTypeFloat32;
  if (typed && l.elementSize == 2)
    l.dataType = pick(state, 2) ? ulyssesTypeFloat16 : ulyssesTypeBfloat16;
  return l;
}

static const char* typeName(ulyssesDataType_t type) {
  switch (type) {
    case ulyssesTypeFloat32:
      return "fp32";
    case ulyssesTypeFloat16:
      return "fp16";
    case ulyssesTypeBfloat16:
      return "bf16";
    default:
      return "opaque";
  }
}

/* One iteration's plan: layouts, lengths, slots, mode, op and call form,
 * all from the iteration's own random stream. */
typedef struct {
  int nTensors, capacity, useMulti, nullWhenEmpty;
  size_t misalign;
  ulyssesOp_t op;
  ulyssesLayout_t layouts[MAX_TENSORS];
  int64_t lengths[MAX_RANKS], slots[MAX_RANKS];
} StressDraw;

static void stressDraw(uint64_t* state, StressDraw* d, StressCounts* counts) {
  memset(d, 0, sizeof *d);
  int64_t kind = pick(state, 10);
  if (kind < 5) { /* one plain tensor */
    d->nTensors = 1;
    d->layouts[0] = stressPlainLayout(state);
  } else if (kind < 7) { /* two or three plain tensors of their own layouts */
    d->nTensors = 2 + (int)pick(state, 2);
    for (int t = 0; t < d->nTensors; t++) d->layouts[t] = stressPlainLayout(state);
  } else { /* kv tensors: one alone, or q + k + v */
    int64_t kvHeads = 1 + pick(state, 4), queryHeads = kvHeads * (1 + pick(state, 4));
    int64_t batch = 1 + pick(state, 2), headDim = pickHeadDim(state);
    ulyssesOrder_t order = pick(state, 2) ? ulyssesOrderSBHD : ulyssesOrderBSHD;
    ulyssesDataType_t kType = pickFloatType(state), vType = pickFloatType(state);
    if (kind < 8) {
      d->nTensors = 1;
      d->layouts[0] = gqaLayout(batch, kvHeads, headDim, order, queryHeads, kType);
      if (pick(state, 4) == 0) d->layouts[0].packed = 3;
    } else {
      d->nTensors = 3;
      d->layouts[0] = gqaLayout(batch, queryHeads, headDim, order, 0, kType);
      d->layouts[1] = gqaLayout(batch, kvHeads, headDim, order, queryHeads, kType);
      d->layouts[2] = gqaLayout(batch, kvHeads, headDim, order, queryHeads, vType);
    }
    counts->kv++;
  }
  if (d->nTensors > 1) counts->multi++;
  d->capacity = (int)pick(state, 2);
  d->op = pick(state, 2) ? ulyssesOpHeadToSeq : ulyssesOpSeqToHead;
  d->useMulti = d->nTensors == 1 && pick(state, 4) == 0;
  d->nullWhenEmpty = (int)pick(state, 2);
  d->misalign = pick(state, 4) == 0 ? (size_t)(1 + pick(state, 15)) : 0;
  int allEmpty = pick(state, 12) == 0;
  for (int r = 0; r < gRanks; r++) {
    d->lengths[r] = allEmpty || pick(state, 4) == 0 ? 0 : 1 + pick(state, STRESS_MAX_LENGTH);
    d->slots[r] = d->lengths[r] + (d->capacity ? pick(state, 3) : 0);
  }
  counts->iterations++;
  counts->capacity += d->capacity;
  counts->headToSeq += d->op == ulyssesOpHeadToSeq;
  counts->emptyLengths += allEmpty;
}

static void stressDescribe(const StressDraw* d, char* text, size_t size) {
  size_t used = (size_t)snprintf(text, size, "%s %s%s, lengths", d->capacity ? "capacity" : "exact",
                                 opName(d->op), d->useMulti ? " (multi)" : "");
  for (int r = 0; r < gRanks && used < size; r++)
    used += (size_t)snprintf(text + used, size - used, "%s%lld/%lld", r ? "," : " ",
                             (long long)d->lengths[r], (long long)d->slots[r]);
  for (int t = 0; t < d->nTensors && used < size; t++) {
    const ulyssesLayout_t* l = &d->layouts[t];
    used += (size_t)snprintf(text + used, size - used, "; %s b%lld h%lld d%lld e%lld p%d q%lld %s",
                             l->order == ulyssesOrderSBHD ? "sbhd" : "bshd", (long long)l->batch,
                             (long long)l->heads, (long long)l->headDim, (long long)l->elementSize,
                             l->packed, (long long)l->queryHeads, typeName(l->dataType));
  }
  if (d->misalign > 0 && used < size)
    snprintf(text + used, size - used, "; misaligned by %zu", d->misalign);
}

static size_t roundUp(size_t bytes, size_t to) { return (bytes + to - 1) / to * to; }

static size_t stressFootprint(size_t bytes, size_t before) {
  return roundUp(before + bytes + GUARD_BYTES, STRESS_ALIGN);
}

/* Room for `bytes` in the slot. Only between the slot's exchanges; freeing
 * may wait for the other slots' exchanges, which every rank has enqueued. */
static void stressReserve(StressSlot* s, size_t bytes) {
  if (bytes <= s->capacityBytes) return;
  size_t grown = s->capacityBytes * 2 > bytes ? s->capacityBytes * 2 : bytes;
  if (s->device != NULL) CUDA_CHECK(cudaFree(s->device));
  if (s->upload != NULL) CUDA_CHECK(cudaFreeHost(s->upload));
  if (s->actual != NULL) CUDA_CHECK(cudaFreeHost(s->actual));
  free(s->expect);
  CUDA_CHECK(cudaMalloc((void**)&s->device, grown));
  CUDA_CHECK(cudaHostAlloc((void**)&s->upload, grown, cudaHostAllocDefault));
  CUDA_CHECK(cudaHostAlloc((void**)&s->actual, grown, cudaHostAllocDefault));
  s->expect = xmalloc(grown);
  s->capacityBytes = grown;
}

/* A buffer at the slot's next free place; its image in the upload area. */
static void stressCarve(StressSlot* s, DevBuf* b, size_t bytes, size_t before, int nullWhenEmpty,
                        unsigned fill) {
  size_t offset = s->used;
  b->device = s->device + offset;
  b->image = s->upload + offset;
  b->actual = s->actual + offset;
  b->before = before;
  b->bytes = bytes;
  b->after = GUARD_BYTES;
  memset(b->image, GUARD_BYTE, before);
  memset(b->image + before, (int)fill, bytes);
  memset(b->image + before + bytes, GUARD_BYTE, b->after);
  b->user = bytes == 0 && nullWhenEmpty ? NULL : b->device + before;
  s->used += stressFootprint(bytes, before);
}

/* The expectation of b from here on: the upload image, then the outputs. */
static void stressExpect(StressSlot* s, DevBuf* b) {
  b->image = s->expect + (b->device - s->device);
}

/* Enqueues iteration's exchange on its slot; returns the bytes of this
 * rank's send and receive buffers. */
static double stressStart(StressSlot* s, long iteration, const StressDraw* d, uint64_t dataSeed,
                          ulyssesComm_t comm) {
  s->iteration = iteration;
  stressDescribe(d, s->description, sizeof s->description);
  setScenario("stress %ld: %s", iteration, s->description);
  int T = d->nTensors;
  caseInit(&s->c, T, d->layouts, d->lengths, d->slots, d->capacity);
  s->plan = makePlan(&s->c, d->capacity ? s->deviceLength : NULL);
  size_t sendBytes[MAX_TENSORS], recvBytes[MAX_TENSORS], wsBytes = 0;
  size_t before = GUARD_BYTES + d->misalign, need = 0;
  double moved = 0;
  for (int t = 0; t < T; t++) {
    sendBytes[t] = planBytes(s->plan, &s->c, d->op, t, 1);
    recvBytes[t] = planBytes(s->plan, &s->c, d->op, t, 0);
    moved += (double)sendBytes[t] + (double)recvBytes[t];
    need += stressFootprint(sendBytes[t], before) + stressFootprint(recvBytes[t], before);
  }
  ULY_CHECK(ulyssesGetWorkspaceSize(s->plan, d->op, &wsBytes));
  need += stressFootprint(wsBytes, GUARD_BYTES);
  stressReserve(s, need);
  s->used = 0;
  for (int t = 0; t < T; t++) {
    stressCarve(s, &s->send[t], sendBytes[t], before, d->nullWhenEmpty, 0);
    stressCarve(s, &s->recv[t], recvBytes[t], before, d->nullWhenEmpty, OUTPUT_FILL);
  }
  stressCarve(s, &s->ws, wsBytes, GUARD_BYTES, 1, WORKSPACE_FILL);

  /* Every rank's inputs and the reference's outputs; this rank's input into
   * its image (junk in the padding), its output into the expectation. */
  Side in = inputSide(d->op), out = outputSide(d->op);
  unsigned char** outputs[MAX_TENSORS];
  for (int t = 0; t < T; t++) {
    unsigned char** inputs = allocSide(&s->c, t, in);
    fillSide(&s->c, t, in, inputs, mixSeed(dataSeed, (uint64_t)t));
    outputs[t] = allocSide(&s->c, t, out);
    refExchange(&s->c, t, d->op, inputs, outputs[t]);
    sideRows inMap = caseMap(&s->c, t, in, gRank);
    bufSetInput(&s->send[t], &inMap, inputs[gRank], mixSeed(dataSeed, 100 + (uint64_t)t));
    s->outMaps[t] = caseMap(&s->c, t, out, gRank);
    freePerRank(inputs);
  }
  /* The slot's earlier work has completed: upload, hostLength and expect are free. */
  *s->hostLength = d->lengths[gRank];
  CUDA_CHECK(cudaMemcpyAsync(s->device, s->upload, s->used, cudaMemcpyHostToDevice, s->stream));
  if (d->capacity)
    CUDA_CHECK(cudaMemcpyAsync(s->deviceLength, s->hostLength, sizeof(int64_t),
                               cudaMemcpyHostToDevice, s->stream));
  memcpy(s->expect, s->upload, s->used);
  for (int t = 0; t < T; t++) {
    stressExpect(s, &s->send[t]);
    stressExpect(s, &s->recv[t]);
    bufScatterRows(&s->recv[t], &s->outMaps[t], outputs[t][gRank]);
    freePerRank(outputs[t]);
  }
  stressExpect(s, &s->ws);
  const ExchangeCall call = {s->plan, d->op, T, d->useMulti, s->send, s->recv, &s->ws};
  ULY_CHECK(enqueueExchangeOn(&call, comm, s->stream));
  CUDA_CHECK(cudaMemcpyAsync(s->actual, s->device, s->used, cudaMemcpyDeviceToHost, s->stream));
  s->busy = 1;
  return moved;
}

static void stressFinish(StressSlot* s) {
  if (!s->busy) return;
  setScenario("stress %ld: %s", s->iteration, s->description);
  CUDA_CHECK(cudaStreamSynchronize(s->stream));
  char label[48];
  snprintf(label, sizeof label, "stress iteration %ld", s->iteration);
  compareCall(label, s->c.nTensors, s->send, s->recv, s->outMaps, &s->ws);
  ULY_CHECK(ulyssesPlanDestroy(s->plan));
  s->plan = NULL;
  s->busy = 0;
}

/* Every rank's vote (1: stop), all-reduced with max on the main communicator,
 * in the same place of every rank's sequence of NCCL calls. */
static int stressVote(ncclComm_t nccl, int* deviceVote, int* hostVote, int mine) {
  *hostVote = mine;
  CUDA_CHECK(cudaMemcpyAsync(deviceVote, hostVote, sizeof(int), cudaMemcpyHostToDevice, gStream));
  NCCL_CHECK(ncclAllReduce(deviceVote, deviceVote, 1, ncclInt32, ncclMax, nccl, gStream));
  CUDA_CHECK(cudaMemcpyAsync(hostVote, deviceVote, sizeof(int), cudaMemcpyDeviceToHost, gStream));
  CUDA_CHECK(cudaStreamSynchronize(gStream));
  return *hostVote;
}

static void runStressScenario(const Suite* suite, int argument) {
  (void)argument;
  ncclComm_t nccl = suite->nccl;
  ulyssesComm_t comm = suite->comm;
  setScenario("stress: set-up");
  double started = nowMs();
  int soak = soakSeconds();
  long iterations = soak ? LONG_MAX : stressIterations(gRanks), failuresBefore = gFailures;
  double budgetMs = soak ? soak * 1e3 : stressBudgetMs(gRanks);
  StressSlot* slots = xmalloc(sizeof(StressSlot) * STRESS_STREAMS);
  memset(slots, 0, sizeof(StressSlot) * STRESS_STREAMS);
  for (int i = 0; i < STRESS_STREAMS; i++) {
    CUDA_CHECK(cudaStreamCreateWithFlags(&slots[i].stream, cudaStreamNonBlocking));
    CUDA_CHECK(cudaMalloc((void**)&slots[i].deviceLength, sizeof(int64_t)));
    CUDA_CHECK(cudaHostAlloc((void**)&slots[i].hostLength, sizeof(int64_t), cudaHostAllocDefault));
    stressReserve(&slots[i], (size_t)1 << 20);
  }
  int *deviceVote = NULL, *hostVote = NULL;
  CUDA_CHECK(cudaMalloc((void**)&deviceVote, sizeof(int)));
  CUDA_CHECK(cudaHostAlloc((void**)&hostVote, sizeof(int), cudaHostAllocDefault));

  StressCounts counts;
  memset(&counts, 0, sizeof counts);
  uint64_t seed = mixSeed(4000, (uint64_t)gRanks);
  int stopped = 0;
  long i = 0;
  for (; i < iterations && !stopped; i++) {
    StressSlot* s = &slots[i % STRESS_STREAMS];
    stressFinish(s); /* iteration i - STRESS_STREAMS */
    uint64_t state = mixSeed(seed, (uint64_t)i);
    StressDraw draw;
    stressDraw(&state, &draw, &counts);
    counts.bytes += stressStart(s, i, &draw, mixSeed(seed ^ UINT64_C(0x5bd1e995), (uint64_t)i), comm);
    if ((i + 1) % STRESS_VOTE_EVERY == 0 && i + 1 < iterations) {
      setScenario("stress: vote after iteration %ld", i);
      int mine = nowMs() - started > budgetMs || gFailures - failuresBefore > STRESS_MAX_FAILURES;
      stopped = stressVote(nccl, deviceVote, hostVote, mine);
    }
  }
  for (int k = 0; k < STRESS_STREAMS; k++) stressFinish(&slots[k]);
  double elapsed = nowMs() - started;
  setScenario("stress: teardown");
  checkNoAsyncError(comm);
  for (int k = 0; k < STRESS_STREAMS; k++) {
    CUDA_CHECK(cudaStreamDestroy(slots[k].stream));
    CUDA_CHECK(cudaFree(slots[k].device));
    CUDA_CHECK(cudaFree(slots[k].deviceLength));
    CUDA_CHECK(cudaFreeHost(slots[k].upload));
    CUDA_CHECK(cudaFreeHost(slots[k].actual));
    CUDA_CHECK(cudaFreeHost(slots[k].hostLength));
    free(slots[k].expect);
  }
  free(slots);
  CUDA_CHECK(cudaFree(deviceVote));
  CUDA_CHECK(cudaFreeHost(hostVote));
  if (gRank == 0) {
    printf(
        "rank 0: scenario %s: %ld exchanges (%ld capacity, %ld head->seq, %ld with kv "
        "tensors, %ld multi-tensor, %ld all empty) on %d streams in %.0f ms (%.2f ms each), "
        "%.1f MiB of rank 0's buffers, each result compared with the reference\n",
        soak ? "soak" : "stress", counts.iterations, counts.capacity, counts.headToSeq, counts.kv,
        counts.multi, counts.emptyLengths, STRESS_STREAMS, elapsed,
        counts.iterations ? elapsed / (double)counts.iterations : 0.0, counts.bytes / 1048576.0);
    if (stopped && !soak)
      printf(
          "rank 0: scenario stress: stopped by the ranks' vote after %ld of %ld iterations "
          "(a rank past the %.0f s budget, or past %d failures)\n",
          i, iterations, budgetMs * 1e-3, STRESS_MAX_FAILURES);
  }
}

int soakSeconds(void) {
  const char* text = getenv("ULYSSES_SOAK_SECONDS");
  if (text == NULL || *text == '\0') return 0;
  char* end;
  long seconds = strtol(text, &end, 10);
  if (*end != '\0' || seconds < 1 || seconds > SOAK_MAX_SECONDS) {
    printf("ULYSSES_SOAK_SECONDS=%s: expected 1 to %d\n", text, SOAK_MAX_SECONDS);
    exit(2);
  }
  return (int)seconds;
}


void addStressScenarios(ScenarioList* list) {
  scenarioAdd(list, "stress", runStressScenario, 0, 0, "stress");
}
