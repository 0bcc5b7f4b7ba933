"""The exchanges as PyTorch operators (torch.library custom ops in the ulysses
namespace), so that torch.compile traces them instead of breaking the graph:

  torch.ops.ulysses.seq_to_head(inputs, group, lengths, local_length, heads, query_heads)
  torch.ops.ulysses.head_to_seq(inputs, group, lengths, local_length, heads, query_heads)
  torch.ops.ulysses.all_gather(input, group, lengths, local_length)
  torch.ops.ulysses.all_gather_backward(grad, group, lengths, local_length)

inputs: the tensors of one call (one exchange moves them all: q, k and v, or
one tensor), each [B, rows, H, D] or packed [B, rows, 3, H, D]; group: the
process group's group_name; lengths: every rank's length (host ints), and
local_length None; or capacity mode, as the C API's: lengths every rank's
capacity (the rows its buffers hold, equal on every rank) and local_length
this rank's real length, one int64 on the inputs' device; heads: each
tensor's total head count; query_heads: 0, or the query head count where the
tensor holds grouped-query kv heads (each rank receives the kv heads its query
heads read; head -> seq sums the gradients of kv heads several ranks hold).
all_gather: [B, rows, ...] -> [B, total rows, ...]; all_gather_backward: its
adjoint (the sum over ranks of this rank's rows).

Each operator has a fake implementation (the output's shape from the lengths
alone) and its autograd registered: the backward of seq -> head is head -> seq
with the same lengths, and so on. They run on the current stream with
workspace from PyTorch's allocator, and never read the device on the host; in
capacity mode the rows after the real ones are zero in every output.
"""

from typing import Optional

import torch
import torch.distributed as dist

from . import _comms, _lengths, _planning
from ._types import DataType, Layout, Op, Order

_FLOAT_TYPES = {
    torch.float32: DataType.FLOAT32,
    torch.float16: DataType.FLOAT16,
    torch.bfloat16: DataType.BFLOAT16,
}


def element_type(dtype):
    """(element_size, DataType) of a torch dtype: the float types the library can
    sum, every other dtype moved as opaque bytes."""
    return dtype.itemsize, _FLOAT_TYPES.get(dtype, DataType.OPAQUE)


def ranks(group):
    """(size, rank) of the group named group."""
    process_group = _comms.group_named(group)
    return dist.get_world_size(process_group), dist.get_rank(process_group)


def _exchange_shapes(op, tensors, group, lengths, heads, query_heads):
    """The output shape of each tensor of a seq -> head or head -> seq."""
    n_ranks, rank = ranks(group)
    shapes = []
    for tensor, total_heads, of_queries in zip(tensors, heads, query_heads):
        if Op(op) == Op.SEQ_TO_HEAD:
            out_heads = _planning.head_range(total_heads, n_ranks, rank, of_queries)[1]
        else:
            out_heads = total_heads
        rows = lengths[rank] if Op(op) == Op.HEAD_TO_SEQ else sum(lengths)
        shapes.append((tensor.shape[0], rows) + tuple(tensor.shape[2:-2]) +
                      (out_heads, tensor.shape[-1]))
    return shapes


def _layout(tensor, total_heads, of_queries):
    element_size, data_type = element_type(tensor.dtype)
    packed = 3 if tensor.dim() == 5 else 1
    return Layout(tensor.shape[0], total_heads, tensor.shape[-1], element_size, packed,
                  Order.BSHD, of_queries, data_type)


def _zero_rows_from(tensor, real_rows):
    """Zeroes rows real_rows.. of dimension 1 (real_rows: a device scalar)."""
    if tensor.numel() == 0:
        return
    rows = torch.arange(tensor.shape[1], device=tensor.device)
    padding = (rows >= real_rows).view((1, -1) + (1,) * (tensor.dim() - 2))
    tensor.masked_fill_(padding, 0)


def _run(op, inputs, outputs, layouts, group, lengths, local_length):
    """The exchange op of inputs into outputs through the group's exchange; in
    capacity mode, the padding rows of the outputs zeroed."""
    device = inputs[0].device
    exchange = _comms.exchange_for(group, device)
    rank = ranks(group)[1]
    if local_length is None and Op(op) == Op.SEQ_TO_HEAD:
        _lengths.hooks.call(_comms.group_named(group), tuple(lengths), device)
    exchange.run(op, [t.contiguous() for t in inputs], outputs, layouts, tuple(lengths),
                 local_length)
    if local_length is not None:
        real = exchange.device_lengths(local_length).clamp(0, lengths[rank])
        real_rows = real[rank] if Op(op) == Op.HEAD_TO_SEQ else real.sum()
        for output in outputs:
            _zero_rows_from(output, real_rows)
    return outputs


def _exchange(op, inputs, group, lengths, local_length, heads, query_heads):
    shapes = _exchange_shapes(op, inputs, group, lengths, heads, query_heads)
    outputs = [torch.empty(shape, dtype=t.dtype, device=t.device)
               for shape, t in zip(shapes, inputs)]
    layouts = [_layout(t, h, q) for t, h, q in zip(inputs, heads, query_heads)]
    return _run(op, inputs, outputs, layouts, group, lengths, local_length)


def _exchange_fake(op, inputs, group, lengths, heads, query_heads):
    shapes = _exchange_shapes(op, inputs, group, lengths, heads, query_heads)
    return [t.new_empty(shape) for shape, t in zip(shapes, inputs)]


@torch.library.custom_op("ulysses::seq_to_head", mutates_args=())
def seq_to_head(inputs: list[torch.Tensor], group: str, lengths: list[int],
                local_length: Optional[torch.Tensor], heads: list[int],
                query_heads: list[int]) -> list[torch.Tensor]:
    return _exchange(Op.SEQ_TO_HEAD, inputs, group, lengths, local_length, heads, query_heads)


@torch.library.custom_op("ulysses::head_to_seq", mutates_args=())
def head_to_seq(inputs: list[torch.Tensor], group: str, lengths: list[int],
                local_length: Optional[torch.Tensor], heads: list[int],
                query_heads: list[int]) -> list[torch.Tensor]:
    return _exchange(Op.HEAD_TO_SEQ, inputs, group, lengths, local_length, heads, query_heads)


@seq_to_head.register_fake
def _seq_to_head_fake(inputs, group, lengths, local_length, heads, query_heads):
    return _exchange_fake(Op.SEQ_TO_HEAD, inputs, group, lengths, heads, query_heads)


@head_to_seq.register_fake
def _head_to_seq_fake(inputs, group, lengths, local_length, heads, query_heads):
    return _exchange_fake(Op.HEAD_TO_SEQ, inputs, group, lengths, heads, query_heads)


def _keep_arguments(ctx, inputs, output):
    """What a backward needs of its forward: every argument but the tensors moved."""
    _, ctx.group, ctx.lengths, local_length, ctx.heads, ctx.query_heads = inputs
    ctx.save_for_backward(local_length)


def _seq_to_head_backward(ctx, grads):
    (local_length,) = ctx.saved_tensors
    return (head_to_seq(list(grads), ctx.group, ctx.lengths, local_length, ctx.heads,
                        ctx.query_heads), None, None, None, None, None)


def _head_to_seq_backward(ctx, grads):
    (local_length,) = ctx.saved_tensors
    return (seq_to_head(list(grads), ctx.group, ctx.lengths, local_length, ctx.heads,
                        ctx.query_heads), None, None, None, None, None)


seq_to_head.register_autograd(_seq_to_head_backward, setup_context=_keep_arguments)
head_to_seq.register_autograd(_head_to_seq_backward, setup_context=_keep_arguments)


def _row_layout(tensor):
    """An all-gather moves whole rows: [B, rows, ...] as [B, rows, 1, row elements]."""
    row_elements = 1
    for size in tensor.shape[2:]:
        row_elements *= size
    element_size, data_type = element_type(tensor.dtype)
    return Layout(tensor.shape[0], 1, max(row_elements, 1), element_size, 1, Order.BSHD, 0,
                  data_type)


def _gathered_shape(input, group, lengths):
    return (input.shape[0], sum(lengths)) + tuple(input.shape[2:])


@torch.library.custom_op("ulysses::all_gather", mutates_args=())
def all_gather(input: torch.Tensor, group: str, lengths: list[int],
               local_length: Optional[torch.Tensor]) -> torch.Tensor:
    output = input.new_empty(_gathered_shape(input, group, lengths))
    if output.numel() == 0:
        return output
    return _run(Op.ALL_GATHER, [input], [output], [_row_layout(input)], group, lengths,
                local_length)[0]


@all_gather.register_fake
def _all_gather_fake(input, group, lengths, local_length):
    return input.new_empty(_gathered_shape(input, group, lengths))


@torch.library.custom_op("ulysses::all_gather_backward", mutates_args=())
def all_gather_backward(grad: torch.Tensor, group: str, lengths: list[int],
                        local_length: Optional[torch.Tensor]) -> torch.Tensor:
    rank = ranks(group)[1]
    exchange = _comms.exchange_for(group, grad.device)
    total = grad.contiguous().clone()
    exchange.all_reduce(total)
    if local_length is None:
        # A copy, not a view of total (a fresh tensor, as the fake one is).
        return total.narrow(1, sum(lengths[:rank]), lengths[rank]).clone(
            memory_format=torch.contiguous_format)
    capacity = lengths[rank]
    real = exchange.device_lengths(local_length).clamp(0, capacity)
    rows = torch.arange(capacity, device=grad.device)
    index = torch.where(rows < real[rank], rows + real[:rank].sum(), torch.zeros_like(rows))
    local = total.index_select(1, index)
    _zero_rows_from(local, real[rank])
    return local


@all_gather_backward.register_fake
def _all_gather_backward_fake(grad, group, lengths, local_length):
    rows = lengths[ranks(group)[1]]
    return grad.new_empty((grad.shape[0], rows) + tuple(grad.shape[2:]))


def _keep_gather_arguments(ctx, inputs, output):
    _, ctx.group, ctx.lengths, local_length = inputs
    ctx.save_for_backward(local_length)


def _all_gather_grad(ctx, grad):
    (local_length,) = ctx.saved_tensors
    return all_gather_backward(grad, ctx.group, ctx.lengths, local_length), None, None, None


def _all_gather_backward_grad(ctx, grad):
    (local_length,) = ctx.saved_tensors
    return all_gather(grad, ctx.group, ctx.lengths, local_length), None, None, None


all_gather.register_autograd(_all_gather_grad, setup_context=_keep_gather_arguments)
all_gather_backward.register_autograd(_all_gather_backward_grad,
                                      setup_context=_keep_gather_arguments)
