/* The one-pass kernel (kernels/one_pass.cu) on one GPU with simulated ranks:
 * every rank's inputs and outputs live on this GPU, and each rank's launch
 * (no-op barriers) runs after the previous one on one stream, writing into
 * the peers' outputs through device tables of their addresses. Bit-exact
 * against the CPU reference for P = 2, 4, 8, uneven and zero lengths, kv
 * replication, both orders and modes. Its speed is bench/one_pass_perf's
 * (a test times nothing). Exit 77 without a GPU. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
/* cmocka.h needs the headers above. */
#include <cmocka.h>

#include "one_pass_device.h"

#define CUDA_OK(call)                                                                 \
  do {                                                                                \
    cudaError_t error_ = (call);                                                      \
    if (error_ != cudaSuccess) fail_msg("%s: %s", #call, cudaGetErrorString(error_)); \
  } while (0)

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
  onePassDevice d;
  CUDA_OK(onePassDeviceSetup(&d, &run, &table));
  CUDA_OK(onePassDeviceLaunchRanks(&run, &d, blocks, 0));
  CUDA_OK(cudaDeviceSynchronize());
  CUDA_OK(onePassDeviceFetch(&run, &d));
  exchangeCheck(&run, table.lengths);
  onePassCheckPadding(&run, &table);
  onePassDeviceTeardown(&d, s);
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

int main(void) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    fprintf(stderr, "no CUDA device: skipped\n");
    return 77;
  }
  const struct CMUnitTest tests[] = {cmocka_unit_test(testSimulatedRanksMatchTheReference)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
