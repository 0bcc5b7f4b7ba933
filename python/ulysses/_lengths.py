"""Which lengths an exchange uses, the reference's way without its costs, and the
hooks through which an integration learns them. Pure Python, no torch: the
torch binding brings the device reads and the one gather.

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

from ._planning import capacity_rows
from ._types import Op

EXACT = "exact"        # every rank's length on the host
CAPACITY = "capacity"  # this rank's length on the device, buffers of equal capacity
LEARN = "learn"        # every rank's length to be learned with one gather


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


class GroupLengths:
    """One process group's lengths: those the caller set for the step (host
    lengths, a device local length, or the equal-length opt-in) and the last
    ones a seq -> head used."""

    def __init__(self):
        self.lengths = None
        self.local_length = None
        self.equal = False
        self.last = None


def equal_lengths(op, n_ranks, input_rows):
    """Every rank holding as many rows as this one: the reference's equal case."""
    return (capacity_rows(op, n_ranks, input_rows)[0],) * n_ranks


def decide(op, n_ranks, input_rows, lengths, local_length, state):
    """(mode, host lengths or None, device local length or None) of a call.

    lengths: the call's host lengths (checked) or None; local_length: the
    call's device length or None; state: the group's GroupLengths or None.
    First found wins: the call's lengths, the step's lengths, a device local
    length (the call's, then the step's), the equal-length opt-in; else seq ->
    head and the all-gather learn the lengths and head -> seq takes the
    group's last seq -> head lengths.
    """
    op = Op(op)
    if lengths is not None:
        return EXACT, tuple(lengths), None
    if state is not None and state.lengths is not None:
        return EXACT, state.lengths, None
    if local_length is None and state is not None:
        local_length = state.local_length
    if local_length is not None:
        return CAPACITY, None, local_length
    if state is not None and state.equal:
        return EXACT, equal_lengths(op, n_ranks, input_rows), None
    if op != Op.HEAD_TO_SEQ:
        return LEARN, None, None
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
    return EXACT, last, None


def learned(gathered, n_ranks, rank, input_rows, check):
    """The lengths one gather returned, checked (check: _planning.host_lengths)
    and holding this rank's own row count where it put it."""
    lengths = check(gathered, n_ranks)
    if lengths[rank] != input_rows:
        raise RuntimeError("the gather of the lengths returned %d for rank %d, which holds %d rows"
                           % (lengths[rank], rank, input_rows))
    return lengths


class HookHandle:
    """What add() returns: remove() unregisters the hook."""

    def __init__(self, hooks, key):
        self._hooks, self._key = hooks, key

    def remove(self):
        self._hooks._hooks.pop(self._key, None)


class LengthHooks:
    """Callables hook(group, lengths, device), called in the order they were
    added after each seq -> head whose lengths are on the host, with every
    rank's length in rank order (a tuple of ints)."""

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


def record(state, hooks, op, lengths, group, device):
    """After an exchange is planned: a seq -> head's lengths become the group's
    last (None in capacity mode, where the host does not know them) and go to
    the hooks."""
    if Op(op) != Op.SEQ_TO_HEAD:
        return
    state.last = lengths
    if lengths is not None:
        hooks.call(group, lengths, device)
