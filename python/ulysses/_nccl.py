"""The few NCCL calls a framework binding needs, through ctypes.

The NCCL library used is the one already in the process where there is one
(PyTorch's wheel loads its own libnccl.so.2), so that an ncclComm_t made here,
one taken from PyTorch and libulysses all belong to one NCCL. Otherwise the
nvidia-nccl wheel's copy, otherwise the loader's search path.
"""

import ctypes
import importlib.util
import os

from . import _loader

NCCL_SONAME = "libnccl.so.2"
NCCL_UNIQUE_ID_BYTES = 128
NCCL_SUCCESS = 0


class UniqueId(ctypes.Structure):
    """ncclUniqueId: 128 opaque bytes that rank 0 makes and every rank passes on."""
    _fields_ = [("internal", ctypes.c_char * NCCL_UNIQUE_ID_BYTES)]


class NcclError(RuntimeError):
    """An NCCL call returned something other than ncclSuccess."""

    def __init__(self, call, code, text):
        self.code = code
        super().__init__("%s failed: NCCL error %d (%s)" % (call, code, text))


def loaded_paths():
    """The libnccl files mapped into this process now (Linux /proc/self/maps)."""
    paths = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(None, 5)
                if len(fields) == 6:
                    path = fields[5].strip()
                    if os.path.basename(path).startswith("libnccl.so") and path not in paths:
                        paths.append(path)
    except OSError:
        pass
    return paths


def wheel_path():
    """libnccl.so.2 of the nvidia-nccl wheel (the one PyTorch's wheel uses), or None."""
    try:
        spec = importlib.util.find_spec("nvidia.nccl")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = os.path.join(folder, "lib", NCCL_SONAME)
        if os.path.exists(path):
            return path
    return None


def candidates():
    """Where NCCL is looked for, in order: (where, path)."""
    found = [("already loaded in this process", path) for path in loaded_paths()]
    wheel = wheel_path()
    if wheel is not None:
        found.append(("the nvidia-nccl wheel", wheel))
    found.append(("the loader's search path", NCCL_SONAME))
    return found


class Nccl:
    """A loaded libnccl with the calls this package makes."""

    def __init__(self, path):
        # RTLD_GLOBAL: a libulysses loaded later resolves its libnccl.so.2 to this one.
        self.path = path
        self.cdll = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        c = self.cdll
        c.ncclGetVersion.argtypes = [ctypes.POINTER(ctypes.c_int)]
        c.ncclGetVersion.restype = ctypes.c_int
        c.ncclGetErrorString.argtypes = [ctypes.c_int]
        c.ncclGetErrorString.restype = ctypes.c_char_p
        c.ncclGetUniqueId.argtypes = [ctypes.POINTER(UniqueId)]
        c.ncclGetUniqueId.restype = ctypes.c_int
        c.ncclCommInitRank.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, UniqueId,
                                       ctypes.c_int]
        c.ncclCommInitRank.restype = ctypes.c_int
        c.ncclCommDestroy.argtypes = [ctypes.c_void_p]
        c.ncclCommDestroy.restype = ctypes.c_int

    def _check(self, call, code):
        if code != NCCL_SUCCESS:
            text = self.cdll.ncclGetErrorString(code)
            raise NcclError(call, code, text.decode() if text else "unknown")

    def version(self):
        """ncclGetVersion: e.g. 22809 for 2.28.9."""
        value = ctypes.c_int()
        self._check("ncclGetVersion", self.cdll.ncclGetVersion(ctypes.byref(value)))
        return value.value

    def get_unique_id(self):
        """ncclGetUniqueId, as 128 bytes (picklable, for broadcasting)."""
        uid = UniqueId()
        self._check("ncclGetUniqueId", self.cdll.ncclGetUniqueId(ctypes.byref(uid)))
        return ctypes.string_at(ctypes.addressof(uid), NCCL_UNIQUE_ID_BYTES)

    def comm_init_rank(self, n_ranks, unique_id, rank):
        """ncclCommInitRank on the current CUDA device: the ncclComm_t as an int.

        Collective: every rank of the communicator calls it with the same id.
        """
        if len(unique_id) != NCCL_UNIQUE_ID_BYTES:
            raise ValueError("an ncclUniqueId has %d bytes, not %d"
                             % (NCCL_UNIQUE_ID_BYTES, len(unique_id)))
        uid = UniqueId()
        ctypes.memmove(ctypes.addressof(uid), bytes(unique_id), NCCL_UNIQUE_ID_BYTES)
        comm = ctypes.c_void_p()
        self._check("ncclCommInitRank",
                    self.cdll.ncclCommInitRank(ctypes.byref(comm), n_ranks, uid, rank))
        return comm.value

    def comm_destroy(self, comm):
        """ncclCommDestroy."""
        self._check("ncclCommDestroy", self.cdll.ncclCommDestroy(comm))


def load():
    """The first NCCL of candidates() that loads (see the module's docstring)."""
    nccl, failures = _loader.first_that_loads(candidates(), Nccl)
    if nccl is None:
        raise OSError("NCCL could not be loaded; tried:\n" + "\n".join(failures))
    return nccl


# The process's NCCL, loaded on first use and kept.
library = _loader.Lazy(load)
