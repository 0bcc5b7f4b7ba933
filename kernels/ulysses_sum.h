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
ULYSSES_HD float ulyssesFloatFromBits(uint32_t bits) {
  float value;
  memcpy(&value, &bits, sizeof value);
  return value;
}

ULYSSES_HD uint32_t ulyssesBitsFromFloat(float value) {
  uint32_t bits;
  memcpy(&bits, &value, sizeof bits);
  return bits;
}

ULYSSES_HD float ulyssesHalfToFloat(uint32_t half) {
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

/* Accumulators one lane of a head sum holds at a time: a round of loads of
 * every replica's units, summed in registers, then one round of stores. */
#define ULYSSES_SUM_ELEMENTS_IN_FLIGHT 8

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

/* The replicas of one head-sum run (one kv head of one row), in increasing
 * rank order of their holders first .. last (ulyssesHeadHolders). A holder
 * after the first has kv head `head` as its first head (its first query
 * head is in that head's group, else the holder before it would not hold it
 * too), and one strictly between first and last holds that head only; so
 * replica i >= 1 lies at next + (i - 1) * stride, the last one lastExtra
 * further (it may hold more heads, which widen its rows). Found once per
 * run, so that the sum's loop over replicas does no division. */
typedef struct {
  const ulyssesCopyTensor* x;
  unsigned char* out; /* the run's place in the user tensor */
  const unsigned char* first;
  const unsigned char* next;
  int64_t stride;
  int64_t lastExtra;
  int replicas;
} ulyssesSumRun;

ULYSSES_HD ulyssesSumRun ulyssesSumRunAt(const ulyssesCopyArgs* a, int t, int64_t run) {
  const ulyssesCopyTensor* x = &a->tensors[t];
  ulyssesSumRun r;
  int64_t head = run % x->heads;
  int64_t rowPart =
      ulyssesLocalRow(a, x, run / x->heads / x->packed) * x->packed + run / x->heads % x->packed;
  int64_t slotRows = x->batch * (ulyssesCopySlotOffsets(a)[a->rank + 1] - ulyssesCopySlotOffsets(a)[a->rank]);
  ulyssesHolders holders = ulyssesHeadHolders(x->heads, x->queryHeads, a->nRanks, head);
  int64_t firstBegin, lastBegin;
  int64_t firstCount = ulyssesPeerHeads(x->heads, x->queryHeads, a->nRanks, holders.first, &firstBegin);
  int64_t lastCount = ulyssesPeerHeads(x->heads, x->queryHeads, a->nRanks, holders.last, &lastBegin);
  int64_t headSlot = slotRows * x->packed * x->headBytes;
  r.x = x;
  r.out = x->user + (rowPart * x->heads + head) * x->headBytes;
  r.first = x->segments + holders.prefix * headSlot +
            (rowPart * firstCount + head - firstBegin) * x->headBytes;
  r.next = x->segments + (holders.prefix + firstCount) * headSlot + rowPart * x->headBytes;
  r.stride = headSlot;
  r.lastExtra = rowPart * (lastCount - 1) * x->headBytes;
  r.replicas = holders.last - holders.first + 1;
  return r;
}

/* One thread's units of a head-sum run, for one unit size and element size
 * (constants where ulyssesSumRunThread calls it, so that the accumulators
 * and the unit's bytes stay in registers): lane l takes units l, l +
 * laneCount, ... (coalesced across the lanes), up to
 * ULYSSES_SUM_ELEMENTS_IN_FLIGHT elements per round. Each element is the
 * first replica, then the next ones added in increasing rank order, in fp32,
 * rounded once; an element costs one load and one add per replica. */
ULYSSES_HD void ulyssesSumUnitsThread(const ulyssesSumRun* r, int unitBytes, int elementSize,
                                      int lane, int laneCount) {
  const ulyssesCopyTensor* x = r->x;
  int wordBytes = x->wordBytes < unitBytes ? x->wordBytes : unitBytes;
  int unitElements = unitBytes / elementSize;
  int roundUnits = ULYSSES_SUM_ELEMENTS_IN_FLIGHT / unitElements;
  int64_t units = x->headBytes / unitBytes;
  for (int64_t unit0 = lane; unit0 < units; unit0 += (int64_t)roundUnits * laneCount) {
    float sum[ULYSSES_SUM_ELEMENTS_IN_FLIGHT] = {0};
    for (int i = 0; i < r->replicas; i++) {
      const unsigned char* replica =
          i == 0 ? r->first
                 : r->next + (i - 1) * r->stride + (i == r->replicas - 1 ? r->lastExtra : 0);
      for (int k = 0; k < roundUnits; k++) {
        if (unit0 + k * laneCount >= units) break;
        uint32_t bits[4];
        ulyssesLoadUnit(replica + (unit0 + k * laneCount) * unitBytes, unitBytes, wordBytes, bits);
        for (int e = 0; e < unitElements; e++) {
          /* Element e's raw bits: a whole word of a 4-byte type, a half of a 2-byte one. */
          uint32_t raw = elementSize == 4 ? bits[e] : bits[e / 2] >> (16 * (e % 2));
          float value = ulyssesFloatOfBits(raw, x->dataType);
          sum[k * unitElements + e] = i == 0 ? value : sum[k * unitElements + e] + value;
        }
      }
    }
    for (int k = 0; k < roundUnits; k++) {
      if (unit0 + k * laneCount >= units) break;
      uint32_t bits[4] = {0, 0, 0, 0};
      for (int e = 0; e < unitElements; e++) {
        uint32_t raw = ulyssesBitsOfFloat(sum[k * unitElements + e], x->dataType);
        if (elementSize == 4)
          bits[e] = raw;
        else
          bits[e / 2] |= (raw & 0xffffu) << (16 * (e % 2));
      }
      ulyssesStoreUnit(r->out + (unit0 + k * laneCount) * unitBytes, unitBytes, wordBytes, bits);
    }
  }
}

/* One thread's elements of a head-sum run: each element of one kv head of
 * one local row is the sum of the replicas the peers that need that head
 * sent back (ulyssesSumUnitsThread, in units of ulyssesSumUnitBytes). */
ULYSSES_HD void ulyssesSumRunThread(const ulyssesCopyArgs* a, int t, int64_t run, int lane,
                                    int laneCount) {
  const ulyssesCopyTensor* x = &a->tensors[t];
  ulyssesSumRun r = ulyssesSumRunAt(a, t, run);
  int unitBytes = ulyssesSumUnitBytes(x);
#define ULYSSES_SUM_UNITS(UnitBytes, ElementSize) \
  ulyssesSumUnitsThread(&r, UnitBytes, ElementSize, lane, laneCount)
  if (x->dataType == ULYSSES_TYPE_FLOAT32) {
    if (unitBytes == 16) ULYSSES_SUM_UNITS(16, 4);
    else if (unitBytes == 8) ULYSSES_SUM_UNITS(8, 4);
    else ULYSSES_SUM_UNITS(4, 4);
  } else {
    if (unitBytes == 16) ULYSSES_SUM_UNITS(16, 2);
    else if (unitBytes == 8) ULYSSES_SUM_UNITS(8, 2);
    else if (unitBytes == 4) ULYSSES_SUM_UNITS(4, 2);
    else ULYSSES_SUM_UNITS(2, 2);
  }
#undef ULYSSES_SUM_UNITS
}

#endif /* ULYSSES_SUM_H_ */
