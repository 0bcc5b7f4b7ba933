"""The torch.ops.ulysses operators on P CPU rank processes (gloo), with the
stand-in exchange of exchange_standin.py behind them: what needs torch and
several ranks but no GPU. torch_check.py runs it for P = 2 and 3.

Each rank checks:
  - the operators' results against the global tensor, which every rank
    rebuilds from the seeds of all ranks (exact and capacity mode, uneven
    heads, grouped-query kv heads, the all-gather);
  - torch.library.opcheck on every operator;
  - torch.compile(fullgraph=True, backend="aot_eager") of an attention layer
    (lengths set for the step, capacity mode, grouped-query kv heads): no
    graph break (torch._dynamo.explain), outputs and gradients bit-exact
    against eager; learned lengths: the graph breaks it costs, same results;
  - VILA's layer (the stand-in's UlyssesAttention, on the stand-in's reference
    exchange) against itself after ulysses.vila.apply(attention=True), with
    VILA's length rule and no lengths passed, with and without an attention
    mask, fp32 and bf16, kv heads split and kv heads copied for several ranks:
    outputs, q gradients and VILA's globals identical, kv gradients identical
    where no kv head is copied, else reported (the sums of the copies differ
    in order: expandKV's backward sums them per rank, ours in the exchange).

Run: python3 torch_cpu_ranks.py P (exit status 0: every rank passed).
"""

import os
import socket
import sys
import traceback

HEADS, HEAD_DIM, BATCH = 6, 4, 2
STANDIN_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vila_standin")
LENGTHS = {2: [5, 3], 3: [4, 0, 6]}


class Checks:
    """One rank's checks: failures are collected, the rank fails at the end."""

    def __init__(self, rank, n_ranks):
        import torch
        import torch.distributed as dist
        import ulysses.torch as ut
        from ulysses import _comms, head_range
        from exchange_standin import GlooExchange
        self.torch, self.dist, self.ut, self.head_range = torch, dist, ut, head_range
        self.rank, self.n_ranks = rank, n_ranks
        self.group = dist.group.WORLD
        self.name = self.group.group_name
        _comms.set_stand_in(GlooExchange(self.group), self.group)
        self.lengths = LENGTHS[n_ranks]
        self.failures = []

    def log(self, text):
        # One write per line, so that the ranks' lines do not interleave.
        sys.stdout.write("[P=%d rank %d] %s\n" % (self.n_ranks, self.rank, text))
        sys.stdout.flush()

    def check(self, name, condition, detail=""):
        self.log("%s %s %s" % ("ok  " if condition else "FAIL", name, detail))
        if not condition:
            self.failures.append(name)

    def same(self, name, actual, expected):
        torch = self.torch
        equal = actual.shape == expected.shape and actual.dtype == expected.dtype
        if equal and actual.numel():
            # Bytes, so that NaNs and signed zeros count.
            equal = torch.equal(actual.contiguous().view(torch.uint8),
                                expected.contiguous().view(torch.uint8))
        self.check(name, equal, "" if equal else "%s vs %s" % (tuple(actual.shape),
                                                               tuple(expected.shape)))

    def global_tensor(self, heads, seed, rows=None):
        """[B, sum of rows, heads, D], rank r's rows from seed + r."""
        torch = self.torch
        rows = rows or self.lengths
        parts = [torch.randn(BATCH, rows[r], heads, HEAD_DIM,
                             generator=torch.Generator().manual_seed(seed + r))
                 for r in range(self.n_ranks)]
        return torch.cat(parts, 1)

    def local(self, whole, rows=None):
        rows = rows or self.lengths
        begin = sum(rows[:self.rank])
        return whole[:, begin:begin + rows[self.rank]].contiguous()

    def my_heads(self, heads, query_heads=0):
        begin, count = self.head_range(heads, self.n_ranks, self.rank, query_heads)
        return slice(begin, begin + count)

    # -- results against the global tensor -----------------------------------
    def check_results(self):
        torch, ut = self.torch, self.ut
        whole = self.global_tensor(HEADS, 10)
        x = self.local(whole).requires_grad_()
        y = ut.seq_all_to_all_4d(self.group, x, 2, 1, lengths=self.lengths)
        self.same("seq -> head is the global tensor's heads", y, whole[:, :, self.my_heads(HEADS)])
        back = ut.seq_all_to_all_4d(self.group, y, 1, 2, lengths=self.lengths)
        self.same("head -> seq gives the input back", back, x.detach())
        back.backward(torch.ones_like(back))
        self.same("the gradient of the round trip is ones", x.grad, torch.ones_like(x))
        function = ut.SeqAllToAll4D.apply(self.group, x.detach(), 2, 1, self.lengths)
        self.same("SeqAllToAll4D calls the same operator", function, y.detach())

        # Grouped-query kv heads: 2 kv heads read by 6 query heads, shared where P = 3... or 4.
        kv_whole = self.global_tensor(2, 20)
        kv = self.local(kv_whole).requires_grad_()
        (kv_heads,) = torch.ops.ulysses.seq_to_head([kv], self.name, self.lengths, None, [2], [6])
        self.same("grouped-query kv heads: the ones the query heads read", kv_heads,
                  kv_whole[:, :, self.my_heads(2, 6)])
        kv_heads.sum().backward()
        counts = torch.zeros(2)
        for r in range(self.n_ranks):
            begin, count = self.head_range(2, self.n_ranks, r, 6)
            counts[begin:begin + count] += 1
        self.same("kv gradients summed over the ranks holding each head", kv.grad,
                  counts.view(1, 1, 2, 1).expand_as(kv).contiguous())

        gathered = ut.seq_all_gather(self.group, x.detach()[:, :, :1], lengths=self.lengths)
        self.same("the all-gather is the global tensor", gathered, whole[:, :, :1])

        # Capacity mode: every rank holds capacity rows, the real ones lead.
        capacity = max(self.lengths) + 1
        padded = torch.zeros(BATCH, capacity, HEADS, HEAD_DIM)
        padded[:, :self.lengths[self.rank]] = x.detach()
        local_length = torch.tensor([self.lengths[self.rank]])
        with ut.sequence_lengths(local_length=local_length, group=self.group):
            y_capacity = ut.seq_all_to_all_4d(self.group, padded, 2, 1)
            total = sum(self.lengths)
            self.same("capacity mode: the real rows lead", y_capacity[:, :total], y.detach())
            self.check("capacity mode: the padding rows are zero",
                       bool((y_capacity[:, total:] == 0).all()))
            back = ut.seq_all_to_all_4d(self.group, y_capacity, 1, 2)
            self.same("capacity mode: head -> seq gives the input back", back, padded)

    # -- opcheck -----------------------------------------------------------------
    def check_opcheck(self):
        torch = self.torch
        whole = self.global_tensor(HEADS, 30)
        q = self.local(whole)
        kv = self.local(self.global_tensor(3, 40))
        total = sum(self.lengths)
        head_side = self.global_tensor(HEADS, 50, [total] * self.n_ranks)[
            :, :total, self.my_heads(HEADS)].contiguous()
        capacity = max(self.lengths)
        padded = torch.zeros(BATCH, capacity, HEADS, HEAD_DIM)
        padded[:, :self.lengths[self.rank]] = q
        local_length = torch.tensor([self.lengths[self.rank]])
        row = q[:, :, :1].contiguous()
        cases = [
            ("seq_to_head", ([q.requires_grad_(), kv.requires_grad_()], self.name, self.lengths,
                             None, [HEADS, 3], [0, HEADS])),
            ("seq_to_head", ([padded.requires_grad_()], self.name, [capacity] * self.n_ranks,
                             local_length, [HEADS], [0])),
            ("head_to_seq", ([head_side.requires_grad_()], self.name, self.lengths, None,
                             [HEADS], [0])),
            ("all_gather", (row.requires_grad_(), self.name, self.lengths, None)),
            ("all_gather_backward", (self.global_tensor(1, 60, [total] * self.n_ranks)[:, :total]
                                     .contiguous().requires_grad_(), self.name, self.lengths,
                                     None)),
        ]
        for name, args in cases:
            op = getattr(torch.ops.ulysses, name).default
            try:
                result = torch.library.opcheck(op, args)
                ok = all(value == "SUCCESS" for value in result.values())
                self.check("opcheck %s" % name, ok, "" if ok else repr(result))
            except Exception as error:
                self.check("opcheck %s" % name, False, "%s: %s" % (type(error).__name__, error))

    # -- torch.compile -----------------------------------------------------------
    def layer(self, query, key, value, weight):
        torch, ut = self.torch, self.ut

        def attention(q, k, v):
            o = torch.nn.functional.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), enable_gqa=True)
            return o.transpose(1, 2)
        output = ut.ulysses_attention(attention, query, key, value, group=self.group)
        return (output * weight).sum(dim=-1)

    def compiled_against_eager(self, name, inputs, fullgraph=True):
        """fullgraph: no graph break expected; else at least one (reported)."""
        torch = self.torch

        def run(function):
            leaves = [t.detach().clone().requires_grad_() for t in inputs]
            output = function(*leaves)
            output.sum().backward()
            return [output.detach()] + [leaf.grad for leaf in leaves]

        explained = torch._dynamo.explain(self.layer)(*[t.detach() for t in inputs])
        breaks = explained.graph_break_count
        expected = breaks == 0 if fullgraph else breaks > 0
        self.check("%s: %d graph breaks" % (name, breaks), expected,
                   "" if expected else repr(explained.break_reasons))
        torch._dynamo.reset()
        compiled = torch.compile(self.layer, fullgraph=fullgraph, backend="aot_eager")
        eager = run(self.layer)
        ours = run(compiled)
        for what, a, b in zip(["output", "q grad", "k grad", "v grad", "weight grad"], ours, eager):
            self.same("%s: compiled %s bit-exact against eager" % (name, what), a, b)
        torch._dynamo.reset()

    def check_compile(self):
        torch, ut = self.torch, self.ut
        q = self.local(self.global_tensor(HEADS, 70))
        kv_heads = 2  # shared by two ranks where P = 3: their gradients are summed
        k = self.local(self.global_tensor(kv_heads, 80))
        v = self.local(self.global_tensor(kv_heads, 90))
        weight = torch.randn(HEAD_DIM, generator=torch.Generator().manual_seed(5))
        with ut.sequence_lengths(self.lengths, group=self.group):
            self.compiled_against_eager("lengths set for the step", [q, k, v, weight])
        capacity = max(self.lengths) + 2
        padded = []
        for tensor in (q, k, v):
            made = torch.zeros((BATCH, capacity) + tuple(tensor.shape[2:]))
            made[:, :tensor.shape[1]] = tensor
            padded.append(made)
        with ut.sequence_lengths(local_length=torch.tensor([self.lengths[self.rank]]),
                                 group=self.group):
            self.compiled_against_eager("capacity mode", padded + [weight])
        # Learned lengths: the host read runs outside the graph.
        self.compiled_against_eager("learned lengths", [q, k, v, weight], fullgraph=False)

    # -- VILA's layer ------------------------------------------------------------
    def vila_step(self, layer, inputs, masked):
        """Output, input gradients and the globals of one forward and backward."""
        import llava.train.sequence_parallel.globals as vila_globals
        vila_globals.set_ulysses_seq_len(None)
        q, k, v, mask, weight = inputs
        leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
        keywords = {"attention_mask": mask} if masked else {"causal": True}
        output = layer(*leaves, **keywords)
        (output.float() * weight).sum().backward()
        return [output.detach()] + [leaf.grad for leaf in leaves], vila_globals.get_ulysses_seq_len()

    def check_vila_layer(self):
        torch = self.torch
        sys.path.insert(0, STANDIN_PATH)
        import llava.train.sequence_parallel.globals as vila_globals
        import llava.train.sequence_parallel.ulysses_attn as vila_attention
        import ulysses.vila
        vila_globals.set_ulysses_sp_pg(self.group)
        total = 11
        lengths = [total // self.n_ranks] * (self.n_ranks - 1)
        lengths.append(total - sum(lengths))  # VILA's rule: the remainder on the last rank
        self.lengths = lengths

        def local_attention(q, k, v, attention_mask=None, dropout_p=0.0, softmax_scale=None,
                            seqlens_in_batch=None, causal=False):
            keys = None if attention_mask is None else attention_mask.bool()[:, None, None, :]
            o = torch.nn.functional.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=keys,
                is_causal=causal, scale=softmax_scale, enable_gqa=True)
            return o.transpose(1, 2)

        for kv_heads in (self.n_ranks, 1):
            copied = kv_heads < self.n_ranks
            for dtype in (torch.float32, torch.bfloat16):
                q = self.local(self.global_tensor(HEADS, 100)).to(dtype)
                k = self.local(self.global_tensor(kv_heads, 110)).to(dtype)
                v = self.local(self.global_tensor(kv_heads, 120)).to(dtype)
                mask = torch.ones(BATCH, lengths[self.rank], dtype=torch.int64)
                mask[:, -1:] = 0  # each rank's last row masked out
                weight = torch.randn(HEAD_DIM, generator=torch.Generator().manual_seed(7))
                for masked in (False, True):
                    case = "VILA layer, %d kv heads%s, %s%s" % (
                        kv_heads, " (copied)" if copied else "", str(dtype)[6:],
                        ", masked" if masked else "")
                    self.compare_vila(case, vila_attention.UlyssesAttention(local_attention,
                                                                            self.group),
                                      (q, k, v, mask, weight), masked, copied)

    def compare_vila(self, case, layer, inputs, masked, copied):
        torch = self.torch
        import ulysses.vila
        from ulysses import _comms
        reference, reference_globals = self.vila_step(layer, inputs, masked)
        replaced = ulysses.vila.apply(attention=True)
        exchange = _comms._stand_ins[self.name]
        gathers = []

        def counted(rows, gather=exchange.gather_lengths_host):
            gathers.append(rows)
            return gather(rows)
        exchange.gather_lengths_host = counted
        try:
            ours, our_globals = self.vila_step(layer, inputs, masked)
        finally:
            del exchange.gather_lengths_host
            ulysses.vila.revert()
        self.check("%s: forward replaced, one length gather" % case,
                   "llava.train.sequence_parallel.ulysses_attn.UlyssesAttention.forward" in replaced
                   and len(gathers) == 1, "(%d gathers)" % len(gathers))
        self.same("%s: output" % case, ours[0], reference[0])
        self.same("%s: q gradient" % case, ours[1], reference[1])
        for name, a, b in (("k", ours[2], reference[2]), ("v", ours[3], reference[3])):
            if not copied:
                self.same("%s: %s gradient" % (case, name), a, b)
                continue
            difference = (a.float() - b.float()).abs().max().item() if a.numel() else 0.0
            self.check("%s: %s gradient equal up to the sum's order" % (case, name),
                       torch.allclose(a.float(), b.float(), rtol=1e-2, atol=1e-2),
                       "(%s, largest difference %g)"
                       % ("bit-exact" if torch.equal(a, b) else "not bit-exact", difference))
        self.check("%s: VILA's globals in the reference's format" % case,
                   [int(t.item()) for t in our_globals] == self.lengths and
                   all(t.dtype == torch.int64 and tuple(t.shape) == (1,) for t in our_globals) and
                   [int(t.item()) for t in reference_globals] == self.lengths)

    def run_all(self):
        for check in (self.check_results, self.check_opcheck, self.check_compile,
                      self.check_vila_layer):
            try:
                check()
            except Exception:
                self.check(check.__name__, False, traceback.format_exc())
        return not self.failures


def worker(rank, n_ranks, port):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    import datetime
    import torch.distributed as dist
    dist.init_process_group("gloo", rank=rank, world_size=n_ranks,
                            timeout=datetime.timedelta(seconds=120))
    try:
        ok = Checks(rank, n_ranks).run_all()
    finally:
        dist.destroy_process_group()
    sys.exit(0 if ok else 1)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(n_ranks):
    import multiprocessing
    context = multiprocessing.get_context("spawn")
    port = free_port()
    processes = [context.Process(target=worker, args=(rank, n_ranks, port))
                 for rank in range(n_ranks)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(600)
    codes = [process.exitcode for process in processes]
    print("P=%d: exit codes %s" % (n_ranks, codes), flush=True)
    return 0 if all(code == 0 for code in codes) else 1


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.exit(main(int(sys.argv[1])))
