"""python/wheel/nccl_prefix.py, which meson.build runs for -Dnccl_home=auto
(pip install .): the environment's nvidia-nccl wheel where it has header and
library, in import order, and nothing otherwise; run with python -I, so that
PYTHONPATH (how pip's isolated build environment hides the real one) is not
searched."""

import importlib.util
import os
import subprocess
import sys
import tempfile
import unittest

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "wheel",
                      "nccl_prefix.py")
spec = importlib.util.spec_from_file_location("nccl_prefix", SCRIPT)
nccl_prefix = importlib.util.module_from_spec(spec)
spec.loader.exec_module(nccl_prefix)


def fake_wheel(site, header=True, library=True):
    """site/nvidia/nccl as the nvidia-nccl wheel lays it out; its path."""
    root = os.path.join(site, "nvidia", "nccl")
    os.makedirs(os.path.join(root, "include"))
    os.makedirs(os.path.join(root, "lib"))
    if header:
        open(os.path.join(root, "include", "nccl.h"), "w").close()
    if library:
        open(os.path.join(root, "lib", "libnccl.so.2"), "w").close()
    return root


class NcclPrefix(unittest.TestCase):
    def setUp(self):
        self.scratch = tempfile.TemporaryDirectory()
        self.addCleanup(self.scratch.cleanup)

    def site(self, name):
        return os.path.join(self.scratch.name, name)

    def test_finds_the_wheel(self):
        root = fake_wheel(self.site("a"))
        self.assertEqual(nccl_prefix.nccl_prefix([self.site("empty"), self.site("a")]), root)

    def test_first_in_import_order(self):
        first = fake_wheel(self.site("a"))
        fake_wheel(self.site("b"))
        self.assertEqual(nccl_prefix.nccl_prefix([self.site("a"), self.site("b")]), first)

    def test_needs_header_and_library(self):
        fake_wheel(self.site("no_header"), header=False)
        fake_wheel(self.site("no_library"), library=False)
        self.assertIsNone(nccl_prefix.nccl_prefix([self.site("no_header"), self.site("no_library")]))
        root = fake_wheel(self.site("whole"))
        self.assertEqual(nccl_prefix.nccl_prefix(
            [self.site("no_header"), self.site("no_library"), self.site("whole")]), root)

    def test_ignores_pythonpath_under_isolation(self):
        # How meson.build runs it: a wheel reachable only through PYTHONPATH
        # (pip's build overlay) is not the environment's.
        fake_wheel(self.site("overlay"))
        env = dict(os.environ, PYTHONPATH=self.site("overlay"))
        isolated = subprocess.run([sys.executable, "-I", SCRIPT], env=env, capture_output=True,
                                  text=True, check=True).stdout.strip()
        self.assertNotEqual(isolated, os.path.join(self.site("overlay"), "nvidia", "nccl"))
        plain = subprocess.run([sys.executable, SCRIPT], env=env, capture_output=True,
                               text=True, check=True).stdout.strip()
        self.assertEqual(plain, os.path.join(self.site("overlay"), "nvidia", "nccl"))


if __name__ == "__main__":
    unittest.main()
