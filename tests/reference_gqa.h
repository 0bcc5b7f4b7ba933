/* CPU reference for grouped-query attention's kv exchanges (kv heads shared
 * across ranks, include/ulysses.h's queryHeads): G = Hq / Hkv query heads read each kv head; rank j
 * owns query heads [h_j, h_{j+1}) (the plain split of Hq) and needs kv heads
 * [floor(h_j / G), ceil(h_{j+1} / G)), none when it owns no query head.
 *
 *  - seq -> head with replication: rank j's output [B, Ltot, T, needed_j, D]
 *    holds, for every rank's rows, the kv heads j needs, in order.
 *  - head -> seq with reduction: rank r's output [B, L_r, T, Hkv, D] holds, for
 *    each kv head, the sum of the replicas every rank j that needs it holds for
 *    r's rows: the first replica, then each next one added in increasing rank
 *    order, in fp32, rounded once to the element type; a NaN sum is stored as
 *    the type's canonical quiet NaN.
 *
 * ref* works element by element; naive* goes through the plain exchange of
 * kv heads repeated to Hq (expandKV) and shares no code with ref*. */
#ifndef ULYSSES_TESTS_REFERENCE_GQA_H
#define ULYSSES_TESTS_REFERENCE_GQA_H

#include "reference.h"

typedef enum { REF_FLOAT32, REF_FLOAT16, REF_BFLOAT16 } refFloatType;

typedef struct {
  refShape kv;        /* heads = Hkv; elementSize 4 for fp32, 2 for fp16 and bf16 */
  int64_t queryHeads; /* Hq, a multiple of kv.heads */
  refFloatType type;  /* how head -> seq sums replicas */
} refGqaShape;

int64_t refKvBegin(const refGqaShape *shape, int rank);
int64_t refKvCount(const refGqaShape *shape, int rank);
/* B * Ltot * T * refKvCount(rank) * D * E */
size_t refGqaHeadSideBytes(const refGqaShape *shape, int rank);

void refGqaSeqToHead(const refGqaShape *shape, const void *const *inputs, void *const *outputs);
void refGqaHeadToSeq(const refGqaShape *shape, const void *const *inputs, void *const *outputs);
void naiveGqaSeqToHead(const refGqaShape *shape, const void *const *inputs, void *const *outputs);
void naiveGqaHeadToSeq(const refGqaShape *shape, const void *const *inputs, void *const *outputs);

/* Fills a buffer of elements of type with finite values of varied magnitude
 * and sign (zeros, subnormals and exact ties included). */
void refFillFloats(void *buffer, size_t elements, refFloatType type, uint64_t seed);

#endif
