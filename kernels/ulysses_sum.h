/* The head sum: each element of a kv head that several ranks hold is the
 * sum of their replicas, in fp32 in increasing rank order, rounded once, in
 * integer arithmetic where it can be so that host and device agree bit for
 * bit. */
#ifndef ULYSSES_SUM_H_
#define ULYSSES_SUM_H_

#include "ulysses_heads.h"
#include "ulysses_rows.h"

/*------------------------------------------------------------------------
 * Floating point for the head sum, in integer arithmetic where it can be, so
 * that host and device give the same bits: loads widen exactly, stores round
 * to nearest even, a NaN is stored as the type's canonical quiet NaN.
 *----------------------------------------------------------------------*/
/* On the device the intrinsics: a memcpy there, inlined into a store to an
 * array, keeps the array in local memory. */
ULYSSES_HD float ulyssesFloatFromBits(uint32_t bits) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(bits);
#else
  float value;
  memcpy(&value, &bits, sizeof value);
  return value;
#endif
}

ULYSSES_HD uint32_t ulyssesBitsFromFloat(float value) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(value);
#else
  uint32_t bits;
  memcpy(&bits, &value, sizeof bits);
  return bits;
#endif
}

ULYSSES_HD float ulyssesHalfToFloat(uint32_t half) {
#ifdef __CUDA_ARCH__
  /* The device's conversion: exact, as the arithmetic below is, without its
   * branches in the sum's loop; a NaN may keep another payload, and the sum
   * stores every NaN as the canonical one. */
  float value;
  asm("cvt.f32.f16 %0, %1;" : "=f"(value) : "h"((unsigned short)half));
  return value;
#endif
  uint32_t sign = (half & 0x8000u) << 16, exponent = half >> 10 & 0x1fu, mantissa = half & 0x3ffu;
  if (exponent == 0) {
    /* Zero or subnormal: mantissa * 2^-24, exact in fp32. */
    float magnitude = (float)mantissa * 5.9604644775390625e-8f;
    return ulyssesFloatFromBits(ulyssesBitsFromFloat(magnitude) | sign);
  }
  if (exponent == 31) return ulyssesFloatFromBits(sign | 0x7f800000u | mantissa << 13);
  return ulyssesFloatFromBits(sign | (exponent + 112) << 23 | mantissa << 13);
}

/* Round to nearest even (after F. Giesen's float_to_half_fast3_rtne). */
ULYSSES_HD uint32_t ulyssesFloatToHalf(float value) {
  uint32_t bits = ulyssesBitsFromFloat(value);
  uint32_t sign = bits >> 16 & 0x8000u, magnitude = bits & 0x7fffffffu;
  if (magnitude > 0x7f800000u) return 0x7e00u;
  if (magnitude >= 0x47800000u) return sign | 0x7c00u; /* 2^16 and up: infinity */
  if (magnitude < 0x38800000u) {
    /* Below the smallest normal half: adding 0.5 lets the FPU round the
     * subnormal's bits into the low mantissa. */
    float shifted = ulyssesFloatFromBits(magnitude) + 0.5f;
    return sign | (ulyssesBitsFromFloat(shifted) - 0x3f000000u);
  }
  uint32_t odd = magnitude >> 13 & 1u;
  magnitude += 0xc8000fffu + odd; /* rebias the exponent by -112, round */
  return sign | magnitude >> 13;
}

ULYSSES_HD uint32_t ulyssesFloatToBfloat16(float value) {
  uint32_t bits = ulyssesBitsFromFloat(value);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return 0x7fc0u;
  return (bits + 0x7fffu + (bits >> 16 & 1u)) >> 16;
}

/* An element's value from its raw bits (the low 16 for a 16-bit type), and
 * the raw bits of a value, as the head sum converts them. */
ULYSSES_HD float ulyssesFloatOfBits(uint32_t raw, int dataType) {
  if (dataType == ULYSSES_TYPE_FLOAT32) return ulyssesFloatFromBits(raw);
  if (dataType == ULYSSES_TYPE_FLOAT16) return ulyssesHalfToFloat(raw & 0xffffu);
  return ulyssesFloatFromBits((raw & 0xffffu) << 16);
}

ULYSSES_HD uint32_t ulyssesBitsOfFloat(float value, int dataType) {
  if (dataType == ULYSSES_TYPE_FLOAT32)
    return value != value ? 0x7fc00000u : ulyssesBitsFromFloat(value);
  if (dataType == ULYSSES_TYPE_FLOAT16) return ulyssesFloatToHalf(value);
  return ulyssesFloatToBfloat16(value);
}

/* An element from or to bytes of any alignment, little-endian. */
ULYSSES_HD float ulyssesLoadFloat(const unsigned char* p, int dataType) {
  uint32_t raw = (uint32_t)p[0] | (uint32_t)p[1] << 8;
  if (dataType == ULYSSES_TYPE_FLOAT32) raw |= (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
  return ulyssesFloatOfBits(raw, dataType);
}

ULYSSES_HD void ulyssesStoreFloat(unsigned char* p, float value, int dataType) {
  uint32_t bits = ulyssesBitsOfFloat(value, dataType);
  int bytes = dataType == ULYSSES_TYPE_FLOAT32 ? 4 : 2;
  for (int i = 0; i < bytes; i++) p[i] = (unsigned char)(bits >> (8 * i));
}

/* Runs of a head sum whose units a lane loads from one replica before it
 * adds any; it loads two replicas at a time, so twice as many loads are in
 * flight (4 x 16 bytes per lane; one before the chunks of ulyssesSumChunk).
 * 4 runs make ptxas spill in the copy loops of the kernel that holds both
 * (sm_90, bench/sass_report.py). */
#ifndef ULYSSES_SUM_RUNS_IN_FLIGHT
#define ULYSSES_SUM_RUNS_IN_FLIGHT 2
#endif
#if ULYSSES_SUM_RUNS_IN_FLIGHT < 1
#error "ULYSSES_SUM_RUNS_IN_FLIGHT must be at least 1"
#endif

/* One unit of a head sum (unitBytes: 2, 4, 8 or 16) as four 32-bit words,
 * little-endian, read and written in words of wordBytes (at most unitBytes,
 * as aligned). Registers, not a byte buffer: with unitBytes a constant
 * every index below is one, whatever wordBytes is. */
ULYSSES_HD void ulyssesLoadUnit(const unsigned char* p, int unitBytes, int wordBytes,
                                uint32_t* bits) {
  bits[0] = bits[1] = bits[2] = bits[3] = 0;
  if (wordBytes == 16) {
    ulyssesWord16 w = *(const ulyssesWord16*)(const void*)p;
    bits[0] = (uint32_t)w.low;
    bits[1] = (uint32_t)(w.low >> 32);
    bits[2] = (uint32_t)w.high;
    bits[3] = (uint32_t)(w.high >> 32);
  } else if (wordBytes == 8) {
    for (int w = 0; w < unitBytes / 8; w++) {
      uint64_t v = ((const uint64_t*)(const void*)p)[w];
      bits[2 * w] = (uint32_t)v;
      bits[2 * w + 1] = (uint32_t)(v >> 32);
    }
  } else if (wordBytes == 4) {
    for (int w = 0; w < unitBytes / 4; w++) bits[w] = ((const uint32_t*)(const void*)p)[w];
  } else if (wordBytes == 2) {
    for (int w = 0; w < unitBytes / 2; w++)
      bits[w / 2] |= (uint32_t)((const uint16_t*)(const void*)p)[w] << (16 * (w % 2));
  } else {
    for (int w = 0; w < unitBytes; w++) bits[w / 4] |= (uint32_t)p[w] << (8 * (w % 4));
  }
}

ULYSSES_HD void ulyssesStoreUnit(unsigned char* p, int unitBytes, int wordBytes,
                                 const uint32_t* bits) {
  if (wordBytes == 16) {
    ulyssesWord16 w;
    w.low = (uint64_t)bits[0] | (uint64_t)bits[1] << 32;
    w.high = (uint64_t)bits[2] | (uint64_t)bits[3] << 32;
    *(ulyssesWord16*)(void*)p = w;
  } else if (wordBytes == 8) {
    for (int w = 0; w < unitBytes / 8; w++)
      ((uint64_t*)(void*)p)[w] = (uint64_t)bits[2 * w] | (uint64_t)bits[2 * w + 1] << 32;
  } else if (wordBytes == 4) {
    for (int w = 0; w < unitBytes / 4; w++) ((uint32_t*)(void*)p)[w] = bits[w];
  } else if (wordBytes == 2) {
    for (int w = 0; w < unitBytes / 2; w++)
      ((uint16_t*)(void*)p)[w] = (uint16_t)(bits[w / 2] >> (16 * (w % 2)));
  } else {
    for (int w = 0; w < unitBytes; w++) p[w] = (unsigned char)(bits[w / 4] >> (8 * (w % 4)));
  }
}

/* What one lane of a head sum loads and stores at once: a word of the
 * tensor's wordBytes (every replica and the output are wordBytes-aligned,
 * their offsets being multiples of headBytes), or one element read in words
 * where the alignment allows less than an element. */
ULYSSES_HD int ulyssesSumUnitBytes(const ulyssesCopyTensor* x) {
  int elementSize = x->dataType == ULYSSES_TYPE_FLOAT32 ? 4 : 2;
  return x->wordBytes > elementSize ? x->wordBytes : elementSize;
}

/* The real row parts of a head-sum tensor (batch entries x local length x
 * packed), and where real row part j lies among the sequence-side tensor's
 * row parts. */
ULYSSES_HD int64_t ulyssesSumRowParts(const ulyssesCopyArgs* a, const ulyssesCopyTensor* x) {
  return x->batch * ulyssesCopyLengths(a)[a->rank] * x->packed;
}

ULYSSES_HD int64_t ulyssesSumRowPart(const ulyssesCopyArgs* a, const ulyssesCopyTensor* x,
                                     int64_t j) {
  int64_t row = j / x->packed;
  return ulyssesLocalRow(a, x, row) * x->packed + (j - row * x->packed);
}

/* A chunk of a head sum: count runs (one kv head of one row part each) of
 * kv head `head` at consecutive row parts from rowPart, with everything a
 * lane's loop needs found once. The replicas are in increasing rank order of
 * their holders first .. last (ulyssesSplitHolders), each in its holder's
 * segment of the group's region (ulyssesSliceSegmentBase). A holder after
 * the first has kv head `head` as its first head (its first query head is in
 * that head's group, else the holder before it would not hold it too), and
 * one strictly between first and last holds that head only, so its segments
 * of the group have the same bytes as the next one's (the plan's groups keep
 * that: joinsGroup in src/plan.c). So for run k: replica 0 at first + k *
 * firstStride; replica i of 1 .. replicas - 2 at next + (i - 1) *
 * replicaStride + k * headBytes; the last one at last + k * lastStride (it
 * may hold more heads, which widen its rows); the sum at out + k *
 * outStride. */
typedef struct {
  const ulyssesCopyTensor* x;
  unsigned char* out;
  int64_t outStride;
  const unsigned char* first;
  int64_t firstStride;
  const unsigned char* next;
  int64_t replicaStride;
  const unsigned char* last;
  int64_t lastStride;
  int64_t count;
  int replicas;
} ulyssesSumChunk;

ULYSSES_HD ulyssesSumChunk ulyssesSumChunkAt(const ulyssesCopyArgs* a, int t, int64_t head,
                                             int64_t rowPart, int64_t count) {
  const ulyssesCopyTensor* x = &a->tensors[t];
  ulyssesSumChunk c;
  ulyssesHolders holders = ulyssesSplitHolders(&x->split, head);
  int64_t firstBegin, lastBegin;
  int64_t firstCount = ulyssesSplitPeerHeads(&x->split, holders.first, &firstBegin);
  int64_t lastCount = ulyssesSplitPeerHeads(&x->split, holders.last, &lastBegin);
  c.x = x;
  c.out = x->user + (rowPart * x->heads + head) * x->headBytes;
  c.outStride = x->heads * x->headBytes;
  c.replicas = holders.last - holders.first + 1;
  c.first = x->segments + ulyssesSliceSegmentBase(a, t, holders.first, holders.prefix) +
            (rowPart * firstCount + head - firstBegin) * x->headBytes;
  c.firstStride = firstCount * x->headBytes;
  c.next = c.last = c.first;
  c.replicaStride = 0;
  c.lastStride = c.firstStride;
  if (c.replicas > 2) {
    c.next = x->segments +
             ulyssesSliceSegmentBase(a, t, holders.first + 1, holders.prefix + firstCount) +
             rowPart * x->headBytes;
    c.replicaStride = ulyssesSliceGroupPeerBytes(a, t, holders.first + 1);
  }
  if (c.replicas > 1) {
    int64_t lastPrefix = holders.prefix + firstCount + (c.replicas - 2);
    c.last = x->segments + ulyssesSliceSegmentBase(a, t, holders.last, lastPrefix) +
             rowPart * lastCount * x->headBytes;
    c.lastStride = lastCount * x->headBytes;
  }
  c.count = count;
  return c;
}

/* What one lane of a head sum loads and stores at once, as constants: an
 * element of dataType (elementSize bytes), a unit of unitBytes
 * (ulyssesSumUnitBytes), read and written in words of wordBytes. */
typedef struct {
  int dataType, elementSize, unitBytes, wordBytes;
} ulyssesSumUnit;

/* Replica i of run `run` of chunk c, and the step between its runs. */
ULYSSES_HD const unsigned char* ulyssesSumReplica(const ulyssesSumChunk* c, int i, int64_t run,
                                                  int64_t* runStride) {
  if (i == 0) {
    *runStride = c->firstStride;
    return c->first + run * c->firstStride;
  }
  if (i < c->replicas - 1) {
    *runStride = c->x->headBytes;
    return c->next + (i - 1) * c->replicaStride + run * c->x->headBytes;
  }
  *runStride = c->lastStride;
  return c->last + run * c->lastStride;
}

/* One round of a lane's head sum: unit `unit` (bytes unit * unitBytes into
 * each run) of `count` runs of chunk c, firstRun, firstRun + runStep, ...
 * (count at most ULYSSES_SUM_RUNS_IN_FLIGHT), in units u. u is a constant
 * where ulyssesSumUnitsThread calls it, and so is count in every round: then
 * nothing is checked and every index below is a constant, which keeps the
 * units and the sums in registers. Each element is the first replica, then
 * the next ones added in increasing rank order, in fp32, rounded once; the
 * replicas are loaded two at a time, every load of a pair before its adds. */
ULYSSES_HD void ulyssesSumRound(const ulyssesSumChunk* c, int64_t unit, int64_t firstRun,
                                int64_t runStep, int count, ulyssesSumUnit u) {
  int unitElements = u.unitBytes / u.elementSize;
  int64_t unitOffset = unit * u.unitBytes;
  float sum[ULYSSES_SUM_RUNS_IN_FLIGHT][8] = {{0}};
  uint32_t bits[2][ULYSSES_SUM_RUNS_IN_FLIGHT][4];
#define ULYSSES_SUM_LOAD(Replica, Bits)                                                   \
  do {                                                                                    \
    int64_t runStride;                                                                    \
    const unsigned char* p = ulyssesSumReplica(c, Replica, firstRun, &runStride);         \
    for (int k = 0; k < ULYSSES_SUM_RUNS_IN_FLIGHT; k++)                                  \
      if (k < count)                                                                      \
        ulyssesLoadUnit(p + unitOffset + k * runStep * runStride, u.unitBytes, u.wordBytes, \
                        Bits[k]);                                                         \
  } while (0)
  /* Element e's raw bits: a whole word of a 4-byte type, a half of a 2-byte one. */
#define ULYSSES_SUM_ADD(Bits, First)                                                         \
  do {                                                                                       \
    for (int k = 0; k < ULYSSES_SUM_RUNS_IN_FLIGHT; k++) {                                   \
      if (k >= count) break;                                                                 \
      for (int e = 0; e < unitElements; e++) {                                               \
        uint32_t raw = u.elementSize == 4 ? Bits[k][e] : Bits[k][e / 2] >> (16 * (e % 2));  \
        float value = ulyssesFloatOfBits(raw, u.dataType);                                    \
        sum[k][e] = (First) ? value : sum[k][e] + value;                                     \
      }                                                                                      \
    }                                                                                        \
  } while (0)
  ULYSSES_SUM_LOAD(0, bits[0]);
  ULYSSES_SUM_ADD(bits[0], 1);
  for (int i = 1; i < c->replicas; i += 2) {
    int pair = i + 1 < c->replicas;
    ULYSSES_SUM_LOAD(i, bits[0]);
    if (pair) ULYSSES_SUM_LOAD(i + 1, bits[1]);
    ULYSSES_SUM_ADD(bits[0], 0);
    if (pair) ULYSSES_SUM_ADD(bits[1], 0);
  }
#undef ULYSSES_SUM_ADD
#undef ULYSSES_SUM_LOAD
  for (int k = 0; k < ULYSSES_SUM_RUNS_IN_FLIGHT; k++) {
    if (k >= count) break;
    uint32_t out[4] = {0, 0, 0, 0};
    for (int e = 0; e < unitElements; e++) {
      uint32_t raw = ulyssesBitsOfFloat(sum[k][e], u.dataType);
      if (u.elementSize == 4)
        out[e] = raw;
      else
        out[e / 2] |= (raw & 0xffffu) << (16 * (e % 2));
    }
    ulyssesStoreUnit(c->out + (firstRun + k * runStep) * c->outStride + unitOffset, u.unitBytes,
                     u.wordBytes, out);
  }
}

/* One thread's units of chunk c (in units u, constants where
 * ulyssesSumChunkUnitsThread calls it): the group's lanes split into
 * runGroups sets of lanesPerRun lanes (all of them on a run of fewer units
 * than lanes), set g taking runs g, g + runGroups, ..., lane l of a set units
 * l, l + lanesPerRun, ... of each (coalesced across the lanes), in rounds of
 * ULYSSES_SUM_RUNS_IN_FLIGHT runs. A chunk has at most a thousand runs
 * (ulyssesChunkRuns), counted in 32 bits. */
ULYSSES_HD void ulyssesSumUnitsThread(const ulyssesSumChunk* c, ulyssesSumUnit u, int lane,
                                      int laneCount) {
  int64_t units = c->x->headBytes / u.unitBytes;
  int32_t lanesPerRun = units < laneCount ? (int32_t)units : laneCount;
  int32_t runGroups = laneCount / lanesPerRun, group = lane / lanesPerRun;
  int32_t count = (int32_t)c->count;
  if (group >= runGroups || group >= count) return;
  int32_t runs = (count - group + runGroups - 1) / runGroups;
  for (int64_t unit = lane % lanesPerRun; unit < units; unit += lanesPerRun) {
    int32_t k = 0;
    for (; k + ULYSSES_SUM_RUNS_IN_FLIGHT <= runs; k += ULYSSES_SUM_RUNS_IN_FLIGHT)
      ulyssesSumRound(c, unit, group + (int64_t)k * runGroups, runGroups,
                      ULYSSES_SUM_RUNS_IN_FLIGHT, u);
    for (; k < runs; k++) ulyssesSumRound(c, unit, group + (int64_t)k * runGroups, runGroups, 1, u);
  }
}

/* One thread's elements of chunk c: each element of one kv head of one local
 * row is the sum of the replicas the peers that need that head sent back
 * (ulyssesSumUnitsThread). wordBytes: the tensor's word size, a constant on
 * the device (0, the tensor's own, only from the CPU tests). */
ULYSSES_HD void ulyssesSumChunkUnitsThread(const ulyssesSumChunk* c, int wordBytes, int lane,
                                           int laneCount) {
  /* The unit: the word, or an element read in words where the alignment
   * allows less than an element (ulyssesSumUnitBytes). */
  int dataType = c->x->dataType;
#define ULYSSES_SUM_WORDS(Words)                                                   \
  do {                                                                             \
    if (dataType == ULYSSES_TYPE_FLOAT32) {                                        \
      ulyssesSumUnit f = {ULYSSES_TYPE_FLOAT32, 4, Words > 4 ? Words : 4, Words};  \
      ulyssesSumUnitsThread(c, f, lane, laneCount);                                \
    } else if (dataType == ULYSSES_TYPE_FLOAT16) {                                 \
      ulyssesSumUnit h = {ULYSSES_TYPE_FLOAT16, 2, Words > 2 ? Words : 2, Words};  \
      ulyssesSumUnitsThread(c, h, lane, laneCount);                                \
    } else {                                                                       \
      ulyssesSumUnit b = {ULYSSES_TYPE_BFLOAT16, 2, Words > 2 ? Words : 2, Words}; \
      ulyssesSumUnitsThread(c, b, lane, laneCount);                                \
    }                                                                              \
  } while (0)
  switch (wordBytes != 0 ? wordBytes : c->x->wordBytes) {
    case 16: ULYSSES_SUM_WORDS(16); break;
    case 8: ULYSSES_SUM_WORDS(8); break;
    case 4: ULYSSES_SUM_WORDS(4); break;
    case 2: ULYSSES_SUM_WORDS(2); break;
    default: ULYSSES_SUM_WORDS(1);
  }
#undef ULYSSES_SUM_WORDS
}

/* Chunks of a head-sum tensor: for each run of x->chunkRuns consecutive real
 * row parts, one per kv head, the heads of those rows next to each other. */
ULYSSES_HD int64_t ulyssesSumChunkCount(const ulyssesCopyArgs* a, int t) {
  const ulyssesCopyTensor* x = &a->tensors[t];
  return (ulyssesSumRowParts(a, x) + x->chunkRuns - 1) / x->chunkRuns * x->heads;
}

/* One thread's share of chunk `chunk` of head-sum tensor t: its kv head's
 * rows at consecutive row parts as one chunk (ulyssesSumChunkAt, the holders
 * found once), or, where the rows jump (a batch entry's padding between
 * them), row by row. */
ULYSSES_HD void ulyssesSumChunkThread(const ulyssesCopyArgs* a, int t, int64_t chunk, int lane,
                                      int laneCount, int wordBytes) {
  const ulyssesCopyTensor* x = &a->tensors[t];
  int64_t tile = chunk / x->heads, head = chunk - tile * x->heads, firstRow = tile * x->chunkRuns;
  int64_t count = ulyssesSumRowParts(a, x) - firstRow;
  if (count > x->chunkRuns) count = x->chunkRuns;
  int64_t rowPart = ulyssesSumRowPart(a, x, firstRow);
  int rowByRow = ulyssesSumRowPart(a, x, firstRow + count - 1) - rowPart != count - 1;
  for (int64_t k = 0; k < (rowByRow ? count : 1); k++) {
    ulyssesSumChunk c =
        rowByRow ? ulyssesSumChunkAt(a, t, head, ulyssesSumRowPart(a, x, firstRow + k), 1)
                 : ulyssesSumChunkAt(a, t, head, rowPart, count);
    ulyssesSumChunkUnitsThread(&c, wordBytes, lane, laneCount);
  }
}

#endif /* ULYSSES_SUM_H_ */
