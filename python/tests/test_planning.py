"""The host arithmetic the torch binding sizes its tensors with (ulysses._planning),
checked against the library itself."""

import itertools
import unittest

import ulysses
from ulysses import DataType, Layout, Op, Result, _planning

FAKE_DEVICE = 0x7F0000000000


def library_heads(heads, query_heads, n_ranks, rank):
    """How many heads the library gives rank, read off its head-side buffer size."""
    lay = Layout(1, heads, 1, 1, query_heads=query_heads)
    with ulysses.Plan.exact(n_ranks, rank, [1] * n_ranks, lay) as plan:
        return plan.buffer_sizes(Op.SEQ_TO_HEAD)[1] // n_ranks


def library_shares(heads, query_heads, n_ranks):
    """Whether the library sums kv replicas in head -> seq (it then refuses opaque data)."""
    lay = Layout(1, heads, 1, 1, query_heads=query_heads)
    with ulysses.Plan.exact(n_ranks, 0, [1] * n_ranks, lay) as plan:
        try:
            ulysses.unpack(plan, Op.HEAD_TO_SEQ, [FAKE_DEVICE], None, None, None, 0, 0)
        except ulysses.UlyssesError as error:
            if error.code == Result.ERROR_UNSUPPORTED_ELEMENT_SIZE:
                return True
            if error.code == Result.ERROR_NULL_POINTER:  # got past the check: the workspace
                return False
            raise
    return False  # nothing to copy and nothing to sum: the stage had no work


class HeadSplitTest(unittest.TestCase):
    def test_plain_split_is_the_librarys(self):
        for heads, n_ranks in itertools.product(range(1, 13), range(1, 10)):
            begins = []
            for rank in range(n_ranks):
                begin, count = _planning.head_range(heads, n_ranks, rank)
                self.assertEqual(count, library_heads(heads, 0, n_ranks, rank), (heads, n_ranks, rank))
                begins.append((begin, count))
            # Contiguous groups covering every head once, the larger ones first.
            self.assertEqual([b for b, _ in begins], [sum(c for _, c in begins[:r]) for r in range(n_ranks)])
            self.assertEqual(sum(c for _, c in begins), heads)
            self.assertEqual(sorted((c for _, c in begins), reverse=True), [c for _, c in begins])

    def test_grouped_query_split_is_the_librarys(self):
        for query_heads, n_ranks in itertools.product(range(1, 25), range(1, 10)):
            for kv_heads in (h for h in range(1, query_heads + 1) if query_heads % h == 0):
                for rank in range(n_ranks):
                    count = _planning.head_range(kv_heads, n_ranks, rank, query_heads)[1]
                    self.assertEqual(count, library_heads(kv_heads, query_heads, n_ranks, rank),
                                     (query_heads, kv_heads, n_ranks, rank))
                    counts = _planning.local_kv_counts(kv_heads, query_heads, n_ranks, rank)
                    self.assertEqual(len(counts), count)
                    self.assertEqual(sum(counts), _planning.head_count(query_heads, n_ranks, rank))
                    self.assertTrue(all(c > 0 for c in counts))

    def test_sharing_is_where_the_library_sums(self):
        for query_heads, n_ranks in itertools.product([4, 6, 8, 12], range(1, 9)):
            for kv_heads in (h for h in range(1, query_heads + 1) if query_heads % h == 0):
                self.assertEqual(_planning.shares_kv_heads(kv_heads, query_heads, n_ranks),
                                 library_shares(kv_heads, query_heads, n_ranks),
                                 (query_heads, kv_heads, n_ranks))

    def test_local_kv_counts_examples(self):
        # Qwen2-7B on 8 ranks: 28 query heads, 4 kv heads (7 query heads each).
        self.assertEqual(_planning.local_kv_counts(4, 28, 8, 0), [4])
        self.assertEqual(_planning.local_kv_counts(4, 28, 8, 1), [3, 1])
        self.assertEqual(_planning.local_kv_counts(2, 8, 4, 3), [2])


class RowsTest(unittest.TestCase):
    def test_exact_rows(self):
        self.assertEqual(_planning.exact_rows(Op.SEQ_TO_HEAD, (3, 5), 1, 5), (5, 8))
        self.assertEqual(_planning.exact_rows(Op.HEAD_TO_SEQ, (3, 5), 1, 8), (5, 8))
        self.assertEqual(_planning.exact_rows(Op.ALL_GATHER, (3, 5), 0, 3), (3, 8))
        with self.assertRaises(ValueError):
            _planning.exact_rows(Op.SEQ_TO_HEAD, (3, 5), 1, 3)
        with self.assertRaises(ValueError):
            _planning.exact_rows(Op.HEAD_TO_SEQ, (3, 5), 1, 5)

    def test_capacity_rows(self):
        self.assertEqual(_planning.capacity_rows(Op.SEQ_TO_HEAD, 4, 6), (6, 6, 24))
        self.assertEqual(_planning.capacity_rows(Op.HEAD_TO_SEQ, 4, 24), (6, 6, 24))
        with self.assertRaises(ValueError):
            _planning.capacity_rows(Op.HEAD_TO_SEQ, 4, 22)

    def test_capacity_shapes_agree_with_the_library(self):
        capacity, seq_rows, head_rows = _planning.capacity_rows(Op.SEQ_TO_HEAD, 3, 4)
        lay = Layout(2, 6, 8, 2, dtype=DataType.BFLOAT16)
        with ulysses.Plan.capacity(3, 2, [capacity] * 3, FAKE_DEVICE, lay) as plan:
            heads = _planning.head_range(6, 3, 2)[1]
            self.assertEqual(plan.buffer_sizes(Op.SEQ_TO_HEAD),
                             (2 * seq_rows * 6 * 8 * 2, 2 * head_rows * heads * 8 * 2))


if __name__ == "__main__":
    unittest.main()
