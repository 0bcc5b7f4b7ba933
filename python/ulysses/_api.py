"""The C API, one Python function per C function, plus Comm and Plan classes
that own their handles.

Pointers (device buffers, the workspace, device lengths) and CUDA streams are
plain ints (a torch tensor's data_ptr(), a stream's cuda_stream); None or 0 is
NULL, and stream 0 is CUDA's default stream. Every call that does not return
ulyssesSuccess raises UlyssesError with the library's name and message.
"""

import ctypes
import operator

from ._errors import UlyssesError
from ._lib import library
from ._types import Config, Layout, Op, Path, Result, Segment, version_tuple

_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _lib():
    return library().cdll


def _check(result):
    if result != Result.SUCCESS:
        lib = _lib()
        name = lib.ulyssesGetErrorString(result)
        message = lib.ulyssesGetLastError()
        raise UlyssesError(result, name.decode(), message.decode())


def _c_int(value, name):
    """value as a C int, refusing what ctypes would silently truncate."""
    value = operator.index(value)
    if not _INT_MIN <= value <= _INT_MAX:
        raise OverflowError("%s is %d, outside a C int" % (name, value))
    return value


def _int64_array(values, name):
    values = [operator.index(v) for v in values]
    for i, v in enumerate(values):
        if not _INT64_MIN <= v <= _INT64_MAX:
            raise OverflowError("%s[%d] is %d, outside int64_t" % (name, i, v))
    return (ctypes.c_int64 * len(values))(*values)


def _pointer(value, name):
    """An address as an int (None or 0: NULL)."""
    if value is None:
        return None
    value = operator.index(value)
    if value < 0:
        raise ValueError("%s is %d: an address is not negative" % (name, value))
    return value or None


def _pointer_array(values, name):
    return (ctypes.c_void_p * len(values))(
        *[_pointer(v, "%s[%d]" % (name, i)) for i, v in enumerate(values)])


def _layout_array(layouts):
    if isinstance(layouts, Layout):
        layouts = [layouts]
    layouts = list(layouts)
    for i, layout in enumerate(layouts):
        if not isinstance(layout, Layout):
            raise TypeError("layouts[%d] is a %s, not a ulysses.Layout" % (i, type(layout).__name__))
    return (Layout * len(layouts))(*layouts), len(layouts)


def _handle(obj, kind):
    """The C handle of a Plan or Comm (or an int handle, passed as it is)."""
    if obj is None:
        return None
    if isinstance(obj, (Plan, Comm)):
        if obj.handle is None:
            raise ValueError("this %s was closed" % type(obj).__name__)
        return obj.handle
    return _pointer(obj, kind)


def _size_t(value, name):
    value = operator.index(value)
    if value < 0:
        raise ValueError("%s is %d: a size is not negative" % (name, value))
    return value


# ---------------------------------------------------------------------------
# Errors and version.
# ---------------------------------------------------------------------------
def get_error_string(result):
    """ulyssesGetErrorString: the name of a result code."""
    return _lib().ulyssesGetErrorString(int(result)).decode()


def get_last_error():
    """ulyssesGetLastError: this thread's message for its last failed call."""
    return _lib().ulyssesGetLastError().decode()


def get_version():
    """ulyssesGetVersion: the loaded library's ULYSSES_VERSION_CODE."""
    code = ctypes.c_int()
    _check(_lib().ulyssesGetVersion(ctypes.byref(code)))
    return code.value


def version():
    """The loaded library's (major, minor, patch)."""
    return version_tuple(get_version())


# ---------------------------------------------------------------------------
# Communicators.
# ---------------------------------------------------------------------------
def comm_create(nccl_comm, config=None):
    """ulyssesCommCreate: wraps an ncclComm_t (an int); returns the ulyssesComm_t as an int."""
    if config is not None and not isinstance(config, Config):
        raise TypeError("config is a %s, not a ulysses.Config" % type(config).__name__)
    comm = ctypes.c_void_p()
    _check(_lib().ulyssesCommCreate(ctypes.byref(comm), _pointer(nccl_comm, "nccl_comm"),
                                    ctypes.byref(config) if config is not None else None))
    return comm.value


def comm_destroy(comm):
    """ulyssesCommDestroy."""
    _check(_lib().ulyssesCommDestroy(_handle(comm, "comm")))


def comm_abort(comm):
    """ulyssesCommAbort: aborts the NCCL communicator comm wraps."""
    _check(_lib().ulyssesCommAbort(_handle(comm, "comm")))


def comm_count(comm):
    """ulyssesCommCount: the communicator's size."""
    n = ctypes.c_int()
    _check(_lib().ulyssesCommCount(_handle(comm, "comm"), ctypes.byref(n)))
    return n.value


def comm_user_rank(comm):
    """ulyssesCommUserRank: this process's rank."""
    rank = ctypes.c_int()
    _check(_lib().ulyssesCommUserRank(_handle(comm, "comm"), ctypes.byref(rank)))
    return rank.value


def comm_get_async_error(comm):
    """ulyssesCommGetAsyncError, without blocking: a Result (SUCCESS when all is well)."""
    error = ctypes.c_int()
    _check(_lib().ulyssesCommGetAsyncError(_handle(comm, "comm"), ctypes.byref(error)))
    try:
        return Result(error.value)
    except ValueError:
        return error.value


def comm_clear_async_error(comm):
    """ulyssesCommClearAsyncError: forgets the device errors (a capacity-mode length out of
    range) once handled; call it once the comm's work enqueued so far has completed."""
    _check(_lib().ulyssesCommClearAsyncError(_handle(comm, "comm")))


class Comm:
    """A ulyssesComm_t wrapping (never owning) an NCCL communicator.

    with ulysses.Comm(nccl_comm_ptr) as comm: ...   # ulyssesCommDestroy on exit
    Work enqueued with the comm must have completed before close().
    """

    def __init__(self, nccl_comm, config=None):
        self.handle = None
        self.nccl_comm = _pointer(nccl_comm, "nccl_comm")
        self.handle = comm_create(nccl_comm, config)

    @property
    def n_ranks(self):
        return comm_count(self)

    @property
    def rank(self):
        return comm_user_rank(self)

    def count(self):
        return comm_count(self)

    def user_rank(self):
        return comm_user_rank(self)

    def get_async_error(self):
        return comm_get_async_error(self)

    def clear_async_error(self):
        comm_clear_async_error(self)

    def check_async_error(self):
        """Raises UlyssesError if the device or NCCL has reported an error."""
        error = comm_get_async_error(self)
        if error != Result.SUCCESS:
            raise UlyssesError(error, get_error_string(error), get_last_error())

    def abort(self):
        comm_abort(self)

    def close(self):
        if self.handle is not None:
            handle, self.handle = self.handle, None
            _check(_lib().ulyssesCommDestroy(handle))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return "Comm(handle=%s)" % (hex(self.handle) if self.handle else "closed")


# ---------------------------------------------------------------------------
# Plans.
# ---------------------------------------------------------------------------
def _lengths_for(n_ranks, lengths, name):
    lengths = list(lengths)
    n_ranks = _c_int(n_ranks, "n_ranks")
    # The library reads n_ranks entries: never hand it fewer.
    if n_ranks > 0 and len(lengths) != n_ranks:
        raise ValueError("%s has %d entries; n_ranks is %d" % (name, len(lengths), n_ranks))
    return n_ranks, _int64_array(lengths, name)


def plan_create_exact(n_ranks, rank, lengths, layouts):
    """ulyssesPlanCreateExact; returns the ulyssesPlan_t as an int (Plan.exact owns one)."""
    n_ranks, array = _lengths_for(n_ranks, lengths, "lengths")
    layout_array, n_tensors = _layout_array(layouts)
    plan = ctypes.c_void_p()
    _check(_lib().ulyssesPlanCreateExact(ctypes.byref(plan), n_ranks, _c_int(rank, "rank"), array,
                                         n_tensors, layout_array))
    return plan.value


def plan_create_capacity(n_ranks, rank, capacities, device_local_length, layouts):
    """ulyssesPlanCreateCapacity; device_local_length: the address of one device
    int64_t, kept alive by the caller for the plan's life."""
    n_ranks, array = _lengths_for(n_ranks, capacities, "capacities")
    layout_array, n_tensors = _layout_array(layouts)
    plan = ctypes.c_void_p()
    _check(_lib().ulyssesPlanCreateCapacity(
        ctypes.byref(plan), n_ranks, _c_int(rank, "rank"), array,
        _pointer(device_local_length, "device_local_length"), n_tensors, layout_array))
    return plan.value


def plan_destroy(plan):
    """ulyssesPlanDestroy."""
    _check(_lib().ulyssesPlanDestroy(_handle(plan, "plan")))


def get_buffer_sizes(plan, op, tensor=0):
    """ulyssesGetBufferSizes: (sendBytes, recvBytes) of tensor's buffers for op."""
    send, recv = ctypes.c_size_t(), ctypes.c_size_t()
    _check(_lib().ulyssesGetBufferSizes(_handle(plan, "plan"), int(op), _c_int(tensor, "tensor"),
                                        ctypes.byref(send), ctypes.byref(recv)))
    return send.value, recv.value


def get_workspace_size(plan, op):
    """ulyssesGetWorkspaceSize: bytes of device workspace op needs with plan."""
    size = ctypes.c_size_t()
    _check(_lib().ulyssesGetWorkspaceSize(_handle(plan, "plan"), int(op), ctypes.byref(size)))
    return size.value


def get_segments(plan, op, tensor, is_send):
    """ulyssesGetSegments: one Segment per peer for tensor's send or receive side."""
    if isinstance(plan, Plan):
        n_ranks = plan.n_ranks
    else:
        raise TypeError("get_segments needs a ulysses.Plan (it reads the plan's rank count)")
    segments = (Segment * max(n_ranks, 1))()
    segments[0].size = ctypes.sizeof(Segment)
    _check(_lib().ulyssesGetSegments(_handle(plan, "plan"), int(op), _c_int(tensor, "tensor"),
                                     1 if is_send else 0, segments))
    return list(segments)[:n_ranks]


class Plan:
    """A ulyssesPlan_t: the ranks' lengths (or capacities) and the tensors' layouts.

    Plan.exact(n_ranks, rank, lengths, layouts) or
    Plan.capacity(n_ranks, rank, capacities, device_local_length, layouts);
    pure host data, destroyed by close(), the end of a with block, or garbage
    collection.
    """

    def __init__(self, handle, n_ranks, rank, lengths, layouts, capacity, device_local_length):
        self.handle = handle
        self.n_ranks = n_ranks
        self.rank = rank
        self.lengths = tuple(lengths)  # capacities in capacity mode
        self.layouts = tuple(Layout(*layout.key()) for layout in layouts)
        self.capacity_mode = capacity
        self.device_local_length = device_local_length
        # Whatever owns the device length (a tensor): kept alive with the plan.
        self.keepalive = None

    @classmethod
    def exact(cls, n_ranks, rank, lengths, layouts):
        layouts = [layouts] if isinstance(layouts, Layout) else list(layouts)
        lengths = list(lengths)
        handle = plan_create_exact(n_ranks, rank, lengths, layouts)
        return cls(handle, n_ranks, rank, lengths, layouts, False, None)

    @classmethod
    def capacity(cls, n_ranks, rank, capacities, device_local_length, layouts):
        layouts = [layouts] if isinstance(layouts, Layout) else list(layouts)
        capacities = list(capacities)
        handle = plan_create_capacity(n_ranks, rank, capacities, device_local_length, layouts)
        return cls(handle, n_ranks, rank, capacities, layouts, True, device_local_length)

    @property
    def n_tensors(self):
        return len(self.layouts)

    def buffer_sizes(self, op, tensor=0):
        return get_buffer_sizes(self, op, tensor)

    def workspace_size(self, op):
        return get_workspace_size(self, op)

    def segments(self, op, tensor, is_send):
        return get_segments(self, op, tensor, is_send)

    def close(self):
        if self.handle is not None:
            handle, self.handle = self.handle, None
            _check(_lib().ulyssesPlanDestroy(handle))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        # Pure host memory: safe to free whenever the plan is collected.
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self):
        return "Plan(%s, n_ranks=%d, rank=%d, %s=%r, tensors=%d%s)" % (
            "capacity" if self.capacity_mode else "exact", self.n_ranks, self.rank,
            "capacities" if self.capacity_mode else "lengths", list(self.lengths),
            len(self.layouts), "" if self.handle else ", closed")


# ---------------------------------------------------------------------------
# Exchanges.
# ---------------------------------------------------------------------------
def _exchange(function, plan, sendbuff, recvbuff, workspace, workspace_size, comm, stream):
    _check(function(_handle(plan, "plan"), _pointer(sendbuff, "sendbuff"),
                    _pointer(recvbuff, "recvbuff"), _pointer(workspace, "workspace"),
                    _size_t(workspace_size, "workspace_size"), _handle(comm, "comm"),
                    _pointer(stream, "stream")))


def seq_to_head(plan, sendbuff, recvbuff, workspace, workspace_size, comm, stream):
    """ulyssesSeqToHead."""
    _exchange(_lib().ulyssesSeqToHead, plan, sendbuff, recvbuff, workspace, workspace_size,
              comm, stream)


def head_to_seq(plan, sendbuff, recvbuff, workspace, workspace_size, comm, stream):
    """ulyssesHeadToSeq."""
    _exchange(_lib().ulyssesHeadToSeq, plan, sendbuff, recvbuff, workspace, workspace_size,
              comm, stream)


def all_gather(plan, sendbuff, recvbuff, workspace, workspace_size, comm, stream):
    """ulyssesAllGather."""
    _exchange(_lib().ulyssesAllGather, plan, sendbuff, recvbuff, workspace, workspace_size,
              comm, stream)


def exchange_multi(plan, op, sendbuffs, recvbuffs, workspace, workspace_size, comm, stream):
    """ulyssesExchangeMulti: nTensors is len(sendbuffs)."""
    sendbuffs, recvbuffs = list(sendbuffs), list(recvbuffs)
    if len(sendbuffs) != len(recvbuffs):
        raise ValueError("%d sendbuffs but %d recvbuffs" % (len(sendbuffs), len(recvbuffs)))
    _check(_lib().ulyssesExchangeMulti(
        _handle(plan, "plan"), int(op), len(sendbuffs), _pointer_array(sendbuffs, "sendbuffs"),
        _pointer_array(recvbuffs, "recvbuffs"), _pointer(workspace, "workspace"),
        _size_t(workspace_size, "workspace_size"), _handle(comm, "comm"),
        _pointer(stream, "stream")))


def all_gather_lengths(device_local_length, device_lengths, comm, stream):
    """ulyssesAllGatherLengths: device int64 -> device int64[nRanks], on stream."""
    _check(_lib().ulyssesAllGatherLengths(
        _pointer(device_local_length, "device_local_length"),
        _pointer(device_lengths, "device_lengths"), _handle(comm, "comm"),
        _pointer(stream, "stream")))


def gather_lengths_host(local_length, comm, stream):
    """ulyssesGatherLengthsHost: every rank's length as a list. Synchronises the
    stream: the one explicit exchange, once per step."""
    n_ranks = comm_count(comm)
    lengths = (ctypes.c_int64 * n_ranks)()
    _check(_lib().ulyssesGatherLengthsHost(operator.index(local_length), lengths,
                                           _handle(comm, "comm"), _pointer(stream, "stream")))
    return list(lengths)


def pack(plan, op, sendbuffs, device_lengths, device_status, workspace, workspace_size, stream):
    """ulyssesPack: fills the workspace's send segments (no NCCL)."""
    sendbuffs = list(sendbuffs)
    _check(_lib().ulyssesPack(
        _handle(plan, "plan"), int(op), len(sendbuffs), _pointer_array(sendbuffs, "sendbuffs"),
        _pointer(device_lengths, "device_lengths"), _pointer(device_status, "device_status"),
        _pointer(workspace, "workspace"), _size_t(workspace_size, "workspace_size"),
        _pointer(stream, "stream")))


def unpack(plan, op, recvbuffs, device_lengths, device_status, workspace, workspace_size, stream):
    """ulyssesUnpack: scatters the workspace's receive segments (no NCCL)."""
    recvbuffs = list(recvbuffs)
    _check(_lib().ulyssesUnpack(
        _handle(plan, "plan"), int(op), len(recvbuffs), _pointer_array(recvbuffs, "recvbuffs"),
        _pointer(device_lengths, "device_lengths"), _pointer(device_status, "device_status"),
        _pointer(workspace, "workspace"), _size_t(workspace_size, "workspace_size"),
        _pointer(stream, "stream")))


def reverse(op):
    """The op whose exchange undoes op (the backward of seq -> head is head -> seq)."""
    op = Op(op)
    if op == Op.ALL_GATHER:
        raise ValueError("the all-gather has no reverse exchange")
    return Op.HEAD_TO_SEQ if op == Op.SEQ_TO_HEAD else Op.SEQ_TO_HEAD


# ---------------------------------------------------------------------------
# One pass over NVLink (experimental, off by default; docs/one-pass.md).
# ---------------------------------------------------------------------------
def mem_alloc(comm, size):
    """ulyssesMemAlloc, collective: size bytes of symmetric device memory (an int address)."""
    ptr = ctypes.c_void_p()
    _check(_lib().ulyssesMemAlloc(_handle(comm, "comm"), _size_t(size, "size"), ctypes.byref(ptr)))
    return ptr.value


def mem_free(comm, ptr):
    """ulyssesMemFree, collective: frees what mem_alloc returned (None: nothing)."""
    _check(_lib().ulyssesMemFree(_handle(comm, "comm"), _pointer(ptr, "ptr")))


def get_exchange_path(plan, op, recvbuffs, comm):
    """ulyssesGetExchangePath: (Path, reason) of an exchange into recvbuffs."""
    recvbuffs = list(recvbuffs)
    path = ctypes.c_int()
    reason = ctypes.c_char_p()
    _check(_lib().ulyssesGetExchangePath(
        _handle(plan, "plan"), int(op), len(recvbuffs), _pointer_array(recvbuffs, "recvbuffs"),
        _handle(comm, "comm"), ctypes.byref(path), ctypes.byref(reason)))
    return Path(path.value), reason.value.decode()
