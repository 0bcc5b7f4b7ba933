/* The index arithmetic of every kernel, and each kernel's per-thread work,
 * as functions of the thread's coordinates, in headers by concept (this one:
 * a copy thread's dispatch over chunks and runs). Each compiles under nvcc
 * (host and device) and as plain C11, so that the CPU tests run exactly the
 * code the GPU runs, for every coordinate of a launch.
 *
 * Vocabulary. A rank's tensor is a list of rows (one sequence position of one
 * batch entry), each row `packed` groups of `heads` heads of headBytes bytes.
 * A segment is what one rank sends to one peer for one tensor; it is laid out
 * as the rows it carries, in the order of the sequence-side tensor, each row
 * cut to the heads it carries. A slot is the room a segment has: batch *
 * slot length rows (the slot length is the capacity in capacity mode), laid
 * out like the sender's tensor, so its real rows lead each batch entry
 * (batch first) or the whole slot (sequence first).
 * Two copies exist, each used in both directions (pack: user -> segments,
 * unpack: segments -> user):
 *  - head slice: the sequence-side tensor <-> one segment per peer p, holding
 *    every local row cut to p's heads;
 *  - row scatter: the head-side (or gathered) tensor <-> one segment per peer
 *    r, holding r's rows.
 * A run is the contiguous bytes one (row, packed index, peer) moves.
 *
 * How the work is split (the launch parameters, chosen on the host by
 * ulyssesGroupLanes and ulyssesChunkRuns, src/launch_policy.h with the
 * chunk knobs below; ULYSSES_WORDS_IN_FLIGHT is the kernels' own):
 *  - a group of runLanes lanes of a warp takes a chunk of chunkRuns
 *    consecutive runs of one tensor, found by a grid-stride loop;
 *  - if the chunk's runs lie at fixed strides (ulyssesChunkSweep), the group
 *    sweeps them as one list of words, lane l taking words l, l + runLanes,
 *    ..., ULYSSES_WORDS_IN_FLIGHT loads before as many stores; else run by
 *    run, the index arithmetic once per run;
 *  - long runs: lanes so that each has up to ULYSSES_WORDS_IN_FLIGHT words of
 *    a run, chunks of ULYSSES_CHUNK_WORDS_PER_LANE words per lane (one run);
 *  - short runs (below ULYSSES_SHORT_RUN_BYTES): at least a cache line per
 *    round of the group's loads and ULYSSES_SHORT_CHUNK_WORDS_PER_LANE words
 *    per lane per chunk, as long as the chunks still give
 *    ULYSSES_FILL_THREADS threads work;
 *  - a head sum: a chunk is chunkRuns consecutive rows of one kv head
 *    (ulyssesSumChunkThread), the lanes over the head's units and, where a
 *    run has fewer units than the group lanes, over several runs. */
#ifndef ULYSSES_INDEX_H_
#define ULYSSES_INDEX_H_

#include "ulysses_base.h"
#include "ulysses_heads.h"
#include "ulysses_table.h"
#include "ulysses_args.h"
#include "ulysses_rows.h"
#include "ulysses_sum.h"
#include "ulysses_copy.h"

/* One thread's share of one run, in words of wordBytes (on the device a
 * constant: the launch's launchWordBytes, or the row's own word where the
 * tensors' words differ, segment_copy.cu). */
ULYSSES_HD void ulyssesCopyRunThread(const ulyssesCopyArgs* a, int t, int64_t run, int lane,
                                     int laneCount, int wordBytes) {
  const ulyssesCopyTensor* x = &a->tensors[t];
  if (wordBytes == 0) wordBytes = x->wordBytes;
  ulyssesRun r = ulyssesCopyRunAt(a, t, run);
  /* A peer that owns no heads has empty runs, whose buffers may be NULL. */
  if (r.bytes == 0) return;
  ulyssesSweep sweep = ulyssesMoveSweep(a, x, &r, 1, 0);
  ulyssesCopyRunsThread(&sweep, wordBytes, lane, laneCount);
}

/* A head slice's runs of one peer: batch x local length x packed. */
ULYSSES_HD int64_t ulyssesSliceRunsPerPeer(const ulyssesCopyArgs* a, const ulyssesCopyTensor* x) {
  return x->batch * ulyssesCopyLengths(a)[a->rank] * x->packed;
}

/* Chunks of x->chunkRuns runs that tensor t's runs make: a head slice's for
 * each peer (tiles of its consecutive rows), a head sum's by
 * ulyssesSumChunkCount. */
ULYSSES_HD int64_t ulyssesCopyChunkCount(const ulyssesCopyArgs* a, int t) {
  const ulyssesCopyTensor* x = &a->tensors[t];
  if (x->kind == ULYSSES_COPY_HEAD_SUM) return ulyssesSumChunkCount(a, t);
  if (x->kind == ULYSSES_COPY_HEAD_SLICE)
    return (ulyssesSliceRunsPerPeer(a, x) + x->chunkRuns - 1) / x->chunkRuns * a->nRanks;
  return (ulyssesCopyRunCount(a, t) + x->chunkRuns - 1) / x->chunkRuns;
}

/* The first run of chunk `chunk` of tensor t (not a head sum) and *count,
 * its runs. A head slice's chunk is a tile of one peer's consecutive rows,
 * the chunks peer by peer (each peer's slice of every row, then the next
 * peer's) or, with a->rowTiles, tile by tile (every peer's slice of the
 * same rows side by side: whole user rows at a time, each peer's segment
 * one stream). */
ULYSSES_HD int64_t ulyssesChunkFirstRun(const ulyssesCopyArgs* a, int t, int64_t chunk,
                                        int64_t* count) {
  const ulyssesCopyTensor* x = &a->tensors[t];
  int64_t firstRun, runs;
  if (x->kind == ULYSSES_COPY_HEAD_SLICE) {
    int64_t perPeer = ulyssesSliceRunsPerPeer(a, x);
    int64_t tiles = (perPeer + x->chunkRuns - 1) / x->chunkRuns;
    int64_t outer = chunk / (a->rowTiles ? a->nRanks : tiles);
    int64_t inner = chunk - outer * (a->rowTiles ? a->nRanks : tiles);
    int64_t peer = a->rowTiles ? inner : outer, tile = a->rowTiles ? outer : inner;
    firstRun = peer * perPeer + tile * x->chunkRuns;
    runs = (peer + 1) * perPeer;
  } else {
    firstRun = chunk * x->chunkRuns;
    runs = ulyssesCopyRunCount(a, t);
  }
  *count = runs - firstRun < x->chunkRuns ? runs - firstRun : x->chunkRuns;
  return firstRun;
}

/* Whether the count runs of tensor t from firstRun lie at the fixed strides
 * of consecutive runs in both buffers (one row, or one packed index, apart:
 * userStride in the user buffer, the run's size in the segments), so that one
 * sweep moves them all with the index arithmetic done twice per chunk rather
 * than once per run; *first: the first run. Inside a piece consecutive runs
 * are at least those strides apart and pieces only grow with the run, so when
 * the first and last run share a piece and are exactly (count - 1) strides
 * apart, every run in between is where the sweep puts it. */
ULYSSES_HD int ulyssesChunkSweep(const ulyssesCopyArgs* a, int t, int64_t firstRun, int64_t count,
                                 ulyssesRun* first, int64_t* userStride) {
  const ulyssesCopyTensor* x = &a->tensors[t];
  if (count < 2 || x->kind == ULYSSES_COPY_HEAD_SUM) return 0;
  *first = ulyssesCopyRunAt(a, t, firstRun);
  ulyssesRun last = ulyssesCopyRunAt(a, t, firstRun + count - 1);
  *userStride = x->kind == ULYSSES_COPY_HEAD_SLICE ? x->heads * x->headBytes : first->bytes;
  return first->piece == last.piece && first->bytes == last.bytes &&
         last.userOffset - first->userOffset == (count - 1) * *userStride &&
         last.segmentOffset - first->segmentOffset == (count - 1) * first->bytes;
}

/* One thread's share of chunk `chunk` of tensor t, in words of wordBytes
 * (as ulyssesCopyRunThread): one sweep where ulyssesChunkSweep allows
 * it, else run by run; a head sum's chunk by ulyssesSumChunkThread. sums:
 * whether the launch has a head sum (its launchSums); a constant in each
 * kernel, so that a kernel without one carries none of the sum's code or
 * registers. */
ULYSSES_HD void ulyssesCopyChunkThread(const ulyssesCopyArgs* a, int t, int64_t chunk, int lane,
                                       int laneCount, int wordBytes, int sums) {
  const ulyssesCopyTensor* x = &a->tensors[t];
  if (sums && x->kind == ULYSSES_COPY_HEAD_SUM) {
    ulyssesSumChunkThread(a, t, chunk, lane, laneCount, wordBytes);
    return;
  }
  if (wordBytes == 0) wordBytes = x->wordBytes;
  ulyssesRun r;
  int64_t count, userStride;
  int64_t firstRun = ulyssesChunkFirstRun(a, t, chunk, &count);
  if (ulyssesChunkSweep(a, t, firstRun, count, &r, &userStride)) {
    if (r.bytes == 0) return;
    ulyssesSweep sweep = ulyssesMoveSweep(a, x, &r, count, userStride);
    ulyssesCopyRunsThread(&sweep, wordBytes, lane, laneCount);
    return;
  }
  for (int64_t k = 0; k < count; k++)
    ulyssesCopyRunThread(a, t, firstRun + k, lane, laneCount, wordBytes);
}

/* Thread `thread` of block `block` of tensor t's grid row: its group of
 * runLanes lanes takes chunks group, group + the row's groups, ... (a
 * grid-stride loop over the row's gridBlocks blocks; the row's other blocks
 * have nothing to do). wordBytes, sums: as ulyssesCopyChunkThread. */
ULYSSES_HD void ulyssesCopyBlockThread(const ulyssesCopyArgs* a, int t, int64_t block, int thread,
                                       int wordBytes, int sums) {
  const ulyssesCopyTensor* x = &a->tensors[t];
  if (block >= x->gridBlocks) return;
  int lanes = a->runLanes;
  int64_t groupsPerBlock = ULYSSES_COPY_THREADS / lanes;
  int64_t chunks = ulyssesCopyChunkCount(a, t);
  for (int64_t chunk = block * groupsPerBlock + thread / lanes; chunk < chunks;
       chunk += x->gridBlocks * groupsPerBlock)
    ulyssesCopyChunkThread(a, t, chunk, thread % lanes, lanes, wordBytes, sums);
}

#endif /* ULYSSES_INDEX_H_ */
