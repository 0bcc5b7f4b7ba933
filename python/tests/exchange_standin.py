"""A stand-in for libulysses behind the torch.ops.ulysses operators, for CPU
tensors: the exchanges of the header written with torch.distributed
collectives (gloo), so that opcheck, torch.compile and the VILA layer run on a
machine without a GPU. It follows the header's words, not the library's code:
each rank's tensor is flattened, padded to the largest and all-gathered, and
every rank takes what the exchange gives it (head -> seq sums the replicas of
a kv head in fp32, in rank order)."""

import torch
import torch.distributed as dist

from ulysses import Op, head_range


class GlooExchange:
    def __init__(self, group=None):
        self.group = group if group is not None else dist.group.WORLD
        self.size = dist.get_world_size(self.group)
        self.rank = dist.get_rank(self.group)

    def _gather(self, tensor, shapes):
        """Every rank's tensor, rank r's of shape shapes[r]."""
        sizes = [torch.Size(shape).numel() for shape in shapes]
        flat = torch.zeros(max(sizes), dtype=tensor.dtype)
        flat[:tensor.numel()] = tensor.reshape(-1)
        gathered = [torch.empty_like(flat) for _ in range(self.size)]
        dist.all_gather(gathered, flat, group=self.group)
        return [part[:size].view(shape) for part, size, shape in zip(gathered, sizes, shapes)]

    def run(self, op, inputs, outputs, layouts, lengths, local_length):
        real = list(lengths)
        if local_length is not None:
            real = [min(max(length, 0), capacity) for length, capacity in
                    zip(self.device_lengths(local_length).tolist(), lengths)]
        for tensor, output, layout in zip(inputs, outputs, layouts):
            output.zero_()
            heads = [head_range(layout.heads, self.size, r, layout.query_heads)
                     for r in range(self.size)]
            if Op(op) == Op.HEAD_TO_SEQ:
                shapes = [tuple(tensor.shape[:-2]) + (count, tensor.shape[-1])
                          for _, count in heads]
                offset, mine = sum(real[:self.rank]), real[self.rank]
                total = torch.zeros(output[:, :mine].shape, dtype=torch.float32)
                for (begin, count), part in zip(heads, self._gather(tensor, shapes)):
                    total[..., begin:begin + count, :] += part[:, offset:offset + mine].float()
                output[:, :mine] = total.to(output.dtype)
                continue
            shapes = [(tensor.shape[0], lengths[r]) + tuple(tensor.shape[2:])
                      for r in range(self.size)]
            parts = self._gather(tensor, shapes)
            whole = torch.cat([part[:, :real[r]] for r, part in enumerate(parts)], 1)
            if Op(op) == Op.SEQ_TO_HEAD:
                begin, count = heads[self.rank]
                whole = whole[..., begin:begin + count, :]
            output[:, :whole.shape[1]] = whole

    def device_lengths(self, local_length):
        gathered = [torch.empty_like(local_length) for _ in range(self.size)]
        dist.all_gather(gathered, local_length.contiguous(), group=self.group)
        return torch.cat(gathered)

    def gather_lengths_host(self, rows):
        return self.device_lengths(torch.tensor([rows], dtype=torch.int64)).tolist()

    def all_reduce(self, tensor):
        dist.all_reduce(tensor, group=self.group)
