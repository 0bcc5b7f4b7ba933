/* The copy launch's policy, chosen on the host from the plan's bounds: the
 * kernel a launch takes (its word size, whether it has the head sum), lanes
 * per group, runs per chunk, and the share of the device's wave of resident
 * blocks each tensor's grid row gets. Pure host code: the kernels (kernels/)
 * run what it writes into their arguments. */
#ifndef ULYSSES_LAUNCH_POLICY_H_
#define ULYSSES_LAUNCH_POLICY_H_

#include "ulysses_args.h"

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
