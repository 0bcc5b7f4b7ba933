/* Head ownership: which heads of a tensor each rank takes (the plain split,
 * or grouped-query attention's kv heads), where a peer's slice starts among a
 * row's segments, and which ranks hold a kv head. */
#ifndef ULYSSES_HEADS_H_
#define ULYSSES_HEADS_H_

#include "ulysses_base.h"

/*------------------------------------------------------------------------
 * Head split: rank p owns heads [begin, begin + count); the first
 * heads % nRanks ranks take one extra head.
 *----------------------------------------------------------------------*/
ULYSSES_HD int64_t ulyssesHeadBegin(int64_t heads, int nRanks, int rank) {
  int64_t base = heads / nRanks, extra = heads % nRanks;
  return rank * base + (rank < extra ? rank : extra);
}

ULYSSES_HD int64_t ulyssesHeadCount(int64_t heads, int nRanks, int rank) {
  return heads / nRanks + (rank < heads % nRanks ? 1 : 0);
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
  int64_t group = queryHeads / heads;
  int64_t queryBegin = ulyssesHeadBegin(queryHeads, nRanks, peer);
  int64_t queryCount = ulyssesHeadCount(queryHeads, nRanks, peer);
  *begin = queryBegin / group;
  if (queryCount == 0) return 0;
  return (queryBegin + queryCount + group - 1) / group - *begin;
}

/* The heads of the peers before peer, summed: where peer's slice starts
 * among a row's segments (kv heads shared by several peers count for each). */
ULYSSES_HD int64_t ulyssesPeerHeadPrefix(int64_t heads, int64_t queryHeads, int nRanks, int peer) {
  if (queryHeads == 0) return ulyssesHeadBegin(heads, nRanks, peer);
  int64_t prefix = 0, begin;
  for (int q = 0; q < peer; q++) prefix += ulyssesPeerHeads(heads, queryHeads, nRanks, q, &begin);
  return prefix;
}

/* The rank that owns head `head` of `heads` in the plain split (the inverse
 * of ulyssesHeadBegin / ulyssesHeadCount). */
ULYSSES_HD int ulyssesHeadOwner(int64_t heads, int nRanks, int64_t head) {
  int64_t base = heads / nRanks, extra = heads % nRanks;
  if (head < extra * (base + 1)) return (int)(head / (base + 1));
  return (int)(extra + (head - extra * (base + 1)) / base);
}

/* The peers that hold kv head `head` (grouped-query: every peer whose query
 * heads read it; plain: its owner) are the consecutive ranks first .. last,
 * each holding at least that head; *prefix: ulyssesPeerHeadPrefix of first,
 * where first's slices start among a row's segments. Found once per run so
 * that the head sum's per-element work does not grow with the rank count. */
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
    int64_t group = queryHeads / heads;
    h.first = ulyssesHeadOwner(queryHeads, nRanks, head * group);
    h.last = ulyssesHeadOwner(queryHeads, nRanks, head * group + group - 1);
  }
  h.prefix = ulyssesPeerHeadPrefix(heads, queryHeads, nRanks, h.first);
  return h;
}

#endif /* ULYSSES_HEADS_H_ */
