"""Stand-in for VILA's Ulysses attention module: it imports the exchange by
name from .all_to_all (the line that switching to ulysses changes), exchanges
q, k and v seq -> head one by one, reads every rank's length back from the
globals (as VILA does to build the gathered attention mask), runs attention on
its heads and sends the output head -> seq; as a function
(ulysses_attention) and as VILA's layer class (UlyssesAttention)."""

import math

import torch
import torch.distributed as dist

from .all_to_all import SeqAllToAll4D
from .globals import get_ulysses_seq_len, get_ulysses_sp_pg, get_ulysses_sp_rank, \
    get_ulysses_sp_size


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


class _RepeatKV(torch.autograd.Function):
    """VILA's expandKV: each kv head copied `times` times, next to itself; the
    backward sums the copies of each head."""

    @staticmethod
    def forward(ctx, key, value, times):
        ctx.times = times
        return key.repeat_interleave(times, 2), value.repeat_interleave(times, 2)

    @staticmethod
    def backward(ctx, grad_key, grad_value):
        def summed(grad):
            batch, rows, heads, dim = grad.shape
            return grad.reshape(batch, rows, heads // ctx.times, ctx.times, dim).sum(3)
        return summed(grad_key), summed(grad_value), None


class UlyssesAttention(torch.nn.Module):
    """VILA's Ulysses attention layer as its forward goes: kv heads copied
    first where there are fewer than ranks, q, k and v exchanged seq -> head
    one by one, the attention mask of every rank gathered (each rank's mask
    padded to the longest length in the globals, summed over the ranks, the
    padding cut), the local attention called with VILA's keywords, the output
    sent head -> seq."""

    def __init__(self, local_attention, sequence_process_group=None, scatter_idx=2,
                 gather_idx=1):
        super().__init__()
        self.local_attn = local_attention
        self.spg = sequence_process_group
        self.scatter_idx, self.gather_idx = scatter_idx, gather_idx
        self.ulysses_degree = get_ulysses_sp_size()

    def forward(self, query, key, value, *args, attention_mask=None, dropout_p=0.0,
                softmax_scale=None, seqlens_in_batch=None, causal=False, window_size=(-1, -1),
                alibi_slopes=None, deterministic=False, return_attn_probs=False):
        kv_heads = key.shape[2]
        if self.ulysses_degree > kv_heads:
            key, value = _RepeatKV.apply(key, value, self.ulysses_degree // kv_heads)
        q = SeqAllToAll4D.apply(self.spg, query, self.scatter_idx, self.gather_idx)
        k = SeqAllToAll4D.apply(self.spg, key, self.scatter_idx, self.gather_idx)
        v = SeqAllToAll4D.apply(self.spg, value, self.scatter_idx, self.gather_idx)
        keywords = {"dropout_p": dropout_p, "softmax_scale": softmax_scale, "causal": causal}
        if attention_mask is not None:
            lengths = get_ulysses_seq_len()
            longest = int(max(lengths).item())
            rank = get_ulysses_sp_rank()
            masks = torch.zeros((self.ulysses_degree, attention_mask.shape[0], longest),
                                dtype=attention_mask.dtype, device=attention_mask.device)
            masks[rank, :, :attention_mask.shape[1]] = attention_mask
            dist.all_reduce(masks, group=self.spg)
            keywords["attention_mask"] = torch.cat(
                [masks[r, :, :int(length.item())] for r, length in enumerate(lengths)], 1)
            keywords["seqlens_in_batch"] = seqlens_in_batch
        context = self.local_attn(q, k, v, *args, **keywords)
        if isinstance(context, tuple):
            context = context[0]
        return SeqAllToAll4D.apply(self.spg, context, self.gather_idx, self.scatter_idx)
