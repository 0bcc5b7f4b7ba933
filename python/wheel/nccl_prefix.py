"""Prints the NCCL of this interpreter's environment: the prefix (include/nccl.h,
lib/libnccl.so.2) of the nvidia-nccl wheel that PyTorch's wheel depends on and
loads, or nothing where the environment has none.

meson.build runs it for -Dnccl_home=auto (what pip install . passes) with
python -I, which ignores PYTHONPATH: pip's isolated build environment hides the
environment's site-packages through PYTHONPATH, so the wheel found is the one
of the environment pip installs into.
"""

import os
import sys


def nccl_prefix(search_path):
    """The first nvidia/nccl on search_path that has both the header and the
    library, in import order; None where there is none."""
    for entry in search_path:
        root = os.path.join(entry or os.curdir, "nvidia", "nccl")
        if (os.path.isfile(os.path.join(root, "include", "nccl.h"))
                and os.path.isfile(os.path.join(root, "lib", "libnccl.so.2"))):
            return os.path.abspath(root)
    return None


if __name__ == "__main__":
    found = nccl_prefix(sys.path)
    if found:
        print(found)
