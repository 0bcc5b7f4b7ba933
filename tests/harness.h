/* Shared by the CPU tests: simulated ranks' buffers with guard zones, random
 * shapes, and the reference output of a plan's tensors; the real rows of a
 * padded buffer are rows.h's. */
#ifndef ULYSSES_TESTS_HARNESS_H_
#define ULYSSES_TESTS_HARNESS_H_

#include <stddef.h>
#include <stdint.h>

#include "reference.h"
#include "reference_gqa.h"
#include "rows.h"
#include "ulysses.h"

#define HARNESS_MAX_RANKS 16
#define HARNESS_GUARD_BYTES 64

/* A buffer with HARNESS_GUARD_BYTES of a known pattern on each side; data may
 * start at any byte offset within its first 16 bytes (misalignment on purpose). */
typedef struct {
  unsigned char* allocation;
  unsigned char* data;
  size_t bytes;
} guardedBuffer;

void guardedAlloc(guardedBuffer* buffer, size_t bytes, size_t misalignment);
void guardedFree(guardedBuffer* buffer);
/* 1 when both guard zones still hold their pattern. */
int guardsIntact(const guardedBuffer* buffer);

/* One multi-tensor scenario: P ranks, mode, lengths, capacities, layouts. */
typedef struct {
  int nRanks;
  int capacityMode;
  int nTensors;
  int64_t lengths[HARNESS_MAX_RANKS];    /* the real lengths */
  int64_t capacities[HARNESS_MAX_RANKS]; /* capacity mode's bounds (>= lengths) */
  ulyssesLayout_t layouts[ULYSSES_MAX_TENSORS];
} scenario;

/* A random scenario with at most maxRanks ranks. */
void randomScenario(scenario* s, uint64_t* random, int maxRanks, int capacityMode);
/* The reference's view of tensor t with the given per-rank lengths. */
refShape shapeOf(const scenario* s, int t, const int64_t* lengths);
/* Tensor t holds the kv heads of grouped-query attention. */
int isKvTensor(const scenario* s, int t);
refGqaShape kvShapeOf(const scenario* s, int t, const int64_t* lengths);

#endif /* ULYSSES_TESTS_HARNESS_H_ */
