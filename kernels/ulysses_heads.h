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
ULYSSES_HD int64_t ulyssesHeadBegin(int64_t heads, int nRanks, int rank) {
  uint32_t h = (uint32_t)heads, n = (uint32_t)nRanks, r = (uint32_t)rank;
  uint32_t base = h / n, extra = h % n;
  return r * base + (r < extra ? r : extra);
}

ULYSSES_HD int64_t ulyssesHeadCount(int64_t heads, int nRanks, int rank) {
  uint32_t h = (uint32_t)heads, n = (uint32_t)nRanks;
  return h / n + ((uint32_t)rank < h % n ? 1 : 0);
}

/* The heads peer gets of a tensor of `heads` heads: its group of the plain
 * split, or, for the kv heads of grouped-query attention (queryHeads > 0),
 * the kv heads its query heads read. Returns the count; *begin the first. */
ULYSSES_HD int64_t ulyssesPeerHeads(int64_t heads, int64_t queryHeads, int nRanks, int peer,
                                    int64_t* begin) {
  if (queryHeads == 0) {
    *begin = ulyssesHeadBegin(heads, nRanks, peer);
    return ulyssesHeadCount(heads, nRanks, peer);
  }
  uint32_t group = (uint32_t)queryHeads / (uint32_t)heads;
  uint32_t queryBegin = (uint32_t)ulyssesHeadBegin(queryHeads, nRanks, peer);
  uint32_t queryCount = (uint32_t)ulyssesHeadCount(queryHeads, nRanks, peer);
  *begin = queryBegin / group;
  if (queryCount == 0) return 0;
  return (queryBegin + queryCount - 1) / group + 1 - queryBegin / group;
}

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

/* The heads of the peers before peer, summed: where peer's slice starts
 * among a row's segments (kv heads shared by several peers count for each).
 * Grouped-query, in closed form: with base = Hq / P, extra = Hq % P, G = Hq
 * / Hkv and b_q rank q's first query head, rank q holds ceil(b_{q+1} / G) -
 * floor(b_q / G) kv heads if it holds a query head. base == 0: the first Hq
 * ranks hold one query head each, hence one kv head. base >= 1: every rank
 * holds query heads, and as ceil(x / G) = floor(x / G) + [G does not divide
 * x] the sum telescopes to floor(b_p / G) + p - #{1 <= q <= p : G | b_q}.
 * For q <= extra, b_q = q (base + 1), a multiple of G when q is one of
 * ulyssesGroupPeriod(G, base + 1); for q > extra, b_q = Hq - (P - q) base,
 * a multiple of G (which divides Hq) when P - q is one of
 * ulyssesGroupPeriod(G, base). */
ULYSSES_HD int64_t ulyssesPeerHeadPrefix(int64_t heads, int64_t queryHeads, int nRanks, int peer) {
  if (queryHeads == 0) return ulyssesHeadBegin(heads, nRanks, peer);
  uint32_t query = (uint32_t)queryHeads, n = (uint32_t)nRanks, p = (uint32_t)peer;
  uint32_t base = query / n, extra = query % n, group = query / (uint32_t)heads;
  if (base == 0) return p < query ? p : query;
  uint32_t wide = p < extra ? p : extra; /* ranks 1 .. wide begin at q (base + 1) */
  uint32_t aligned = wide / ulyssesGroupPeriod(group, base + 1);
  if (p > extra) {
    /* The multiples of the period among P - q, q = extra + 1 .. p. */
    uint32_t period = ulyssesGroupPeriod(group, base);
    aligned += (n - extra - 1) / period + 1 - (n - p + period - 1) / period;
  }
  return (p * base + wide) / group + p - aligned;
}

/* The rank that owns head `head` of `heads` in the plain split (the inverse
 * of ulyssesHeadBegin / ulyssesHeadCount). */
ULYSSES_HD int ulyssesHeadOwner(int64_t heads, int nRanks, int64_t head) {
  uint32_t h = (uint32_t)heads, n = (uint32_t)nRanks, x = (uint32_t)head;
  uint32_t base = h / n, extra = h % n, wide = extra * (base + 1);
  if (x < wide) return (int)(x / (base + 1));
  return (int)(extra + (x - wide) / base);
}

/* The peers that hold kv head `head` (grouped-query: every peer whose query
 * heads read it; plain: its owner) are the consecutive ranks first .. last,
 * each holding at least that head; *prefix: ulyssesPeerHeadPrefix of first,
 * where first's slices start among a row's segments. Found once per chunk
 * (ulyssesSumChunkAt), so that the head sum's per-element work does not grow
 * with the rank count. */
typedef struct {
  int first, last;
  int64_t prefix;
} ulyssesHolders;

ULYSSES_HD ulyssesHolders ulyssesHeadHolders(int64_t heads, int64_t queryHeads, int nRanks,
                                             int64_t head) {
  ulyssesHolders h;
  if (queryHeads == 0) {
    h.first = h.last = ulyssesHeadOwner(heads, nRanks, head);
  } else {
    /* A peer reads kv head `head` when its query heads meet [head * G,
     * head * G + G): the owners of the two ends and the ranks between. */
    uint32_t group = (uint32_t)queryHeads / (uint32_t)heads, first = (uint32_t)head * group;
    h.first = ulyssesHeadOwner(queryHeads, nRanks, first);
    h.last = ulyssesHeadOwner(queryHeads, nRanks, first + group - 1);
  }
  h.prefix = ulyssesPeerHeadPrefix(heads, queryHeads, nRanks, h.first);
  return h;
}

#endif /* ULYSSES_HEADS_H_ */
