"""ulysses: NCCL-native all-to-all exchanges for Ulysses sequence parallelism.

This package is the C library's API in Python, over ctypes; it needs neither
torch nor a GPU to import. libulysses is loaded on first use (see _lib for
where it is looked for: ULYSSES_LIBRARY, next to the package, the loader's
search path). The PyTorch drop-in lives in ulysses.torch, imported on demand:

    from ulysses.torch import SeqAllToAll4D

and ulysses.vila switches VILA's modules to it in one call (ulysses.vila.apply()).

Pointers and streams are ints (tensor.data_ptr(), stream.cuda_stream).
"""

from ._api import (
    Comm,
    Plan,
    all_gather,
    all_gather_lengths,
    comm_abort,
    comm_clear_async_error,
    comm_count,
    comm_create,
    comm_destroy,
    comm_get_async_error,
    comm_user_rank,
    exchange_multi,
    gather_lengths_host,
    get_buffer_sizes,
    get_error_string,
    get_exchange_path,
    get_last_error,
    get_segments,
    get_version,
    get_workspace_size,
    head_to_seq,
    mem_alloc,
    mem_free,
    pack,
    plan_create_capacity,
    plan_create_exact,
    plan_destroy,
    reverse,
    seq_to_head,
    unpack,
    version,
)
from ._errors import UlyssesError, UlyssesLibraryError
from ._lib import library, load_library
from ._planning import head_range
from . import vila  # its lengths hook keeps VILA's globals wherever VILA is loaded
from ._types import (
    CONFIG_MAGIC,
    CONFIG_UNDEF_INT,
    LAYOUT_SIZE_MIN,
    MAJOR,
    MAX_LENGTH,
    MAX_TENSORS,
    MINOR,
    NUM_RESULTS,
    PATCH,
    SEGMENT_SIZE_MIN,
    STATUS_LENGTH_ABOVE_CAPACITY,
    STATUS_NEGATIVE_LENGTH,
    VERSION_CODE,
    WORKSPACE_ALIGNMENT,
    Config,
    DataType,
    Layout,
    Op,
    Order,
    Path,
    Result,
    Segment,
    SegmentPlace,
)

__version__ = "%d.%d.%d" % (MAJOR, MINOR, PATCH)

__all__ = [
    "CONFIG_MAGIC", "CONFIG_UNDEF_INT", "LAYOUT_SIZE_MIN", "MAJOR", "MAX_LENGTH", "MAX_TENSORS", "MINOR",
    "NUM_RESULTS", "PATCH", "SEGMENT_SIZE_MIN", "STATUS_LENGTH_ABOVE_CAPACITY", "STATUS_NEGATIVE_LENGTH",
    "VERSION_CODE", "WORKSPACE_ALIGNMENT",
    "Comm", "Config", "DataType", "Layout", "Op", "Order", "Path", "Plan", "Result", "Segment",
    "SegmentPlace", "UlyssesError", "UlyssesLibraryError",
    "all_gather", "all_gather_lengths", "comm_abort", "comm_clear_async_error", "comm_count",
    "comm_create", "comm_destroy", "comm_get_async_error", "comm_user_rank", "exchange_multi",
    "gather_lengths_host", "get_buffer_sizes", "get_error_string", "get_exchange_path",
    "get_last_error",
    "get_segments", "get_version", "get_workspace_size", "head_range", "head_to_seq",
    "library", "load_library", "mem_alloc", "mem_free", "pack", "plan_create_capacity", "plan_create_exact",
    "plan_destroy", "reverse", "seq_to_head", "unpack", "version",
]
