#!/usr/bin/env python3
"""ulysses.torch and ulysses.vila with torch but without a GPU: what runs on
the CPU. Its own Meson test (python_torch), which exits 77, Meson's SKIP,
where torch is not installed, so that the skip shows in the test summary
instead of hiding inside an OK. The torch-free logic is in test_lengths.py and
test_vila.py; the operators on P = 2 and 3 CPU rank processes (gloo, with a
stand-in exchange) in torch_cpu_ranks.py, which this runs; the multi-rank
checks on GPUs in gpu_torch_check.py.
"""

import importlib.util
import inspect
import os
import subprocess
import sys
import unittest

SKIP = 77
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
STANDIN_PATH = os.path.join(TESTS_DIR, "vila_standin")


class TorchBindingTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        import torch
        import ulysses
        import ulysses.torch as binding
        cls.torch, cls.ulysses, cls.binding = torch, ulysses, binding

    def test_dtypes(self):
        torch, binding, DataType = self.torch, self.binding, self.ulysses.DataType
        self.assertEqual(binding.element_type(torch.bfloat16), (2, DataType.BFLOAT16))
        self.assertEqual(binding.element_type(torch.float16), (2, DataType.FLOAT16))
        self.assertEqual(binding.element_type(torch.float32), (4, DataType.FLOAT32))
        self.assertEqual(binding.element_type(torch.int64), (8, DataType.OPAQUE))
        self.assertEqual(binding.element_type(torch.bool), (1, DataType.OPAQUE))
        self.assertEqual(binding.element_type(torch.complex128), (16, DataType.OPAQUE))

    def test_expand_heads_matches_index_select(self):
        torch, binding = self.torch, self.binding
        kv = torch.randn(2, 5, 3, 4, requires_grad=True)
        for counts in ([1, 1, 1], [2, 2, 2], [3, 1, 2]):
            index = torch.tensor([i for i, c in enumerate(counts) for _ in range(c)])
            expanded = binding._expand_heads(kv, counts)
            self.assertTrue(torch.equal(expanded, kv.index_select(2, index)))
            grad = torch.randn_like(expanded)
            (ours,) = torch.autograd.grad(expanded, kv, grad)
            (theirs,) = torch.autograd.grad(kv.index_select(2, index), kv, grad)
            self.assertTrue(torch.allclose(ours, theirs))

    def test_padding_rows_are_zeroed(self):
        torch, binding = self.torch, self.binding
        tensor = torch.full((2, 6, 3, 4), float("nan"))
        self.ulysses._ops._zero_rows_from(tensor, torch.tensor(4))
        self.assertTrue(torch.isnan(tensor[:, :4]).all())
        self.assertTrue((tensor[:, 4:] == 0).all())

    def test_lengths_in_the_callers_forms(self):
        torch, binding = self.torch, self.binding
        # VILA's globals: one-element int64 tensors; one tensor of P lengths.
        globals_format = [torch.tensor([4]), torch.tensor([4]), torch.tensor([7])]
        self.assertEqual(binding._host_lengths(globals_format, 3), (4, 4, 7))
        self.assertEqual(binding._host_lengths(torch.tensor([4, 4, 7]), 3), (4, 4, 7))
        self.assertEqual(binding._read_device_lengths(globals_format), [4, 4, 7])
        with self.assertRaises(TypeError):
            binding._read_device_lengths([torch.tensor([4.0])])

    def test_the_references_signatures(self):
        binding = self.binding

        def parameters(function):
            return list(inspect.signature(function.forward).parameters.items())

        four = parameters(binding.SeqAllToAll4D)
        self.assertEqual([name for name, _ in four[:6]],
                         ["ctx", "group", "input", "scatter_idx", "gather_idx", "lengths"])
        five = dict(parameters(binding.SeqAllToAll5D))
        self.assertEqual((five["scatter_idx"].default, five["gather_idx"].default), (3, 1))
        self.assertEqual([name for name, _ in parameters(binding.SeqAllGather)[:3]],
                         ["ctx", "group", "input"])
        self.assertTrue(issubclass(binding.SeqAllToAll4D, self.torch.autograd.Function))
        self.assertTrue(issubclass(binding.UlyssesAttention, self.torch.nn.Module))

    def test_the_operators_are_registered(self):
        ops = self.torch.ops.ulysses
        for name in ("seq_to_head", "head_to_seq", "all_gather", "all_gather_backward"):
            schema = str(getattr(ops, name).default._schema)
            self.assertTrue(schema.startswith("ulysses::%s(" % name), schema)
        self.assertIn("Tensor[] inputs, str group, SymInt[] lengths, Tensor? local_length",
                      str(ops.seq_to_head.default._schema))

    def test_plans_are_cached_and_a_capacity_plan_keeps_its_length(self):
        torch, ulysses = self.torch, self.ulysses
        from ulysses import _comms
        layouts = [ulysses.Layout(2, 8, 16, 2)]
        exact = _comms.plan_of(2, 0, (3, 5), layouts)
        self.assertIs(_comms.plan_of(2, 0, [3, 5], [ulysses.Layout(2, 8, 16, 2)]), exact)
        self.assertFalse(exact.capacity_mode)
        local_length = torch.tensor([4])
        capacity = _comms.plan_of(2, 0, (6, 6), layouts, local_length)
        self.assertTrue(capacity.capacity_mode)
        self.assertIs(capacity.keepalive, local_length)
        self.assertEqual(capacity.device_local_length, local_length.data_ptr())
        self.assertIs(_comms.plan_of(2, 0, (6, 6), layouts, local_length), capacity)
        self.assertIsNot(_comms.plan_of(2, 0, (6, 6), layouts, torch.tensor([4])), capacity)

    def test_reference_format_of_the_globals(self):
        torch, vila = self.torch, self.ulysses_vila()
        values = vila.reference_format((4, 4, 4, 7), torch.device("cpu"))
        self.assertEqual(len(values), 4)
        for value, expected in zip(values, (4, 4, 4, 7)):
            self.assertEqual((value.dtype, tuple(value.shape), int(value.item())),
                             (torch.int64, (1,), expected))

    def ulysses_vila(self):
        import ulysses.vila
        return ulysses.vila


class StandInVilaTest(unittest.TestCase):
    """apply() on the stand-in package (vila_standin/llava, the module paths and
    globals API of VILA's sequence parallelism)."""

    def setUp(self):
        import torch
        import ulysses.torch as binding
        import ulysses.vila as vila
        sys.path.insert(0, STANDIN_PATH)
        self.addCleanup(sys.path.remove, STANDIN_PATH)
        import llava.train.sequence_parallel.all_to_all as all_to_all
        import llava.train.sequence_parallel.globals as globals_module
        import llava.train.sequence_parallel.ulysses_attn as attention
        self.torch, self.binding, self.vila = torch, binding, vila
        self.all_to_all, self.globals, self.attention = all_to_all, globals_module, attention
        self.reference = {name: getattr(all_to_all, name) for name in vila.CLASS_NAMES}
        self.addCleanup(vila.revert)
        self.addCleanup(globals_module.set_ulysses_seq_len, None)

    def test_apply_switches_the_imports_and_writes_the_globals(self):
        replaced = self.vila.apply()
        self.assertIn("llava.train.sequence_parallel.ulysses_attn.SeqAllToAll4D", replaced)
        self.assertIn("llava.train.sequence_parallel.all_to_all.SeqAllGather", replaced)
        self.assertIs(self.attention.SeqAllToAll4D, self.binding.SeqAllToAll4D)
        for name in self.vila.CLASS_NAMES:
            self.assertIs(getattr(self.all_to_all, name), getattr(self.binding, name))
        # What a seq -> head hands the hooks reaches VILA's globals.
        self.vila.attach_if_loaded()
        self.binding._lengths.hooks.call(None, (4, 4, 4, 7), self.torch.device("cpu"))
        stored = self.globals.get_ulysses_seq_len()
        self.assertEqual([int(value.item()) for value in stored], [4, 4, 4, 7])
        self.assertTrue(all(value.dtype == self.torch.int64 and tuple(value.shape) == (1,)
                            for value in stored))
        self.vila.revert()
        self.assertIs(self.attention.SeqAllToAll4D, self.reference["SeqAllToAll4D"])
        self.assertIs(self.all_to_all.SeqAllToAll5D, self.reference["SeqAllToAll5D"])


class CpuRanksTest(unittest.TestCase):
    """torch_cpu_ranks.py: the operators, opcheck and torch.compile on P CPU ranks."""

    def run_ranks(self, n_ranks):
        result = subprocess.run([sys.executable, os.path.join(TESTS_DIR, "torch_cpu_ranks.py"),
                                 str(n_ranks)], capture_output=True, text=True, timeout=900)
        lines = result.stdout.splitlines()
        print("\n".join(line for line in lines if "rank 0]" in line or "FAIL" in line))
        self.assertEqual(result.returncode, 0, "\n".join(
            [line for line in lines if "FAIL" in line] + [result.stderr[-4000:]]))

    def test_two_ranks(self):
        self.run_ranks(2)

    def test_three_ranks(self):
        self.run_ranks(3)


def main():
    if importlib.util.find_spec("torch") is None:
        print("SKIP: torch is not installed; the PyTorch binding's CPU checks did not run "
              "(the torch-free ones are in test_lengths.py and test_vila.py)")
        return SKIP
    program = unittest.main(exit=False, verbosity=2)
    return 0 if program.result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
