"""The lengths of an exchange, resolved in one place (resolve()), and the hooks
through which an integration learns them. Pure Python, no torch: the torch
binding passes in the one gather and the one device read, so the CPU tests run
every rule with stand-ins for both.

The reference (VILA's all_to_all.py) learns every rank's length on each seq ->
head call (a barrier, an all-gather and host reads), keeps them in its
sequence-parallel globals, and its head -> seq uses the last ones. Here, for a
call that is given no lengths:
  - seq -> head and the all-gather of a [B, L, ...] tensor learn them with one
    all-gather of the lengths on the stream and one host read (no barrier, no
    padding);
  - head -> seq uses the group's last seq -> head lengths, and fails with a
    clear error where there were none or they do not fit the input;
  - equal lengths without any exchange only where the caller opted in.
"""

import collections
import operator

from ._planning import capacity_rows, exact_rows
from ._types import MAX_LENGTH, Op

# The modes of resolve(), in the order it tries them.
GIVEN = "given"        # host lengths from the caller: the call's, the step's, or equal ones
CAPACITY = "capacity"  # this rank's length on the device, buffers of equal capacity
LEARNED = "learned"    # every rank's length learned with one gather
RECORDED = "recorded"  # head -> seq: the group's last seq -> head lengths


def split_use_sync(lengths):
    """yunchang's SeqAllToAll4D.apply(group, input, scatter_idx, gather_idx,
    use_sync) puts a bool where the drop-in takes lengths: (lengths, use_sync).
    use_sync needs nothing here, as each exchange is ordered on the stream."""
    if isinstance(lengths, bool):
        return None, lengths
    return lengths, False


def reference_op(scatter_idx, gather_idx, seq_to_head, head_to_seq):
    """The op of the reference's (scatter_idx, gather_idx) pair."""
    if (scatter_idx, gather_idx) == seq_to_head:
        return Op.SEQ_TO_HEAD
    if (scatter_idx, gather_idx) == head_to_seq:
        return Op.HEAD_TO_SEQ
    raise RuntimeError("scatter_idx and gather_idx must be %s (seq -> head) or %s (head -> seq); "
                       "got %s" % (seq_to_head, head_to_seq, (scatter_idx, gather_idx)))


def host_lengths(lengths, n_ranks, read_device=None):
    """lengths as a tuple of n_ranks ints, checked. lengths: host ints, a list of
    one-element tensors (VILA's globals) or one tensor of n_ranks lengths.
    Device tensors are read with read_device(tensors) -> their values as one
    list of ints, one synchronisation for all of them; without read_device they
    are refused, as reading them would synchronise the host."""
    if getattr(lengths, "is_cuda", False):
        values = _read_device("lengths is a device tensor", read_device, [lengths])
    else:
        values = list(lengths)
        on_device = [i for i, value in enumerate(values) if getattr(value, "is_cuda", False)]
        if on_device:
            _need_reader("lengths[%d] is a device tensor" % on_device[0], read_device)
            for i in on_device:
                if values[i].numel() != 1:
                    raise ValueError("lengths[%d] has %d elements; each element is one rank's "
                                     "length" % (i, values[i].numel()))
            read = _read_device("lengths", read_device, [values[i] for i in on_device])
            for i, value in zip(on_device, read):
                values[i] = value
    values = [operator.index(value) for value in values]
    if len(values) != n_ranks:
        raise ValueError("%d lengths for %d ranks" % (len(values), n_ranks))
    for i, value in enumerate(values):
        if not 0 <= value <= MAX_LENGTH:
            raise ValueError("lengths[%d] is %d; it must be in [0, %d]" % (i, value, MAX_LENGTH))
    return tuple(values)


def _need_reader(what, read_device):
    if read_device is None:
        raise TypeError("%s; host lengths are needed (a list of ints): gather them once per "
                        "step, or use capacity mode with a device length" % what)


def _read_device(what, read_device, tensors):
    _need_reader(what, read_device)
    values = list(read_device(tensors))
    expected = sum(tensor.numel() for tensor in tensors)
    if len(values) != expected:
        raise RuntimeError("reading %d device lengths gave %d values" % (expected, len(values)))
    return values


class GroupLengths:
    """One process group's lengths: those the caller set for the step (host
    lengths, a device local length, or the equal-length opt-in) and the last
    ones a seq -> head used."""

    def __init__(self):
        self.lengths = None
        self.local_length = None
        self.equal = False
        self.last = None


# What resolve() returns. lengths: every rank's, host ints (None in capacity
# mode); local_length: this rank's device length (capacity mode only);
# capacity: every rank's rows in capacity mode (None otherwise); seq_rows,
# head_rows: the rows of the sequence side and the head (or gathered) side.
Resolved = collections.namedtuple(
    "Resolved", ["mode", "lengths", "local_length", "capacity", "seq_rows", "head_rows"])


def resolve(op, n_ranks, rank, input_rows, lengths=None, local_length=None, state=None,
            gather=None, read_device=None):
    """The Resolved lengths of one call.

    lengths: the call's (host ints, one-element tensors or one tensor; a bool
    is yunchang's use_sync and means none), local_length: the call's device
    length, state: the group's GroupLengths or None, gather(input_rows): every
    rank's length as host ints (the one exchange and host read of learned
    mode), read_device(tensors): device lengths on the host (see host_lengths).
    First found wins: the call's lengths, the step's lengths, a device local
    length (the call's, then the step's), the equal-length opt-in; else seq ->
    head and the all-gather learn the lengths and head -> seq takes the group's
    last seq -> head lengths. A seq -> head records its lengths in state (None
    in capacity mode, where the host does not know them).
    """
    op = Op(op)
    lengths, _ = split_use_sync(lengths)
    mode, host = None, None
    if lengths is not None:
        mode, host = GIVEN, host_lengths(lengths, n_ranks, read_device)
    elif state is not None and state.lengths is not None:
        mode, host = GIVEN, state.lengths
    else:
        if local_length is None and state is not None:
            local_length = state.local_length
        if local_length is not None:
            mode = CAPACITY
        elif state is not None and state.equal:
            mode = GIVEN
            host = (capacity_rows(op, n_ranks, input_rows)[0],) * n_ranks
        elif op != Op.HEAD_TO_SEQ:
            mode, host = LEARNED, _learned(gather, n_ranks, rank, input_rows)
        else:
            mode, host = RECORDED, _recorded(state, input_rows)
    if op == Op.SEQ_TO_HEAD and state is not None:
        state.last = host
    if mode == CAPACITY:
        capacity, seq_rows, head_rows = capacity_rows(op, n_ranks, input_rows)
        return Resolved(mode, None, local_length, capacity, seq_rows, head_rows)
    seq_rows, head_rows = exact_rows(op, host, rank, input_rows)
    return Resolved(mode, host, None, None, seq_rows, head_rows)


def _learned(gather, n_ranks, rank, input_rows):
    """The lengths one gather returns, checked and holding this rank's own row
    count where it put it."""
    if gather is None:
        raise TypeError("no lengths were given and there is no gather to learn them")
    lengths = host_lengths(gather(input_rows), n_ranks)
    if lengths[rank] != input_rows:
        raise RuntimeError("the gather of the lengths returned %d for rank %d, which holds %d rows"
                           % (lengths[rank], rank, input_rows))
    return lengths


def _recorded(state, input_rows):
    last = state.last if state is not None else None
    if last is None:
        raise ValueError(
            "head -> seq was given no lengths and no seq -> head on this group has run before "
            "it: as in the reference, the first exchange of a step must be seq -> head (which "
            "learns every rank's length), or pass lengths=, set_lengths(), a device "
            "local_length, or set_equal_lengths()")
    if sum(last) != input_rows:
        raise ValueError(
            "head -> seq was given no lengths; the group's last seq -> head lengths %r sum to "
            "%d, but the head-side input has %d rows: pass this exchange's lengths"
            % (list(last), sum(last), input_rows))
    return last


class HookHandle:
    """What add() returns: remove() unregisters the hook."""

    def __init__(self, hooks, key):
        self._hooks, self._key = hooks, key

    def remove(self):
        self._hooks._hooks.pop(self._key, None)


class LengthHooks:
    """Callables hook(group, lengths, device), called in the order they were
    added by each seq -> head exchange whose lengths are on the host, before it
    is enqueued, with every rank's length in rank order (a tuple of ints)."""

    def __init__(self):
        self._hooks = {}
        self._next_key = 0

    def add(self, hook):
        if not callable(hook):
            raise TypeError("a lengths hook must be callable; got %r" % (hook,))
        key = self._next_key
        self._next_key += 1
        self._hooks[key] = hook
        return HookHandle(self, key)

    def __contains__(self, hook):
        return any(known is hook for known in self._hooks.values())

    def __len__(self):
        return len(self._hooks)

    def call(self, group, lengths, device):
        for hook in list(self._hooks.values()):
            hook(group, lengths, device)


hooks = LengthHooks()
