/* The pack / unpack copy's arguments: each tensor's shape and buffers, the
 * launch's split, and the length table it reads. */
#ifndef ULYSSES_ARGS_H_
#define ULYSSES_ARGS_H_

#include "ulysses_base.h"
#include "ulysses_heads.h"

/*------------------------------------------------------------------------
 * The pack / unpack copy.
 *----------------------------------------------------------------------*/
typedef struct {
  unsigned char* user;     /* the caller's tensor (sequence side for a head slice,
                              head side or gathered for a row scatter) */
  unsigned char* segments; /* this tensor's region of the workspace */
  int64_t batch;
  int64_t packed;
  int64_t heads;      /* the tensor's H */
  int64_t headBytes;  /* headDim * elementSize */
  int64_t rowHeads;   /* row scatter: heads in one user row */
  ulyssesHeadSplit split; /* its heads among the ranks (ulyssesHeadSplitOf) */
  int32_t kind;       /* ULYSSES_COPY_HEAD_SLICE, _ROW_SCATTER or _HEAD_SUM (unpack only) */
  int32_t dataType;   /* head sum: ULYSSES_TYPE_FLOAT32, _FLOAT16 or _BFLOAT16 */
  int32_t order;
  int32_t wordBytes; /* 1, 2, 4, 8 or 16: divides headBytes and both bases */
  int32_t active;    /* 0: this tensor travels straight from/to the user buffer */
  /* Its message group (src/plan.h): tensors groupFirst .. groupFirst +
   * groupSize - 1 (itself among them) share one region, their segments with
   * each peer back to back, peer after peer. Row scatter: the group's bytes
   * per row of a batch entry (batch x row bytes, summed over the group) and
   * those of the members before it. */
  int32_t groupFirst;
  int32_t groupSize;
  int64_t groupRowBytes;
  int64_t beforeRowBytes;
  int64_t chunkRuns; /* consecutive runs one group of lanes moves together, >= 1 */
  int64_t hostRuns;  /* the host's bound of its runs (the device may find fewer) */
  int64_t hostBytes; /* the host's bound of the bytes it reads and writes */
  int64_t gridBlocks; /* blocks of its grid row that work (src/launch_policy.c) */
} ulyssesCopyTensor;

typedef struct {
  int32_t toSegments; /* 1: pack, 0: unpack */
  int32_t nRanks;
  int32_t rank;
  int32_t nTensors;
  int32_t runLanes; /* lanes per run: a power of two, 1 .. ULYSSES_WARP_LANES */
  int32_t rowTiles; /* head slices: 1 walks the chunks tile by tile, 0 peer by peer
                       (ulyssesChunkFirstRun) */
  /* The length table in device memory (ulyssesTableArgs wrote it)... */
  const int64_t* lengths;
  const int64_t* offsets;
  const int64_t* slotOffsets;
  ulyssesCopyTensor tensors[ULYSSES_KERNEL_MAX_TENSORS];
  /* ...or, in exact mode with at most ULYSSES_INLINE_TABLE_RANKS ranks, the
   * host's table carried in the launch's parameters, so that the exchange
   * launches no table kernel (a slot is then the real length). */
  int32_t inlineTable;
  int64_t inlineLengths[ULYSSES_INLINE_TABLE_RANKS];
  int64_t inlineOffsets[ULYSSES_INLINE_TABLE_RANKS + 1];
  /* The kernel the launch takes (src/launch_policy.c): the word size all its
   * tensors move (0: each its own) and whether one is a head sum. The
   * launcher picks the instantiation by them; inside, they are constants. */
  int32_t launchWordBytes;
  int32_t launchSums;
} ulyssesCopyArgs;

/* The table a copy reads: the inline one, or the one in device memory. */
ULYSSES_HD const int64_t* ulyssesCopyLengths(const ulyssesCopyArgs* a) {
  return a->inlineTable ? a->inlineLengths : a->lengths;
}

ULYSSES_HD const int64_t* ulyssesCopyOffsets(const ulyssesCopyArgs* a) {
  return a->inlineTable ? a->inlineOffsets : a->offsets;
}

ULYSSES_HD const int64_t* ulyssesCopySlotOffsets(const ulyssesCopyArgs* a) {
  return a->inlineTable ? a->inlineOffsets : a->slotOffsets;
}

#endif /* ULYSSES_ARGS_H_ */
