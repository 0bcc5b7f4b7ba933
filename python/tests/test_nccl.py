"""The NCCL helper that makes communicators for frameworks: it finds the NCCL
that libulysses itself uses, and speaks its ABI (no GPU needed for these calls)."""

import ctypes
import os
import unittest

import ulysses
from ulysses import _nccl


class NcclTest(unittest.TestCase):
    def test_the_nccl_libulysses_loaded_comes_first(self):
        ulysses.library()
        loaded = _nccl.loaded_paths()
        self.assertTrue(loaded, "libulysses should have mapped its libnccl.so.2")
        where, path = _nccl.candidates()[0]
        self.assertEqual(where, "already loaded in this process")
        self.assertEqual(os.path.realpath(path), os.path.realpath(loaded[0]))
        self.assertEqual(_nccl.candidates()[-1], ("the loader's search path", _nccl.NCCL_SONAME))

    def test_version_is_new_enough(self):
        nccl = _nccl.library()
        self.assertGreaterEqual(nccl.version(), 21800)

    def test_unique_id_is_nccls(self):
        self.assertEqual(ctypes.sizeof(_nccl.UniqueId), 128)
        with self.assertRaises(ValueError):
            _nccl.library().comm_init_rank(2, b"short", 0)

    def test_errors_are_named(self):
        nccl = _nccl.library()
        with self.assertRaises(_nccl.NcclError) as raised:
            nccl._check("ncclCommInitRank", 4)  # ncclInvalidArgument
        self.assertIn("ncclCommInitRank", str(raised.exception))
        self.assertEqual(raised.exception.code, 4)


if __name__ == "__main__":
    unittest.main()
