/* host_perf: the host time of plan creation and of each exchange, with a
 * backend that does nothing (no GPU, no NCCL): what the library itself costs
 * the calling thread per call, as P and the number of tensors grow.
 *
 *   build/bench/host_perf [-p 2,4,...] [-t 1,3] [-n ITERATIONS] [-j FILE]
 *
 * An exchange here is ulyssesEnqueueExchange, what ulyssesExchangeMulti runs
 * (every argument validated, the path chosen, then the whole pipeline
 * enqueued), on a comm of rank 0 without the plan check or one pass and a
 * backend whose calls return at once; the public entry adds the comm's
 * reference and cudaGetDevice. The buffers are address ranges that are
 * never touched. */
#define _POSIX_C_SOURCE 200809L
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "enqueue.h"
#include "bench_commit.h"

#define MAX_RANK_COUNTS 16
#define MAX_TENSOR_COUNTS 4
/* Each timing runs for at least this long; the best of BATCHES is kept. */
#define MIN_BATCH_SECONDS 0.002
#define BATCHES 5

static const char* const opNames[ULYSSES_OP_COUNT] = {"seq2head", "head2seq", "allgather"};

static ulyssesResult_t doNothingAllGather(void* c, const void* s, void* r, size_t b) {
  (void)c, (void)s, (void)r, (void)b;
  return ulyssesSuccess;
}
static ulyssesResult_t doNothingGroup(void* c) {
  (void)c;
  return ulyssesSuccess;
}
static ulyssesResult_t doNothingSend(void* c, const void* buff, size_t bytes, int peer) {
  (void)c, (void)buff, (void)bytes, (void)peer;
  return ulyssesSuccess;
}
static ulyssesResult_t doNothingRecv(void* c, void* buff, size_t bytes, int peer) {
  (void)c, (void)buff, (void)bytes, (void)peer;
  return ulyssesSuccess;
}
static ulyssesResult_t doNothingTable(void* c, const ulyssesTableArgs* a) {
  (void)c, (void)a;
  return ulyssesSuccess;
}
static ulyssesResult_t doNothingCopy(void* c, const ulyssesCopyArgs* a, int64_t maxRuns) {
  (void)c, (void)a, (void)maxRuns;
  return ulyssesSuccess;
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* One row's setting: P ranks, this process rank 0, VILA's length rule
 * (floor(L/P) rows each, the remainder on the last rank), batch 2 so that
 * every pass is taken, q with 32 heads and, for three tensors, k and v with
 * 8 (grouped-query: kv heads shared by the ranks of their query heads). */
typedef struct {
  int nRanks, nTensors, gqa;
  int64_t* lengths;
  ulyssesLayout_t layouts[3];
} setting;

static void makeSetting(setting* s, int nRanks, int nTensors, int gqa, int64_t* lengths) {
  const int64_t totalLength = 64 * 1024 + 7;
  s->nRanks = nRanks;
  s->nTensors = nTensors;
  s->gqa = gqa;
  s->lengths = lengths;
  for (int r = 0; r < nRanks; r++)
    lengths[r] = totalLength / nRanks + (r == nRanks - 1 ? totalLength % nRanks : 0);
  for (int t = 0; t < nTensors; t++) {
    ulyssesLayout_t* layout = &s->layouts[t];
    memset(layout, 0, sizeof *layout);
    layout->size = sizeof *layout;
    layout->batch = 2;
    layout->heads = t == 0 ? 32 : 8;
    layout->headDim = 128;
    layout->elementSize = 2;
    layout->packed = 1;
    layout->order = ulyssesOrderBSHD;
    layout->queryHeads = t > 0 && gqa ? 32 : 0;
    layout->dataType = ulyssesTypeBfloat16;
  }
}

static int createPlan(const setting* s, ulyssesPlan_t* plan) {
  ulyssesResult_t result =
      ulyssesPlanCreateExact(plan, s->nRanks, 0, s->lengths, s->nTensors, s->layouts);
  if (result == ulyssesSuccess) return 0;
  fprintf(stderr, "host_perf: ulyssesPlanCreateExact: %s: %s\n", ulyssesGetErrorString(result),
          ulyssesGetLastError());
  return 1;
}

/* The best, over BATCHES batches, of the mean time of one call(context) in
 * microseconds; 1 as soon as a call fails (it said why). */
static int timeBest(int (*call)(void* context), void* context, int64_t minIterations,
                    double* microseconds) {
  double best = 0;
  for (int batch = 0; batch < BATCHES; batch++) {
    int64_t iterations = 0;
    double start = now(), elapsed;
    do {
      if (call(context)) return 1;
      iterations++;
      elapsed = now() - start;
    } while (iterations < minIterations || elapsed < MIN_BATCH_SECONDS);
    double mean = 1e6 * elapsed / (double)iterations;
    if (batch == 0 || mean < best) best = mean;
  }
  *microseconds = best;
  return 0;
}

static int createAndDestroyPlan(void* context) {
  ulyssesPlan_t plan;
  if (createPlan(context, &plan)) return 1;
  ulyssesPlanDestroy(plan);
  return 0;
}

/* One exchange's arguments, with buffers that are address ranges never
 * dereferenced: they need only be distinct, aligned and as large as the plan
 * says. */
typedef struct {
  const setting* s;
  ulyssesPlan_t plan;
  ulyssesOp_t op;
  const void* sendbuffs[3];
  void* recvbuffs[3];
  void* workspace;
  size_t workspaceBytes;
  struct ulyssesComm comm;
  struct ulyssesOnePassState onePass;
  ulyssesCall call;
  ulyssesBackend backend;
} exchangeCall;

static void prepareExchange(exchangeCall* e, const setting* s, ulyssesPlan_t plan, ulyssesOp_t op) {
  e->s = s;
  e->plan = plan;
  e->op = op;
  uintptr_t cursor = (uintptr_t)1 << 40;
  for (int t = 0; t < s->nTensors; t++) {
    size_t sendBytes = 0, recvBytes = 0;
    ulyssesGetBufferSizes(plan, op, t, &sendBytes, &recvBytes);
    e->sendbuffs[t] = (const void*)cursor;
    cursor += (sendBytes + 4095) / 4096 * 4096 + 4096;
    e->recvbuffs[t] = (void*)cursor;
    cursor += (recvBytes + 4095) / 4096 * 4096 + 4096;
  }
  ulyssesGetWorkspaceSize(plan, op, &e->workspaceBytes);
  e->workspace = (void*)cursor;
  memset(&e->comm, 0, sizeof e->comm);
  memset(&e->onePass, 0, sizeof e->onePass);
  e->comm.nRanks = s->nRanks;
  e->comm.onePass = &e->onePass;
  e->onePass.support.commRanks = s->nRanks;
  ulyssesCall call = {.plan = plan,
                      .op = op,
                      .nTensors = s->nTensors,
                      .sendbuffs = e->sendbuffs,
                      .recvbuffs = e->recvbuffs,
                      .workspace = e->workspace,
                      .workspaceSize = e->workspaceBytes,
                      .comm = &e->comm};
  e->call = call;
  ulyssesBackend backend = {.allGather = doNothingAllGather,
                            .groupStart = doNothingGroup,
                            .groupEnd = doNothingGroup,
                            .send = doNothingSend,
                            .recv = doNothingRecv,
                            .launchTable = doNothingTable,
                            .launchCopy = doNothingCopy};
  e->backend = backend;
}

static int exchangeOnce(void* context) {
  exchangeCall* e = context;
  ulyssesResult_t result = ulyssesEnqueueExchange(&e->call, &e->backend);
  if (result == ulyssesSuccess) return 0;
  fprintf(stderr, "host_perf: %s: %s: %s\n", opNames[e->op], ulyssesGetErrorString(result),
          ulyssesGetLastError());
  return 1;
}

static int parseList(const char* text, int64_t min, int64_t max, int64_t* values, int capacity) {
  int count = 0;
  const char* p = text;
  while (*p != '\0') {
    char* end;
    long long value = strtoll(p, &end, 10);
    if (end == p || value < min || value > max || count == capacity) return 0;
    values[count++] = value;
    if (*end == ',' && end[1] != '\0')
      p = end + 1;
    else if (*end == '\0')
      p = end;
    else
      return 0;
  }
  return count;
}

static void usage(FILE* out) {
  fprintf(out,
          "usage: host_perf [-p RANKS] [-t TENSORS] [-n ITERATIONS] [-j FILE] [-h]\n"
          "  The library's host time per plan creation and per exchange, with a backend\n"
          "  that does nothing (no GPU or NCCL needed). Exact plans, rank 0, VILA's length\n"
          "  rule over 65543 rows, batch 2, bf16 heads of 128; q has 32 heads, k and v 8\n"
          "  (plain: split on their own; gqa: shared by the ranks of their query heads).\n"
          "  -p RANKS       comma-separated rank counts (default 2,4,8,16,32,64,128,256)\n"
          "  -t TENSORS     comma-separated tensor counts, 1 to 3 (default 1,3)\n"
          "  -n ITERATIONS  at least this many calls per timing batch (default 20); each\n"
          "                 batch also runs 2 ms at least; the best of 5 batches is shown\n"
          "  -j FILE        also write one JSON line per row to FILE\n");
}

int main(int argc, char** argv) {
  int64_t rankCounts[MAX_RANK_COUNTS] = {2, 4, 8, 16, 32, 64, 128, 256};
  int64_t tensorCounts[MAX_TENSOR_COUNTS] = {1, 3};
  int nRankCounts = 8, nTensorCounts = 2;
  int64_t minIterations = 20;
  const char* jsonPath = NULL;
  for (int i = 1; i < argc; i++) {
    const char* value = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(argv[i], "-h") == 0) {
      usage(stdout);
      return 0;
    }
    if (value == NULL) {
      fprintf(stderr, "host_perf: %s needs a value\n", argv[i]);
      usage(stderr);
      return 1;
    }
    i++;
    if (strcmp(argv[i - 1], "-p") == 0) {
      nRankCounts = parseList(value, 1, 1 << 16, rankCounts, MAX_RANK_COUNTS);
      if (nRankCounts == 0) {
        fprintf(stderr, "host_perf: -p %s: expected up to %d rank counts in [1, 65536]\n", value,
                MAX_RANK_COUNTS);
        return 1;
      }
    } else if (strcmp(argv[i - 1], "-t") == 0) {
      nTensorCounts = parseList(value, 1, 3, tensorCounts, MAX_TENSOR_COUNTS);
      if (nTensorCounts == 0) {
        fprintf(stderr, "host_perf: -t %s: expected tensor counts in [1, 3]\n", value);
        return 1;
      }
    } else if (strcmp(argv[i - 1], "-n") == 0) {
      int64_t one[1];
      if (parseList(value, 1, 1000000000, one, 1) != 1) {
        fprintf(stderr, "host_perf: -n %s: expected an integer in [1, 1e9]\n", value);
        return 1;
      }
      minIterations = one[0];
    } else if (strcmp(argv[i - 1], "-j") == 0) {
      jsonPath = value;
    } else {
      fprintf(stderr, "host_perf: unknown option %s\n", argv[i - 1]);
      usage(stderr);
      return 1;
    }
  }
  FILE* json = NULL;
  if (jsonPath != NULL && (json = fopen(jsonPath, "w")) == NULL) {
    perror(jsonPath);
    return 1;
  }

  printf("# host_perf: ulysses commit %s; per-call host time, backend that does nothing\n",
         ULYSSES_BENCH_COMMIT);
  printf("# %6s %7s %4s %10s  %10s %10s %10s  (microseconds; best of %d batches)\n", "ranks",
         "tensors", "gqa", "plan", "seq2head", "head2seq", "allgather", BATCHES);
  int failed = 0;
  for (int i = 0; i < nRankCounts && !failed; i++)
    for (int j = 0; j < nTensorCounts && !failed; j++)
      for (int gqa = 0; gqa < (tensorCounts[j] > 1 ? 2 : 1) && !failed; gqa++) {
        int nRanks = (int)rankCounts[i];
        int64_t* lengths = malloc(sizeof(int64_t) * (size_t)nRanks);
        if (lengths == NULL) {
          fprintf(stderr, "host_perf: out of host memory\n");
          return 1;
        }
        setting s;
        makeSetting(&s, nRanks, (int)tensorCounts[j], gqa, lengths);
        double planMicroseconds = 0, exchangeMicroseconds[ULYSSES_OP_COUNT] = {0};
        ulyssesPlan_t plan = NULL;
        failed = timeBest(createAndDestroyPlan, &s, minIterations, &planMicroseconds) ||
                 createPlan(&s, &plan);
        for (int op = 0; op < ULYSSES_OP_COUNT && !failed; op++) {
          exchangeCall call;
          prepareExchange(&call, &s, plan, (ulyssesOp_t)op);
          failed = timeBest(exchangeOnce, &call, minIterations, &exchangeMicroseconds[op]);
        }
        ulyssesPlanDestroy(plan);
        free(lengths);
        if (failed) break;
        printf("  %6d %7d %4s %10.2f  %10.2f %10.2f %10.2f\n", nRanks, s.nTensors,
               gqa ? "yes" : "no", planMicroseconds, exchangeMicroseconds[0],
               exchangeMicroseconds[1], exchangeMicroseconds[2]);
        for (int op = 0; json != NULL && op < ULYSSES_OP_COUNT; op++)
          fprintf(json,
                  "{\"bench\":\"host_perf\",\"commit\":\"%s\",\"ranks\":%d,\"tensors\":%d,"
                  "\"op\":\"%s\",\"gqa\":%s,\"plan_us\":%.3f,\"exchange_us\":%.3f}\n",
                  ULYSSES_BENCH_COMMIT, nRanks, s.nTensors, opNames[op], gqa ? "true" : "false",
                  planMicroseconds, exchangeMicroseconds[op]);
      }
  if (json != NULL && fclose(json) != 0) {
    perror(jsonPath);
    failed = 1;
  }
  return failed;
}
