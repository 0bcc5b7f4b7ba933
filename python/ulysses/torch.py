"""PyTorch drop-in for the Ulysses all-to-all (VILA's sequence_parallel/all_to_all.py).

    from ulysses.torch import SeqAllToAll4D        # instead of VILA's

SeqAllToAll4D.apply(group, input, scatter_idx, gather_idx), SeqAllToAll5D and
SeqAllGather keep the reference's signatures; the exchange runs in libulysses
on torch.cuda.current_stream(), with no barrier, no host read of device data
and no padding on the wire (exact mode). UlyssesAttention wraps any attention
function (q/k/v seq -> head in one call, attention, output head -> seq), with
grouped-query kv heads moved without an expandKV copy.

Lengths, per call, first found wins:
  1. exact mode, host lengths of every rank: the optional `lengths` argument
     (host ints, a list of one-element tensors such as VILA's globals, or one
     tensor of P lengths; lengths on a GPU cost one synchronisation to read),
     else those set for the group with set_lengths() / sequence_lengths();
  2. capacity mode, this rank's real length as a device tensor (`local_length`
     argument, else the one set with set_local_length()): every rank's tensor
     has the same number of rows C (the capacity; the head side has P * C), the
     real rows lead, nothing is read on the host, and the rows after the real
     ones are zero in every output and gradient;
  3. set_equal_lengths() (an explicit opt-in): every rank holds as many rows as
     this one, the reference's equal case, with nothing exchanged;
  4. none of these, the reference's behaviour: seq -> head (and the all-gather
     of a [B, L, ...] tensor) learns every rank's length with one all-gather of
     the lengths on the stream and one host read (ulyssesGatherLengthsHost: no
     barrier, no padding, but the host waits for the stream once per call);
     head -> seq uses the group's last seq -> head lengths, as the reference's
     does, and raises ValueError where there were none.
Every seq -> head whose lengths the host knows records them for the group
(last_lengths()) and hands them to the hooks of add_lengths_hook(); ulysses.vila
keeps VILA's globals (set_ulysses_seq_len) up to date this way.

Nothing checks across ranks that they agree (that would cost a host
synchronisation per call); ULYSSES_CHECK=1 makes the library compare the
ranks' plans on every call and fail with ulyssesErrorPlanMismatch instead of
hanging, for debugging.

The NCCL communicator: the process group's own (ProcessGroupNCCL._comm_ptr())
where PyTorch exposes it, else one made per group with ncclCommInitRank on the
libnccl that torch loaded; ULYSSES_TORCH_COMM=own or set_comm_source("own")
forces the latter. Made once per (group, device) and cached.
"""

import contextlib
import operator
import os
import threading
from collections import OrderedDict

import torch
import torch.distributed as dist

from . import _api, _lengths, _nccl, _planning
from ._types import DataType, Layout, Op, Order

__all__ = [
    "SeqAllToAll4D", "SeqAllToAll5D", "SeqAllGather", "UlyssesAttention", "ulysses_attention",
    "seq_all_to_all_4d", "seq_all_to_all_5d", "seq_all_gather",
    "set_lengths", "set_local_length", "set_equal_lengths", "sequence_lengths",
    "gather_lengths", "last_lengths", "add_lengths_hook", "communicator", "set_comm_source",
    "check_async_error", "release", "release_all", "element_type",
]

COMM_SOURCE_ENV = "ULYSSES_TORCH_COMM"
_COMM_SOURCES = ("auto", "process_group", "own")

_FLOAT_TYPES = {
    torch.float32: DataType.FLOAT32,
    torch.float16: DataType.FLOAT16,
    torch.bfloat16: DataType.BFLOAT16,
}


def element_type(dtype):
    """(element_size, DataType) of a torch dtype: the float types the library can
    sum, every other dtype moved as opaque bytes."""
    return dtype.itemsize, _FLOAT_TYPES.get(dtype, DataType.OPAQUE)


def _group_or_world(group):
    return group if group is not None else dist.group.WORLD


def _device_index(device):
    if device is None:
        return torch.cuda.current_device()
    if isinstance(device, int):
        return device
    device = torch.device(device)
    if device.type != "cuda":
        raise ValueError("ulysses exchanges CUDA tensors; got a tensor on %s" % device)
    return device.index if device.index is not None else torch.cuda.current_device()


# ---------------------------------------------------------------------------
# Communicators.
# ---------------------------------------------------------------------------
class GroupComm:
    """A process group's ulysses communicator on one device."""

    def __init__(self, group, device, nccl_comm, owned, source):
        self.group = group
        self.device = device
        self.rank = dist.get_rank(group)
        self.size = dist.get_world_size(group)
        self.nccl_comm = nccl_comm
        self.owned = owned      # whether this module made the ncclComm_t (and destroys it)
        self.source = source    # "process_group" or "own"
        self.comm = _api.Comm(nccl_comm)

    def close(self):
        torch.cuda.synchronize(self.device)
        self.comm.close()
        if self.owned:
            _nccl.library().comm_destroy(self.nccl_comm)
            self.owned = False


_comms = {}
_comms_lock = threading.Lock()
_comm_source = None


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
    group = _group_or_world(group)
    device = _device_index(device)
    key = (id(group), device)
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


def check_async_error(group=None, device=None):
    """Raises UlyssesError if a kernel found a capacity-mode length outside
    [0, capacity] or NCCL reported an asynchronous error (never blocks)."""
    communicator(group, device).comm.check_async_error()


def release(group=None):
    """Destroys group's cached communicators (after the device is idle)."""
    group = _group_or_world(group)
    with _comms_lock:
        keys = [key for key in _comms if key[0] == id(group)]
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


# ---------------------------------------------------------------------------
# Lengths of the step.
# ---------------------------------------------------------------------------
_groups = {}


def _group_lengths(group):
    """group's _lengths.GroupLengths, made on first use."""
    group = _group_or_world(group)
    entry = _groups.get(id(group))
    if entry is None:
        entry = _groups[id(group)] = (group, _lengths.GroupLengths())
    return entry[1]


def _read_device_lengths(tensors):
    """Device lengths on the host, all of them in one copy: one synchronisation."""
    for tensor in tensors:
        if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
            raise TypeError("lengths must be integers; got a %s tensor" % tensor.dtype)
    device = tensors[0].device
    return torch.cat([t.detach().reshape(-1).to(device=device, dtype=torch.int64)
                      for t in tensors]).tolist()


def _host_lengths(lengths, n_ranks):
    return _lengths.host_lengths(lengths, n_ranks, _read_device_lengths)


def set_lengths(lengths, group=None):
    """Every rank's sequence length for the exchanges on group from now on (exact
    mode): host ints, a list of one-element tensors (VILA's globals) or one
    tensor of P lengths; lengths on a GPU cost one synchronisation, here. None
    forgets them."""
    state = _group_lengths(group)
    if lengths is None:
        state.lengths = None
    else:
        state.lengths = _host_lengths(lengths, dist.get_world_size(_group_or_world(group)))


def set_local_length(local_length, group=None):
    """This rank's real length as a one-element device tensor, for capacity-mode
    exchanges on group from now on; None forgets it."""
    _group_lengths(group).local_length = local_length


def set_equal_lengths(equal=True, group=None):
    """The opt-in to the reference's equal case without any exchange of lengths:
    with no other lengths, every rank of group holds as many rows as this one."""
    _group_lengths(group).equal = bool(equal)


def last_lengths(group=None):
    """The lengths of group's last seq -> head (a tuple of host ints, rank
    order), which head -> seq uses when given none; None before the first or
    after a capacity-mode one."""
    entry = _groups.get(id(_group_or_world(group)))
    return entry[1].last if entry is not None else None


def add_lengths_hook(hook):
    """hook(group, lengths, device) is called on each seq -> head whose lengths
    the host knows (every mode but capacity), before it is enqueued, with every
    rank's length in rank order as a tuple of ints and the input's device.
    Returns a handle; handle.remove() unregisters it. ulysses.vila keeps VILA's
    globals this way."""
    return _lengths.hooks.add(hook)


@contextlib.contextmanager
def sequence_lengths(lengths=None, local_length=None, group=None):
    """with sequence_lengths([5, 3]): ... -- the lengths (or the device local
    length) for the exchanges on group inside the block."""
    state = _group_lengths(group)
    saved = state.lengths, state.local_length
    try:
        set_lengths(lengths, group)
        set_local_length(local_length, group)
        yield
    finally:
        state.lengths, state.local_length = saved


def gather_lengths(local_length, group=None):
    """Every rank's length from each rank's own (a host int): the one explicit,
    synchronising exchange (ulyssesGatherLengthsHost). Call it once per step and
    pass the result to set_lengths or sequence_lengths."""
    made = communicator(group)
    return _api.gather_lengths_host(operator.index(local_length), made.comm,
                                    torch.cuda.current_stream(made.device).cuda_stream)


def _resolve(group_comm, op, input_rows, lengths, local_length, device):
    """The _lengths.Resolved of one call; the hooks get a seq -> head's host lengths."""
    def gather(rows):
        return _api.gather_lengths_host(rows, group_comm.comm,
                                        torch.cuda.current_stream(device).cuda_stream)
    resolved = _lengths.resolve(op, group_comm.size, group_comm.rank, input_rows, lengths,
                                local_length, _group_lengths(group_comm.group), gather,
                                _read_device_lengths)
    if op == Op.SEQ_TO_HEAD and resolved.lengths is not None:
        _lengths.hooks.call(group_comm.group, resolved.lengths, device)
    return resolved


# ---------------------------------------------------------------------------
# Plans and the exchange itself.
# ---------------------------------------------------------------------------
_plans = OrderedDict()
_plans_lock = threading.Lock()
_PLAN_CACHE_SIZE = 256


def _exact_plan(n_ranks, rank, lengths, layouts):
    key = (n_ranks, rank, lengths, tuple(layout.key() for layout in layouts))
    with _plans_lock:
        plan = _plans.get(key)
        if plan is not None:
            _plans.move_to_end(key)
            return plan
    plan = _api.Plan.exact(n_ranks, rank, lengths, layouts)
    with _plans_lock:
        _plans[key] = plan
        while len(_plans) > _PLAN_CACHE_SIZE:
            _plans.popitem(last=False)
    return plan


def _local_length_snapshot(local_length, device):
    """A private copy of this rank's real length (one int64 on device), so that a
    backward reads the length of its forward."""
    if isinstance(local_length, torch.Tensor):
        if local_length.numel() != 1:
            raise ValueError("local_length has %d elements; it is one length"
                             % local_length.numel())
        return local_length.detach().reshape(1).to(device=device, dtype=torch.int64, copy=True)
    return torch.full((1,), operator.index(local_length), dtype=torch.int64, device=device)


def _zero_rows_from(tensor, real_rows):
    """Zeroes rows real_rows.. of dimension 1 (real_rows: a device scalar)."""
    if tensor.numel() == 0:
        return
    rows = torch.arange(tensor.shape[1], device=tensor.device)
    padding = (rows >= real_rows).view((1, -1) + (1,) * (tensor.dim() - 2))
    tensor.masked_fill_(padding, 0)


class _Exchanger:
    """One exchange's plan, shapes and lengths, kept for its backward.

    Every tensor is batch first: [B, rows, ...]. seq_shapes[i] / head_shapes[i]
    are tensor i's sequence-side and head-side (or gathered) shapes.
    """

    def __init__(self, group_comm, layouts, dtypes, device, op, input_rows, lengths,
                 local_length):
        self.group_comm = group_comm
        self.layouts = list(layouts)
        self.dtypes = list(dtypes)
        self.device = device
        n_ranks, rank = group_comm.size, group_comm.rank
        resolved = _resolve(group_comm, op, input_rows, lengths, local_length, device)
        self.lengths = resolved.lengths
        self.seq_rows, self.head_rows = resolved.seq_rows, resolved.head_rows
        if resolved.lengths is not None:
            self.plan = _exact_plan(n_ranks, rank, resolved.lengths, self.layouts)
            self.snapshot = None
        else:
            capacity = self.capacity = resolved.capacity
            self.snapshot = _local_length_snapshot(resolved.local_length, device)
            self.plan = self._capacity_plan(self.layouts)
            gathered = torch.empty(n_ranks, dtype=torch.int64, device=device)
            _api.all_gather_lengths(self.snapshot.data_ptr(), gathered.data_ptr(),
                                    group_comm.comm, self._stream())
            real = gathered.clamp(0, capacity)
            self.real_local = real[rank]
            self.real_total = real.sum()
            self.real_before = real[:rank].sum()
        self.seq_shapes = None
        self.head_shapes = None

    def _capacity_plan(self, layouts):
        n_ranks = self.group_comm.size
        plan = _api.Plan.capacity(n_ranks, self.group_comm.rank, [self.capacity] * n_ranks,
                                  self.snapshot.data_ptr(), layouts)
        plan.keepalive = self.snapshot
        return plan

    def derive(self, layouts, dtypes):
        """An exchanger for other tensors with the same lengths (and device length)."""
        other = object.__new__(_Exchanger)
        other.__dict__.update(self.__dict__)
        other.layouts, other.dtypes = list(layouts), list(dtypes)
        if self.lengths is not None:
            other.plan = _exact_plan(self.group_comm.size, self.group_comm.rank, self.lengths,
                                     other.layouts)
        else:
            other.plan = self._capacity_plan(other.layouts)
        other.seq_shapes = other.head_shapes = None
        return other

    def set_shapes(self, seq_rest, head_rest):
        """Shapes [B, rows, *rest] of every tensor on each side."""
        self.seq_shapes = [(layout.batch, self.seq_rows) + tuple(rest)
                           for layout, rest in zip(self.layouts, seq_rest)]
        self.head_shapes = [(layout.batch, self.head_rows) + tuple(rest)
                            for layout, rest in zip(self.layouts, head_rest)]
        return self

    def _stream(self):
        return torch.cuda.current_stream(self.device).cuda_stream

    def run(self, op, tensors):
        """The exchange op of tensors (on their input side); returns the outputs."""
        op = Op(op)
        to_seq = op == Op.HEAD_TO_SEQ
        in_shapes = self.head_shapes if to_seq else self.seq_shapes
        out_shapes = self.seq_shapes if to_seq else self.head_shapes
        inputs = []
        for i, tensor in enumerate(tensors):
            if tuple(tensor.shape) != tuple(in_shapes[i]):
                raise ValueError("tensor %d has shape %s; this exchange expects %s"
                                 % (i, tuple(tensor.shape), tuple(in_shapes[i])))
            if tensor.dtype != self.dtypes[i]:
                raise TypeError("tensor %d is %s; this exchange moves %s"
                                % (i, tensor.dtype, self.dtypes[i]))
            if tensor.device != self.device:
                raise ValueError("tensor %d is on %s; the communicator is on %s"
                                 % (i, tensor.device, self.device))
            inputs.append(tensor.contiguous())
        outputs = [torch.empty(shape, dtype=dtype, device=self.device)
                   for shape, dtype in zip(out_shapes, self.dtypes)]
        workspace_bytes = self.plan.workspace_size(op)
        workspace = (torch.empty(workspace_bytes, dtype=torch.uint8, device=self.device)
                     if workspace_bytes else None)
        _api.exchange_multi(self.plan, op, [t.data_ptr() for t in inputs],
                            [t.data_ptr() for t in outputs],
                            workspace.data_ptr() if workspace is not None else None,
                            workspace_bytes, self.group_comm.comm, self._stream())
        if self.lengths is None:
            real = self.real_local if to_seq else self.real_total
            for output in outputs:
                _zero_rows_from(output, real)
        return outputs

    def gather_backward(self, grad):
        """The gradient of the all-gather: the sum over ranks of the gathered
        gradient's rows that came from this rank."""
        total = grad.contiguous().clone()
        dist.all_reduce(total, group=self.group_comm.group)
        if self.lengths is not None:
            offset = sum(self.lengths[:self.group_comm.rank])
            return total.narrow(1, offset, self.seq_rows).contiguous()
        rows = torch.arange(self.seq_rows, device=self.device)
        index = torch.where(rows < self.real_local, rows + self.real_before,
                            torch.zeros_like(rows))
        local = total.index_select(1, index)
        _zero_rows_from(local, self.real_local)
        return local


class _Exchange(torch.autograd.Function):
    """Tensors through an exchanger's op; backward: the reverse op, same plan."""

    @staticmethod
    def forward(ctx, exchanger, op, *tensors):
        ctx.exchanger, ctx.op = exchanger, op
        return tuple(exchanger.run(op, tensors))

    @staticmethod
    def backward(ctx, *grads):
        return (None, None) + tuple(_Exchange.apply(ctx.exchanger, _api.reverse(ctx.op), *grads))


def _make_exchanger(group, layouts, dtypes, device, op, input_rows, lengths, local_length):
    group = _group_or_world(group)
    made = communicator(group, device)
    return _Exchanger(made, layouts, dtypes, torch.device("cuda", made.device), op, input_rows,
                      lengths, local_length)


def _seq_exchanger(group, tensor, op, packed, lengths, heads, local_length, query_heads):
    """The exchanger of one [B, L, (3,) H, D] tensor (BSHD)."""
    if not tensor.is_cuda:
        raise ValueError("ulysses exchanges CUDA tensors; got one on %s" % tensor.device)
    expected_dims = 4 if packed == 1 else 5
    if tensor.dim() != expected_dims:
        raise ValueError("input must be a %dD tensor, got %dD of shape %s"
                         % (expected_dims, tensor.dim(), tuple(tensor.shape)))
    if packed == 3 and tensor.shape[2] != 3:
        raise ValueError("a packed q/k/v tensor is [B, L, 3, H, D]; got %s" % (tuple(tensor.shape),))
    group = _group_or_world(group)
    n_ranks, rank = dist.get_world_size(group), dist.get_rank(group)
    batch, rows, local_heads, head_dim = (tensor.shape[0], tensor.shape[1], tensor.shape[-2],
                                          tensor.shape[-1])
    query_heads = query_heads or 0
    if op == Op.SEQ_TO_HEAD:
        total_heads = local_heads
    elif heads is not None:
        total_heads = heads
    elif query_heads:
        raise ValueError("head -> seq of kv heads (query_heads given) needs heads=, the kv "
                         "head count")
    else:
        total_heads = local_heads * n_ranks
    element_size, data_type = element_type(tensor.dtype)
    layout = Layout(batch, total_heads, head_dim, element_size, packed, Order.BSHD, query_heads,
                    data_type)
    my_heads = _planning.head_range(total_heads, n_ranks, rank, query_heads)[1]
    if op == Op.HEAD_TO_SEQ and my_heads != local_heads:
        raise ValueError("rank %d holds %d heads, but %d heads over %d ranks give it %d: pass "
                         "heads= (the total) when the ranks hold different counts"
                         % (rank, local_heads, total_heads, n_ranks, my_heads))
    exchanger = _make_exchanger(group, [layout], [tensor.dtype], tensor.device, op, rows,
                                lengths, local_length)
    packing = () if packed == 1 else (3,)
    return exchanger.set_shapes([packing + (total_heads, head_dim)],
                                [packing + (my_heads, head_dim)])


def _seq_all_to_all(ctx, group, input, reference_pairs, packed, lengths, heads, local_length,
                    query_heads):
    """The forward of SeqAllToAll4D and SeqAllToAll5D (ctx.op and ctx.exchanger
    kept for the backward)."""
    op = _lengths.reference_op(ctx.scatter_idx, ctx.gather_idx, *reference_pairs)
    exchanger = _seq_exchanger(group, input, op, packed, lengths, heads, local_length, query_heads)
    ctx.exchanger, ctx.op = exchanger, op
    return exchanger.run(op, [input])[0]


def _seq_all_to_all_backward(ctx, grad_output, inputs):
    """The backward of SeqAllToAll4D and SeqAllToAll5D: the reverse exchange with
    the same lengths; a gradient for group and input of forward's inputs."""
    (grad_input,) = _Exchange.apply(ctx.exchanger, _api.reverse(ctx.op), grad_output)
    return (None, grad_input) + (None,) * (inputs - 2)


class SeqAllToAll4D(torch.autograd.Function):
    """SeqAllToAll4D.apply(group, input, scatter_idx, gather_idx[, lengths, heads,
    local_length, query_heads]).

    (2, 1): [B, L_r, H, D] -> [B, Ltot, H_j, D]; (1, 2): the inverse. lengths:
    every rank's (host ints, one-element tensors or one tensor; see the module's
    docstring for what is used without them); a bool there is yunchang's
    use_sync, accepted and not needed (the exchange is ordered on the stream).
    heads: the total head count for (1, 2) when the ranks hold different counts
    (default H_j * P); query_heads: the query head count when input holds kv
    heads. Backward: the reverse exchange with the same lengths.
    """

    @staticmethod
    def forward(ctx, group, input, scatter_idx=2, gather_idx=1, lengths=None, heads=None,
                local_length=None, query_heads=None):
        ctx.scatter_idx, ctx.gather_idx = scatter_idx, gather_idx
        return _seq_all_to_all(ctx, group, input, ((2, 1), (1, 2)), 1, lengths, heads,
                               local_length, query_heads)

    @staticmethod
    def backward(ctx, grad_output):
        return _seq_all_to_all_backward(ctx, grad_output, 8)


class SeqAllToAll5D(torch.autograd.Function):
    """SeqAllToAll5D.apply(group, input, scatter_idx=3, gather_idx=1[, lengths,
    heads, local_length]): packed q/k/v.

    (3, 1): [B, L_r, 3, H, D] -> [B, Ltot, 3, H_j, D]; (1, 3): the inverse. Any
    lengths (the reference needs equal ones), found as SeqAllToAll4D's are; a
    bool in the lengths' place is yunchang's use_sync, as there.
    """

    @staticmethod
    def forward(ctx, group, input, scatter_idx=3, gather_idx=1, lengths=None, heads=None,
                local_length=None):
        ctx.scatter_idx, ctx.gather_idx = scatter_idx, gather_idx
        return _seq_all_to_all(ctx, group, input, ((3, 1), (1, 3)), 3, lengths, heads,
                               local_length, None)

    @staticmethod
    def backward(ctx, grad_output):
        return _seq_all_to_all_backward(ctx, grad_output, 7)


def _stack_gather(group, tensor):
    """The reference's all-gather: equal shapes, stacked on a new first dimension."""
    group = _group_or_world(group)
    n_ranks = dist.get_world_size(group)
    tensor = tensor.contiguous()
    if tensor.numel() == 0:
        return torch.empty((n_ranks,) + tuple(tensor.shape), dtype=tensor.dtype,
                           device=tensor.device)
    element_size, _ = element_type(tensor.dtype)
    layout = Layout(1, 1, tensor.numel(), element_size)
    exchanger = _make_exchanger(group, [layout], [tensor.dtype], tensor.device, Op.ALL_GATHER, 1,
                                [1] * n_ranks, None)
    exchanger.set_shapes([(1, tensor.numel())], [(1, tensor.numel())])
    gathered = exchanger.run(Op.ALL_GATHER, [tensor.reshape(1, 1, 1, tensor.numel())])[0]
    return gathered.reshape((n_ranks,) + tuple(tensor.shape))


class SeqAllGather(torch.autograd.Function):
    """SeqAllGather.apply(group, input[, lengths, local_length]).

    input a tensor [B, L_r, ...]: every rank gets [B, Ltot, ...] (the attention
    mask's [B, L_r] -> [B, Ltot]); backward: the sum over ranks of the
    gradient's rows from this rank. input the reference's (gather_list, tensor):
    equal shapes, stacked as [P, ...] and copied into gather_list.
    """

    @staticmethod
    def forward(ctx, group, input, lengths=None, local_length=None):
        if isinstance(input, (list, tuple)):
            gather_list, tensor = input
            stacked = _stack_gather(group, tensor)
            for i, target in enumerate(gather_list):
                target.copy_(stacked[i])
            ctx.exchanger = None
            return stacked
        if not input.is_cuda or input.dim() < 2:
            raise ValueError("SeqAllGather gathers a CUDA tensor [B, L, ...]; got %s on %s"
                             % (tuple(input.shape), input.device))
        rest = tuple(input.shape[2:])
        row_elements = 1
        for size in rest:
            row_elements *= size
        element_size, data_type = element_type(input.dtype)
        layout = Layout(input.shape[0], 1, max(row_elements, 1), element_size, 1, Order.BSHD, 0,
                        data_type)
        exchanger = _make_exchanger(group, [layout], [input.dtype], input.device, Op.ALL_GATHER,
                                    input.shape[1], lengths, local_length)
        exchanger.set_shapes([rest], [rest])
        ctx.exchanger = exchanger
        if row_elements == 0:
            return input.new_empty(exchanger.head_shapes[0])
        return exchanger.run(Op.ALL_GATHER, [input])[0]

    @staticmethod
    def backward(ctx, grad_output):
        if ctx.exchanger is None:
            return None, None, None, None
        return None, ctx.exchanger.gather_backward(grad_output), None, None


def seq_all_to_all_4d(group, input, scatter_idx=2, gather_idx=1, *, lengths=None, heads=None,
                      local_length=None, query_heads=None):
    """SeqAllToAll4D with keyword arguments."""
    return SeqAllToAll4D.apply(group, input, scatter_idx, gather_idx, lengths, heads,
                               local_length, query_heads)


def seq_all_to_all_5d(group, input, scatter_idx=3, gather_idx=1, *, lengths=None, heads=None,
                      local_length=None):
    """SeqAllToAll5D with keyword arguments."""
    return SeqAllToAll5D.apply(group, input, scatter_idx, gather_idx, lengths, heads,
                               local_length)


def seq_all_gather(group, input, *, lengths=None, local_length=None):
    """SeqAllGather with keyword arguments."""
    return SeqAllGather.apply(group, input, lengths, local_length)


# ---------------------------------------------------------------------------
# Ulysses attention.
# ---------------------------------------------------------------------------
def _expand_heads(tensor, counts):
    """Repeats head i of [B, L, H, D] counts[i] times (deterministic backward)."""
    if all(count == counts[0] for count in counts):
        return tensor if counts[0] == 1 else tensor.repeat_interleave(counts[0], dim=2)
    pieces = [tensor[:, :, i:i + 1].expand(-1, -1, count, -1) for i, count in enumerate(counts)]
    return torch.cat(pieces, dim=2)


def ulysses_attention(attention, query, key, value, *args, group=None, lengths=None,
                      local_length=None, expand_kv=False, **kwargs):
    """Ulysses attention around attention(q, k, v, *args, **kwargs).

    query [B, L_r, Hq, D], key and value [B, L_r, Hkv, D'] with Hkv dividing
    Hq; all three go seq -> head in one exchange (kv heads as grouped-query
    attention needs them, no expandKV copy), attention runs on [B, Ltot, ...]
    with this rank's heads, and its output (or the first element of a tuple)
    comes back head -> seq as [B, L_r, Hq, Dv]. Where this rank's query heads
    do not read its kv heads in equal consecutive groups, or expand_kv is true,
    the kv heads are repeated locally to one per query head before attention.
    """
    group = _group_or_world(group)
    if query.dim() != 4 or key.dim() != 4 or value.dim() != 4:
        raise ValueError("query, key and value must be [B, L, H, D]")
    batch, rows, query_heads, _ = query.shape
    kv_heads = key.shape[2]
    if value.shape[2] != kv_heads or key.shape[:2] != query.shape[:2] or \
            value.shape[:2] != query.shape[:2]:
        raise ValueError("key %s and value %s must share B, L and the kv head count; query is %s"
                         % (tuple(key.shape), tuple(value.shape), tuple(query.shape)))
    if query_heads % kv_heads != 0:
        raise ValueError("%d query heads are not a multiple of %d kv heads"
                         % (query_heads, kv_heads))
    grouped = kv_heads != query_heads
    n_ranks, rank = dist.get_world_size(group), dist.get_rank(group)

    def layout_of(tensor, heads, of_queries):
        element_size, data_type = element_type(tensor.dtype)
        return Layout(batch, heads, tensor.shape[3], element_size, 1, Order.BSHD,
                      of_queries if grouped else 0, data_type)

    layouts = [layout_of(query, query_heads, 0), layout_of(key, kv_heads, query_heads),
               layout_of(value, kv_heads, query_heads)]
    if grouped and _planning.shares_kv_heads(kv_heads, query_heads, n_ranks):
        for name, tensor in (("key", key), ("value", value)):
            if element_type(tensor.dtype)[1] == DataType.OPAQUE:
                raise TypeError("kv heads shared by several ranks have their gradients summed; "
                                "%s is %s, not float32, float16 or bfloat16" % (name, tensor.dtype))
    exchanger = _make_exchanger(group, layouts, [query.dtype, key.dtype, value.dtype],
                                query.device, Op.SEQ_TO_HEAD, rows, lengths, local_length)
    my_query_heads = _planning.head_range(query_heads, n_ranks, rank)[1]
    my_kv_heads = _planning.head_range(kv_heads, n_ranks, rank,
                                       query_heads if grouped else 0)[1]
    exchanger.set_shapes(
        [(query_heads, query.shape[3]), (kv_heads, key.shape[3]), (kv_heads, value.shape[3])],
        [(my_query_heads, query.shape[3]), (my_kv_heads, key.shape[3]),
         (my_kv_heads, value.shape[3])])
    q, k, v = _Exchange.apply(exchanger, Op.SEQ_TO_HEAD, query, key, value)
    if grouped and my_query_heads > 0:
        counts = _planning.local_kv_counts(kv_heads, query_heads, n_ranks, rank)
        if expand_kv or any(count != counts[0] for count in counts):
            k, v = _expand_heads(k, counts), _expand_heads(v, counts)
    result = attention(q, k, v, *args, **kwargs)
    output = result[0] if isinstance(result, tuple) else result
    if output.dim() != 4 or output.shape[2] != my_query_heads:
        raise ValueError("attention returned %s; [B, Ltot, %d, D] was expected"
                         % (tuple(output.shape), my_query_heads))
    out_exchanger = exchanger.derive([layout_of(output, query_heads, 0)], [output.dtype])
    out_exchanger.set_shapes([(query_heads, output.shape[3])], [(my_query_heads, output.shape[3])])
    (output,) = _Exchange.apply(out_exchanger, Op.HEAD_TO_SEQ, output)
    if isinstance(result, tuple):
        return (output,) + tuple(result[1:])
    return output


class UlyssesAttention(torch.nn.Module):
    """UlyssesAttention(attention, group=None, expand_kv=False): any attention
    function over [B, L, H, D] tensors, run sequence-parallel over group.

    forward(query, key, value, *args, lengths=None, local_length=None, **kwargs)
    """

    def __init__(self, attention, group=None, expand_kv=False):
        super().__init__()
        self.attention = attention
        self.group = group
        self.expand_kv = expand_kv

    def forward(self, query, key, value, *args, lengths=None, local_length=None, **kwargs):
        return ulysses_attention(self.attention, query, key, value, *args, group=self.group,
                                 lengths=lengths, local_length=local_length,
                                 expand_kv=self.expand_kv, **kwargs)
