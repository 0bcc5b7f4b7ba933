/* The head split of kernels/ulysses_heads.h (32-bit, the grouped-query
 * prefix in closed form) against the int64 functions it replaced, the prefix
 * as their loop over the peers before it, and the kv heads of each rank
 * found by walking its query heads one by one. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ulysses_heads.h"

/*------------------------------------------------------------------------
 * The reference: the int64 head split as the kernels had it, and its
 * grouped-query prefix as a loop over the peers.
 *----------------------------------------------------------------------*/
static int64_t refHeadBegin(int64_t heads, int nRanks, int rank) {
  int64_t base = heads / nRanks, extra = heads % nRanks;
  return rank * base + (rank < extra ? rank : extra);
}

static int64_t refHeadCount(int64_t heads, int nRanks, int rank) {
  return heads / nRanks + (rank < heads % nRanks ? 1 : 0);
}

static int64_t refPeerHeads(int64_t heads, int64_t queryHeads, int nRanks, int peer,
                            int64_t* begin) {
  if (queryHeads == 0) {
    *begin = refHeadBegin(heads, nRanks, peer);
    return refHeadCount(heads, nRanks, peer);
  }
  int64_t group = queryHeads / heads;
  int64_t queryBegin = refHeadBegin(queryHeads, nRanks, peer);
  int64_t queryCount = refHeadCount(queryHeads, nRanks, peer);
  *begin = queryBegin / group;
  if (queryCount == 0) return 0;
  return (queryBegin + queryCount + group - 1) / group - *begin;
}

static int64_t refPeerHeadPrefix(int64_t heads, int64_t queryHeads, int nRanks, int peer) {
  if (queryHeads == 0) return refHeadBegin(heads, nRanks, peer);
  int64_t prefix = 0, begin;
  for (int q = 0; q < peer; q++) prefix += refPeerHeads(heads, queryHeads, nRanks, q, &begin);
  return prefix;
}

static int refHeadOwner(int64_t heads, int nRanks, int64_t head) {
  int64_t base = heads / nRanks, extra = heads % nRanks;
  if (head < extra * (base + 1)) return (int)(head / (base + 1));
  return (int)(extra + (head - extra * (base + 1)) / base);
}

#define MAX_RANKS 64

/* Every head function for one tensor (queryHeads 0: the plain split), every
 * peer, against the reference; the prefix also against the library's own
 * ulyssesPeerHeads summed, which the reference's loop is. */
static void checkSplit(int64_t heads, int64_t queryHeads, int nRanks) {
  int64_t split = queryHeads == 0 ? heads : queryHeads;
  int64_t prefix = 0;
  for (int p = 0; p <= nRanks; p++) {
    int64_t want = refPeerHeadPrefix(heads, queryHeads, nRanks, p);
    int64_t got = ulyssesPeerHeadPrefix(heads, queryHeads, nRanks, p);
    if (got != want || got != prefix)
      fail_msg("H %lld, Hq %lld, P %d: prefix of peer %d is %lld, the loop's %lld (summed %lld)",
               (long long)heads, (long long)queryHeads, nRanks, p, (long long)got,
               (long long)want, (long long)prefix);
    if (p == nRanks) break;
    int64_t begin, wantBegin;
    int64_t count = ulyssesPeerHeads(heads, queryHeads, nRanks, p, &begin);
    int64_t wantCount = refPeerHeads(heads, queryHeads, nRanks, p, &wantBegin);
    if (count != wantCount || begin != wantBegin)
      fail_msg("H %lld, Hq %lld, P %d: peer %d gets %lld heads from %lld, the reference %lld from %lld",
               (long long)heads, (long long)queryHeads, nRanks, p, (long long)count,
               (long long)begin, (long long)wantCount, (long long)wantBegin);
    prefix += count;
    assert_int_equal(ulyssesHeadBegin(split, nRanks, p), refHeadBegin(split, nRanks, p));
    assert_int_equal(ulyssesHeadCount(split, nRanks, p), refHeadCount(split, nRanks, p));
  }
}

/* The holders of each kv head against the ranks whose query heads read it,
 * found one query head at a time, and each plain head's owner. */
static void checkHolders(int64_t heads, int64_t queryHeads, int nRanks) {
  int first[64], last[64];
  for (int64_t h = 0; h < heads; h++) first[h] = -1;
  for (int r = 0; r < nRanks; r++) {
    int64_t split = queryHeads == 0 ? heads : queryHeads, group = queryHeads == 0 ? 1 : queryHeads / heads;
    int64_t begin = refHeadBegin(split, nRanks, r);
    for (int64_t j = begin; j < begin + refHeadCount(split, nRanks, r); j++) {
      if (first[j / group] < 0) first[j / group] = r;
      last[j / group] = r;
      if (queryHeads == 0) assert_int_equal(ulyssesHeadOwner(heads, nRanks, j), r);
    }
  }
  for (int64_t h = 0; h < heads; h++) {
    ulyssesHolders holders = ulyssesHeadHolders(heads, queryHeads, nRanks, h);
    if (holders.first != first[h] || holders.last != last[h] ||
        holders.prefix != refPeerHeadPrefix(heads, queryHeads, nRanks, first[h]))
      fail_msg("H %lld, Hq %lld, P %d: kv head %lld held by %d .. %d (prefix %lld), read by %d .. %d",
               (long long)heads, (long long)queryHeads, nRanks, (long long)h, holders.first,
               holders.last, (long long)holders.prefix, first[h], last[h]);
  }
}

/* heads 1 .. 64, the plain split and queryHeads = heads * G for G 1 .. 16,
 * nRanks 1 .. 64. */
static void testEverySmallSplit(void** state) {
  (void)state;
  for (int64_t heads = 1; heads <= 64; heads++)
    for (int64_t group = 0; group <= 16; group++)
      for (int nRanks = 1; nRanks <= MAX_RANKS; nRanks++) {
        checkSplit(heads, heads * group, nRanks);
        checkHolders(heads, heads * group, nRanks);
      }
}

/* Head counts near 2^31 - 1, the most the plan accepts: the 32-bit
 * arithmetic must not wrap (2^31 - 2 = 2 * 3^2 * 7 * 11 * 31 * 151 * 331). */
static void testLargestSplits(void** state) {
  (void)state;
  static const int64_t groups[] = {1, 2, 3, 6, 7, 9, 14, 18, 62, 331, 1073741823, 2147483646};
  static const int ranks[] = {1, 2, 3, 5, 7, 8, 16, 31, 63, 64};
  const int64_t queryHeads = INT32_MAX - 1;
  for (size_t i = 0; i < sizeof ranks / sizeof ranks[0]; i++) {
    int nRanks = ranks[i];
    checkSplit(INT32_MAX, 0, nRanks);
    checkSplit(INT32_MAX - 1, 0, nRanks);
    for (size_t g = 0; g < sizeof groups / sizeof groups[0]; g++)
      checkSplit(queryHeads / groups[g], queryHeads, nRanks);
    int64_t head = INT32_MAX - 1 - nRanks;
    assert_int_equal(ulyssesHeadOwner(INT32_MAX, nRanks, head), refHeadOwner(INT32_MAX, nRanks, head));
    assert_int_equal(ulyssesHeadOwner(INT32_MAX, nRanks, INT32_MAX - 1),
                     refHeadOwner(INT32_MAX, nRanks, INT32_MAX - 1));
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(testEverySmallSplit),
      cmocka_unit_test(testLargestSplits),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
