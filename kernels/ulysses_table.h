/* The length table's launch: its arguments and each thread's entry. */
#ifndef ULYSSES_TABLE_H_
#define ULYSSES_TABLE_H_

#include "ulysses_base.h"

/*------------------------------------------------------------------------
 * The length table: every kernel reads lengths and offsets from here, in
 * device memory, never from the host.
 *----------------------------------------------------------------------*/
typedef struct {
  int32_t mode;
  int32_t nRanks;
  int32_t chunkBegin; /* first rank of this launch */
  int32_t chunkCount; /* ranks in this launch, <= ULYSSES_TABLE_CHUNK */
  /* Exact mode: the lengths; capacity mode: the capacities; of ranks
   * chunkBegin .. chunkBegin + chunkCount - 1. */
  int64_t hostValues[ULYSSES_TABLE_CHUNK];
  const int64_t* gatheredLengths; /* capacity mode: every rank's raw length */
  int64_t* lengths;               /* nRanks: real lengths, clamped to capacity */
  int64_t* offsets;               /* nRanks + 1: prefix sums of lengths */
  int64_t* slotOffsets;           /* nRanks + 1: prefix sums of slot lengths */
  uint32_t* status;               /* capacity mode: error bits, OR-ed */
} ulyssesTableArgs;

/* A capacity-mode length as a rank reported it, clamped into [0, capacity]
 * so that no kernel ever addresses beyond the slot or the caller's buffer;
 * returns the error bits of a length that needed it. */
ULYSSES_HD uint32_t ulyssesClampLength(int64_t raw, int64_t capacity, int64_t* length) {
  if (raw < 0) {
    *length = 0;
    return ULYSSES_KERNEL_STATUS_NEGATIVE_LENGTH;
  }
  if (raw > capacity) {
    *length = capacity;
    return ULYSSES_KERNEL_STATUS_ABOVE_CAPACITY;
  }
  *length = raw;
  return 0;
}

/* Rank chunkBegin + i's real and slot length; returns its error bits. */
ULYSSES_HD uint32_t ulyssesTableEntry(const ulyssesTableArgs* a, int i, int64_t* length,
                                      int64_t* slotLength) {
  int64_t hostValue = a->hostValues[i];
  if (a->mode == ULYSSES_MODE_EXACT) {
    *length = hostValue;
    *slotLength = hostValue;
    return 0;
  }
  *slotLength = hostValue;
  return ulyssesClampLength(a->gatheredLengths[a->chunkBegin + i], hostValue, length);
}

/* Thread i's writes of one table launch, given the inclusive prefix sums of
 * the launch's lengths and slot lengths up to i (the block scan's). Launches
 * of ULYSSES_TABLE_CHUNK ranks run in order on one stream, so each continues
 * the sums from the last entry the previous one wrote, at chunkBegin; no
 * thread of this launch writes that entry, so reading it races with nothing. */
ULYSSES_HD void ulyssesTableStore(const ulyssesTableArgs* a, int i, int64_t length,
                                  int64_t lengthPrefix, int64_t slotPrefix) {
  if (i == 0 && a->chunkBegin == 0) {
    a->offsets[0] = 0;
    a->slotOffsets[0] = 0;
  }
  if (i >= a->chunkCount) return;
  int64_t lengthCarry = a->chunkBegin == 0 ? 0 : a->offsets[a->chunkBegin];
  int64_t slotCarry = a->chunkBegin == 0 ? 0 : a->slotOffsets[a->chunkBegin];
  int rank = a->chunkBegin + i;
  a->lengths[rank] = length;
  a->offsets[rank + 1] = lengthCarry + lengthPrefix;
  a->slotOffsets[rank + 1] = slotCarry + slotPrefix;
}

#endif /* ULYSSES_TABLE_H_ */
