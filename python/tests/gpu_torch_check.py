#!/usr/bin/env python3
"""ulysses.torch on GPUs, P = 1, 2 and 4 rank processes (one GPU shared through
NCCL's socket transport when there are fewer GPUs than ranks).

Each rank compares, byte for byte, forward and backward, with uneven lengths:
  - SeqAllToAll4D / SeqAllToAll5D against a PyTorch implementation of the
    reference algorithm (pad to the longest slice, reshape and transpose into P
    blocks, contiguous, all_to_all_single, split, cut the padding, cat);
  - uneven head splits, grouped-query kv heads and the all-gather against the
    global tensor, which every rank rebuilds from the seeds of all ranks;
  - capacity mode (device lengths) against exact mode, padding rows zero;
  - a Ulysses attention step (MHA and GQA) against the reference step (VILA's:
    expandKV, three exchanges, attention, one exchange back): same outputs,
    loss and gradients;
  - that an exchange does not wait for the GPU, and the own-communicator path.
Then VILA's path with no lengths passed anywhere, P = 2, 3 and 4: the stand-in
attention module (vila_standin/llava, VILA's module paths and globals API)
runs q/k/v seq -> head, SDPA, head -> seq and backward three times: with the
stand-in's reference all_to_all, with only its import line switched to
ulysses.torch, and after ulysses.vila.apply(). Lengths by VILA's rule
(floor(L/P) each, the remainder on the last rank) and a skewed pattern, bf16,
batch 1 and 2, plain and grouped-query kv heads; outputs, gradients and the
globals (set_ulysses_seq_len) must equal the reference's bit for bit.

With ULYSSES_GPU_CHECK_COMPILE_RANKS=2,3,4 (the python_compile step of
.ci/device-run), then torch.compile of the layer on the operators, P = 2, 3
and 4 (CompileRank): fullgraph=True with 0 graph breaks (torch._dynamo.explain)
and bit-exact against eager (backend aot_eager), lengths set for the step and
capacity mode, VILA's rule and a skewed pattern, bf16, batch 1 and 2, plain
and grouped-query kv heads; Inductor (and mode="reduce-overhead" in capacity
mode) on one case, reported; VILA's layer after ulysses.vila.apply(attention=True)
against its own forward; and the time per layer of eager, compiled, and VILA's
layer with three exchanges and with one.

Exit status: 0 all passed, 1 a failure, 77 (skipped) without torch or a GPU.
Run: ULYSSES_LIBRARY=build/libulysses.so PYTHONPATH=python python3 python/tests/gpu_torch_check.py
"""

import os
import socket
import sys
import time
import traceback
import types

SKIP = 77
RANK_COUNTS = tuple(int(p) for p in os.environ.get("ULYSSES_GPU_CHECK_RANKS", "1,2,4").split(",")
                    if p)
VILA_RANK_COUNTS = tuple(int(p) for p in
                         os.environ.get("ULYSSES_GPU_CHECK_VILA_RANKS", "2,3,4").split(",") if p)
STANDIN_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vila_standin")
TIMEOUT_S = float(os.environ.get("ULYSSES_GPU_CHECK_TIMEOUT", "240"))

# Several ranks on one GPU: one process and one host id per rank, sockets over loopback.
SHARED_GPU_ENV = {
    "NCCL_NET": "Socket", "NCCL_SOCKET_IFNAME": "lo", "NCCL_IB_DISABLE": "1",
    "NCCL_P2P_DISABLE": "1", "NCCL_SHM_DISABLE": "1", "NCCL_NVLS_ENABLE": "0",
    "NCCL_MNNVL_ENABLE": "0",
}

LENGTHS = {1: [5], 2: [5, 3], 3: [4, 0, 6], 4: [5, 0, 7, 2]}
BATCH, HEADS, HEAD_DIM = 2, 8, 16


class Checks:
    """One rank's checks: each failure is collected and logged, the rank raises
    at the end."""

    def __init__(self, torch, rank, n_ranks):
        self.torch, self.rank, self.n_ranks = torch, rank, n_ranks
        self.failures = []

    def log(self, text):
        print("[P=%d rank %d] %s" % (self.n_ranks, self.rank, text), flush=True)

    def check(self, name, condition, detail=""):
        if condition:
            self.log("ok   %s" % name)
        else:
            self.failures.append("%s %s" % (name, detail))
            self.log("FAIL %s %s" % (name, detail))

    def same(self, name, actual, expected):
        torch = self.torch
        if tuple(actual.shape) != tuple(expected.shape) or actual.dtype != expected.dtype:
            self.check(name, False, "shape/dtype %s %s vs %s %s" % (
                tuple(actual.shape), actual.dtype, tuple(expected.shape), expected.dtype))
            return
        a = actual.detach().contiguous().reshape(-1).view(torch.uint8)
        b = expected.detach().contiguous().reshape(-1).view(torch.uint8)
        differ = int((a != b).sum().item()) if a.numel() else 0
        self.check(name, differ == 0, "%d bytes differ" % differ)


class Rank(Checks):
    """The checks of ulysses.torch on one rank."""

    def __init__(self, rank, n_ranks, device):
        import torch
        import torch.distributed as dist
        import torch.nn.functional as F
        import ulysses
        import ulysses.torch as ut
        super().__init__(torch, rank, n_ranks)
        self.dist, self.F, self.ulysses, self.ut = dist, F, ulysses, ut
        self.device = torch.device("cuda", device)
        self.lengths = LENGTHS[n_ranks]
        self.group = dist.group.WORLD

    # -- helpers -----------------------------------------------------------------
    def close(self, name, actual, expected, rtol=1e-5, atol=1e-6):
        torch = self.torch
        exact = torch.equal(actual, expected)
        ok = torch.allclose(actual.float(), expected.float(), rtol=rtol, atol=atol)
        # A rank may hold no rows: an empty tensor has no largest difference.
        diff = (actual.float() - expected.float()).abs()
        self.check(name, ok, "max diff %g" % (diff.max().item() if diff.numel() else 0.0))
        self.log("     %s is %sbit-exact" % (name, "" if exact else "not "))

    def make(self, shape, seed, dtype):
        """Deterministic data any rank can regenerate (CPU generator)."""
        torch = self.torch
        generator = torch.Generator().manual_seed(seed)
        return torch.randn(shape, generator=generator).to(dtype).to(self.device)

    def offset(self, rank):
        return sum(self.lengths[:rank])

    def heads_of(self, heads, rank, query_heads=0):
        return self.ulysses.head_range(heads, self.n_ranks, rank, query_heads)

    # -- the reference algorithm, in PyTorch --------------------------------------
    def ref_seq_to_head(self, x, lengths):
        torch, F, dist = self.torch, self.F, self.dist
        P = len(lengths)
        longest = max(lengths)
        batch, rows, heads, dim = x.shape
        per_rank = heads // P
        padded = F.pad(x, (0, 0, 0, 0, 0, longest - rows))
        blocks = padded.reshape(batch, longest, P, per_rank, dim).permute(2, 1, 0, 3, 4).contiguous()
        received = torch.empty_like(blocks)
        dist.all_to_all_single(received, blocks, group=self.group)
        pieces = [received[p, :lengths[p]] for p in range(P)]
        return torch.cat(pieces, 0).permute(1, 0, 2, 3).contiguous()

    def ref_head_to_seq(self, y, lengths):
        torch, F, dist = self.torch, self.F, self.dist
        P = len(lengths)
        longest = max(lengths)
        batch, _, per_rank, dim = y.shape
        parts = torch.split(y, lengths, dim=1)
        padded = torch.cat([F.pad(p, (0, 0, 0, 0, 0, longest - p.shape[1])) for p in parts], 1)
        blocks = padded.reshape(batch, P, longest, per_rank, dim).permute(1, 3, 2, 0, 4).contiguous()
        received = torch.empty_like(blocks)
        dist.all_to_all_single(received, blocks, group=self.group)
        mine = received.reshape(P * per_rank, longest, batch, dim)[:, :lengths[self.rank]]
        return mine.permute(2, 1, 0, 3).contiguous()

    def ref_5d_seq_to_head(self, x):
        torch, dist = self.torch, self.dist
        P = self.n_ranks
        batch, rows, three, heads, dim = x.shape
        blocks = x.reshape(batch, rows, 3, P, heads // P, dim).permute(3, 1, 2, 0, 4, 5).contiguous()
        received = torch.empty_like(blocks)
        dist.all_to_all_single(received, blocks, group=self.group)
        return received.reshape(P * rows, 3, batch, heads // P, dim).permute(2, 0, 1, 3, 4).contiguous()

    def ref_5d_head_to_seq(self, y):
        torch, dist = self.torch, self.dist
        P = self.n_ranks
        batch, total, three, per_rank, dim = y.shape
        rows = total // P
        blocks = y.reshape(batch, P, rows, 3, per_rank, dim).permute(1, 4, 2, 3, 0, 5).contiguous()
        received = torch.empty_like(blocks)
        dist.all_to_all_single(received, blocks, group=self.group)
        return received.reshape(P * per_rank, rows, 3, batch, dim).permute(3, 1, 2, 0, 4).contiguous()

    def reference_function(self):
        """The reference exchange as an autograd Function (backward: the other way)."""
        torch, me = self.torch, self

        class Ref(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x, to_heads):
                ctx.to_heads = to_heads
                if to_heads:
                    return me.ref_seq_to_head(x, me.lengths)
                return me.ref_head_to_seq(x, me.lengths)

            @staticmethod
            def backward(ctx, grad):
                return Ref.apply(grad, not ctx.to_heads), None

        return Ref

    # -- checks --------------------------------------------------------------------
    def check_4d(self, dtype):
        torch, ut = self.torch, self.ut
        name = "4D %s" % str(dtype).split(".")[-1]
        Ref = self.reference_function()
        shape = (BATCH, self.lengths[self.rank], HEADS, HEAD_DIM)
        x = self.make(shape, 100 + self.rank, dtype).requires_grad_()
        x_ref = x.detach().clone().requires_grad_()
        out = ut.SeqAllToAll4D.apply(None, x, 2, 1, self.lengths)
        out_ref = Ref.apply(x_ref, True)
        self.same(name + " seq->head", out, out_ref)
        weight = self.make(out.shape, 200 + self.rank, dtype)
        (out * weight).sum().backward()
        (out_ref * weight).sum().backward()
        self.same(name + " seq->head backward", x.grad, x_ref.grad)

        y = self.make(out.shape, 300 + self.rank, dtype).requires_grad_()
        y_ref = y.detach().clone().requires_grad_()
        back = ut.SeqAllToAll4D.apply(None, y, 1, 2, self.lengths)
        back_ref = Ref.apply(y_ref, False)
        self.same(name + " head->seq", back, back_ref)
        weight = self.make(back.shape, 400 + self.rank, dtype)
        (back * weight).sum().backward()
        (back_ref * weight).sum().backward()
        self.same(name + " head->seq backward", y.grad, y_ref.grad)

        with ut.sequence_lengths(self.lengths):
            round_trip = ut.SeqAllToAll4D.apply(None, ut.SeqAllToAll4D.apply(None, x.detach(), 2, 1),
                                                1, 2)
        self.same(name + " round trip (lengths from sequence_lengths)", round_trip, x.detach())

    def check_uneven_heads_and_gqa(self):
        torch, ut = self.torch, self.ut
        P, dtype = self.n_ranks, torch.bfloat16
        lengths = self.lengths
        with ut.sequence_lengths(lengths):
            # 6 heads over P ranks: uneven groups where P does not divide 6.
            heads = 6
            xs = [self.make((BATCH, lengths[r], heads, HEAD_DIM), 500 + r, dtype) for r in range(P)]
            whole = torch.cat(xs, 1)
            begin, count = self.heads_of(heads, self.rank)
            out = ut.SeqAllToAll4D.apply(None, xs[self.rank], 2, 1)
            self.same("uneven head split seq->head", out, whole[:, :, begin:begin + count])
            back = ut.SeqAllToAll4D.apply(None, out, 1, 2, None, heads)
            self.same("uneven head split head->seq (heads=)", back, xs[self.rank])

            # kv heads of grouped-query attention: 2 kv heads read by 8 query heads.
            kv_heads, query_heads = 2, 8
            kvs = [self.make((BATCH, lengths[r], kv_heads, HEAD_DIM), 600 + r, dtype)
                   for r in range(P)]
            whole = torch.cat(kvs, 1)
            kv = kvs[self.rank].clone().requires_grad_()
            begin, count = self.heads_of(kv_heads, self.rank, query_heads)
            out = ut.SeqAllToAll4D.apply(None, kv, 2, 1, None, None, None, query_heads)
            self.same("gqa kv seq->head", out, whole[:, :, begin:begin + count])
            # Backward: each kv head's gradient summed over the ranks that got it,
            # in fp32, in increasing rank order, rounded once.
            grads = [self.make((BATCH, sum(lengths), self.heads_of(kv_heads, r, query_heads)[1],
                                HEAD_DIM), 700 + r, dtype) for r in range(P)]
            (out * grads[self.rank]).sum().backward()
            total = torch.zeros((BATCH, sum(lengths), kv_heads, HEAD_DIM), dtype=torch.float32,
                                device=self.device)
            for r in range(P):
                b, c = self.heads_of(kv_heads, r, query_heads)
                total[:, :, b:b + c] += grads[r].float()
            expected = total.to(dtype)[:, self.offset(self.rank):self.offset(self.rank) + lengths[self.rank]]
            self.same("gqa kv head->seq sums the replicas (backward)", kv.grad, expected)

    def check_5d(self):
        torch, ut = self.torch, self.ut
        dtype = torch.bfloat16
        Ref = self.reference_function()
        # Equal lengths: the reference's own 5-D algorithm.
        equal = [4] * self.n_ranks
        x = self.make((BATCH, 4, 3, HEADS, HEAD_DIM), 800 + self.rank, dtype).requires_grad_()
        out = ut.SeqAllToAll5D.apply(None, x, 3, 1, equal)
        self.same("5D seq->head (equal lengths)", out, self.ref_5d_seq_to_head(x.detach()))
        weight = self.make(out.shape, 850 + self.rank, dtype)
        (out * weight).sum().backward()
        self.same("5D backward (equal lengths)", x.grad, self.ref_5d_head_to_seq(weight))
        y = self.make(out.shape, 900 + self.rank, dtype)
        self.same("5D head->seq (no lengths given: the last seq->head's)", ut.SeqAllToAll5D.apply(None, y, 1, 3),
                  self.ref_5d_head_to_seq(y))
        # Uneven lengths (the reference refuses them): each packed slice is the 4-D exchange.
        x = self.make((BATCH, self.lengths[self.rank], 3, HEADS, HEAD_DIM), 1000 + self.rank,
                      dtype).requires_grad_()
        out = ut.SeqAllToAll5D.apply(None, x, 3, 1, self.lengths)
        slices = [Ref.apply(x.detach()[:, :, i].contiguous(), True) for i in range(3)]
        self.same("5D seq->head (uneven lengths)", out, torch.stack(slices, 2))
        weight = self.make(out.shape, 1100 + self.rank, dtype)
        (out * weight).sum().backward()
        grads = [Ref.apply(weight[:, :, i].contiguous(), False) for i in range(3)]
        self.same("5D backward (uneven lengths)", x.grad, torch.stack(grads, 2))

    def check_capacity(self):
        torch, ut = self.torch, self.ut
        P, dtype = self.n_ranks, torch.bfloat16
        lengths, rank = self.lengths, self.rank
        capacity = max(lengths)
        local = torch.tensor([lengths[rank]], dtype=torch.int64, device=self.device)
        x = self.make((BATCH, lengths[rank], HEADS, HEAD_DIM), 1200 + rank, dtype)
        x_cap = torch.zeros((BATCH, capacity, HEADS, HEAD_DIM), dtype=dtype, device=self.device)
        x_cap[:, :lengths[rank]] = x
        x_cap.requires_grad_()
        exact = ut.SeqAllToAll4D.apply(None, x, 2, 1, lengths)
        out = ut.SeqAllToAll4D.apply(None, x_cap, 2, 1, None, None, local)
        total = sum(lengths)
        self.check("capacity seq->head shape", tuple(out.shape) ==
                   (BATCH, P * capacity, HEADS // P, HEAD_DIM), str(tuple(out.shape)))
        self.same("capacity seq->head real rows", out[:, :total], exact)
        self.check("capacity seq->head padding is zero", bool((out[:, total:] == 0).all()))
        weight = self.make(out.shape, 1300 + rank, dtype)
        (out * weight).sum().backward()
        exact_grad = ut.SeqAllToAll4D.apply(None, weight[:, :total].contiguous(), 1, 2, lengths)
        self.same("capacity backward real rows", x_cap.grad[:, :lengths[rank]], exact_grad)
        self.check("capacity backward padding is zero", bool((x_cap.grad[:, lengths[rank]:] == 0).all()))

        ut.set_local_length(local)
        try:
            y = self.make((BATCH, total, HEADS // P, HEAD_DIM), 1400 + rank, dtype)
            y_cap = torch.zeros((BATCH, P * capacity, HEADS // P, HEAD_DIM), dtype=dtype,
                                device=self.device)
            y_cap[:, :total] = y
            back = ut.SeqAllToAll4D.apply(None, y_cap, 1, 2)
            self.same("capacity head->seq real rows (set_local_length)", back[:, :lengths[rank]],
                      ut.SeqAllToAll4D.apply(None, y, 1, 2, lengths))
            self.check("capacity head->seq padding is zero", bool((back[:, lengths[rank]:] == 0).all()))
        finally:
            ut.set_local_length(None)
        torch.cuda.synchronize(self.device)
        try:
            ut.check_async_error()
            self.check("capacity: no asynchronous error", True)
        except self.ulysses.UlyssesError as error:
            self.check("capacity: no asynchronous error", False, str(error))

    def check_all_gather(self):
        torch, ut, dist = self.torch, self.ut, self.dist
        P, lengths, rank = self.n_ranks, self.lengths, self.rank
        masks = [(self.make((BATCH, lengths[r]), 1500 + r, torch.float32) > 0) for r in range(P)]
        out = ut.SeqAllGather.apply(None, masks[rank], lengths)
        self.same("all-gather of a [B, L] bool mask", out, torch.cat(masks, 1))
        xs = [self.make((BATCH, lengths[r], 4), 1600 + r, torch.float32) for r in range(P)]
        x = xs[rank].clone().requires_grad_()
        out = ut.SeqAllGather.apply(None, x, lengths)
        self.same("all-gather [B, L, 4]", out, torch.cat(xs, 1))
        weights = [self.make(out.shape, 1700 + r, torch.float32) for r in range(P)]
        (out * weights[rank]).sum().backward()
        summed = weights[0].clone()
        for r in range(1, P):
            summed += weights[r]
        expected = summed[:, self.offset(rank):self.offset(rank) + lengths[rank]]
        self.close("all-gather backward (sum over ranks of this rank's rows)", x.grad, expected)
        # The reference's form: equal shapes, stacked, and the list filled in.
        tensor = self.make((BATCH, 3), 1800 + rank, torch.float32)
        gather_list = [torch.empty_like(tensor) for _ in range(P)]
        stacked = ut.SeqAllGather.apply(None, (gather_list, tensor))
        expected = [torch.empty_like(tensor) for _ in range(P)]
        dist.all_gather(expected, tensor)
        self.same("all-gather, the reference's (list, tensor) form", stacked, torch.stack(expected, 0))
        self.same("all-gather fills the list", torch.stack(gather_list, 0), torch.stack(expected, 0))

    def attention(self, q, k, v):
        if k.shape[2] != q.shape[2]:
            group = q.shape[2] // k.shape[2]
            k, v = k.repeat_interleave(group, 2), v.repeat_interleave(group, 2)
        scores = self.torch.einsum("blhd,bmhd->bhlm", q, k) * (q.shape[-1] ** -0.5)
        return self.torch.einsum("bhlm,bmhd->blhd", scores.softmax(-1), v)

    def check_attention(self, kv_heads):
        torch, ut = self.torch, self.ut
        P, rank, dtype = self.n_ranks, self.rank, torch.float32
        query_heads = HEADS
        name = "attention Hq=%d Hkv=%d" % (query_heads, kv_heads)
        Ref = self.reference_function()
        rows = self.lengths[rank]
        q = self.make((BATCH, rows, query_heads, HEAD_DIM), 1900 + rank, dtype)
        k = self.make((BATCH, rows, kv_heads, HEAD_DIM), 2000 + rank, dtype)
        v = self.make((BATCH, rows, kv_heads, HEAD_DIM), 2100 + rank, dtype)
        ours = [t.clone().requires_grad_() for t in (q, k, v)]
        refs = [t.clone().requires_grad_() for t in (q, k, v)]
        module = ut.UlyssesAttention(self.attention)
        out = module(*ours, lengths=self.lengths)
        # The reference step: expandKV, three exchanges, attention, one exchange back.
        group = query_heads // kv_heads
        rq, rk, rv = refs
        if group > 1:
            rk, rv = rk.repeat_interleave(group, 2), rv.repeat_interleave(group, 2)
        out_ref = Ref.apply(self.attention(Ref.apply(rq, True), Ref.apply(rk, True),
                                           Ref.apply(rv, True)), False)
        self.same(name + " output", out, out_ref)
        weight = self.make(out.shape, 2200 + rank, dtype)
        loss, loss_ref = (out * weight).sum(), (out_ref * weight).sum()
        self.same(name + " loss", loss, loss_ref)
        loss.backward()
        loss_ref.backward()
        self.same(name + " dq", ours[0].grad, refs[0].grad)
        shared = self.ulysses._planning.shares_kv_heads(kv_heads, query_heads, P)
        for label, mine, theirs in (("dk", ours[1].grad, refs[1].grad), ("dv", ours[2].grad, refs[2].grad)):
            if kv_heads == query_heads:
                self.same("%s %s" % (name, label), mine, theirs)
            else:
                # Sums of the same terms in another order where kv heads are shared.
                self.close("%s %s%s" % (name, label, " (kv heads shared)" if shared else ""),
                           mine, theirs)

    def check_no_host_wait(self):
        torch, ut = self.torch, self.ut
        x = self.make((BATCH, self.lengths[self.rank], HEADS, HEAD_DIM), 2300 + self.rank,
                      torch.bfloat16)
        ut.SeqAllToAll4D.apply(None, x, 2, 1, self.lengths)
        torch.cuda.synchronize(self.device)
        torch.cuda._sleep(2 * 10**9)  # about a second of GPU time on this stream
        start = time.monotonic()
        for _ in range(3):
            ut.SeqAllToAll4D.apply(None, x, 2, 1, self.lengths)
        spent = time.monotonic() - start
        torch.cuda.synchronize(self.device)
        self.check("three exchanges enqueued behind a busy stream without waiting", spent < 0.3,
                   "they took %.3f s of host time" % spent)

    def check_default_lengths(self):
        """No lengths given: seq -> head learns them, head -> seq reuses them."""
        torch, ut, dist = self.torch, self.ut, self.dist
        P, lengths, rank, dtype = self.n_ranks, self.lengths, self.rank, torch.bfloat16
        group = dist.new_group(list(range(P)))  # nothing learned on it yet
        y = self.make((BATCH, sum(lengths), HEADS // P, HEAD_DIM), 2600 + rank, dtype)
        try:
            ut.SeqAllToAll4D.apply(group, y, 1, 2)
            self.check("head->seq before any seq->head is refused", False, "it ran")
        except ValueError as error:
            self.check("head->seq before any seq->head is refused",
                       "no seq -> head on this group" in str(error), str(error))
        seen = []
        handle = ut.add_lengths_hook(lambda g, learned, device: seen.append((learned, device)))
        try:
            x = self.make((BATCH, lengths[rank], HEADS, HEAD_DIM), 2700 + rank, dtype)
            out = ut.SeqAllToAll4D.apply(group, x, 2, 1)
        finally:
            handle.remove()
        self.same("seq->head with no lengths learns them", out, self.ref_seq_to_head(x, lengths))
        self.check("the lengths hook got every rank's length",
                   seen == [(tuple(lengths), self.device)], str(seen))
        self.check("last_lengths", ut.last_lengths(group) == tuple(lengths),
                   str(ut.last_lengths(group)))
        self.same("head->seq with no lengths uses the last seq->head's",
                  ut.SeqAllToAll4D.apply(group, out, 1, 2), x)
        self.same("yunchang's use_sync in the fifth position",
                  ut.SeqAllToAll4D.apply(group, x, 2, 1, True), out)
        globals_format = [torch.tensor([n], dtype=torch.int64, device=self.device) for n in lengths]
        self.same("lengths as VILA's one-element device tensors",
                  ut.SeqAllToAll4D.apply(group, x, 2, 1, globals_format), out)
        self.same("lengths as one device tensor",
                  ut.SeqAllToAll4D.apply(group, x, 2, 1, torch.tensor(lengths, device=self.device)),
                  out)
        x5 = self.make((BATCH, lengths[rank], 3, HEADS, HEAD_DIM), 2800 + rank, dtype)
        out5 = ut.SeqAllToAll5D.apply(group, x5, 3, 1)
        slices = [self.ref_seq_to_head(x5[:, :, i].contiguous(), lengths) for i in range(3)]
        self.same("5D seq->head with no lengths", out5, torch.stack(slices, 2))
        self.same("5D head->seq with no lengths", ut.SeqAllToAll5D.apply(group, out5, 1, 3), x5)
        masks = [(self.make((BATCH, lengths[r]), 2900 + r, torch.float32) > 0) for r in range(P)]
        self.same("all-gather of a [B, L] mask with no lengths",
                  ut.SeqAllGather.apply(group, masks[rank]), torch.cat(masks, 1))
        ut.release(group)

    def check_own_communicator(self):
        torch, ut, dist = self.torch, self.ut, self.dist
        self.log("default group's communicator: %s" % ut.communicator().source)
        ut.set_comm_source("own")
        try:
            group = dist.new_group(list(range(self.n_ranks)))
            made = ut.communicator(group)
            self.check("own communicator made", made.source == "own" and made.owned, made.source)
            x = self.make((BATCH, self.lengths[self.rank], HEADS, HEAD_DIM), 2400 + self.rank,
                          torch.bfloat16)
            out = ut.SeqAllToAll4D.apply(group, x, 2, 1, self.lengths)
            self.same("seq->head on an own communicator", out, self.ref_seq_to_head(x, self.lengths))
            ut.release(group)
        finally:
            ut.set_comm_source(None)

    def check_capacity_overflow(self):
        """Last: the comm keeps the device error for its life."""
        torch, ut, dist = self.torch, self.ut, self.dist
        group = dist.new_group(list(range(self.n_ranks)))
        capacity = 4
        x = self.make((BATCH, capacity, HEADS, HEAD_DIM), 2500 + self.rank, torch.bfloat16)
        too_long = torch.tensor([capacity + 1], dtype=torch.int64, device=self.device)
        ut.SeqAllToAll4D.apply(group, x, 2, 1, None, None, too_long)
        torch.cuda.synchronize(self.device)
        try:
            ut.check_async_error(group)
            self.check("a length above capacity is reported", False, "no error reported")
        except self.ulysses.UlyssesError as error:
            self.check("a length above capacity is reported",
                       error.code == self.ulysses.Result.ERROR_LENGTH_EXCEEDS_CAPACITY, str(error))

    def run_all(self):
        torch = self.torch
        steps = [
            ("4D bf16", lambda: self.check_4d(torch.bfloat16)),
            ("4D fp32", lambda: self.check_4d(torch.float32)),
            ("uneven heads and gqa", self.check_uneven_heads_and_gqa),
            ("5D", self.check_5d),
            ("capacity", self.check_capacity),
            ("all-gather", self.check_all_gather),
            ("no lengths given", self.check_default_lengths),
            ("attention MHA", lambda: self.check_attention(HEADS)),
            ("attention GQA 4 kv heads", lambda: self.check_attention(4)),
            ("attention GQA 2 kv heads", lambda: self.check_attention(2)),
            ("no host wait", self.check_no_host_wait),
            ("own communicator", self.check_own_communicator),
            ("capacity overflow", self.check_capacity_overflow),
        ]
        for name, step in steps:
            try:
                step()
            except Exception:
                self.failures.append("%s raised:\n%s" % (name, traceback.format_exc()))
                self.log("FAIL %s raised:\n%s" % (name, traceback.format_exc()))
                raise  # the other ranks would wait for this one's collectives


def worker(rank, n_ranks, port, n_gpus, kind="binding"):
    """One rank process: kind "binding" runs Rank's checks, "vila" VilaRank's,
    "compile" CompileRank's."""
    if n_gpus < n_ranks:
        os.environ.update(SHARED_GPU_ENV)
        os.environ["NCCL_HOSTID"] = "ulyrank%d" % rank
    import torch
    import torch.distributed as dist
    device = rank % n_gpus
    torch.cuda.set_device(device)
    dist.init_process_group("nccl", init_method="tcp://127.0.0.1:%d" % port, rank=rank,
                            world_size=n_ranks, device_id=torch.device("cuda", device))
    checks = {"binding": Rank, "vila": VilaRank, "compile": CompileRank}[kind](rank, n_ranks,
                                                                              device)
    checks.run_all()
    import ulysses.torch as ut
    ut.release_all()
    dist.barrier()
    dist.destroy_process_group()
    if checks.failures:
        raise AssertionError("rank %d of %d: %d failures:\n%s" % (
            rank, n_ranks, len(checks.failures), "\n".join(checks.failures)))
    print("[P=%d rank %d] all %s checks passed" % (n_ranks, rank, kind), flush=True)


# -- VILA's path with only the import switched ------------------------------------
VILA_TOTAL_ROWS = 19   # VILA's rule: floor(19 / P) rows per rank, the rest on the last
VILA_SKEWED = {2: [1, 12], 3: [0, 3, 14], 4: [2, 0, 1, 13]}
VILA_QUERY_HEADS, VILA_HEAD_DIM = 12, 16  # 12 heads split evenly over 2, 3 and 4 ranks


def vila_rule_lengths(total, n_ranks):
    """LongVILA's split of the packed sequence: floor(L/P) rows per rank, the
    remainder on the last rank (for example 4, 4, 4, 7)."""
    share = total // n_ranks
    return [share] * (n_ranks - 1) + [total - share * (n_ranks - 1)]


class VilaRank(Checks):
    """One rank's run of the stand-in VILA attention three ways."""

    def __init__(self, rank, n_ranks, device):
        import torch
        sys.path.insert(0, STANDIN_PATH)
        import llava.train.sequence_parallel.globals as vila_globals
        import llava.train.sequence_parallel.ulysses_attn as attention_module
        import ulysses.vila
        super().__init__(torch, rank, n_ranks)
        self.globals, self.module, self.vila = vila_globals, attention_module, ulysses.vila
        self.device = torch.device("cuda", device)
        with open(attention_module.__file__) as source:
            text = source.read()
        switched = text.replace("from .all_to_all import SeqAllToAll4D",
                                "from ulysses.torch import SeqAllToAll4D")
        if switched == text:
            raise AssertionError("the stand-in's import line was not found")
        self.switched = types.ModuleType("llava.train.sequence_parallel.ulysses_attn_switched")
        self.switched.__package__ = "llava.train.sequence_parallel"
        exec(compile(switched, attention_module.__file__ + " (import switched)", "exec"),
             self.switched.__dict__)

    def make(self, shape, seed):
        generator = self.torch.Generator().manual_seed(seed)
        return self.torch.randn(shape, generator=generator).to(self.torch.bfloat16).to(self.device)

    def sdpa(self, q, k, v):
        """SDPA on [B, L, H, D] with kv heads repeated to the query heads, on the
        math backend, whose backward is deterministic."""
        torch = self.torch
        from torch.nn.attention import SDPBackend, sdpa_kernel
        group = q.shape[2] // k.shape[2]
        k, v = k.repeat_interleave(group, 2), v.repeat_interleave(group, 2)
        with sdpa_kernel(SDPBackend.MATH):
            out = torch.nn.functional.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        return out.transpose(1, 2)

    def step(self, module, q, k, v, weight):
        """One attention step through module; (output, dq, dk, dv, globals' lengths
        as read back by the module, the globals' tensors)."""
        self.globals.set_ulysses_seq_len(None)
        inputs = [t.detach().clone().requires_grad_() for t in (q, k, v)]
        output, lengths = module.ulysses_attention(*inputs, self.sdpa)
        (output.float() * weight).sum().backward()
        stored = self.globals.get_ulysses_seq_len()
        return [output.detach()] + [t.grad for t in inputs] + [lengths, stored]

    def run_all(self):
        patterns = [("VILA's rule", vila_rule_lengths(VILA_TOTAL_ROWS, self.n_ranks)),
                    ("skewed", VILA_SKEWED[self.n_ranks])]
        for pattern, lengths in patterns:
            for batch in (1, 2):
                for kv_heads in (VILA_QUERY_HEADS, 2):
                    name = "VILA %s %s B=%d Hkv=%d" % (pattern, lengths, batch, kv_heads)
                    rows, seed = lengths[self.rank], 10000 + 100 * batch + kv_heads
                    q = self.make((batch, rows, VILA_QUERY_HEADS, VILA_HEAD_DIM), seed + self.rank)
                    k = self.make((batch, rows, kv_heads, VILA_HEAD_DIM), seed + 7 + self.rank)
                    v = self.make((batch, rows, kv_heads, VILA_HEAD_DIM), seed + 13 + self.rank)
                    weight = self.make((batch, rows, VILA_QUERY_HEADS, VILA_HEAD_DIM),
                                       seed + 17 + self.rank).float()
                    reference = self.step(self.module, q, k, v, weight)
                    self.check(name + " reference learned the lengths", reference[4] == lengths,
                                str(reference[4]))
                    self.vila.detach_globals()
                    switched = self.step(self.switched, q, k, v, weight)
                    self.compare(name + " (import switched)", switched, reference)
                    self.vila.apply()
                    try:
                        self.check(name + " apply() switched the stand-in",
                                    self.module.SeqAllToAll4D is self.switched.SeqAllToAll4D)
                        applied = self.step(self.module, q, k, v, weight)
                    finally:
                        self.vila.revert()
                    self.compare(name + " (apply())", applied, reference)

    def compare(self, name, ours, reference):
        for label, mine, theirs in zip(("output", "dq", "dk", "dv"), ours[:4], reference[:4]):
            self.same("%s %s" % (name, label), mine, theirs)
        self.check(name + " globals read back", ours[4] == reference[4],
                    "%s vs %s" % (ours[4], reference[4]))
        stored, expected = ours[5], reference[5]
        same_format = (isinstance(stored, list) and len(stored) == len(expected) and all(
            a.dtype == b.dtype and tuple(a.shape) == tuple(b.shape) and a.device == b.device
            and int(a.item()) == int(b.item()) for a, b in zip(stored, expected)))
        self.check(name + " globals in the reference's format", same_format,
                    "%r vs %r" % (stored, expected))


# -- torch.compile of the layer (the operators of torch.ops.ulysses) -----------------
COMPILE_RANK_COUNTS = tuple(int(p) for p in
                            os.environ.get("ULYSSES_GPU_CHECK_COMPILE_RANKS", "").split(",") if p)
TIMED_ITERATIONS = int(os.environ.get("ULYSSES_GPU_CHECK_TIMED", "20"))


class CompileRank(VilaRank):
    """One rank's torch.compile checks, on the stand-in VILA's shapes: the
    attention layer (UlyssesAttention around SDPA's math backend) compiled
    with fullgraph=True against eager, bit-exact (backend aot_eager) and with
    Inductor, no graph break (torch._dynamo.explain), with the lengths set for
    the step and in capacity mode (mode="reduce-overhead", CUDA graphs);
    VILA's layer against itself after ulysses.vila.apply(attention=True); the
    time per layer of eager, compiled and VILA's three exchanges."""

    def __init__(self, rank, n_ranks, device):
        super().__init__(rank, n_ranks, device)
        import ulysses.torch as ut
        self.ut = ut
        self.group = self.torch.distributed.group.WORLD
        self.globals.set_ulysses_sp_pg(self.group)

    def layer(self, q, k, v, weight):
        output = self.ut.ulysses_attention(self.sdpa, q, k, v, group=self.group)
        return (output.float() * weight).sum()

    def vila_sdpa(self, q, k, v, attention_mask=None, dropout_p=0.0, softmax_scale=None,
                  seqlens_in_batch=None, causal=False):
        """The local attention as VILA's layer calls it (causal, no mask here)."""
        return self.sdpa(q, k, v)

    def forward_backward(self, function, inputs):
        leaves = [t.detach().clone().requires_grad_() for t in inputs[:3]]
        loss = function(*leaves, inputs[3])
        loss.backward()
        return [loss.detach()] + [leaf.grad for leaf in leaves]

    def timed(self, function, inputs):
        """Milliseconds per forward and backward of function, after a warm-up."""
        torch = self.torch
        self.forward_backward(function, inputs)
        torch.cuda.synchronize(self.device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(TIMED_ITERATIONS):
            self.forward_backward(function, inputs)
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / TIMED_ITERATIONS

    def compiled_against_eager(self, name, inputs, inductor_mode=False):
        """The layer compiled (aot_eager) against eager; with inductor_mode (None:
        Inductor's default, or a mode's name) also with Inductor, reported, and
        returned for timing."""
        torch = self.torch
        explained = torch._dynamo.explain(self.layer)(*[t.detach() for t in inputs])
        self.check("%s: 0 graph breaks" % name, explained.graph_break_count == 0,
                   "%d: %r" % (explained.graph_break_count, explained.break_reasons))
        eager = self.forward_backward(self.layer, inputs)
        torch._dynamo.reset()
        exact = self.forward_backward(torch.compile(self.layer, fullgraph=True,
                                                    backend="aot_eager"), inputs)
        for label, a, b in zip(("loss", "dq", "dk", "dv"), exact, eager):
            self.same("%s: compiled (aot_eager) %s bit-exact against eager" % (name, label), a, b)
        if inductor_mode is False:
            return None
        torch._dynamo.reset()
        inductor = torch.compile(self.layer, fullgraph=True, mode=inductor_mode)
        fused = self.forward_backward(inductor, inputs)
        for label, a, b in zip(("loss", "dq", "dk", "dv"), fused, eager):
            difference = (a.float() - b.float()).abs().max().item() if a.numel() else 0.0
            self.log("     %s: Inductor%s %s %s, largest difference %g" % (
                name, " " + inductor_mode if inductor_mode else "", label,
                "bit-exact" if torch.equal(a, b) else "not bit-exact", difference))
        return inductor

    def run_all(self):
        torch, ut = self.torch, self.ut
        vila_rule = vila_rule_lengths(VILA_TOTAL_ROWS, self.n_ranks)
        skewed = VILA_SKEWED[self.n_ranks]
        # Each pattern, batch and kv head count once, not every combination (each
        # case compiles afresh); Inductor and the timing on one (timed).
        cases = [("VILA's rule", vila_rule, 1, VILA_QUERY_HEADS, False),
                 ("VILA's rule", vila_rule, 2, 2, True),
                 ("skewed", skewed, 2, VILA_QUERY_HEADS, False),
                 ("skewed", skewed, 1, 2, False)]
        for pattern, lengths, batch, kv_heads, timed in cases:
            name = "compile %s %s B=%d Hkv=%d" % (pattern, lengths, batch, kv_heads)
            rows, seed = lengths[self.rank], 20000 + 100 * batch + kv_heads
            inputs = [self.make((batch, rows, heads, VILA_HEAD_DIM), seed + 7 * i + self.rank)
                      for i, heads in enumerate((VILA_QUERY_HEADS, kv_heads, kv_heads))]
            inputs.append(self.make((batch, rows, VILA_QUERY_HEADS, VILA_HEAD_DIM),
                                    seed + 31 + self.rank).float())
            with ut.sequence_lengths(lengths, group=self.group):
                compiled = self.compiled_against_eager(name + " lengths set", inputs,
                                                       None if timed else False)
                if timed:
                    self.log("     %s: ms per layer, eager %.3f, compiled %.3f" % (
                        name, self.timed(self.layer, inputs), self.timed(compiled, inputs)))
            capacity = max(lengths)
            padded = []
            for tensor in inputs:
                made = torch.zeros((batch, capacity) + tuple(tensor.shape[2:]),
                                   dtype=tensor.dtype, device=self.device)
                made[:, :rows] = tensor
                padded.append(made)
            local_length = torch.tensor([rows], dtype=torch.int64, device=self.device)
            with ut.sequence_lengths(local_length=local_length, group=self.group):
                self.compiled_against_eager(name + " capacity", padded,
                                            "reduce-overhead" if timed else False)
            # VILA's layer needs the kv heads split evenly, or copied evenly.
            if kv_heads % self.n_ranks == 0 or self.n_ranks % kv_heads == 0:
                self.check_vila_layer(name, inputs, kv_heads, timed)
            torch._dynamo.reset()

    def check_vila_layer(self, name, inputs, kv_heads, timed):
        """VILA's layer, its own forward (three exchanges, on ulysses' classes
        after apply()) against apply(attention=True)'s (one exchange)."""
        layer = self.module.UlyssesAttention(self.vila_sdpa, self.group)

        def vila_layer(q, k, v, weight):
            return (layer(q, k, v, causal=True).float() * weight).sum()
        reference = self.forward_backward(vila_layer, inputs)
        self.vila.apply()
        try:
            three = self.forward_backward(vila_layer, inputs)
            three_ms = self.timed(vila_layer, inputs) if timed else None
            self.vila.apply(attention=True)
            one = self.forward_backward(vila_layer, inputs)
            one_ms = self.timed(vila_layer, inputs) if timed else None
        finally:
            self.vila.revert()
        copied = kv_heads < self.n_ranks
        for label, a, b, c in zip(("loss", "dq", "dk", "dv"), one, three, reference):
            self.same("%s VILA layer on ulysses' classes: %s" % (name, label), b, c)
            if copied and label in ("dk", "dv"):
                difference = (a.float() - c.float()).abs().max().item() if a.numel() else 0.0
                self.check("%s VILA layer in one exchange: %s equal up to the sum's order"
                           % (name, label), self.torch.allclose(a.float(), c.float(), rtol=1e-2,
                                                                atol=1e-2),
                           "(%s, largest difference %g)" % (
                               "bit-exact" if self.torch.equal(a, c) else "not bit-exact",
                               difference))
            else:
                self.same("%s VILA layer in one exchange: %s" % (name, label), a, c)
        if timed:
            self.log("     %s: ms per VILA layer, three exchanges %.3f, one exchange %.3f"
                     % (name, three_ms, one_ms))


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_ranks(n_ranks, n_gpus, kind="binding"):
    import torch.multiprocessing as mp
    context = mp.start_processes(worker, args=(n_ranks, free_port(), n_gpus, kind),
                                 nprocs=n_ranks, join=False, start_method="spawn")
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not context.join(timeout=5):
            if time.monotonic() > deadline:
                for process in context.processes:
                    if process.is_alive():
                        process.kill()
                print("P=%d: timed out after %.0f s" % (n_ranks, TIMEOUT_S), flush=True)
                return False
    except Exception as error:  # a rank raised or died; torch stopped the others
        print("P=%d failed: %s" % (n_ranks, error), flush=True)
        return False
    return True


def main():
    try:
        import torch
    except ImportError:
        print("SKIP: torch is not installed")
        return SKIP
    if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
        print("SKIP: no CUDA device")
        return SKIP
    import ulysses
    try:
        library = ulysses.library()
    except ulysses.UlyssesLibraryError as error:
        print("FAIL: %s" % error)
        return 1
    n_gpus = torch.cuda.device_count()
    nccl = torch.cuda.nccl.version()
    print("torch %s, CUDA %s, NCCL %s, %d GPU(s) (%s), libulysses %s at %s" % (
        torch.__version__, torch.version.cuda,
        ".".join(map(str, nccl)) if isinstance(nccl, tuple) else nccl, n_gpus, torch.cuda.get_device_name(0), ".".join(map(str, library.version)), library.path),
        flush=True)
    results = {}
    for n_ranks in RANK_COUNTS:
        print("=== P=%d%s" % (n_ranks, " (sharing %d GPU(s) over sockets)" % n_gpus
                              if n_gpus < n_ranks else ""), flush=True)
        started = time.monotonic()
        results[n_ranks] = run_ranks(n_ranks, n_gpus)
        print("=== P=%d %s in %.1f s" % (n_ranks, "passed" if results[n_ranks] else "FAILED",
                                        time.monotonic() - started), flush=True)
    for n_ranks in VILA_RANK_COUNTS:
        print("=== VILA, only the import switched, P=%d" % n_ranks, flush=True)
        started = time.monotonic()
        results["vila %d" % n_ranks] = passed = run_ranks(n_ranks, n_gpus, "vila")
        print("=== VILA P=%d %s in %.1f s" % (n_ranks, "passed" if passed else "FAILED",
                                             time.monotonic() - started), flush=True)
    for n_ranks in COMPILE_RANK_COUNTS:
        print("=== torch.compile, P=%d" % n_ranks, flush=True)
        started = time.monotonic()
        results["compile %d" % n_ranks] = passed = run_ranks(n_ranks, n_gpus, "compile")
        print("=== compile P=%d %s in %.1f s" % (n_ranks, "passed" if passed else "FAILED",
                                                time.monotonic() - started), flush=True)
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
