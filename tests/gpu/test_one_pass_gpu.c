/* The one-pass kernel (kernels/one_pass.cu) on one GPU with simulated ranks:
 * every rank's inputs and outputs live on this GPU, and each rank's launch
 * (no-op barriers) runs after the previous one on one stream, writing into
 * the peers' outputs through device tables of their addresses. Bit-exact
 * against the CPU reference for P = 2, 4, 8, uneven and zero lengths, kv
 * replication, both orders and modes; then its bandwidth against a
 * device-to-device copy of the same bytes (a number to record, not a pass
 * condition). Exit 77 without a GPU. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
/* cmocka.h needs the headers above. */
#include <cmocka.h>

#include "one_pass_launch.h"
#include "one_pass_run.h"

#define CUDA_OK(call)                                                                 \
  do {                                                                                \
    cudaError_t error_ = (call);                                                      \
    if (error_ != cudaSuccess) fail_msg("%s: %s", #call, cudaGetErrorString(error_)); \
  } while (0)

/* One exchange's device copies: every rank's inputs and outputs, the peer
 * tables and the length table. */
typedef struct {
  unsigned char* inputs[HARNESS_MAX_RANKS][ULYSSES_MAX_TENSORS];
  unsigned char* outputs[HARNESS_MAX_RANKS][ULYSSES_MAX_TENSORS];
  unsigned char** peerTables[ULYSSES_MAX_TENSORS];
  int64_t* table; /* lengths, offsets, slot offsets */
} deviceRun;

static void* deviceCopy(const void* host, size_t bytes) {
  void* device = NULL;
  CUDA_OK(cudaMalloc(&device, bytes > 0 ? bytes : 1));
  if (bytes > 0) CUDA_OK(cudaMemcpy(device, host, bytes, cudaMemcpyHostToDevice));
  return device;
}

static void deviceSetup(deviceRun* d, const exchangeRun* run, const lengthTable* table) {
  const scenario* s = run->s;
  memset(d, 0, sizeof *d);
  for (int r = 0; r < s->nRanks; r++)
    for (int t = 0; t < s->nTensors; t++) {
      d->inputs[r][t] = deviceCopy(run->send[r][t].data, run->send[r][t].bytes);
      d->outputs[r][t] = deviceCopy(run->recv[r][t].data, run->recv[r][t].bytes);
    }
  for (int t = 0; t < s->nTensors; t++) {
    unsigned char* addresses[HARNESS_MAX_RANKS];
    for (int p = 0; p < s->nRanks; p++) addresses[p] = d->outputs[p][t];
    d->peerTables[t] = deviceCopy(addresses, sizeof(unsigned char*) * (size_t)s->nRanks);
  }
  int64_t host[3 * (HARNESS_MAX_RANKS + 1)];
  memcpy(host, table->lengths, sizeof(int64_t) * HARNESS_MAX_RANKS);
  memcpy(host + HARNESS_MAX_RANKS + 1, table->offsets, sizeof table->offsets);
  memcpy(host + 2 * (HARNESS_MAX_RANKS + 1), table->slotOffsets, sizeof table->slotOffsets);
  d->table = deviceCopy(host, sizeof host);
}

static void deviceTeardown(deviceRun* d, const scenario* s) {
  for (int r = 0; r < s->nRanks; r++)
    for (int t = 0; t < s->nTensors; t++) {
      cudaFree(d->inputs[r][t]);
      cudaFree(d->outputs[r][t]);
    }
  for (int t = 0; t < s->nTensors; t++) cudaFree(d->peerTables[t]);
  cudaFree(d->table);
}

/* Every rank's launch of blocks blocks (0: the NCCL launch's fixed grid),
 * one after another on stream. */
static void launchRanks(const exchangeRun* run, const deviceRun* d, int blocks,
                        cudaStream_t stream) {
  const scenario* s = run->s;
  for (int r = 0; r < s->nRanks; r++) {
    const void* inputs[ULYSSES_MAX_TENSORS];
    unsigned char* const* tables[ULYSSES_MAX_TENSORS];
    unsigned char* hostTables[ULYSSES_MAX_TENSORS][HARNESS_MAX_RANKS];
    for (int t = 0; t < s->nTensors; t++) {
      inputs[t] = d->inputs[r][t];
      /* The fill reads the addresses on the host for the word size. */
      for (int p = 0; p < s->nRanks; p++) hostTables[t][p] = d->outputs[p][t];
      tables[t] = hostTables[t];
    }
    ulyssesOnePassArgs args;
    ulyssesOnePassFill(run->plans[r], run->op, inputs, tables, &args);
    args.lengths = d->table;
    args.offsets = d->table + HARNESS_MAX_RANKS + 1;
    args.slotOffsets = d->table + 2 * (HARNESS_MAX_RANKS + 1);
    for (int t = 0; t < s->nTensors; t++) args.tensors[t].peerOutputs = d->peerTables[t];
    CUDA_OK(ulyssesLaunchOnePassLocal(&args, blocks, stream));
  }
}

/* Returns 0 where the op needs the head sum (not a one-pass op). */
static int checkOnGpu(const scenario* s, ulyssesOp_t op, uint64_t seed, int blocks) {
  exchangeRun run;
  exchangeSetup(&run, s, op, seed);
  if (onePassNeedsHeadSum(&run)) {
    exchangeTeardown(&run);
    return 0;
  }
  for (int p = 0; p < s->nRanks; p++)
    for (int t = 0; t < s->nTensors; t++)
      memset(run.recv[p][t].data, ONE_PASS_UNTOUCHED, run.recv[p][t].bytes);
  lengthTable table;
  onePassBuildTable(&run, &table);
  deviceRun d;
  deviceSetup(&d, &run, &table);
  launchRanks(&run, &d, blocks, 0);
  CUDA_OK(cudaDeviceSynchronize());
  for (int p = 0; p < s->nRanks; p++)
    for (int t = 0; t < s->nTensors; t++)
      if (run.recv[p][t].bytes > 0)
        CUDA_OK(cudaMemcpy(run.recv[p][t].data, d.outputs[p][t], run.recv[p][t].bytes,
                           cudaMemcpyDeviceToHost));
  exchangeCheck(&run, table.lengths);
  onePassCheckPadding(&run, &table);
  deviceTeardown(&d, s);
  exchangeTeardown(&run);
  return 1;
}

static void testSimulatedRanksMatchTheReference(void** state) {
  (void)state;
  static const int64_t lengths[8] = {37, 0, 64, 5, 0, 129, 1, 80};
  static const int rankCounts[3] = {2, 4, 8};
  int checked = 0;
  for (int n = 0; n < 3; n++)
    for (int capacityMode = 0; capacityMode <= 1; capacityMode++)
      for (int order = 0; order <= 1; order++) {
        int nRanks = rankCounts[n];
        ulyssesOrder_t o = order ? ulyssesOrderSBHD : ulyssesOrderBSHD;
        scenario s;
        memset(&s, 0, sizeof s);
        s.nRanks = nRanks;
        s.capacityMode = capacityMode;
        for (int r = 0; r < nRanks; r++) {
          s.lengths[r] = lengths[r];
          s.capacities[r] = lengths[r] + (capacityMode ? 3 : 0);
        }
        s.nTensors = 3;
        s.layouts[0] = onePassLayout(2, 4 * nRanks + 1, 64, 2, 1, o); /* q, uneven head split */
        s.layouts[1] = onePassKvLayout(2, 1, 4 * nRanks, 64, o);  /* k: one kv head, every rank */
        s.layouts[2] = onePassKvLayout(1, 2, 4 * nRanks, 128, o); /* v: two kv heads */
        /* The grid is the NCCL launch's, and a small odd one: every chunk
         * is some group's whatever the grid. */
        int blocks = (n + order) % 2 ? 0 : 7;
        checked += checkOnGpu(&s, ulyssesOpSeqToHead, (uint64_t)(n * 7 + order), blocks);
        checked += checkOnGpu(&s, ulyssesOpAllGather, (uint64_t)(n * 7 + order + 1), blocks);
        /* head -> seq of kv heads held by one rank each is a one-pass op. */
        s.layouts[1] = onePassKvLayout(2, nRanks, 2 * nRanks, 64, o);
        s.nTensors = 2;
        checked += checkOnGpu(&s, ulyssesOpHeadToSeq, (uint64_t)(n * 7 + order + 2), blocks);
      }
  assert_int_equal(checked, 3 * 2 * 2 * 3);
}

/* Seconds of one call of launch, the median of iterations after warm-up. */
static double medianSeconds(void (*launch)(void*), void* context, int iterations) {
  cudaEvent_t begin, end;
  CUDA_OK(cudaEventCreate(&begin));
  CUDA_OK(cudaEventCreate(&end));
  double times[64];
  for (int i = -3; i < iterations; i++) {
    CUDA_OK(cudaEventRecord(begin, 0));
    launch(context);
    CUDA_OK(cudaEventRecord(end, 0));
    CUDA_OK(cudaEventSynchronize(end));
    float ms;
    CUDA_OK(cudaEventElapsedTime(&ms, begin, end));
    if (i >= 0) times[i] = ms * 1e-3;
  }
  for (int i = 1; i < iterations; i++)
    for (int j = i; j > 0 && times[j] < times[j - 1]; j--) {
      double swap = times[j];
      times[j] = times[j - 1];
      times[j - 1] = swap;
    }
  cudaEventDestroy(begin);
  cudaEventDestroy(end);
  return times[iterations / 2];
}

typedef struct {
  const exchangeRun* run;
  const deviceRun* d;
  int blocks;
  void* copyFrom;
  void* copyTo;
  size_t copyBytes;
} benchContext;

static void launchOnePass(void* context) {
  benchContext* c = context;
  launchRanks(c->run, c->d, c->blocks, 0);
}

static void launchCopy(void* context) {
  benchContext* c = context;
  CUDA_OK(cudaMemcpyAsync(c->copyTo, c->copyFrom, c->copyBytes, cudaMemcpyDeviceToDevice, 0));
}

/* P = 8 seq -> head of q with 32 heads of 128 bf16, B = 2, 4096 rows per
 * rank: 64 MiB per rank. The peers being local, the one pass is a strided
 * copy: its bandwidth over cudaMemcpy's is printed as a JSON line per grid
 * size of ULYSSES_ONE_PASS_BENCH_BLOCKS (a comma list; default 132, 264
 * and 528: one, two and four blocks per SM of an H200; on 2026-11-28 they
 * reached 0.56, 0.76 and 0.75, and 264 became the NCCL launch's grid). */
static void testBandwidthAgainstCopy(void** state) {
  (void)state;
  scenario s;
  memset(&s, 0, sizeof s);
  s.nRanks = 8;
  for (int r = 0; r < 8; r++) s.lengths[r] = 4096;
  s.nTensors = 1;
  s.layouts[0] = onePassLayout(2, 32, 128, 2, 1, ulyssesOrderBSHD);
  exchangeRun run;
  exchangeSetup(&run, &s, ulyssesOpSeqToHead, 5);
  lengthTable table;
  onePassBuildTable(&run, &table);
  deviceRun d;
  deviceSetup(&d, &run, &table);
  size_t bytes = 0;
  for (int r = 0; r < 8; r++) bytes += run.send[r][0].bytes;
  benchContext context = {&run, &d, 0, NULL, NULL, bytes};
  CUDA_OK(cudaMalloc(&context.copyFrom, bytes));
  CUDA_OK(cudaMalloc(&context.copyTo, bytes));
  const char* sweep = getenv("ULYSSES_ONE_PASS_BENCH_BLOCKS");
  char list[256];
  snprintf(list, sizeof list, "%s", sweep != NULL ? sweep : "132,264,528");
  for (char* item = strtok(list, ","); item != NULL; item = strtok(NULL, ",")) {
    context.blocks = atoi(item);
    if (context.blocks <= 0)
      fail_msg("ULYSSES_ONE_PASS_BENCH_BLOCKS: %s is not a block count", item);
    double onePass = medianSeconds(launchOnePass, &context, 21);
    double copy = medianSeconds(launchCopy, &context, 21);
    printf(
        "{\"bench\": \"one_pass_simulated\", \"ranks\": 8, \"blocks\": %d, \"threads\": %d, "
        "\"bytes\": %zu, \"one_pass_s\": %.6e, \"copy_s\": %.6e, \"one_pass_GBps\": %.1f, "
        "\"copy_GBps\": %.1f, \"ratio\": %.3f}\n",
        context.blocks, ULYSSES_ONE_PASS_THREADS, bytes, onePass, copy, bytes / onePass * 1e-9,
        bytes / copy * 1e-9, copy / onePass);
  }
  cudaFree(context.copyFrom);
  cudaFree(context.copyTo);
  deviceTeardown(&d, &s);
  exchangeTeardown(&run);
}

int main(void) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    fprintf(stderr, "no CUDA device: skipped\n");
    return 77;
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(testSimulatedRanksMatchTheReference),
      cmocka_unit_test(testBandwidthAgainstCopy),
  };
  /* Under compute-sanitizer the bench is skipped: it checks nothing and is slow there. */
  const char* bench = getenv("ULYSSES_ONE_PASS_BENCH");
  if (bench != NULL && strcmp(bench, "0") == 0) {
    const struct CMUnitTest checksOnly[] = {cmocka_unit_test(testSimulatedRanksMatchTheReference)};
    return cmocka_run_group_tests(checksOnly, NULL, NULL);
  }
  return cmocka_run_group_tests(tests, NULL, NULL);
}
