/* The copy body: one thread's share of a sweep of runs at fixed strides,
 * the loop every copy kernel (pack, unpack, one pass) spends its time in. */
#ifndef ULYSSES_COPY_H_
#define ULYSSES_COPY_H_

#include "ulysses_rows.h"

/* count runs of the same size, run k at src + k * srcStride and dst + k *
 * dstStride: what one sweep moves. */
typedef struct {
  const unsigned char* src;
  int64_t srcStride;
  unsigned char* dst;
  int64_t dstStride;
  int64_t count;
  int64_t bytes;
} ulyssesSweep;

/* One thread's share of a sweep: words lane, lane + laneCount, ... of the
 * runs' concatenation, in rounds of ULYSSES_WORDS_IN_FLIGHT loads, then as
 * many stores, so that the loads of one round may span several runs.
 * Everything but the loads and stores is resolved before the loop: a lane's
 * next word is laneCount / words runs and laneCount % words words on, plus
 * one run where the word passes the run's end, so a step is two adds and a
 * compare (no division, no table), the word's place in its run counted in 32
 * bits. Longer runs (above ULYSSES_COPY_COUNTED_WORDS) are swept one at a
 * time, no lane leaving its run, so that nothing wraps and that place is not
 * counted. The stores retrace the loads' steps rather than hold their
 * addresses, which would take registers that the words in flight need. Only
 * the last round, with fewer words, checks each word (by a constant index,
 * so that the words stay in registers). */
ULYSSES_HD void ulyssesCopyRunsThread(const ulyssesSweep* s, int wordBytes, int lane,
                                      int laneCount) {
  int64_t words = s->bytes / wordBytes, total = s->count * words, sweeps = 1;
  if (words > ULYSSES_COPY_COUNTED_WORDS) {
    sweeps = s->count;
    total = words;
  }
  if (lane >= total) return;
  int64_t firstWord = lane % words, runStep = laneCount / words, wordStep = laneCount % words;
  int32_t runWords = (int32_t)words, stepWords = (int32_t)wordStep;
  if (sweeps > 1) {
    runWords = 1;
    stepWords = 0;
  }
  int64_t srcStep = runStep * s->srcStride + wordStep * wordBytes;
  int64_t dstStep = runStep * s->dstStride + wordStep * wordBytes;
  int64_t srcWrap = s->srcStride - words * wordBytes, dstWrap = s->dstStride - words * wordBytes;
#define ULYSSES_COPY_STEP(At, Step, Wrap) \
  do {                                    \
    word += stepWords;                    \
    At += Step;                           \
    if (word >= runWords) {               \
      word -= runWords;                   \
      At += Wrap;                         \
    }                                     \
  } while (0)
#define ULYSSES_COPY_LOAD(Type)                   \
  do {                                            \
    held[k] = *(const Type*)(const void*)src;     \
    ULYSSES_COPY_STEP(src, srcStep, srcWrap);     \
  } while (0)
#define ULYSSES_COPY_STORE(Type)                  \
  do {                                            \
    *(Type*)(void*)dst = held[k];                 \
    ULYSSES_COPY_STEP(dst, dstStep, dstWrap);     \
  } while (0)
  /* The widest type the alignment allows: 16-byte words are one vector
   * load and store per lane. */
#define ULYSSES_COPY_WORDS(Type)                                                     \
  do {                                                                               \
    Type held[ULYSSES_WORDS_IN_FLIGHT];                                              \
    int32_t roundWord;                                                               \
    for (; left >= ULYSSES_WORDS_IN_FLIGHT; left -= ULYSSES_WORDS_IN_FLIGHT) {       \
      roundWord = word;                                                              \
      for (int k = 0; k < ULYSSES_WORDS_IN_FLIGHT; k++) ULYSSES_COPY_LOAD(Type);     \
      word = roundWord;                                                              \
      for (int k = 0; k < ULYSSES_WORDS_IN_FLIGHT; k++) ULYSSES_COPY_STORE(Type);    \
    }                                                                                \
    roundWord = word;                                                                \
    for (int k = 0; k < ULYSSES_WORDS_IN_FLIGHT; k++)                                \
      if (k < left) ULYSSES_COPY_LOAD(Type);                                         \
    word = roundWord;                                                                \
    for (int k = 0; k < ULYSSES_WORDS_IN_FLIGHT; k++)                                \
      if (k < left) ULYSSES_COPY_STORE(Type);                                        \
  } while (0)
  for (int64_t sweep = 0; sweep < sweeps; sweep++) {
    int64_t run = sweeps > 1 ? sweep : lane / words;
    const unsigned char* src = s->src + run * s->srcStride + firstWord * wordBytes;
    unsigned char* dst = s->dst + run * s->dstStride + firstWord * wordBytes;
    int64_t left = (total - lane + laneCount - 1) / laneCount;
    int32_t word = sweeps > 1 ? 0 : (int32_t)firstWord;
    switch (wordBytes) {
      case 16:
        ULYSSES_COPY_WORDS(ulyssesWord16);
        break;
      case 8:
        ULYSSES_COPY_WORDS(uint64_t);
        break;
      case 4:
        ULYSSES_COPY_WORDS(uint32_t);
        break;
      case 2:
        ULYSSES_COPY_WORDS(uint16_t);
        break;
      default:
        ULYSSES_COPY_WORDS(uint8_t);
    }
  }
#undef ULYSSES_COPY_WORDS
#undef ULYSSES_COPY_STORE
#undef ULYSSES_COPY_LOAD
#undef ULYSSES_COPY_STEP
}

/* The sweep of count runs of r.bytes from run r on, userStride apart in the
 * user buffer and back to back in the segments, in the direction of the
 * launch (pack: user -> segments). */
ULYSSES_HD ulyssesSweep ulyssesMoveSweep(const ulyssesCopyArgs* a, const ulyssesCopyTensor* x,
                                         const ulyssesRun* r, int64_t count, int64_t userStride) {
  ulyssesSweep sweep;
  unsigned char* userBytes = x->user + r->userOffset;
  unsigned char* segmentBytes = x->segments + r->segmentOffset;
  sweep.src = a->toSegments ? userBytes : segmentBytes;
  sweep.srcStride = a->toSegments ? userStride : r->bytes;
  sweep.dst = a->toSegments ? segmentBytes : userBytes;
  sweep.dstStride = a->toSegments ? r->bytes : userStride;
  sweep.count = count;
  sweep.bytes = r->bytes;
  return sweep;
}

#endif /* ULYSSES_COPY_H_ */
