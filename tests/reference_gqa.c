#include "reference_gqa.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------
 * Element types: fp16 through the compiler's _Float16, bf16 by its bits.
 * ------------------------------------------------------------------------- */

static float refLoad(const unsigned char *p, refFloatType type)
{
  if (type == REF_FLOAT32) {
    float value;
    memcpy(&value, p, 4);
    return value;
  }
  if (type == REF_FLOAT16) {
    _Float16 value;
    memcpy(&value, p, 2);
    return (float)value;
  }
  uint32_t bits = (uint32_t)p[0] << 16 | (uint32_t)p[1] << 24;
  float value;
  memcpy(&value, &bits, 4);
  return value;
}

static void refStore(unsigned char *p, float value, refFloatType type)
{
  if (type == REF_FLOAT32) {
    uint32_t bits = 0x7fc00000u;
    if (!isnan(value)) memcpy(&bits, &value, 4);
    memcpy(p, &bits, 4);
  } else if (type == REF_FLOAT16) {
    uint16_t bits = 0x7e00u;
    if (!isnan(value)) {
      _Float16 half = (_Float16)value;
      memcpy(&bits, &half, 2);
    }
    memcpy(p, &bits, 2);
  } else {
    uint32_t bits;
    memcpy(&bits, &value, 4);
    uint16_t rounded = 0x7fc0u;
    if (!isnan(value)) {
      /* Round to nearest, ties to even, on the 16 bits kept. */
      uint32_t lowHalf = bits & 0xffffu, kept = bits >> 16;
      if (lowHalf > 0x8000u || (lowHalf == 0x8000u && (kept & 1u))) kept++;
      rounded = (uint16_t)kept;
    }
    p[0] = (unsigned char)(rounded & 0xff);
    p[1] = (unsigned char)(rounded >> 8);
  }
}

void refFillFloats(void *buffer, size_t elements, refFloatType type, uint64_t seed)
{
  uint64_t state = seed;
  size_t elementSize = type == REF_FLOAT32 ? 4 : 2;
  for (size_t i = 0; i < elements; ++i) {
    uint64_t r = refRandom(&state);
    float value;
    switch (r % 8) {
      case 0: value = 0.0f; break;
      case 1: value = -0.0f; break;
      case 2: value = ldexpf(1.0f, -130 + (int)(r >> 8) % 8); break; /* fp32 subnormal range */
      case 3: value = 1.0f + ldexpf((float)(r >> 40 & 0xff), -8); break; /* ties when summed */
      default: value = ldexpf((float)(int32_t)(r >> 32) / 2147483648.0f, (int)(r >> 8) % 24 - 12);
    }
    refStore((unsigned char *)buffer + i * elementSize, value, type);
  }
}

/* ---------------------------------------------------------------------------
 * ref*: element by element.
 * ------------------------------------------------------------------------- */

int64_t refKvBegin(const refGqaShape *shape, int rank)
{
  refShape query = shape->kv;
  query.heads = shape->queryHeads;
  int64_t group = shape->queryHeads / shape->kv.heads;
  return refHeadBegin(&query, rank) / group;
}

int64_t refKvCount(const refGqaShape *shape, int rank)
{
  refShape query = shape->kv;
  query.heads = shape->queryHeads;
  int64_t group = shape->queryHeads / shape->kv.heads;
  int64_t count = refHeadCount(&query, rank);
  if (count == 0) return 0;
  int64_t end = refHeadBegin(&query, rank) + count;
  return (end + group - 1) / group - refKvBegin(shape, rank);
}

static int64_t totalLengthOf(const refShape *shape)
{
  int64_t total = 0;
  for (int r = 0; r < shape->nRanks; ++r) total += shape->lengths[r];
  return total;
}

size_t refGqaHeadSideBytes(const refGqaShape *shape, int rank)
{
  const refShape *kv = &shape->kv;
  return (size_t)(kv->batch * totalLengthOf(kv) * kv->packed * refKvCount(shape, rank) *
                  kv->headDim * kv->elementSize);
}

/* Byte offset of element `at` of a tensor of `positions` rows and
 * `headCount` heads. */
static size_t byteAt(const refShape *shape, int64_t positions, int64_t headCount, refCoord at)
{
  return (size_t)(refElementIndex(shape, positions, headCount, at) * shape->elementSize);
}

void refGqaSeqToHead(const refGqaShape *shape, const void *const *inputs, void *const *outputs)
{
  const refShape *kv = &shape->kv;
  int64_t total = totalLengthOf(kv);
  for (int j = 0; j < kv->nRanks; ++j) {
    int64_t begin = refKvBegin(shape, j), count = refKvCount(shape, j);
    for (int r = 0, offset = 0; r < kv->nRanks; offset += (int)kv->lengths[r], ++r)
      for (int64_t b = 0; b < kv->batch; ++b)
        for (int64_t s = 0; s < kv->lengths[r]; ++s)
          for (int64_t t = 0; t < kv->packed; ++t)
            for (int64_t h = 0; h < count; ++h)
              for (int64_t d = 0; d < kv->headDim; ++d)
                memcpy((unsigned char *)outputs[j] +
                           byteAt(kv, total, count, (refCoord){b, offset + s, t, h, d}),
                       (const unsigned char *)inputs[r] +
                           byteAt(kv, kv->lengths[r], kv->heads, (refCoord){b, s, t, begin + h, d}),
                       (size_t)kv->elementSize);
  }
}

void refGqaHeadToSeq(const refGqaShape *shape, const void *const *inputs, void *const *outputs)
{
  const refShape *kv = &shape->kv;
  int64_t total = totalLengthOf(kv);
  for (int r = 0, offset = 0; r < kv->nRanks; offset += (int)kv->lengths[r], ++r)
    for (int64_t b = 0; b < kv->batch; ++b)
      for (int64_t s = 0; s < kv->lengths[r]; ++s)
        for (int64_t t = 0; t < kv->packed; ++t)
          for (int64_t h = 0; h < kv->heads; ++h)
            for (int64_t d = 0; d < kv->headDim; ++d) {
              float sum = 0.0f;
              int replicas = 0;
              for (int j = 0; j < kv->nRanks; ++j) {
                int64_t begin = refKvBegin(shape, j), count = refKvCount(shape, j);
                if (h < begin || h >= begin + count) continue;
                float value = refLoad(
                    (const unsigned char *)inputs[j] +
                        byteAt(kv, total, count, (refCoord){b, offset + s, t, h - begin, d}),
                    shape->type);
                sum = replicas++ == 0 ? value : sum + value;
              }
              refStore((unsigned char *)outputs[r] +
                           byteAt(kv, kv->lengths[r], kv->heads, (refCoord){b, s, t, h, d}),
                       sum, shape->type);
            }
}

/* ---------------------------------------------------------------------------
 * naive*: kv heads repeated to Hq, the plain exchange, then picked or summed.
 * ------------------------------------------------------------------------- */

/* Query head q's owner, by handing query heads out as the contract says:
 * each rank its base share, the first Hq % P ranks one more. */
static int naiveQueryOwner(const refGqaShape *shape, int64_t q)
{
  int64_t handedOut = 0;
  for (int rank = 0; rank < shape->kv.nRanks; ++rank) {
    handedOut += shape->queryHeads / shape->kv.nRanks + (rank < shape->queryHeads % shape->kv.nRanks);
    if (q < handedOut) return rank;
  }
  abort();
}

/* q is the first query head of its kv group among those its owner holds: the
 * one that carries that group's kv head for the owner. */
static int naiveCarriesGroup(const refGqaShape *shape, int64_t q)
{
  int64_t group = shape->queryHeads / shape->kv.heads;
  return q % group == 0 || naiveQueryOwner(shape, q - 1) != naiveQueryOwner(shape, q);
}

/* The query heads rank j holds (held of them from firstQuery) and how many kv
 * heads they carry. */
static void naiveHeldHeads(const refGqaShape *shape, int j, int64_t *firstQuery, int64_t *held,
                           int64_t *kvHeld)
{
  *firstQuery = -1;
  *held = 0;
  for (int64_t q = 0; q < shape->queryHeads; ++q)
    if (naiveQueryOwner(shape, q) == j) {
      if (*firstQuery < 0) *firstQuery = q;
      ++*held;
    }
  *kvHeld = 0;
  for (int64_t q = *firstQuery; *held > 0 && q < *firstQuery + *held; ++q)
    *kvHeld += naiveCarriesGroup(shape, q);
}

/* The q-shaped tensor's plain shape. */
static refShape naiveQueryShape(const refGqaShape *shape)
{
  refShape query = shape->kv;
  query.heads = shape->queryHeads;
  return query;
}

/* Rows of a tensor of `positions` positions (the order does not matter here:
 * each row keeps its place). */
static int64_t naiveRows(const refShape *shape, int64_t positions) { return shape->batch * positions * shape->packed; }

void naiveGqaSeqToHead(const refGqaShape *shape, const void *const *inputs, void *const *outputs)
{
  const refShape *kv = &shape->kv;
  refShape query = naiveQueryShape(shape);
  int64_t group = shape->queryHeads / kv->heads;
  size_t headBytes = (size_t)(kv->headDim * kv->elementSize);
  int nRanks = kv->nRanks;
  const void **expanded = calloc((unsigned)nRanks, sizeof(void *));
  void **exchanged = calloc((unsigned)nRanks, sizeof(void *));
  for (int r = 0; r < nRanks; ++r) {
    unsigned char *e = malloc(refSeqBytes(&query, r) + 1);
    for (int64_t row = 0; row < naiveRows(kv, kv->lengths[r]); ++row)
      for (int64_t q = 0; q < shape->queryHeads; ++q)
        memcpy(e + ((size_t)row * (size_t)shape->queryHeads + (size_t)q) * headBytes,
               (const unsigned char *)inputs[r] + ((size_t)row * (size_t)kv->heads + (size_t)(q / group)) * headBytes,
               headBytes);
    expanded[r] = e;
    exchanged[r] = malloc(refHeadSideBytes(&query, r) + 1);
  }
  naiveSeqToHead(&query, expanded, exchanged);
  int64_t total = totalLengthOf(kv);
  for (int j = 0; j < nRanks; ++j) {
    /* The query heads j holds, in order, and the kv heads they carry. */
    int64_t firstQuery, held, kvHeld;
    naiveHeldHeads(shape, j, &firstQuery, &held, &kvHeld);
    for (int64_t row = 0; row < naiveRows(kv, total); ++row) {
      int64_t k = 0;
      for (int64_t q = firstQuery; held > 0 && q < firstQuery + held; ++q) {
        if (!naiveCarriesGroup(shape, q)) continue;
        memcpy((unsigned char *)outputs[j] + ((size_t)row * (size_t)kvHeld + (size_t)k) * headBytes,
               (const unsigned char *)exchanged[j] + ((size_t)row * (size_t)held + (size_t)(q - firstQuery)) * headBytes,
               headBytes);
        k++;
      }
    }
  }
  for (int r = 0; r < nRanks; ++r) {
    free((void *)expanded[r]);
    free(exchanged[r]);
  }
  free(expanded);
  free(exchanged);
}

void naiveGqaHeadToSeq(const refGqaShape *shape, const void *const *inputs, void *const *outputs)
{
  const refShape *kv = &shape->kv;
  refShape query = naiveQueryShape(shape);
  int64_t group = shape->queryHeads / kv->heads;
  size_t elementSize = (size_t)kv->elementSize;
  size_t headBytes = (size_t)kv->headDim * elementSize;
  int nRanks = kv->nRanks;
  int64_t total = totalLengthOf(kv);
  const void **spread = calloc((unsigned)nRanks, sizeof(void *));
  void **returned = calloc((unsigned)nRanks, sizeof(void *));
  for (int j = 0; j < nRanks; ++j) {
    int64_t firstQuery, held, kvHeld;
    naiveHeldHeads(shape, j, &firstQuery, &held, &kvHeld);
    /* Each kv gradient sits on the query head that carried its kv head; the
     * other query heads get zeros, which the sum below skips. */
    unsigned char *s = calloc(refHeadSideBytes(&query, j) + 1, 1);
    for (int64_t row = 0; row < naiveRows(kv, total); ++row) {
      int64_t k = 0;
      for (int64_t q = firstQuery; held > 0 && q < firstQuery + held; ++q) {
        if (!naiveCarriesGroup(shape, q)) continue;
        memcpy(s + ((size_t)row * (size_t)held + (size_t)(q - firstQuery)) * headBytes,
               (const unsigned char *)inputs[j] + ((size_t)row * (size_t)kvHeld + (size_t)k) * headBytes,
               headBytes);
        k++;
      }
    }
    spread[j] = s;
  }
  for (int r = 0; r < nRanks; ++r) returned[r] = malloc(refSeqBytes(&query, r) + 1);
  naiveHeadToSeq(&query, spread, returned);
  for (int r = 0; r < nRanks; ++r)
    for (int64_t row = 0; row < naiveRows(kv, kv->lengths[r]); ++row)
      for (int64_t h = 0; h < kv->heads; ++h)
        for (int64_t d = 0; d < kv->headDim; ++d) {
          float sum = 0.0f;
          int first = 1;
          for (int64_t q = h * group; q < (h + 1) * group; ++q) {
            if (!naiveCarriesGroup(shape, q)) continue;
            float value = refLoad((const unsigned char *)returned[r] +
                                      ((size_t)row * (size_t)shape->queryHeads + (size_t)q) * headBytes +
                                      (size_t)d * elementSize,
                                  shape->type);
            sum = first ? value : sum + value;
            first = 0;
          }
          refStore((unsigned char *)outputs[r] + ((size_t)row * (size_t)kv->heads + (size_t)h) * headBytes +
                       (size_t)d * elementSize,
                   sum, shape->type);
        }
  for (int r = 0; r < nRanks; ++r) {
    free((void *)spread[r]);
    free(returned[r]);
  }
  free(spread);
  free(returned);
}
