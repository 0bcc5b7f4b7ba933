"""The exchange behind a process group: libulysses on the group's NCCL
communicator for CUDA tensors, made once per (group, device) and cached.

The communicator: the process group's own (ProcessGroupNCCL._comm_ptr())
where PyTorch exposes it, else one made per group with ncclCommInitRank on the
libnccl that torch loaded; ULYSSES_TORCH_COMM=own or set_comm_source("own")
forces the latter.

What the operators of ulysses._ops ask of an exchange (GroupComm here; the CPU
checks put a stand-in behind a group with set_stand_in):
  run(op, inputs, outputs, layouts, lengths, local_length): the exchange op
      of contiguous tensors into outputs, with every rank's host lengths
      (local_length None) or, in capacity mode, every rank's capacity and this
      rank's device length;
  device_lengths(local_length): every rank's device length, on the device;
  gather_lengths_host(rows): every rank's length as host ints;
  all_reduce(tensor): the sum over ranks, in place.
"""

import os
import threading
from collections import OrderedDict

import torch
import torch.distributed as dist

from . import _api, _nccl

COMM_SOURCE_ENV = "ULYSSES_TORCH_COMM"
_COMM_SOURCES = ("auto", "process_group", "own")


def group_or_world(group):
    return group if group is not None else dist.group.WORLD


def group_named(name):
    """The process group whose group_name is name (operators carry the name)."""
    return dist.distributed_c10d._resolve_process_group(name)


def device_index(device):
    if device is None:
        return torch.cuda.current_device()
    if isinstance(device, int):
        return device
    device = torch.device(device)
    if device.type != "cuda":
        raise ValueError("ulysses exchanges CUDA tensors; got a tensor on %s" % device)
    return device.index if device.index is not None else torch.cuda.current_device()


# ---------------------------------------------------------------------------
# Plans, cached: pure host data, reused by every call of the same shape. A
# capacity plan names its device length, which it keeps alive, so that a
# CUDA graph captured with it never sees that address reused or the plan freed.
# ---------------------------------------------------------------------------
_plans = OrderedDict()
_plans_lock = threading.Lock()
_PLAN_CACHE_SIZE = 256


def plan_of(n_ranks, rank, lengths, layouts, local_length=None):
    """The exact plan of every rank's lengths, or with local_length (a device
    tensor) the capacity plan of every rank's capacity."""
    key = (n_ranks, rank, tuple(lengths), tuple(layout.key() for layout in layouts),
           None if local_length is None else local_length.data_ptr())
    with _plans_lock:
        plan = _plans.get(key)
        if plan is not None:
            _plans.move_to_end(key)
            return plan
    if local_length is None:
        plan = _api.Plan.exact(n_ranks, rank, list(lengths), layouts)
    else:
        plan = _api.Plan.capacity(n_ranks, rank, list(lengths), local_length.data_ptr(), layouts)
        plan.keepalive = local_length
    with _plans_lock:
        _plans[key] = plan
        while len(_plans) > _PLAN_CACHE_SIZE:
            _plans.popitem(last=False)
    return plan


class GroupComm:
    """A process group's ulysses communicator on one device: the exchange of
    its CUDA tensors, on the current stream, workspace from PyTorch's
    allocator."""

    def __init__(self, group, device, nccl_comm, owned, source):
        self.group = group
        self.device = device
        self.rank = dist.get_rank(group)
        self.size = dist.get_world_size(group)
        self.nccl_comm = nccl_comm
        self.owned = owned      # whether this module made the ncclComm_t (and destroys it)
        self.source = source    # "process_group" or "own"
        self.comm = _api.Comm(nccl_comm)

    def _stream(self):
        return torch.cuda.current_stream(self.device).cuda_stream

    def run(self, op, inputs, outputs, layouts, lengths, local_length):
        plan = plan_of(self.size, self.rank, lengths, layouts, local_length)
        workspace_bytes = plan.workspace_size(op)
        workspace = (torch.empty(workspace_bytes, dtype=torch.uint8, device=inputs[0].device)
                     if workspace_bytes else None)
        _api.exchange_multi(plan, op, [t.data_ptr() for t in inputs],
                            [t.data_ptr() for t in outputs],
                            workspace.data_ptr() if workspace is not None else None,
                            workspace_bytes, self.comm, self._stream())

    def device_lengths(self, local_length):
        gathered = torch.empty(self.size, dtype=torch.int64, device=local_length.device)
        _api.all_gather_lengths(local_length.data_ptr(), gathered.data_ptr(), self.comm,
                                self._stream())
        return gathered

    def gather_lengths_host(self, rows):
        return _api.gather_lengths_host(rows, self.comm, self._stream())

    def all_reduce(self, tensor):
        dist.all_reduce(tensor, group=self.group)

    def close(self):
        torch.cuda.synchronize(self.device)
        self.comm.close()
        if self.owned:
            _nccl.library().comm_destroy(self.nccl_comm)
            self.owned = False


_comms = {}
_comms_lock = threading.Lock()
_comm_source = None
_stand_ins = {}


def set_comm_source(source):
    """"auto" (the process group's communicator where PyTorch exposes it),
    "process_group" (only that) or "own" (one made here); None: the environment
    variable ULYSSES_TORCH_COMM, else "auto". Affects groups not yet cached."""
    global _comm_source
    if source is not None and source not in _COMM_SOURCES:
        raise ValueError("source must be one of %s or None" % (_COMM_SOURCES,))
    _comm_source = source


def _source():
    source = _comm_source or os.environ.get(COMM_SOURCE_ENV, "auto")
    if source not in _COMM_SOURCES:
        raise ValueError("%s is %r; it must be one of %s" % (COMM_SOURCE_ENV, source, _COMM_SOURCES))
    return source


def _process_group_comm(group, device):
    """The ncclComm_t of group's NCCL backend on device, or None where this
    PyTorch does not expose it."""
    try:
        backend = group._get_backend(torch.device("cuda", device))
    except Exception:
        return None
    get_pointer = getattr(backend, "_comm_ptr", None)
    if not callable(get_pointer):
        return None
    with torch.cuda.device(device):
        pointer = int(get_pointer())
        if pointer == 0:
            # PyTorch makes its communicator at the group's first collective.
            dist.all_reduce(torch.zeros(1, device=torch.device("cuda", device)), group=group)
            pointer = int(get_pointer())
    return pointer or None


def _own_comm(group, device):
    """A new NCCL communicator over group's ranks (collective over the group)."""
    nccl = _nccl.library()
    rank, size = dist.get_rank(group), dist.get_world_size(group)
    with torch.cuda.device(device):
        unique_id = [nccl.get_unique_id() if rank == 0 else None]
        dist.broadcast_object_list(unique_id, src=dist.get_global_rank(group, 0), group=group,
                                   device=torch.device("cuda", device))
        return nccl.comm_init_rank(size, unique_id[0], rank)


def communicator(group=None, device=None):
    """The GroupComm of group (None: the default group) on device (None: the
    current one), made on first use (collectively: every rank of the group must
    get here) and cached."""
    group = group_or_world(group)
    device = device_index(device)
    key = (group.group_name, device)
    with _comms_lock:
        cached = _comms.get(key)
    if cached is not None:
        return cached
    source = _source()
    nccl_comm, owned, used = None, False, "process_group"
    if source in ("auto", "process_group"):
        nccl_comm = _process_group_comm(group, device)
        if nccl_comm is None and source == "process_group":
            raise RuntimeError("this PyTorch does not expose the process group's NCCL "
                               "communicator (ProcessGroupNCCL._comm_ptr)")
    if nccl_comm is None:
        nccl_comm, owned, used = _own_comm(group, device), True, "own"
    made = GroupComm(group, device, nccl_comm, owned, used)
    with _comms_lock:
        _comms[key] = made
    return made


def set_stand_in(exchange, group=None):
    """exchange (see the module's docstring) moves group's tensors that are not
    on a GPU, where the CPU checks stand in for libulysses; None removes it."""
    name = group_or_world(group).group_name
    if exchange is None:
        _stand_ins.pop(name, None)
    else:
        _stand_ins[name] = exchange


def exchange_for(group_name, device):
    """The exchange of the group named group_name for tensors on device."""
    if device.type == "cuda":
        return communicator(group_named(group_name), device)
    stand_in = _stand_ins.get(group_name)
    if stand_in is None:
        raise ValueError("ulysses exchanges CUDA tensors; got one on %s" % device)
    return stand_in


def check_async_error(group=None, device=None):
    """Raises UlyssesError if a kernel found a capacity-mode length outside
    [0, capacity] or NCCL reported an asynchronous error (never blocks)."""
    communicator(group, device).comm.check_async_error()


def release(group=None):
    """Destroys group's cached communicators (after the device is idle)."""
    name = group_or_world(group).group_name
    with _comms_lock:
        keys = [key for key in _comms if key[0] == name]
        made = [_comms.pop(key) for key in keys]
    for group_comm in made:
        group_comm.close()


def release_all():
    """Destroys every cached communicator."""
    with _comms_lock:
        made = list(_comms.values())
        _comms.clear()
    for group_comm in made:
        group_comm.close()
