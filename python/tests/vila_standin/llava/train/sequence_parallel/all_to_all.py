"""Stand-in for llava.train.sequence_parallel.all_to_all: the reference
algorithm that ulysses replaces, in this project's words. seq -> head
learns every rank's length (barrier, all-gather, host reads) and stores it in
the globals; head -> seq reads it back; each slice is padded to the longest,
sent with one equal all_to_all_single, and the padding cut off."""

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .globals import get_ulysses_seq_len, get_ulysses_sp_pg, get_ulysses_sp_rank, \
    get_ulysses_sp_size, set_ulysses_seq_len


def _seq_to_head(x, group):
    ranks = get_ulysses_sp_size()
    batch, rows, heads, dim = x.shape
    lengths = [torch.zeros(1, dtype=torch.int64, device=x.device) for _ in range(ranks)]
    dist.barrier(group=get_ulysses_sp_pg())
    dist.all_gather(lengths, torch.tensor([rows], device=x.device), group=get_ulysses_sp_pg())
    set_ulysses_seq_len(lengths)
    longest = int(max(lengths).item())
    padded = F.pad(x, (0, 0, 0, 0, 0, longest - rows))
    blocks = padded.reshape(batch, longest, ranks, heads // ranks, dim).transpose(0, 2).contiguous()
    received = torch.empty_like(blocks)
    dist.barrier(group=group)
    dist.all_to_all_single(received, blocks, group=group)
    received = received.reshape(ranks * longest, batch, heads // ranks, dim)
    pieces = [piece[:int(length.item())]
              for piece, length in zip(torch.split(received, longest), lengths)]
    total = sum(int(length.item()) for length in lengths)
    return torch.cat(pieces).transpose(0, 1).contiguous().reshape(batch, total, heads // ranks, dim)


def _head_to_seq(y, group):
    ranks = get_ulysses_sp_size()
    lengths = get_ulysses_seq_len()
    assert lengths is not None, "head -> seq before any seq -> head"
    sizes = [int(length.item()) for length in lengths]
    batch, _, local_heads, dim = y.shape
    longest = max(sizes)
    parts = torch.split(y, sizes, dim=1)
    padded = torch.cat([F.pad(part, (0, 0, 0, 0, 0, longest - part.shape[1])) for part in parts], 1)
    blocks = (padded.reshape(batch, ranks, longest, local_heads, dim).transpose(0, 3)
              .transpose(0, 1).contiguous().reshape(ranks, local_heads, longest, batch, dim))
    received = torch.empty_like(blocks)
    dist.barrier(group=group)
    dist.all_to_all_single(received, blocks, group=group)
    mine = sizes[get_ulysses_sp_rank()]
    received = received.reshape(ranks * local_heads, longest, batch, dim)[:, :mine]
    return received.transpose(0, 2).contiguous().reshape(batch, mine, ranks * local_heads, dim)


class SeqAllToAll4D(torch.autograd.Function):
    @staticmethod
    def forward(ctx, group, input, scatter_idx, gather_idx):
        ctx.group, ctx.scatter_idx, ctx.gather_idx = group, scatter_idx, gather_idx
        if (scatter_idx, gather_idx) == (2, 1):
            return _seq_to_head(input, group)
        if (scatter_idx, gather_idx) == (1, 2):
            return _head_to_seq(input, group)
        raise RuntimeError("scatter_idx and gather_idx must be (2, 1) or (1, 2)")

    @staticmethod
    def backward(ctx, grad):
        return (None, SeqAllToAll4D.apply(ctx.group, grad, ctx.gather_idx, ctx.scatter_idx),
                None, None)


class SeqAllToAll5D(torch.autograd.Function):
    """Equal lengths only, as in the reference."""

    @staticmethod
    def forward(ctx, group, input, scatter_idx=3, gather_idx=1):
        ctx.group, ctx.scatter_idx, ctx.gather_idx = group, scatter_idx, gather_idx
        ranks = dist.get_world_size(group)
        if (scatter_idx, gather_idx) == (3, 1):
            batch, rows, three, heads, dim = input.shape
            blocks = (input.reshape(batch, rows, 3, ranks, heads // ranks, dim)
                      .transpose(0, 3).contiguous())
            received = torch.empty_like(blocks)
            dist.all_to_all_single(received, blocks, group=group)
            received = received.reshape(ranks * rows, 3, batch, heads // ranks, dim)
            return received.transpose(0, 2).transpose(1, 2).contiguous()
        if (scatter_idx, gather_idx) == (1, 3):
            batch, total, three, local_heads, dim = input.shape
            rows = total // ranks
            blocks = (input.reshape(batch, ranks, rows, 3, local_heads, dim).transpose(0, 4)
                      .transpose(0, 1).contiguous()
                      .reshape(ranks, local_heads, rows, 3, batch, dim))
            received = torch.empty_like(blocks)
            dist.all_to_all_single(received, blocks, group=group)
            received = received.reshape(ranks * local_heads, rows, 3, batch, dim)
            return received.transpose(0, 3).contiguous()
        raise RuntimeError("scatter_idx and gather_idx must be (3, 1) or (1, 3)")

    @staticmethod
    def backward(ctx, grad):
        return (None, SeqAllToAll5D.apply(ctx.group, grad, ctx.gather_idx, ctx.scatter_idx),
                None, None)


class SeqAllGather(torch.autograd.Function):
    """input: (gather_list, tensor) of equal shapes; returns them stacked."""

    @staticmethod
    def forward(ctx, group, input):
        gather_list, tensor = input
        ctx.save_for_backward(gather_list[0])
        dist.all_gather(gather_list, tensor, group=group)
        return torch.stack(gather_list, dim=0)

    @staticmethod
    def backward(ctx, grad):
        (first,) = ctx.saved_tensors
        return None, (None, first)
