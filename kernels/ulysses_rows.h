/* Row addressing: which rank's rows hold a global position, where a real
 * row lies in a padded tensor, and each run's place in the user buffer and
 * in the segments. */
#ifndef ULYSSES_ROWS_H_
#define ULYSSES_ROWS_H_

#include "ulysses_args.h"
#include "ulysses_heads.h"

/* The rank whose rows hold global position g: the largest r with
 * offsets[r] <= g (ranks of length zero own nothing: a later rank with the
 * same offset wins). Requires 0 <= g < offsets[nRanks]. */
ULYSSES_HD int ulyssesRowOwner(const int64_t* offsets, int nRanks, int64_t g) {
  int low = 0, high = nRanks - 1;
  while (low < high) {
    int mid = low + (high - low + 1) / 2;
    if (offsets[mid] <= g)
      low = mid;
    else
      high = mid - 1;
  }
  return low;
}

typedef struct {
  int64_t userOffset;
  int64_t segmentOffset;
  int64_t bytes;
  /* Runs of one piece follow each other at fixed strides or further apart,
   * never closer (see ulyssesChunkSweep); pieces increase with the run. */
  int64_t piece;
} ulyssesRun;

/* How many runs tensor t has, from the device-side lengths. */
ULYSSES_HD int64_t ulyssesCopyRunCount(const ulyssesCopyArgs* a, int t) {
  const ulyssesCopyTensor* x = &a->tensors[t];
  if (!x->active) return 0;
  if (x->kind == ULYSSES_COPY_HEAD_SLICE)
    /* In the order the plan bounded the product: local runs, then peers. */
    return x->batch * ulyssesCopyLengths(a)[a->rank] * x->packed * a->nRanks;
  if (x->kind == ULYSSES_COPY_HEAD_SUM)
    return x->batch * ulyssesCopyLengths(a)[a->rank] * x->packed * x->heads;
  return x->batch * ulyssesCopyOffsets(a)[a->nRanks];
}

/* The row of the sequence-side tensor holding its realRow-th real row. */
ULYSSES_HD int64_t ulyssesLocalRow(const ulyssesCopyArgs* a, const ulyssesCopyTensor* x,
                                   int64_t realRow) {
  int64_t length = ulyssesCopyLengths(a)[a->rank];
  int64_t slotLength = ulyssesCopySlotOffsets(a)[a->rank + 1] - ulyssesCopySlotOffsets(a)[a->rank];
  if (x->order != ULYSSES_ORDER_BSHD) return realRow;
  /* Each remainder from its quotient: one 64-bit division, not two. */
  int64_t b = realRow / length;
  return b * slotLength + realRow - b * length;
}

/* Where tensor t's head-slice segment to peer starts in its group's region
 * (ulyssesCopyTensor.groupFirst): every member's rows cut to the heads of
 * the peers before this one, then the members' before t cut to this peer's
 * (headPrefix: t's own at peer). The slot's rows are the same for every
 * member: this rank's. */
ULYSSES_HD int64_t ulyssesSliceSegmentBase(const ulyssesCopyArgs* a, int t, int peer,
                                           int64_t headPrefix) {
  const ulyssesCopyTensor* x = &a->tensors[t];
  int64_t slotLength = ulyssesCopySlotOffsets(a)[a->rank + 1] - ulyssesCopySlotOffsets(a)[a->rank];
  int64_t bytes = x->batch * x->packed * x->headBytes * headPrefix;
  for (int m = x->groupFirst; m < x->groupFirst + x->groupSize; m++) {
    if (m == t) continue;
    const ulyssesCopyTensor* y = &a->tensors[m];
    int64_t begin, count = ulyssesSplitPeerHeads(&y->split, peer, &begin);
    int64_t memberBytes = y->batch * y->packed * y->headBytes;
    bytes += memberBytes * ulyssesSplitHeadPrefix(&y->split, peer) + (m < t ? memberBytes * count : 0);
  }
  return slotLength * bytes;
}

/* The bytes of tensor t's group's segments with peer on the sequence side:
 * every member's rows cut to peer's heads. */
ULYSSES_HD int64_t ulyssesSliceGroupPeerBytes(const ulyssesCopyArgs* a, int t, int peer) {
  const ulyssesCopyTensor* x = &a->tensors[t];
  int64_t slotLength = ulyssesCopySlotOffsets(a)[a->rank + 1] - ulyssesCopySlotOffsets(a)[a->rank];
  int64_t bytes = 0;
  for (int m = x->groupFirst; m < x->groupFirst + x->groupSize; m++) {
    const ulyssesCopyTensor* y = &a->tensors[m];
    int64_t begin, count = ulyssesSplitPeerHeads(&y->split, peer, &begin);
    bytes += y->batch * y->packed * y->headBytes * count;
  }
  return slotLength * bytes;
}

/* Run `run` of tensor t: a head slice enumerates (peer, real row, packed
 * index), peer slowest; a row scatter enumerates the user tensor's real rows.
 * Batch-first tensors keep each batch entry's rows at a stride of the slot
 * length (capacity mode: [B, capacity, ...], the real rows first in each
 * entry); sequence-first tensors hold their real rows as a prefix. */
ULYSSES_HD ulyssesRun ulyssesCopyRunAt(const ulyssesCopyArgs* a, int t, int64_t run) {
  const ulyssesCopyTensor* x = &a->tensors[t];
  ulyssesRun result;
  if (x->kind == ULYSSES_COPY_HEAD_SLICE) {
    int64_t runsPerPeer = x->batch * ulyssesCopyLengths(a)[a->rank] * x->packed;
    int peer = (int)(run / runsPerPeer);
    int64_t inPeer = run - peer * runsPerPeer, realRow = inPeer / x->packed;
    int64_t rowPart = ulyssesLocalRow(a, x, realRow) * x->packed + inPeer - realRow * x->packed;
    /* One test of the split for the three (the plain split's prefix is its
     * begin): nvcc does not merge those of the two calls. */
    int64_t headBegin, headCount, headPrefix;
    if (x->split.queryHeads == 0) {
      headBegin = headPrefix = ulyssesSplitBegin(&x->split, (uint32_t)peer);
      headCount = ulyssesSplitCount(&x->split, (uint32_t)peer);
    } else {
      headCount = ulyssesSplitPeerHeads(&x->split, peer, &headBegin);
      headPrefix = ulyssesSplitHeadPrefix(&x->split, peer);
    }
    result.userOffset = (rowPart * x->heads + headBegin) * x->headBytes;
    result.segmentOffset =
        ulyssesSliceSegmentBase(a, t, peer, headPrefix) + rowPart * headCount * x->headBytes;
    result.bytes = headCount * x->headBytes;
    result.piece = peer;
  } else if (x->kind == ULYSSES_COPY_HEAD_SUM) {
    /* One kv head of one row; its replicas are read by ulyssesSumChunkThread. */
    int64_t headRow = run / x->heads, realRow = headRow / x->packed;
    int64_t rowPart = ulyssesLocalRow(a, x, realRow) * x->packed + headRow - realRow * x->packed;
    result.userOffset = (rowPart * x->heads + run - headRow * x->heads) * x->headBytes;
    result.segmentOffset = 0;
    result.bytes = x->headBytes;
    result.piece = run;
  } else {
    int64_t totalLength = ulyssesCopyOffsets(a)[a->nRanks];
    int64_t b, g, userRow;
    if (x->order == ULYSSES_ORDER_BSHD) {
      b = run / totalLength;
      g = run - b * totalLength;
      userRow = b * ulyssesCopySlotOffsets(a)[a->nRanks] + g;
    } else {
      g = run / x->batch;
      b = run - g * x->batch;
      userRow = run;
    }
    int owner = ulyssesRowOwner(ulyssesCopyOffsets(a), a->nRanks, g);
    int64_t s = g - ulyssesCopyOffsets(a)[owner];
    int64_t ownerSlotLength = ulyssesCopySlotOffsets(a)[owner + 1] - ulyssesCopySlotOffsets(a)[owner];
    int64_t segmentRow =
        x->order == ULYSSES_ORDER_BSHD ? b * ownerSlotLength + s : s * x->batch + b;
    int64_t rowBytes = x->packed * x->rowHeads * x->headBytes;
    result.userOffset = userRow * rowBytes;
    /* In its group's region: every member's rows of the ranks before the
     * owner, then the owner's rows of the members before it. */
    result.segmentOffset = x->groupRowBytes * ulyssesCopySlotOffsets(a)[owner] +
                           x->beforeRowBytes * ownerSlotLength + segmentRow * rowBytes;
    result.bytes = rowBytes;
    /* Batch first, the owners repeat in every batch entry. */
    result.piece = x->order == ULYSSES_ORDER_BSHD ? b * a->nRanks + owner : owner;
  }
  return result;
}

#endif /* ULYSSES_ROWS_H_ */
