/* Head ownership: which heads of a tensor each rank takes (the plain split,
 * or grouped-query attention's kv heads), where a peer's slice starts among a
 * row's segments, and which ranks hold a kv head. */
#ifndef ULYSSES_HEADS_H_
#define ULYSSES_HEADS_H_

#include "ulysses_base.h"

/*------------------------------------------------------------------------
 * Head split: rank p owns heads [begin, begin + count); the first
 * heads % nRanks ranks take one extra head. In 32 bits: the plan holds
 * heads and queryHeads to 2^31 - 1 (checkLayout in src/plan.c), and nvcc
 * divides 32-bit values inline where a 64-bit division calls a routine of
 * about a hundred instructions.
 *----------------------------------------------------------------------*/
/* A tensor's head split among nRanks ranks with what every lookup divides
 * by found once (ulyssesHeadSplitOf): on the host for the kernels, which
 * carry it in their arguments, so that a chunk's head lookups divide by
 * nothing but the group and loop over nothing. `split` counts the heads
 * the ranks share out: the query heads of a grouped-query kv tensor
 * (queryHeads > 0, group of them per kv head), else the tensor's heads. */
typedef struct {
  int32_t heads, queryHeads, nRanks;
  int32_t base, extra; /* split / nRanks, split % nRanks */
  int32_t group;       /* queryHeads / heads; 1 for the plain split */
  /* Grouped-query with base >= 1: ulyssesGroupPeriod(group, base + 1) and
   * ulyssesGroupPeriod(group, base) (ulyssesSplitHeadPrefix). */
  int32_t periodWide, periodNarrow;
} ulyssesHeadSplit;

/* The smallest q >= 1 with group | q * step: group / gcd(group, step).
 * Euclid's loop runs over the remainders of two numbers below group (a
 * handful of steps for the small groups of grouped-query attention). */
ULYSSES_HD uint32_t ulyssesGroupPeriod(uint32_t group, uint32_t step) {
  uint32_t a = group, b = step % group;
  while (b != 0) {
    uint32_t r = a % b;
    a = b;
    b = r;
  }
  return group / a;
}

ULYSSES_HD ulyssesHeadSplit ulyssesHeadSplitOf(int64_t heads, int64_t queryHeads, int nRanks) {
  ulyssesHeadSplit s;
  uint32_t split = (uint32_t)(queryHeads == 0 ? heads : queryHeads), n = (uint32_t)nRanks;
  s.heads = (int32_t)heads;
  s.queryHeads = (int32_t)queryHeads;
  s.nRanks = nRanks;
  s.base = (int32_t)(split / n);
  s.extra = (int32_t)(split % n);
  s.group = queryHeads == 0 ? 1 : (int32_t)((uint32_t)queryHeads / (uint32_t)heads);
  s.periodWide = s.periodNarrow = 1;
  if (queryHeads != 0 && s.base >= 1) {
    s.periodWide = (int32_t)ulyssesGroupPeriod((uint32_t)s.group, (uint32_t)s.base + 1);
    s.periodNarrow = (int32_t)ulyssesGroupPeriod((uint32_t)s.group, (uint32_t)s.base);
  }
  return s;
}

/* Rank r's first shared-out head (query head for a kv tensor) and count. */
ULYSSES_HD uint32_t ulyssesSplitBegin(const ulyssesHeadSplit* s, uint32_t r) {
  uint32_t extra = (uint32_t)s->extra;
  return r * (uint32_t)s->base + (r < extra ? r : extra);
}

ULYSSES_HD uint32_t ulyssesSplitCount(const ulyssesHeadSplit* s, uint32_t r) {
  return (uint32_t)s->base + (r < (uint32_t)s->extra ? 1u : 0u);
}

/* The heads peer gets: its group of the plain split, or, for the kv heads of
 * grouped-query attention, the kv heads its query heads read. Returns the
 * count; *begin the first. */
ULYSSES_HD int64_t ulyssesSplitPeerHeads(const ulyssesHeadSplit* s, int peer, int64_t* begin) {
  uint32_t first = ulyssesSplitBegin(s, (uint32_t)peer), count = ulyssesSplitCount(s, (uint32_t)peer);
  if (s->queryHeads == 0) {
    *begin = first;
    return count;
  }
  uint32_t group = (uint32_t)s->group;
  *begin = first / group;
  if (count == 0) return 0;
  return (first + count - 1) / group + 1 - first / group;
}

/* The heads of the peers before peer, summed: where peer's slice starts
 * among a row's segments (kv heads shared by several peers count for each).
 * Grouped-query, in closed form: with base = Hq / P, extra = Hq % P, G = Hq
 * / Hkv and b_q rank q's first query head, rank q holds ceil(b_{q+1} / G) -
 * floor(b_q / G) kv heads if it holds a query head. base == 0: the first Hq
 * ranks hold one query head each, hence one kv head. base >= 1: every rank
 * holds query heads, and as ceil(x / G) = floor(x / G) + [G does not divide
 * x] the sum telescopes to floor(b_p / G) + p - #{1 <= q <= p : G | b_q}.
 * For q <= extra, b_q = q (base + 1), a multiple of G when q is one of
 * periodWide; for q > extra, b_q = Hq - (P - q) base, a multiple of G (which
 * divides Hq) when P - q is one of periodNarrow. */
ULYSSES_HD int64_t ulyssesSplitHeadPrefix(const ulyssesHeadSplit* s, int peer) {
  uint32_t p = (uint32_t)peer;
  if (s->queryHeads == 0) return ulyssesSplitBegin(s, p);
  uint32_t query = (uint32_t)s->queryHeads, n = (uint32_t)s->nRanks;
  uint32_t base = (uint32_t)s->base, extra = (uint32_t)s->extra, group = (uint32_t)s->group;
  if (base == 0) return p < query ? p : query;
  uint32_t wide = p < extra ? p : extra; /* ranks 1 .. wide begin at q (base + 1) */
  uint32_t aligned = wide / (uint32_t)s->periodWide;
  if (p > extra) {
    /* The multiples of the period among P - q, q = extra + 1 .. p. */
    uint32_t period = (uint32_t)s->periodNarrow;
    aligned += (n - extra - 1) / period + 1 - (n - p + period - 1) / period;
  }
  return (p * base + wide) / group + p - aligned;
}

/* The rank that owns shared-out head x (the inverse of ulyssesSplitBegin /
 * ulyssesSplitCount). */
ULYSSES_HD int ulyssesSplitOwner(const ulyssesHeadSplit* s, uint32_t x) {
  uint32_t base = (uint32_t)s->base, extra = (uint32_t)s->extra, wide = extra * (base + 1);
  if (x < wide) return (int)(x / (base + 1));
  return (int)(extra + (x - wide) / base);
}

/* The peers that hold kv head `head` (grouped-query: every peer whose query
 * heads read it; plain: its owner) are the consecutive ranks first .. last,
 * each holding at least that head; *prefix: ulyssesSplitHeadPrefix of first,
 * where first's slices start among a row's segments. Found once per chunk
 * (ulyssesSumChunkAt), so that the head sum's per-element work does not grow
 * with the rank count. */
typedef struct {
  int first, last;
  int64_t prefix;
} ulyssesHolders;

ULYSSES_HD ulyssesHolders ulyssesSplitHolders(const ulyssesHeadSplit* s, int64_t head) {
  ulyssesHolders h;
  /* A peer reads kv head `head` when its query heads meet [head * G,
   * head * G + G): the owners of the two ends and the ranks between (G = 1:
   * the plain split's owner). */
  uint32_t group = (uint32_t)s->group, first = (uint32_t)head * group;
  h.first = ulyssesSplitOwner(s, first);
  h.last = ulyssesSplitOwner(s, first + group - 1);
  h.prefix = ulyssesSplitHeadPrefix(s, h.first);
  return h;
}

/* The same lookups from the tensor's heads, queryHeads and nRanks, for the
 * host's code and the tests (they find the split each time). */
ULYSSES_HD int64_t ulyssesPeerHeads(int64_t heads, int64_t queryHeads, int nRanks, int peer,
                                    int64_t* begin) {
  ulyssesHeadSplit s = ulyssesHeadSplitOf(heads, queryHeads, nRanks);
  return ulyssesSplitPeerHeads(&s, peer, begin);
}

ULYSSES_HD int64_t ulyssesPeerHeadPrefix(int64_t heads, int64_t queryHeads, int nRanks, int peer) {
  ulyssesHeadSplit s = ulyssesHeadSplitOf(heads, queryHeads, nRanks);
  return ulyssesSplitHeadPrefix(&s, peer);
}

ULYSSES_HD int64_t ulyssesHeadBegin(int64_t heads, int nRanks, int rank) {
  ulyssesHeadSplit s = ulyssesHeadSplitOf(heads, 0, nRanks);
  return ulyssesSplitBegin(&s, (uint32_t)rank);
}

ULYSSES_HD int64_t ulyssesHeadCount(int64_t heads, int nRanks, int rank) {
  ulyssesHeadSplit s = ulyssesHeadSplitOf(heads, 0, nRanks);
  return ulyssesSplitCount(&s, (uint32_t)rank);
}

ULYSSES_HD int ulyssesHeadOwner(int64_t heads, int nRanks, int64_t head) {
  ulyssesHeadSplit s = ulyssesHeadSplitOf(heads, 0, nRanks);
  return ulyssesSplitOwner(&s, (uint32_t)head);
}

ULYSSES_HD ulyssesHolders ulyssesHeadHolders(int64_t heads, int64_t queryHeads, int nRanks,
                                             int64_t head) {
  ulyssesHeadSplit s = ulyssesHeadSplitOf(heads, queryHeads, nRanks);
  return ulyssesSplitHolders(&s, head);
}

#endif /* ULYSSES_HEADS_H_ */
