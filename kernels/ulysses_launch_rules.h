/* The launch rules, chosen on the host from the plan's bounds: the word
 * size and head-sum presence of a launch, lanes per group, runs per chunk,
 * and the share of a wave each tensor's grid row gets. */
#ifndef ULYSSES_LAUNCH_RULES_H_
#define ULYSSES_LAUNCH_RULES_H_

#include "ulysses_args.h"

/* The word size of one launch: its tensors' common word size, so that the
 * kernel is compiled for one word size and spends no registers on the
 * others; 0 when they differ (a kernel with every size, each tensor moving
 * its own words). */
ULYSSES_HD int ulyssesLaunchWordBytes(const ulyssesCopyArgs* a) {
  int wordBytes = 0;
  for (int t = 0; t < a->nTensors; t++) {
    if (!a->tensors[t].active) continue;
    if (wordBytes != 0 && a->tensors[t].wordBytes != wordBytes) return 0;
    wordBytes = a->tensors[t].wordBytes;
  }
  return wordBytes;
}

/* Whether any tensor of the launch is a head sum. */
ULYSSES_HD int ulyssesLaunchSums(const ulyssesCopyArgs* a) {
  for (int t = 0; t < a->nTensors; t++)
    if (a->tensors[t].active && a->tensors[t].kind == ULYSSES_COPY_HEAD_SUM) return 1;
  return 0;
}

/* Lanes per group for a tensor whose longest run has `words` words of
 * wordBytes (for a head sum: units of ulyssesSumUnitBytes): the smallest
 * power of two that leaves each lane at most ULYSSES_WORDS_IN_FLIGHT of them,
 * at most a warp, so that short runs share a warp; for a run shorter than
 * ULYSSES_SHORT_RUN_BYTES, at least the lanes whose words make a cache line,
 * so that a round of a group's loads reads whole lines. The launch takes the
 * largest over its tensors. */
ULYSSES_HD int ulyssesGroupLanes(int64_t words, int wordBytes) {
  int lanes = 1;
  while (lanes < ULYSSES_WARP_LANES && (int64_t)lanes * ULYSSES_WORDS_IN_FLIGHT < words) lanes *= 2;
  if (words * wordBytes < ULYSSES_SHORT_RUN_BYTES)
    while (lanes < ULYSSES_WARP_LANES && lanes * wordBytes < ULYSSES_LINE_BYTES) lanes *= 2;
  return lanes;
}

/* Consecutive runs per chunk for a tensor of `runs` runs of at most `words`
 * words of wordBytes, moved by groups of `lanes` lanes: about
 * ULYSSES_CHUNK_WORDS_PER_LANE words per lane (runs below
 * ULYSSES_SHORT_RUN_BYTES: ULYSSES_SHORT_CHUNK_WORDS_PER_LANE), but never so
 * many that fewer than ULYSSES_FILL_THREADS threads get a chunk; at least 1. */
ULYSSES_HD int64_t ulyssesChunkRuns(int64_t words, int wordBytes, int64_t runs, int lanes) {
  if (words < 1) return 1;
  int64_t perLane = words * wordBytes < ULYSSES_SHORT_RUN_BYTES
                        ? ULYSSES_SHORT_CHUNK_WORDS_PER_LANE
                        : ULYSSES_CHUNK_WORDS_PER_LANE;
  int64_t chunkRuns = (int64_t)lanes * perLane / words;
  int64_t fillRuns = runs / (ULYSSES_FILL_THREADS / lanes > 0 ? ULYSSES_FILL_THREADS / lanes : 1);
  if (chunkRuns > fillRuns) chunkRuns = fillRuns;
  return chunkRuns < 1 ? 1 : chunkRuns;
}

/* Shares a wave of `wave` resident blocks of ULYSSES_COPY_THREADS between the
 * launch's tensors in proportion to the bytes each moves (each active tensor
 * at least one block), none past the blocks its chunks need: each tensor's
 * gridBlocks. Returns the longest grid row. The launcher gives it one wave
 * of the device, so that the rows together fill the GPU once and the
 * grid-stride loop (ulyssesCopyBlockThread) covers the rest. */
ULYSSES_HD int64_t ulyssesShareWave(ulyssesCopyArgs* a, int64_t wave) {
  double totalBytes = 0;
  for (int t = 0; t < a->nTensors; t++)
    if (a->tensors[t].active) totalBytes += (double)a->tensors[t].hostBytes;
  int64_t groupsPerBlock = ULYSSES_COPY_THREADS / a->runLanes, longest = 0;
  for (int t = 0; t < a->nTensors; t++) {
    ulyssesCopyTensor* x = &a->tensors[t];
    x->gridBlocks = 0;
    if (!x->active) continue;
    double share = totalBytes > 0 ? (double)wave * ((double)x->hostBytes / totalBytes) : (double)wave;
    x->gridBlocks = share < 1 ? 1 : share > (double)wave ? wave : (int64_t)share;
    int64_t chunks = (x->hostRuns + x->chunkRuns - 1) / x->chunkRuns;
    int64_t need = (chunks + groupsPerBlock - 1) / groupsPerBlock;
    if (x->gridBlocks > need) x->gridBlocks = need > 0 ? need : 1;
    if (x->gridBlocks > longest) longest = x->gridBlocks;
  }
  return longest;
}

#endif /* ULYSSES_LAUNCH_RULES_H_ */
