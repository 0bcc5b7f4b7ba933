#include "reference.h"

#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------
 * ref*: one element at a time, from the contract's index formulas.
 * ------------------------------------------------------------------------- */

int64_t refHeadBegin(const refShape *shape, int rank)
{
  const int64_t baseHeads = shape->heads / shape->nRanks;
  const int64_t ranksWithExtraHead = shape->heads % shape->nRanks;
  const int64_t rankIndex = rank;
  return rankIndex * baseHeads + (rankIndex < ranksWithExtraHead ? rankIndex : ranksWithExtraHead);
}

int64_t refHeadCount(const refShape *shape, int rank)
{
  const int64_t baseHeads = shape->heads / shape->nRanks;
  const int64_t ranksWithExtraHead = shape->heads % shape->nRanks;
  return baseHeads + (rank < ranksWithExtraHead ? 1 : 0);
}

int refHeadOwner(const refShape *shape, int64_t head)
{
  const int64_t baseHeads = shape->heads / shape->nRanks;
  const int64_t ranksWithExtraHead = shape->heads % shape->nRanks;
  /* The first ranksWithExtraHead groups hold baseHeads + 1 heads each; past
   * them every group holds baseHeads (> 0 there, since heads remain). */
  const int64_t headsInLargerGroups = ranksWithExtraHead * (baseHeads + 1);
  if (head < headsInLargerGroups) {
    return (int)(head / (baseHeads + 1));
  }
  return (int)(ranksWithExtraHead + (head - headsInLargerGroups) / baseHeads);
}

int64_t refTotalLength(const refShape *shape)
{
  return refOffset(shape, shape->nRanks);
}

int64_t refOffset(const refShape *shape, int rank)
{
  int64_t offset = 0;
  for (int r = 0; r < rank; ++r) {
    offset += shape->lengths[r];
  }
  return offset;
}

/* Elements in one (position, batch) row restricted to headCount heads. */
static int64_t refRowElements(const refShape *shape, int64_t headCount)
{
  return (int64_t)shape->packed * headCount * shape->headDim;
}

size_t refSeqBytes(const refShape *shape, int rank)
{
  return (size_t)(shape->batch * shape->lengths[rank] * refRowElements(shape, shape->heads) *
                  shape->elementSize);
}

size_t refHeadSideBytes(const refShape *shape, int rank)
{
  return (size_t)(shape->batch * refTotalLength(shape) *
                  refRowElements(shape, refHeadCount(shape, rank)) * shape->elementSize);
}

size_t refGatherBytes(const refShape *shape)
{
  return (size_t)(shape->batch * refTotalLength(shape) * refRowElements(shape, shape->heads) *
                  shape->elementSize);
}

int64_t refElementIndex(const refShape *shape, int64_t positions, int64_t headCount, refCoord at)
{
  const int64_t row = shape->sbhd ? at.s * shape->batch + at.b : at.b * positions + at.s;
  return ((row * shape->packed + at.t) * headCount + at.h) * shape->headDim + at.d;
}

/* The rank whose slice holds global position `position`; *positionInRank gets
 * its index inside that slice. Empty slices own no position, so they are
 * never returned. */
static int refRankOfPosition(const refShape *shape, int64_t position, int64_t *positionInRank)
{
  int64_t sliceBegin = 0;
  int rank = 0;
  while (position >= sliceBegin + shape->lengths[rank]) {
    sliceBegin += shape->lengths[rank];
    ++rank;
  }
  *positionInRank = position - sliceBegin;
  return rank;
}

static void refCopyElement(void *destination, int64_t destinationIndex, const void *source,
                           int64_t sourceIndex, int64_t elementSize)
{
  memcpy((unsigned char *)destination + (size_t)(destinationIndex * elementSize),
         (const unsigned char *)source + (size_t)(sourceIndex * elementSize), (size_t)elementSize);
}

void refSeqToHead(const refShape *shape, const void *const *inputs, void *const *outputs)
{
  const int64_t totalLength = refTotalLength(shape);
  for (int headRank = 0; headRank < shape->nRanks; ++headRank) {
    const int64_t headBegin = refHeadBegin(shape, headRank);
    const int64_t headCount = refHeadCount(shape, headRank);
    for (int64_t b = 0; b < shape->batch; ++b) {
      for (int64_t position = 0; position < totalLength; ++position) {
        int64_t positionInRank;
        const int seqRank = refRankOfPosition(shape, position, &positionInRank);
        for (int64_t t = 0; t < shape->packed; ++t) {
          for (int64_t h = 0; h < headCount; ++h) {
            for (int64_t d = 0; d < shape->headDim; ++d) {
              refCopyElement(
                  outputs[headRank],
                  refElementIndex(shape, totalLength, headCount, (refCoord){b, position, t, h, d}),
                  inputs[seqRank],
                  refElementIndex(shape, shape->lengths[seqRank], shape->heads,
                                  (refCoord){b, positionInRank, t, headBegin + h, d}),
                  shape->elementSize);
            }
          }
        }
      }
    }
  }
}

void refHeadToSeq(const refShape *shape, const void *const *inputs, void *const *outputs)
{
  const int64_t totalLength = refTotalLength(shape);
  for (int seqRank = 0; seqRank < shape->nRanks; ++seqRank) {
    const int64_t length = shape->lengths[seqRank];
    const int64_t offset = refOffset(shape, seqRank);
    for (int64_t b = 0; b < shape->batch; ++b) {
      for (int64_t s = 0; s < length; ++s) {
        for (int64_t t = 0; t < shape->packed; ++t) {
          for (int64_t h = 0; h < shape->heads; ++h) {
            const int headRank = refHeadOwner(shape, h);
            const int64_t headBegin = refHeadBegin(shape, headRank);
            const int64_t headCount = refHeadCount(shape, headRank);
            for (int64_t d = 0; d < shape->headDim; ++d) {
              refCopyElement(
                  outputs[seqRank],
                  refElementIndex(shape, length, shape->heads, (refCoord){b, s, t, h, d}),
                  inputs[headRank],
                  refElementIndex(shape, totalLength, headCount,
                                  (refCoord){b, offset + s, t, h - headBegin, d}),
                  shape->elementSize);
            }
          }
        }
      }
    }
  }
}

void refAllGather(const refShape *shape, const void *const *inputs, void *const *outputs)
{
  const int64_t totalLength = refTotalLength(shape);
  for (int destinationRank = 0; destinationRank < shape->nRanks; ++destinationRank) {
    for (int64_t b = 0; b < shape->batch; ++b) {
      for (int64_t position = 0; position < totalLength; ++position) {
        int64_t positionInRank;
        const int seqRank = refRankOfPosition(shape, position, &positionInRank);
        for (int64_t t = 0; t < shape->packed; ++t) {
          for (int64_t h = 0; h < shape->heads; ++h) {
            for (int64_t d = 0; d < shape->headDim; ++d) {
              refCopyElement(outputs[destinationRank],
                             refElementIndex(shape, totalLength, shape->heads,
                                             (refCoord){b, position, t, h, d}),
                             inputs[seqRank],
                             refElementIndex(shape, shape->lengths[seqRank], shape->heads,
                                             (refCoord){b, positionInRank, t, h, d}),
                             shape->elementSize);
            }
          }
        }
      }
    }
  }
}

/* ---------------------------------------------------------------------------
 * naive*: build the global tensor G = [B, Ltot, T, H, D] (batch-first whatever
 * the order) by concatenating the slices, then cut it up. Sequence-first
 * buffers are handled by swapping their two leading dimensions on the way in
 * and out, so the core never sees the order. Nothing here calls ref*.
 * ------------------------------------------------------------------------- */

typedef struct naivePlan {
  int64_t *headCount;    /* per rank */
  int64_t *headBegin;    /* per rank */
  int64_t *sliceBegin;   /* per rank: first global position of its slice */
  int64_t totalLength;
  size_t elementBytes;   /* E */
  size_t headBytes;      /* D*E: one head of one (position, batch, t) */
  size_t globalRowBytes; /* T*H*D*E: one (position, batch) row of G */
  size_t globalBytes;    /* all of G */
} naivePlan;

static void *naiveAllocate(size_t bytes)
{
  if (bytes == 0) {
    return NULL;
  }
  void *memory = malloc(bytes);
  if (memory == NULL) {
    abort();
  }
  return memory;
}

static naivePlan naiveMakePlan(const refShape *shape)
{
  const size_t rankCount = (size_t)shape->nRanks;
  naivePlan plan;
  plan.headCount = naiveAllocate(rankCount * sizeof(int64_t));
  plan.headBegin = naiveAllocate(rankCount * sizeof(int64_t));
  plan.sliceBegin = naiveAllocate(rankCount * sizeof(int64_t));

  /* Deal the heads out like cards: rank 0, 1, ..., P-1, rank 0, ... Lower
   * ranks are dealt first, so they are the ones left with one more. */
  for (size_t rank = 0; rank < rankCount; ++rank) {
    plan.headCount[rank] = 0;
  }
  size_t dealTo = 0;
  for (int64_t head = 0; head < shape->heads; ++head) {
    plan.headCount[dealTo] += 1;
    dealTo = (dealTo + 1) % rankCount;
  }

  int64_t nextHead = 0;
  int64_t nextPosition = 0;
  for (size_t rank = 0; rank < rankCount; ++rank) {
    plan.headBegin[rank] = nextHead;
    nextHead += plan.headCount[rank];
    plan.sliceBegin[rank] = nextPosition;
    nextPosition += shape->lengths[rank];
  }
  plan.totalLength = nextPosition;

  plan.elementBytes = (size_t)shape->elementSize;
  plan.headBytes = (size_t)shape->headDim * plan.elementBytes;
  plan.globalRowBytes = (size_t)shape->packed * (size_t)shape->heads * plan.headBytes;
  plan.globalBytes = (size_t)shape->batch * (size_t)plan.totalLength * plan.globalRowBytes;
  return plan;
}

static void naiveFreePlan(naivePlan *plan)
{
  free(plan->headCount);
  free(plan->headBegin);
  free(plan->sliceBegin);
}

/* destination[i][o] = source[o][i] for blocks of blockBytes. Swapping
 * [L, B] and [B, L] row blocks is exactly SBHD <-> BSHD. */
static void naiveSwapLeadingDimensions(void *destination, const void *source, size_t outerCount,
                                       size_t innerCount, size_t blockBytes)
{
  if (outerCount * innerCount * blockBytes == 0) {
    return;
  }
  unsigned char *to = destination;
  const unsigned char *from = source;
  for (size_t outer = 0; outer < outerCount; ++outer) {
    for (size_t inner = 0; inner < innerCount; ++inner) {
      memcpy(to + (inner * outerCount + outer) * blockBytes,
             from + (outer * innerCount + inner) * blockBytes, blockBytes);
    }
  }
}

/* A batch-first copy [B, positions, rowBytes] of a rank's buffer; the caller
 * frees it. */
static unsigned char *naiveBatchFirstCopy(const refShape *shape, const void *buffer,
                                          size_t positions, size_t rowBytes)
{
  const size_t batch = (size_t)shape->batch;
  const size_t bytes = batch * positions * rowBytes;
  unsigned char *copy = naiveAllocate(bytes);
  if (bytes == 0) {
    return copy;
  }
  if (shape->sbhd) {
    naiveSwapLeadingDimensions(copy, buffer, positions, batch, rowBytes);
  } else {
    memcpy(copy, buffer, bytes);
  }
  return copy;
}

/* Writes a batch-first [B, positions, rowBytes] tensor into a rank's buffer in
 * the shape's order. */
static void naiveStoreInOrder(const refShape *shape, void *buffer, const unsigned char *batchFirst,
                              size_t positions, size_t rowBytes)
{
  const size_t batch = (size_t)shape->batch;
  const size_t bytes = batch * positions * rowBytes;
  if (bytes == 0) {
    return;
  }
  if (shape->sbhd) {
    naiveSwapLeadingDimensions(buffer, batchFirst, batch, positions, rowBytes);
  } else {
    memcpy(buffer, batchFirst, bytes);
  }
}

/* G from the sequence-side buffers: for each batch entry, the ranks' slices
 * one after another. */
static unsigned char *naiveConcatenateSlices(const refShape *shape, const naivePlan *plan,
                                             const void *const *inputs)
{
  unsigned char *global = naiveAllocate(plan->globalBytes);
  for (int rank = 0; rank < shape->nRanks; ++rank) {
    const size_t length = (size_t)shape->lengths[rank];
    if (length == 0) {
      continue;
    }
    unsigned char *slice = naiveBatchFirstCopy(shape, inputs[rank], length, plan->globalRowBytes);
    const size_t sliceBytes = length * plan->globalRowBytes;
    for (size_t b = 0; b < (size_t)shape->batch; ++b) {
      memcpy(global + (b * (size_t)plan->totalLength + (size_t)plan->sliceBegin[rank]) *
                          plan->globalRowBytes,
             slice + b * sliceBytes, sliceBytes);
    }
    free(slice);
  }
  return global;
}

/* The inverse of naiveConcatenateSlices: each rank gets its positions of G. */
static void naiveSplitSlices(const refShape *shape, const naivePlan *plan,
                             const unsigned char *global, void *const *outputs)
{
  for (int rank = 0; rank < shape->nRanks; ++rank) {
    const size_t length = (size_t)shape->lengths[rank];
    if (length == 0) {
      continue;
    }
    const size_t sliceBytes = length * plan->globalRowBytes;
    unsigned char *slice = naiveAllocate((size_t)shape->batch * sliceBytes);
    for (size_t b = 0; b < (size_t)shape->batch; ++b) {
      memcpy(slice + b * sliceBytes,
             global + (b * (size_t)plan->totalLength + (size_t)plan->sliceBegin[rank]) *
                          plan->globalRowBytes,
             sliceBytes);
    }
    naiveStoreInOrder(shape, outputs[rank], slice, length, plan->globalRowBytes);
    free(slice);
  }
}

/* G viewed as [B*Ltot*T, H*D*E]: a rank's head group is one contiguous run of
 * headCount*D*E bytes in every such block. */
static size_t naiveHeadBlockCount(const refShape *shape, const naivePlan *plan)
{
  return (size_t)shape->batch * (size_t)plan->totalLength * (size_t)shape->packed;
}

void naiveSeqToHead(const refShape *shape, const void *const *inputs, void *const *outputs)
{
  naivePlan plan = naiveMakePlan(shape);
  unsigned char *global = naiveConcatenateSlices(shape, &plan, inputs);
  const size_t blockCount = naiveHeadBlockCount(shape, &plan);
  const size_t globalBlockBytes = (size_t)shape->heads * plan.headBytes;
  for (int rank = 0; rank < shape->nRanks; ++rank) {
    const size_t groupBytes = (size_t)plan.headCount[rank] * plan.headBytes;
    if (groupBytes * blockCount == 0) {
      continue;
    }
    unsigned char *group = naiveAllocate(blockCount * groupBytes);
    for (size_t block = 0; block < blockCount; ++block) {
      memcpy(group + block * groupBytes,
             global + block * globalBlockBytes + (size_t)plan.headBegin[rank] * plan.headBytes,
             groupBytes);
    }
    naiveStoreInOrder(shape, outputs[rank], group, (size_t)plan.totalLength,
                      (size_t)shape->packed * groupBytes);
    free(group);
  }
  free(global);
  naiveFreePlan(&plan);
}

void naiveHeadToSeq(const refShape *shape, const void *const *inputs, void *const *outputs)
{
  naivePlan plan = naiveMakePlan(shape);
  unsigned char *global = naiveAllocate(plan.globalBytes);
  const size_t blockCount = naiveHeadBlockCount(shape, &plan);
  const size_t globalBlockBytes = (size_t)shape->heads * plan.headBytes;
  for (int rank = 0; rank < shape->nRanks; ++rank) {
    const size_t groupBytes = (size_t)plan.headCount[rank] * plan.headBytes;
    if (groupBytes * blockCount == 0) {
      continue;
    }
    unsigned char *group = naiveBatchFirstCopy(shape, inputs[rank], (size_t)plan.totalLength,
                                               (size_t)shape->packed * groupBytes);
    for (size_t block = 0; block < blockCount; ++block) {
      memcpy(global + block * globalBlockBytes + (size_t)plan.headBegin[rank] * plan.headBytes,
             group + block * groupBytes, groupBytes);
    }
    free(group);
  }
  naiveSplitSlices(shape, &plan, global, outputs);
  free(global);
  naiveFreePlan(&plan);
}

void naiveAllGather(const refShape *shape, const void *const *inputs, void *const *outputs)
{
  naivePlan plan = naiveMakePlan(shape);
  unsigned char *global = naiveConcatenateSlices(shape, &plan, inputs);
  for (int rank = 0; rank < shape->nRanks; ++rank) {
    naiveStoreInOrder(shape, outputs[rank], global, (size_t)plan.totalLength,
                      plan.globalRowBytes);
  }
  free(global);
  naiveFreePlan(&plan);
}

/* ---------------------------------------------------------------------------
 * Test data.
 * ------------------------------------------------------------------------- */

uint64_t refRandom(uint64_t *state)
{
  *state += UINT64_C(0x9E3779B97F4A7C15);
  uint64_t mixed = *state;
  mixed = (mixed ^ (mixed >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
  mixed = (mixed ^ (mixed >> 27)) * UINT64_C(0x94D049BB133111EB);
  return mixed ^ (mixed >> 31);
}

void refFillPattern(void *buffer, size_t bytes, uint64_t seed)
{
  unsigned char *out = buffer;
  uint64_t state = seed;
  uint64_t word = 0;
  for (size_t i = 0; i < bytes; ++i) {
    const unsigned byteInWord = (unsigned)(i % 8);
    if (byteInWord == 0) {
      word = refRandom(&state);
    }
    out[i] = (unsigned char)(word >> (8 * byteInWord));
  }
}
