"""Stand-in for VILA's Ulysses attention module: it imports the exchange by
name from .all_to_all (the line that switching to ulysses changes), exchanges
q, k and v seq -> head one by one, reads every rank's length back from the
globals (as VILA does to build the gathered attention mask), runs attention on
its heads and sends the output head -> seq."""

import math

from .all_to_all import SeqAllToAll4D
from .globals import get_ulysses_seq_len, get_ulysses_sp_pg, get_ulysses_sp_size


def ulysses_attention(query, key, value, attention):
    """query [B, L_r, Hq, D], key and value [B, L_r, Hkv, D]; attention(q, k, v)
    on [B, Ltot, heads, D]. Returns ([B, L_r, Hq, D], the lengths read back from
    the globals as host ints)."""
    group = get_ulysses_sp_pg()
    ranks = get_ulysses_sp_size()
    kv_heads = key.shape[2]
    if kv_heads % ranks:
        # Too few kv heads to split: repeat each until the count divides.
        repeat = ranks // math.gcd(kv_heads, ranks)
        key, value = key.repeat_interleave(repeat, 2), value.repeat_interleave(repeat, 2)
    q = SeqAllToAll4D.apply(group, query, 2, 1)
    k = SeqAllToAll4D.apply(group, key, 2, 1)
    v = SeqAllToAll4D.apply(group, value, 2, 1)
    lengths = [int(length.item()) for length in get_ulysses_seq_len()]
    if sum(lengths) != q.shape[1]:
        raise RuntimeError("the globals say %r, but seq -> head gave %d rows"
                           % (lengths, q.shape[1]))
    output = attention(q, k, v)
    return SeqAllToAll4D.apply(group, output, 1, 2), lengths
