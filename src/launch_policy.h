/* The copy launch's policy, chosen on the host from the plan's bounds: the
 * kernel a launch takes (its word size, whether it has the head sum), lanes
 * per group, runs per chunk, and the share of the device's wave of resident
 * blocks each tensor's grid row gets. Pure host code: the kernels (kernels/)
 * run what it writes into their arguments. */
#ifndef ULYSSES_LAUNCH_POLICY_H_
#define ULYSSES_LAUNCH_POLICY_H_

#include "ulysses_args.h"

/* The knobs of the rules below (compile-time, on the C sources: only the host
 * reads them). Words each lane of a group moves per chunk of runs
 * (ulyssesCopyChunkThread): enough that the index arithmetic of a chunk is
 * small against its copy. */
#ifndef ULYSSES_CHUNK_WORDS_PER_LANE
#define ULYSSES_CHUNK_WORDS_PER_LANE 8
#endif
/* Runs shorter than this get groups of at least a cache line per round of
 * loads and longer chunks: measured on an H200 (bench/RESULTS.md, d8174f7),
 * runs of 256 B to 1 KiB reached 0.71-0.90 of a copy, runs of 2 KiB and more
 * 0.90-0.94. */
#ifndef ULYSSES_SHORT_RUN_BYTES
#define ULYSSES_SHORT_RUN_BYTES 2048
#endif
#ifndef ULYSSES_SHORT_CHUNK_WORDS_PER_LANE
#define ULYSSES_SHORT_CHUNK_WORDS_PER_LANE 32
#endif
#define ULYSSES_LINE_BYTES 128
/* Threads the chunks of a launch must keep busy before they may grow: a few
 * waves of the largest GPU (an H200 holds 132 x 2 blocks of 256), so that
 * longer chunks never leave multiprocessors idle (the whole-row chunks of
 * 2f341a6 did, at P = 16 below 256 MiB). */
#ifndef ULYSSES_FILL_THREADS
#define ULYSSES_FILL_THREADS (1 << 18)
#endif
#if ULYSSES_CHUNK_WORDS_PER_LANE < 1 || ULYSSES_SHORT_CHUNK_WORDS_PER_LANE < 1 || \
    ULYSSES_FILL_THREADS < 1
#error "the chunk knobs must be at least 1"
#endif

/* Lanes per group for a tensor whose longest run has `words` words of
 * wordBytes (for a head sum: units of ulyssesSumUnitBytes): the smallest
 * power of two that leaves each lane at most ULYSSES_WORDS_IN_FLIGHT of them,
 * at most a warp, so that short runs share a warp; for a run shorter than
 * ULYSSES_SHORT_RUN_BYTES, at least the lanes whose words make a cache line,
 * so that a round of a group's loads reads whole lines. The launch takes the
 * largest over its tensors. */
int ulyssesGroupLanes(int64_t words, int wordBytes);

/* Consecutive runs per chunk for a tensor of `runs` runs of at most `words`
 * words of wordBytes, moved by groups of `lanes` lanes: about
 * ULYSSES_CHUNK_WORDS_PER_LANE words per lane (runs below
 * ULYSSES_SHORT_RUN_BYTES: ULYSSES_SHORT_CHUNK_WORDS_PER_LANE), but never so
 * many that fewer than ULYSSES_FILL_THREADS threads get a chunk; at least 1. */
int64_t ulyssesChunkRuns(int64_t words, int wordBytes, int64_t runs, int lanes);

/* The launch parameters of args, whose tensors are filled (their word size,
 * kind, whether active): the kernel it takes (launchWordBytes: the tensors'
 * common word size, so that the kernel is compiled for one size and spends
 * no registers on the others, 0 where they differ; launchSums: whether a
 * tensor is a head sum), lanes for the tensor that needs the most, then each
 * tensor's chunk for those lanes, in the words it moves (the launch's common
 * size, or its own), and the bounds the wave's share reads. runBytes[t],
 * runs[t]: tensor t's longest run and its runs, bounded on the host. */
void ulyssesChooseCopyLaunch(ulyssesCopyArgs* args, const int64_t* runBytes, const int64_t* runs);

/* Shares a wave of `wave` resident blocks of ULYSSES_COPY_THREADS between the
 * launch's tensors in proportion to the bytes each moves (each active tensor
 * at least one block), none past the blocks its chunks need: each tensor's
 * gridBlocks. Returns the longest grid row. The backend gives it one wave of
 * the device (ulyssesCopyWave) before the launch, so that the rows together
 * fill the GPU once and the grid-stride loop (ulyssesCopyBlockThread) covers
 * the rest. */
int64_t ulyssesShareWave(ulyssesCopyArgs* args, int64_t wave);

#endif /* ULYSSES_LAUNCH_POLICY_H_ */
