"""bench/torch_baseline.py's torch-free parts: the length patterns (the same
split as kernel_perf -l) and its arguments. Importing it needs no torch."""

import importlib.util
import io
import os
import unittest
from contextlib import redirect_stderr

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench",
                      "torch_baseline.py")


def load_script():
    spec = importlib.util.spec_from_file_location("torch_baseline", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


baseline = load_script()


class LengthPatterns(unittest.TestCase):
    def test_every_pattern_splits_the_whole_total(self):
        for pattern in baseline.PATTERNS:
            for nranks in (1, 2, 3, 4, 8, 16):
                for total in (0, 1, nranks, 4096, 65536 + 7, 1 << 20):
                    lengths = baseline.pattern_lengths(pattern, total, nranks)
                    self.assertEqual(len(lengths), nranks)
                    self.assertEqual(sum(lengths), total, (pattern, nranks, total))
                    self.assertTrue(all(n >= 0 for n in lengths), (pattern, nranks, total))

    def test_equal_gives_the_first_ranks_the_remainder(self):
        self.assertEqual(baseline.pattern_lengths("equal", 10, 4), [3, 3, 2, 2])

    def test_vila_puts_the_remainder_on_the_last_rank(self):
        self.assertEqual(baseline.pattern_lengths("vila", 10, 4), [2, 2, 2, 4])
        self.assertEqual(baseline.pattern_lengths("vila", (1 << 20) + 5, 8)[:7], [1 << 17] * 7)

    def test_skew_runs_from_thirty_percent_above_to_thirty_below(self):
        self.assertEqual(baseline.pattern_lengths("skew", 1000, 4), [325, 275, 225, 175])
        lengths = baseline.pattern_lengths("skew", 1 << 20, 8)
        mean = (1 << 20) / 8
        self.assertAlmostEqual(lengths[0] / mean, 1.3, places=3)
        self.assertAlmostEqual(lengths[-1] / mean, 0.7, places=3)
        self.assertEqual(lengths, sorted(lengths, reverse=True))
        self.assertEqual(baseline.pattern_lengths("skew", 77, 1), [77])

    def test_bad_patterns_and_sizes_are_refused(self):
        with self.assertRaises(ValueError):
            baseline.pattern_lengths("random", 10, 2)
        with self.assertRaises(ValueError):
            baseline.pattern_lengths("equal", 10, 0)
        with self.assertRaises(ValueError):
            baseline.pattern_lengths("vila", -1, 2)


class Arguments(unittest.TestCase):
    def test_defaults_check_first(self):
        args = baseline.parse_args(["rows.jsonl"])
        self.assertEqual((args.kernel_perf_jsonl, args.n, args.w, args.c, args.j),
                         ("rows.jsonl", 10, 3, 1, None))

    def test_flags(self):
        args = baseline.parse_args(["rows.jsonl", "-n", "4", "-w", "0", "-c", "0", "-j", "o.jsonl"])
        self.assertEqual((args.n, args.w, args.c, args.j), (4, 0, 0, "o.jsonl"))

    def test_check_is_zero_or_one(self):
        with redirect_stderr(io.StringIO()), self.assertRaises(SystemExit):
            baseline.parse_args(["rows.jsonl", "-c", "2"])


if __name__ == "__main__":
    unittest.main()
