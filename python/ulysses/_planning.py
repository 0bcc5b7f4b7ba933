"""Host arithmetic a framework binding needs before it allocates: the head split
(the library's, re-derived from the header's definition) and the rows of each
side of an exchange. Pure arithmetic on ints, no torch and no state, so the CPU
tests check it against the library's own buffer sizes.
"""

from ._types import Op


def head_begin(heads, n_ranks, rank):
    """The first head rank owns: the first heads % n_ranks ranks take one extra."""
    base, extra = divmod(heads, n_ranks)
    return rank * base + min(rank, extra)


def head_count(heads, n_ranks, rank):
    """How many heads rank owns (0 when n_ranks > heads and rank is high)."""
    return heads // n_ranks + (1 if rank < heads % n_ranks else 0)


def head_range(heads, n_ranks, rank, query_heads=0):
    """(begin, count) of the heads rank receives of a tensor of `heads` heads.

    query_heads = 0: rank's group of the plain split. Otherwise the tensor holds
    kv heads read by query_heads query heads (G = query_heads / heads each) and
    rank receives the kv heads its query heads read:
    [floor(h_j / G), ceil(h_{j+1} / G)), none when it owns no query head.
    """
    if query_heads == 0:
        return head_begin(heads, n_ranks, rank), head_count(heads, n_ranks, rank)
    group = query_heads // heads
    query_begin = head_begin(query_heads, n_ranks, rank)
    query_count = head_count(query_heads, n_ranks, rank)
    begin = query_begin // group
    if query_count == 0:
        return begin, 0
    return begin, -(-(query_begin + query_count) // group) - begin


def shares_kv_heads(heads, query_heads, n_ranks):
    """Whether some kv head goes to more than one rank (head -> seq then sums)."""
    if query_heads == 0:
        return False
    sent = sum(head_range(heads, n_ranks, r, query_heads)[1] for r in range(n_ranks))
    return sent > heads


def local_kv_counts(kv_heads, query_heads, n_ranks, rank):
    """For each kv head rank receives, how many of rank's query heads read it
    (consecutive query heads read consecutive kv heads)."""
    query_begin = head_begin(query_heads, n_ranks, rank)
    query_count = head_count(query_heads, n_ranks, rank)
    kv_begin, kv_count = head_range(kv_heads, n_ranks, rank, query_heads)
    group = query_heads // kv_heads
    counts = [0] * kv_count
    for i in range(query_count):
        counts[(query_begin + i) // group - kv_begin] += 1
    return counts


def exact_rows(op, lengths, rank, input_rows):
    """(sequence-side rows, head-side rows) of an exact-mode exchange, checking that
    the input holds the rows the lengths say."""
    local, total = lengths[rank], sum(lengths)
    op = Op(op)
    if op == Op.HEAD_TO_SEQ:
        if input_rows != total:
            raise ValueError("the head-side input has %d rows but the lengths %r sum to %d"
                             % (input_rows, list(lengths), total))
    elif input_rows != local:
        raise ValueError("rank %d's sequence-side input has %d rows but lengths[%d] is %d"
                         % (rank, input_rows, rank, local))
    return local, total


def capacity_rows(op, n_ranks, input_rows):
    """(per-rank rows, sequence-side rows, head-side rows) of an exchange in which
    every rank's buffers have the same rows: the input's rows on the sequence side;
    the head side has n_ranks times as many. That is capacity mode, and exact mode
    when no length is known at all (the reference's equal-length case)."""
    if Op(op) == Op.HEAD_TO_SEQ:
        if input_rows % n_ranks != 0:
            raise ValueError("the head-side input has %d rows, not %d times a rank's rows: "
                             "pass every rank's lengths when they differ"
                             % (input_rows, n_ranks))
        capacity = input_rows // n_ranks
    else:
        capacity = input_rows
    return capacity, capacity, capacity * n_ranks
