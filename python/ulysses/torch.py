"""PyTorch drop-in for the Ulysses all-to-all (VILA's sequence_parallel/all_to_all.py).

    from ulysses.torch import SeqAllToAll4D        # instead of VILA's

SeqAllToAll4D.apply(group, input, scatter_idx, gather_idx), SeqAllToAll5D and
SeqAllGather keep the reference's signatures; the exchange runs in libulysses
on torch.cuda.current_stream(), with no barrier, no host read of device data
and no padding on the wire (exact mode). UlyssesAttention wraps any attention
function (q/k/v seq -> head in one call, attention, output head -> seq), with
grouped-query kv heads moved without an expandKV copy. Every exchange is one
of the operators of torch.ops.ulysses (see ulysses._ops), which torch.compile
traces: seq_all_to_all_4d, seq_all_to_all_5d, seq_all_gather and
UlyssesAttention call them with autograd as registered, the autograd.Function
classes call the same operators in their forward and backward.

Lengths, per call, first found wins (ulysses._lengths.resolve):
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
Under torch.compile, modes 1 to 3 trace into the graph; the host read of mode
4 (and of lengths given as device tensors) runs outside it, a graph break.
Every seq -> head whose lengths the host knows records them for the group
(last_lengths()) and hands them to the hooks of add_lengths_hook(); ulysses.vila
keeps VILA's globals (set_ulysses_seq_len) up to date this way.

Nothing checks across ranks that they agree (that would cost a host
synchronisation per call); ULYSSES_CHECK=1 makes the library compare the
ranks' plans on every call and fail with ulyssesErrorPlanMismatch instead of
hanging, for debugging. The communicator: see ulysses._comms.
"""

import collections
import contextlib
import operator

import torch
import torch.distributed as dist

from . import _comms, _lengths, _ops, _planning
from ._comms import check_async_error, communicator, release, release_all, set_comm_source
from ._ops import element_type
from ._types import DataType, Op

__all__ = [
    "SeqAllToAll4D", "SeqAllToAll5D", "SeqAllGather", "UlyssesAttention", "ulysses_attention",
    "seq_all_to_all_4d", "seq_all_to_all_5d", "seq_all_gather",
    "set_lengths", "set_local_length", "set_equal_lengths", "sequence_lengths",
    "gather_lengths", "last_lengths", "add_lengths_hook", "communicator", "set_comm_source",
    "check_async_error", "release", "release_all", "element_type",
]

_group_or_world = _comms.group_or_world


# ---------------------------------------------------------------------------
# Lengths of the step.
# ---------------------------------------------------------------------------
_groups = {}


def _group_lengths(group):
    """group's _lengths.GroupLengths, made on first use (keyed by the group's
    name, which torch.compile reads like any string)."""
    name = _group_or_world(group).group_name
    state = _groups.get(name)
    if state is None:
        state = _groups[name] = _lengths.GroupLengths()
    return state


@torch.compiler.disable
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
    state = _groups.get(_group_or_world(group).group_name)
    return state.last if state is not None else None


def add_lengths_hook(hook):
    """hook(group, lengths, device) is called by each seq -> head exchange whose
    lengths the host knows (every mode but capacity; the backward of a head ->
    seq is one), before it is enqueued, with every rank's length in rank order
    as a tuple of ints and the input's device. It runs with the exchange, also
    in a compiled graph. Returns a handle; handle.remove() unregisters it.
    ulysses.vila keeps VILA's globals this way."""
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
    return communicator(group).gather_lengths_host(operator.index(local_length))


@torch.compiler.disable
def _learn(group_name, device, rows):
    """Learned mode's gather: every rank's length, read on the host."""
    return _comms.exchange_for(group_name, device).gather_lengths_host(rows)


def _local_length_snapshot(local_length, device):
    """A private copy of this rank's real length (one int64 on device), so that a
    backward reads the length of its forward."""
    if isinstance(local_length, torch.Tensor):
        if local_length.numel() != 1:
            raise ValueError("local_length has %d elements; it is one length"
                             % local_length.numel())
        return local_length.detach().reshape(1).to(device=device, dtype=torch.int64, copy=True)
    return torch.full((1,), operator.index(local_length), dtype=torch.int64, device=device)


# The lengths arguments of one call of the operators (lengths: every rank's,
# or in capacity mode every rank's capacity, with local_length), and its rows.
_Call = collections.namedtuple("_Call", ["group", "n_ranks", "rank", "lengths", "local_length",
                                         "seq_rows", "head_rows"])


def _call(group, op, input_rows, lengths, local_length, device):
    """The _Call of one exchange of input_rows rows on device: the lengths
    resolved (ulysses._lengths.resolve), in the operators' form."""
    group = _group_or_world(group)
    name = group.group_name
    n_ranks, rank = dist.get_world_size(group), dist.get_rank(group)

    def gather(rows):
        return _learn(name, device, rows)
    resolved = _lengths.resolve(op, n_ranks, rank, input_rows, lengths, local_length,
                                _group_lengths(group), gather, _read_device_lengths)
    if resolved.mode == _lengths.CAPACITY:
        return _Call(name, n_ranks, rank, [resolved.capacity] * n_ranks,
                     _local_length_snapshot(resolved.local_length, device), resolved.seq_rows,
                     resolved.head_rows)
    return _Call(name, n_ranks, rank, list(resolved.lengths), None, resolved.seq_rows,
                 resolved.head_rows)


def _exchange(op, tensors, call, heads, query_heads):
    """The operator of op on tensors."""
    operator_of = _ops.seq_to_head if Op(op) == Op.SEQ_TO_HEAD else _ops.head_to_seq
    return operator_of(list(tensors), call.group, call.lengths, call.local_length, list(heads),
                       list(query_heads))


# ---------------------------------------------------------------------------
# The reference's exchanges.
# ---------------------------------------------------------------------------
def _seq_exchange(group, tensor, op, packed, lengths, heads, local_length, query_heads):
    """(output, _Call, heads, query_heads) of the exchange op of one
    [B, L, (3,) H, D] tensor (BSHD): SeqAllToAll4D's and SeqAllToAll5D's body."""
    expected_dims = 4 if packed == 1 else 5
    if tensor.dim() != expected_dims:
        raise ValueError("input must be a %dD tensor, got %dD of shape %s"
                         % (expected_dims, tensor.dim(), tuple(tensor.shape)))
    if packed == 3 and tensor.shape[2] != 3:
        raise ValueError("a packed q/k/v tensor is [B, L, 3, H, D]; got %s" % (tuple(tensor.shape),))
    group = _group_or_world(group)
    n_ranks, rank = dist.get_world_size(group), dist.get_rank(group)
    local_heads = tensor.shape[-2]
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
    if op == Op.HEAD_TO_SEQ:
        my_heads = _planning.head_range(total_heads, n_ranks, rank, query_heads)[1]
        if my_heads != local_heads:
            raise ValueError("rank %d holds %d heads, but %d heads over %d ranks give it %d: "
                             "pass heads= (the total) when the ranks hold different counts"
                             % (rank, local_heads, total_heads, n_ranks, my_heads))
    call = _call(group, op, tensor.shape[1], lengths, local_length, tensor.device)
    (output,) = _exchange(op, [tensor], call, [total_heads], [query_heads])
    return output, call, [total_heads], [query_heads]


def _seq_all_to_all(ctx, group, input, reference_pairs, packed, lengths, heads, local_length,
                    query_heads):
    """The forward of SeqAllToAll4D and SeqAllToAll5D (what backward needs kept on ctx)."""
    op = _lengths.reference_op(ctx.scatter_idx, ctx.gather_idx, *reference_pairs)
    output, ctx.call, ctx.heads, ctx.query_heads = _seq_exchange(
        group, input, op, packed, lengths, heads, local_length, query_heads)
    ctx.op = op
    return output


def _seq_all_to_all_backward(ctx, grad_output, inputs):
    """The backward of SeqAllToAll4D and SeqAllToAll5D: the reverse operator with
    the same lengths; a gradient for group and input of forward's inputs."""
    reverse = Op.HEAD_TO_SEQ if ctx.op == Op.SEQ_TO_HEAD else Op.SEQ_TO_HEAD
    (grad_input,) = _exchange(reverse, [grad_output], ctx.call, ctx.heads, ctx.query_heads)
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
    flat = tensor.contiguous().reshape(1, 1, tensor.numel())
    gathered = _ops.all_gather(flat, group.group_name, [1] * n_ranks, None)
    return gathered.reshape((n_ranks,) + tuple(tensor.shape))


def _gather_call(group, input, lengths, local_length):
    if input.dim() < 2:
        raise ValueError("SeqAllGather gathers a tensor [B, L, ...]; got %s"
                         % (tuple(input.shape),))
    return _call(group, Op.ALL_GATHER, input.shape[1], lengths, local_length, input.device)


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
            ctx.call = None
            return stacked
        call = ctx.call = _gather_call(group, input, lengths, local_length)
        return _ops.all_gather(input, call.group, call.lengths, call.local_length)

    @staticmethod
    def backward(ctx, grad_output):
        if ctx.call is None:
            return None, None, None, None
        call = ctx.call
        return None, _ops.all_gather_backward(grad_output, call.group, call.lengths,
                                              call.local_length), None, None


def seq_all_to_all_4d(group, input, scatter_idx=2, gather_idx=1, *, lengths=None, heads=None,
                      local_length=None, query_heads=None):
    """SeqAllToAll4D as a call of the operators (torch.compile traces it)."""
    op = _lengths.reference_op(scatter_idx, gather_idx, (2, 1), (1, 2))
    return _seq_exchange(group, input, op, 1, lengths, heads, local_length, query_heads)[0]


def seq_all_to_all_5d(group, input, scatter_idx=3, gather_idx=1, *, lengths=None, heads=None,
                      local_length=None):
    """SeqAllToAll5D as a call of the operators (torch.compile traces it)."""
    op = _lengths.reference_op(scatter_idx, gather_idx, (3, 1), (1, 3))
    return _seq_exchange(group, input, op, 3, lengths, heads, local_length, None)[0]


def seq_all_gather(group, input, *, lengths=None, local_length=None):
    """SeqAllGather of a tensor [B, L_r, ...] as a call of the operators."""
    call = _gather_call(group, input, lengths, local_length)
    return _ops.all_gather(input, call.group, call.lengths, call.local_length)


# ---------------------------------------------------------------------------
# Ulysses attention.
# ---------------------------------------------------------------------------
def _expand_heads(tensor, counts):
    """Repeats head i of [B, L, H, D] counts[i] times (deterministic backward)."""
    if all(count == counts[0] for count in counts):
        return tensor if counts[0] == 1 else tensor.repeat_interleave(counts[0], dim=2)
    pieces = [tensor[:, :, i:i + 1].expand(-1, -1, count, -1) for i, count in enumerate(counts)]
    return torch.cat(pieces, dim=2)


def qkv_seq_to_head(query, key, value, group=None, lengths=None, local_length=None,
                    expand_kv=False):
    """q, k and v seq -> head in one exchange, with one resolution of the lengths:
    (q, k, v, _Call). query [B, L_r, Hq, D], key and value [B, L_r, Hkv, D'] with
    Hkv dividing Hq; each rank receives the kv heads its query heads read (no
    expandKV copy), repeated locally to one per query head where its query
    heads do not read them in equal consecutive groups, or expand_kv is true."""
    group = _group_or_world(group)
    if query.dim() != 4 or key.dim() != 4 or value.dim() != 4:
        raise ValueError("query, key and value must be [B, L, H, D]")
    query_heads, kv_heads = query.shape[2], key.shape[2]
    if value.shape[2] != kv_heads or key.shape[:2] != query.shape[:2] or \
            value.shape[:2] != query.shape[:2]:
        raise ValueError("key %s and value %s must share B, L and the kv head count; query is %s"
                         % (tuple(key.shape), tuple(value.shape), tuple(query.shape)))
    if query_heads % kv_heads != 0:
        raise ValueError("%d query heads are not a multiple of %d kv heads"
                         % (query_heads, kv_heads))
    grouped = kv_heads != query_heads
    n_ranks, rank = dist.get_world_size(group), dist.get_rank(group)
    if grouped and _planning.shares_kv_heads(kv_heads, query_heads, n_ranks):
        for name, tensor in (("key", key), ("value", value)):
            if element_type(tensor.dtype)[1] == DataType.OPAQUE:
                raise TypeError("kv heads shared by several ranks have their gradients summed; "
                                "%s is %s, not float32, float16 or bfloat16" % (name, tensor.dtype))
    call = _call(group, Op.SEQ_TO_HEAD, query.shape[1], lengths, local_length, query.device)
    of_queries = query_heads if grouped else 0
    q, k, v = _exchange(Op.SEQ_TO_HEAD, [query, key, value], call,
                        [query_heads, kv_heads, kv_heads], [0, of_queries, of_queries])
    if grouped and q.shape[2] > 0:
        counts = _planning.local_kv_counts(kv_heads, query_heads, n_ranks, rank)
        if expand_kv or any(count != counts[0] for count in counts):
            k, v = _expand_heads(k, counts), _expand_heads(v, counts)
    return q, k, v, call


def output_head_to_seq(output, query_heads, call):
    """The attention output [B, Ltot, Hq_j, Dv] head -> seq with the lengths of
    its seq -> head (call): [B, L_r, Hq, Dv]."""
    my_query_heads = _planning.head_range(query_heads, call.n_ranks, call.rank)[1]
    if output.dim() != 4 or output.shape[2] != my_query_heads:
        raise ValueError("attention returned %s; [B, Ltot, %d, D] was expected"
                         % (tuple(output.shape), my_query_heads))
    (output,) = _exchange(Op.HEAD_TO_SEQ, [output], call, [query_heads], [0])
    return output


def gather_rows(tensor, call):
    """tensor [B, L_r, ...] (an attention mask) all-gathered into [B, Ltot, ...]
    with the lengths of an exchange (call), in the rows' order of its head side."""
    return _ops.all_gather(tensor, call.group, call.lengths, call.local_length)


def ulysses_attention(attention, query, key, value, *args, group=None, lengths=None,
                      local_length=None, expand_kv=False, **kwargs):
    """Ulysses attention around attention(q, k, v, *args, **kwargs).

    query [B, L_r, Hq, D], key and value [B, L_r, Hkv, D'] with Hkv dividing
    Hq; all three go seq -> head in one exchange (qkv_seq_to_head), attention
    runs on [B, Ltot, ...] with this rank's heads, and its output (or the first
    element of a tuple) comes back head -> seq as [B, L_r, Hq, Dv].
    """
    q, k, v, call = qkv_seq_to_head(query, key, value, group, lengths, local_length, expand_kv)
    result = attention(q, k, v, *args, **kwargs)
    output = result[0] if isinstance(result, tuple) else result
    output = output_head_to_seq(output, query.shape[2], call)
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
