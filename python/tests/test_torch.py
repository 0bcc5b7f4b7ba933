"""ulysses.torch without a GPU or process group: what can run on the CPU. The
multi-rank checks are gpu_torch_check.py's. Skipped where torch is missing."""

import importlib.util
import unittest

import ulysses

HAVE_TORCH = importlib.util.find_spec("torch") is not None


@unittest.skipUnless(HAVE_TORCH, "torch is not installed: the PyTorch binding is not testable here")
class TorchBindingTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        import torch
        import ulysses.torch as binding
        cls.torch = torch
        cls.binding = binding

    def test_dtypes(self):
        torch, binding = self.torch, self.binding
        self.assertEqual(binding.element_type(torch.bfloat16), (2, ulysses.DataType.BFLOAT16))
        self.assertEqual(binding.element_type(torch.float16), (2, ulysses.DataType.FLOAT16))
        self.assertEqual(binding.element_type(torch.float32), (4, ulysses.DataType.FLOAT32))
        self.assertEqual(binding.element_type(torch.int64), (8, ulysses.DataType.OPAQUE))
        self.assertEqual(binding.element_type(torch.bool), (1, ulysses.DataType.OPAQUE))
        self.assertEqual(binding.element_type(torch.complex128), (16, ulysses.DataType.OPAQUE))

    def test_reference_index_pairs(self):
        binding = self.binding
        self.assertEqual(binding._op_of(2, 1, (2, 1), (1, 2)), ulysses.Op.SEQ_TO_HEAD)
        self.assertEqual(binding._op_of(1, 2, (2, 1), (1, 2)), ulysses.Op.HEAD_TO_SEQ)
        self.assertEqual(binding._op_of(3, 1, (3, 1), (1, 3)), ulysses.Op.SEQ_TO_HEAD)
        with self.assertRaises(RuntimeError):
            binding._op_of(2, 3, (2, 1), (1, 2))

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
        binding._zero_rows_from(tensor, torch.tensor(4))
        self.assertTrue(torch.isnan(tensor[:, :4]).all())
        self.assertTrue((tensor[:, 4:] == 0).all())

    def test_host_lengths_accept_cpu_tensors(self):
        torch = self.torch
        self.assertEqual(ulysses._planning.host_lengths(torch.tensor([3, 5]), 2), (3, 5))

    def test_functions_keep_the_references_signatures(self):
        binding = self.binding
        for function in (binding.SeqAllToAll4D, binding.SeqAllToAll5D, binding.SeqAllGather):
            self.assertTrue(callable(function.apply))
        self.assertTrue(issubclass(binding.UlyssesAttention, self.torch.nn.Module))


if __name__ == "__main__":
    unittest.main()
