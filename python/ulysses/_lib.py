"""Finding, loading and checking libulysses, and the prototype of every function.

Where the library is looked for, in order:
  1. the environment variable ULYSSES_LIBRARY (a path; when set, nothing else
     is tried, so that a wrong path fails loudly instead of loading another);
  2. next to this package (libulysses.so.0, then libulysses.so);
  3. the loader's search path (LD_LIBRARY_PATH, ldconfig): libulysses.so.0.
The library's major version must be this package's (ulyssesGetVersion).
"""

import ctypes
import os

from . import _loader, _nccl
from ._errors import UlyssesLibraryError
from ._types import MAJOR, MINOR, PATCH, Config, Layout, Segment, version_tuple

ENV_VAR = "ULYSSES_LIBRARY"
SONAME = "libulysses.so.0"

# The version this package was written for; the library's major must match.
PACKAGE_VERSION = (MAJOR, MINOR, PATCH)

_int = ctypes.c_int
_int64 = ctypes.c_int64
_size = ctypes.c_size_t
_ptr = ctypes.c_void_p  # handles, device pointers and streams, passed as ints
_result = ctypes.c_int  # ulyssesResult_t and the other enums

# name: (restype, argtypes), in the header's order. Host out-parameters are
# typed pointers (passed with byref); device memory is a plain c_void_p.
PROTOTYPES = {
    "ulyssesGetErrorString": (ctypes.c_char_p, [_result]),
    "ulyssesGetLastError": (ctypes.c_char_p, []),
    "ulyssesGetVersion": (_result, [ctypes.POINTER(_int)]),
    "ulyssesCommCreate": (_result, [ctypes.POINTER(_ptr), _ptr, ctypes.POINTER(Config)]),
    "ulyssesCommDestroy": (_result, [_ptr]),
    "ulyssesCommAbort": (_result, [_ptr]),
    "ulyssesCommCount": (_result, [_ptr, ctypes.POINTER(_int)]),
    "ulyssesCommUserRank": (_result, [_ptr, ctypes.POINTER(_int)]),
    "ulyssesCommGetAsyncError": (_result, [_ptr, ctypes.POINTER(_result)]),
    "ulyssesCommClearAsyncError": (_result, [_ptr]),
    "ulyssesPlanCreateExact": (_result, [ctypes.POINTER(_ptr), _int, _int,
                                         ctypes.POINTER(_int64), _int, ctypes.POINTER(Layout)]),
    "ulyssesPlanCreateCapacity": (_result, [ctypes.POINTER(_ptr), _int, _int,
                                            ctypes.POINTER(_int64), _ptr, _int,
                                            ctypes.POINTER(Layout)]),
    "ulyssesPlanDestroy": (_result, [_ptr]),
    "ulyssesGetBufferSizes": (_result, [_ptr, _result, _int, ctypes.POINTER(_size),
                                        ctypes.POINTER(_size)]),
    "ulyssesGetWorkspaceSize": (_result, [_ptr, _result, ctypes.POINTER(_size)]),
    "ulyssesSeqToHead": (_result, [_ptr, _ptr, _ptr, _ptr, _size, _ptr, _ptr]),
    "ulyssesHeadToSeq": (_result, [_ptr, _ptr, _ptr, _ptr, _size, _ptr, _ptr]),
    "ulyssesAllGather": (_result, [_ptr, _ptr, _ptr, _ptr, _size, _ptr, _ptr]),
    "ulyssesExchangeMulti": (_result, [_ptr, _result, _int, ctypes.POINTER(_ptr),
                                       ctypes.POINTER(_ptr), _ptr, _size, _ptr, _ptr]),
    "ulyssesAllGatherLengths": (_result, [_ptr, _ptr, _ptr, _ptr]),
    "ulyssesGatherLengthsHost": (_result, [_int64, ctypes.POINTER(_int64), _ptr, _ptr]),
    "ulyssesGetSegments": (_result, [_ptr, _result, _int, _int, ctypes.POINTER(Segment)]),
    "ulyssesPack": (_result, [_ptr, _result, _int, ctypes.POINTER(_ptr), _ptr, _ptr, _ptr,
                              _size, _ptr]),
    "ulyssesUnpack": (_result, [_ptr, _result, _int, ctypes.POINTER(_ptr), _ptr, _ptr, _ptr,
                                _size, _ptr]),
    "ulyssesMemAlloc": (_result, [_ptr, _size, ctypes.POINTER(_ptr)]),
    "ulyssesMemFree": (_result, [_ptr, _ptr]),
    "ulyssesGetExchangePath": (_result, [_ptr, _result, _int, ctypes.POINTER(_ptr), _ptr,
                                         ctypes.POINTER(_result),
                                         ctypes.POINTER(ctypes.c_char_p)]),
}


class Library:
    """A loaded libulysses: .path, .version (major, minor, patch), .cdll with
    every function of PROTOTYPES declared."""

    def __init__(self, cdll, path, version):
        self.cdll = cdll
        self.path = path
        self.version = version

    def __getattr__(self, name):
        return getattr(self.cdll, name)


def candidates():
    """Where the library is looked for: a list of (where, path)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return [("the environment variable %s" % ENV_VAR, env)]
    here = os.path.dirname(os.path.abspath(__file__))
    return [("next to the package", os.path.join(here, SONAME)),
            ("next to the package", os.path.join(here, "libulysses.so")),
            ("the loader's search path", SONAME)]


def _open(path):
    """dlopen path after the process's NCCL (_nccl.library(): one already
    loaded, else the nvidia-nccl wheel's, as PyTorch's wheel loads it), so that
    libulysses's libnccl.so.2 is that one and not another on the loader's path."""
    try:
        _nccl.library()
    except OSError as nccl_error:
        try:
            return ctypes.CDLL(path)
        except OSError as error:
            raise OSError("%s (and NCCL could not be loaded either: %s)" % (error, nccl_error))
    return ctypes.CDLL(path)


def library_version_code(cdll):
    """ulyssesGetVersion of a loaded library."""
    get_version = cdll.ulyssesGetVersion
    get_version.argtypes, get_version.restype = PROTOTYPES["ulyssesGetVersion"][1], _result
    code = _int()
    if get_version(ctypes.byref(code)) != 0:
        raise UlyssesLibraryError("ulyssesGetVersion failed")
    return code.value


def check_version(code, path):
    """Raises UlyssesLibraryError unless the library's major version is this package's."""
    found = version_tuple(code)
    expected = tuple(PACKAGE_VERSION)
    if found[0] != expected[0]:
        raise UlyssesLibraryError(
            "%s is libulysses %d.%d.%d (ulyssesGetVersion: %d), but this Python package was "
            "written for libulysses %d.%d.%d: the major versions must match. Point %s at a "
            "matching build." % ((path,) + found + (code,) + expected + (ENV_VAR,)))
    return found


def _declare(cdll, path):
    for name, (restype, argtypes) in PROTOTYPES.items():
        try:
            function = getattr(cdll, name)
        except AttributeError:
            raise UlyssesLibraryError("%s does not export %s, which this package calls; it is "
                                      "not the library this package was written for" % (path, name))
        function.restype = restype
        function.argtypes = argtypes


def _open_checked(path):
    """The Library at path: loaded, of this package's major version, with every
    function of PROTOTYPES declared. A missing file is an OSError like any other
    failure to load."""
    if os.sep in path and not os.path.exists(path):
        raise OSError("no such file")
    cdll = _open(path)
    loaded_path = getattr(cdll, "_name", path)
    version = check_version(library_version_code(cdll), loaded_path)
    _declare(cdll, loaded_path)
    return Library(cdll, loaded_path, version)


def load_library(path=None):
    """Loads and checks a libulysses (path, else the search order of this module's
    docstring) and returns a Library. Does not touch the cached one (library())."""
    tried = [("the path given", path)] if path is not None else candidates()
    loaded, failures = _loader.first_that_loads(tried, _open_checked)
    if loaded is not None:
        return loaded
    raise UlyssesLibraryError(
        "libulysses could not be loaded; tried:\n%s\nBuild it (meson setup build && ninja -C "
        "build) and set %s to the full path of build/libulysses.so, or install it where the "
        "loader finds it." % ("\n".join(failures), ENV_VAR))


# The process's libulysses, loaded on first use and kept.
library = _loader.Lazy(load_library)
