/*
 * CPU reference for the Ulysses exchanges (include/ulysses.h, "Exchanges"), for P
 * ranks simulated in one process. Every rank's buffer is plain host memory;
 * elements are opaque runs of elementSize bytes, moved and never interpreted.
 *
 * Two formulations live here on purpose:
 *   ref*   : per element, straight from the index formulas of the contract.
 *   naive* : assembles the global batch-first tensor, then slices it, with its
 *            own head split and offsets. It shares no code with ref*, so the
 *            two agreeing byte for byte is evidence that both read the
 *            contract the same way.
 *
 * Buffers of zero bytes may be NULL; no function dereferences them.
 */
#ifndef ULYSSES_TESTS_REFERENCE_H
#define ULYSSES_TESTS_REFERENCE_H

#include <stddef.h>
#include <stdint.h>

typedef struct refShape {
  int nRanks;             /* P >= 1 */
  const int64_t *lengths; /* nRanks sequence lengths L_r >= 0 */
  int64_t batch;          /* B >= 1 */
  int64_t heads;          /* H >= 1 (may be < P: then some ranks own 0 heads) */
  int64_t headDim;        /* D >= 1 */
  int64_t elementSize;    /* E >= 1 bytes */
  int packed;             /* T: 1, or 3 for packed q/k/v */
  int sbhd;               /* 0: batch-first (BSHD), 1: sequence-first (SBHD) */
} refShape;

/* An element's coordinates: batch entry b, sequence position s, packed
 * tensor t, head h, place d in the head. */
typedef struct refCoord {
  int64_t b, s, t, h, d;
} refCoord;

/* Element index of `at` in a tensor of `positions` sequence positions and
 * `headCount` heads, in the shape's order. */
int64_t refElementIndex(const refShape *shape, int64_t positions, int64_t headCount, refCoord at);

/* Head split: rank j owns heads [refHeadBegin(j), refHeadBegin(j + 1)).
 * rank may be nRanks, where refHeadBegin gives H (the end of the last group). */
int64_t refHeadBegin(const refShape *shape, int rank);
int64_t refHeadCount(const refShape *shape, int rank);
/* The rank whose group contains head (0 <= head < H). */
int refHeadOwner(const refShape *shape, int64_t head);

/* Ltot, and off_r = L_0 + ... + L_{r-1} (rank may be nRanks, giving Ltot). */
int64_t refTotalLength(const refShape *shape);
int64_t refOffset(const refShape *shape, int rank);

size_t refSeqBytes(const refShape *shape, int rank);      /* B*L_r*T*H*D*E */
size_t refHeadSideBytes(const refShape *shape, int rank); /* B*Ltot*T*H_j*D*E */
size_t refGatherBytes(const refShape *shape);             /* B*Ltot*T*H*D*E */

/* inputs/outputs: arrays of nRanks buffers, one per simulated rank */
void refSeqToHead(const refShape *shape, const void *const *inputs, void *const *outputs);
void refHeadToSeq(const refShape *shape, const void *const *inputs, void *const *outputs);
void refAllGather(const refShape *shape, const void *const *inputs, void *const *outputs);

/* the independent naive formulation, same signatures */
void naiveSeqToHead(const refShape *shape, const void *const *inputs, void *const *outputs);
void naiveHeadToSeq(const refShape *shape, const void *const *inputs, void *const *outputs);
void naiveAllGather(const refShape *shape, const void *const *inputs, void *const *outputs);

/* Deterministic test data: bytes from a splitmix64 stream started at seed,
 * laid out little-endian so the pattern is the same on every host. */
void refFillPattern(void *buffer, size_t bytes, uint64_t seed);
/* One splitmix64 step: advances *state and returns the next value. */
uint64_t refRandom(uint64_t *state);

#endif /* ULYSSES_TESTS_REFERENCE_H */
