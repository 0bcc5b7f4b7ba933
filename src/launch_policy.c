#include "launch_policy.h"

#include "ulysses_sum.h"

/* The word size every active tensor of args moves, or 0 where they differ
 * (the kernel with every size, each tensor moving its own words). */
static int commonWordBytes(const ulyssesCopyArgs* a) {
  int wordBytes = 0;
  for (int t = 0; t < a->nTensors; t++) {
    if (!a->tensors[t].active) continue;
    if (wordBytes != 0 && a->tensors[t].wordBytes != wordBytes) return 0;
    wordBytes = a->tensors[t].wordBytes;
  }
  return wordBytes;
}

static int anyHeadSum(const ulyssesCopyArgs* a) {
  for (int t = 0; t < a->nTensors; t++)
    if (a->tensors[t].active && a->tensors[t].kind == ULYSSES_COPY_HEAD_SUM) return 1;
  return 0;
}

int ulyssesGroupLanes(int64_t words, int wordBytes) {
  int lanes = 1;
  while (lanes < ULYSSES_WARP_LANES && (int64_t)lanes * ULYSSES_WORDS_IN_FLIGHT < words) lanes *= 2;
  if (words * wordBytes < ULYSSES_SHORT_RUN_BYTES)
    while (lanes < ULYSSES_WARP_LANES && lanes * wordBytes < ULYSSES_LINE_BYTES) lanes *= 2;
  return lanes;
}

int64_t ulyssesChunkRuns(int64_t words, int wordBytes, int64_t runs, int lanes) {
  if (words < 1) return 1;
  int64_t perLane = words * wordBytes < ULYSSES_SHORT_RUN_BYTES ? ULYSSES_SHORT_CHUNK_WORDS_PER_LANE
                                                                : ULYSSES_CHUNK_WORDS_PER_LANE;
  int64_t chunkRuns = (int64_t)lanes * perLane / words;
  int64_t fillRuns = runs / (ULYSSES_FILL_THREADS / lanes > 0 ? ULYSSES_FILL_THREADS / lanes : 1);
  if (chunkRuns > fillRuns) chunkRuns = fillRuns;
  return chunkRuns < 1 ? 1 : chunkRuns;
}

void ulyssesChooseCopyLaunch(ulyssesCopyArgs* args, const int64_t* runBytes, const int64_t* runs) {
  args->launchWordBytes = commonWordBytes(args);
  args->launchSums = anyHeadSum(args);
  args->runLanes = 1;
  for (int t = 0; t < args->nTensors; t++) {
    ulyssesCopyTensor* x = &args->tensors[t];
    if (!x->active) continue;
    int wordBytes = args->launchWordBytes != 0 ? args->launchWordBytes : x->wordBytes;
    int unitBytes = x->kind == ULYSSES_COPY_HEAD_SUM ? ulyssesSumUnitBytes(x) : wordBytes;
    int lanes = ulyssesGroupLanes(runBytes[t] / unitBytes, unitBytes);
    if (lanes > args->runLanes) args->runLanes = lanes;
  }
  for (int t = 0; t < args->nTensors; t++) {
    ulyssesCopyTensor* x = &args->tensors[t];
    int wordBytes = args->launchWordBytes != 0 ? args->launchWordBytes : x->wordBytes;
    int unitBytes = x->kind == ULYSSES_COPY_HEAD_SUM ? ulyssesSumUnitBytes(x) : wordBytes;
    x->chunkRuns = ulyssesChunkRuns(runBytes[t] / unitBytes, unitBytes, runs[t], args->runLanes);
    x->hostRuns = runs[t];
    /* The bytes it reads and writes, which the wave's share weighs: a copy
     * reads what it writes; a head sum reads every replica, the kv heads
     * that every peer got (the prefix of all the ranks) for its heads. */
    int64_t written = runs[t] * runBytes[t];
    x->hostBytes = 2 * written;
    if (x->kind == ULYSSES_COPY_HEAD_SUM)
      x->hostBytes = written + written / x->heads * ulyssesSplitHeadPrefix(&x->split, args->nRanks);
  }
}

int64_t ulyssesShareWave(ulyssesCopyArgs* a, int64_t wave) {
  double totalBytes = 0;
  for (int t = 0; t < a->nTensors; t++)
    if (a->tensors[t].active) totalBytes += (double)a->tensors[t].hostBytes;
  int64_t groupsPerBlock = ULYSSES_COPY_THREADS / a->runLanes, longest = 0;
  for (int t = 0; t < a->nTensors; t++) {
    ulyssesCopyTensor* x = &a->tensors[t];
    x->gridBlocks = 0;
    if (!x->active) continue;
    double share =
        totalBytes > 0 ? (double)wave * ((double)x->hostBytes / totalBytes) : (double)wave;
    x->gridBlocks = share < 1 ? 1 : share > (double)wave ? wave : (int64_t)share;
    int64_t chunks = (x->hostRuns + x->chunkRuns - 1) / x->chunkRuns;
    int64_t need = (chunks + groupsPerBlock - 1) / groupsPerBlock;
    if (x->gridBlocks > need) x->gridBlocks = need > 0 ? need : 1;
    if (x->gridBlocks > longest) longest = x->gridBlocks;
  }
  return longest;
}
