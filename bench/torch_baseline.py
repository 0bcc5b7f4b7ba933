#!/usr/bin/env python3
"""The side-by-side baseline: the reference exchange's local work in PyTorch.

Reads the rows kernel_perf wrote (-j) and, for each (P, head dim, total
length, op) there, times on the same GPU the local passes of the algorithm this
library replaces, written here in its own words: pad the slice to the longest,
reshape and transpose the head groups to the front, `contiguous`, (the
equal-split all-to-all, left out: one process, no peers), split per rank, cut
each piece to its real length, `cat`, transpose back, `contiguous`, with the
lengths read to the host as that algorithm does. Rank 0 of P, the lengths of
each row's pattern (kernel_perf -l: equal, vila or skew; the reference pads
every slice to the longest), batch and layout as kernel_perf ran them. Then
prints the ratio of that time to the time of the stages kernel_perf measured
for the same op (a stage that kernel_perf reports as skipped costs nothing),
and the ratios' range per pattern.

    python3 bench/torch_baseline.py KERNEL_PERF.jsonl [-n N] [-w W] [-c 0|1] [-j OUT.jsonl]

Both sides flush L2 before every timed call, outside the timed events. With
-c 1 (the default) the PyTorch passes are first checked, at a small size per
pattern and op, against where the reference puts every row. The length
patterns and argument parsing need no torch (python/tests/test_bench_patterns.py).
"""
import argparse
import json
import sys

PATTERNS = ("equal", "vila", "skew")


def pattern_lengths(pattern, total, nranks):
    """Every rank's rows of total, as kernel_perf's patternLength splits them.

    equal: total // P each, the first total % P ranks one more; vila (VILA's
    rule): total // P each, the remainder on the last rank; skew (multimodal):
    rank r about (1.3 - 0.6 r / (P - 1)) * total / P, rank 0 the longest, the
    remainder on the last.
    """
    if pattern not in PATTERNS:
        raise ValueError(f"unknown length pattern {pattern!r}; one of {', '.join(PATTERNS)}")
    if nranks < 1 or total < 0:
        raise ValueError(f"need P >= 1 and total >= 0, got P = {nranks}, total = {total}")
    if pattern == "equal":
        return [total // nranks + (1 if r < total % nranks else 0) for r in range(nranks)]
    if pattern == "vila":
        head = [total // nranks] * (nranks - 1)
    else:
        head = [total * (13 * (nranks - 1) - 6 * r) // (10 * (nranks - 1) * nranks)
                for r in range(nranks - 1)]
    return head + [total - sum(head)]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kernel_perf_jsonl")
    parser.add_argument("-n", type=int, default=10, help="timed iterations [10]")
    parser.add_argument("-w", type=int, default=3, help="warm-up iterations [3]")
    parser.add_argument("-c", type=int, choices=(0, 1), default=1,
                        help="first check the PyTorch passes at a small size [1]")
    parser.add_argument("-j", help="also write one JSON object per row here")
    return parser.parse_args(argv)


def seq_to_head_local(x, lengths, nranks):
    """x: [B, L, H, D], this rank's slice; returns [B, total, H / P, D]."""
    import torch
    import torch.nn.functional as F

    batch, length, heads, dim = x.shape
    longest = max(int(n.item()) for n in lengths)
    padded = F.pad(x, (0, 0, 0, 0, 0, longest - length))
    grouped = padded.reshape(batch, longest, nranks, heads // nranks, dim)
    send = grouped.transpose(0, 2).contiguous()
    received = send  # the all-to-all would fill a tensor of this shape
    pieces = received.reshape(nranks * longest, batch, heads // nranks, dim).split(longest, 0)
    real = torch.cat([piece[: int(n.item())] for piece, n in zip(pieces, lengths)])
    return real.transpose(0, 1).contiguous()


def head_to_seq_local(y, lengths, rank, nranks):
    """y: [B, total, H / P, D], this rank's heads; returns [B, L_rank, H, D]."""
    import torch
    import torch.nn.functional as F

    batch, _, group, dim = y.shape
    real = [int(n.item()) for n in lengths]
    longest = max(real)
    pieces = y.split(real, dim=1)
    padded = torch.cat([F.pad(p, (0, 0, 0, 0, 0, longest - p.shape[1])) for p in pieces], dim=1)
    grouped = padded.reshape(batch, nranks, longest, group, dim)
    send = grouped.transpose(0, 3).transpose(0, 1).contiguous()
    received = send
    out = received.reshape(nranks * group, longest, batch, dim)[:, : real[rank]]
    return out.transpose(0, 2).contiguous()


def time_calls(call, flush, iterations, warmups):
    import torch

    for _ in range(warmups):
        call()
    total = 0.0
    for _ in range(iterations):
        flush.add_(1)
        begin = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        begin.record()
        call()
        end.record()
        end.synchronize()
        total += begin.elapsed_time(end)
    return total * 1e3 / iterations  # microseconds


def check_passes(nranks, pattern, dtype):
    """The PyTorch passes against where the reference puts every row, with
    this one process's send buffer standing in for every peer's: seq -> head
    gives, at rank r's offset, rank 0's first L_r rows of head group r;
    head -> seq gives, for head group r, rank r's rows of the head side, the
    first L_0 of them padded with zeros past L_r.
    Returns the number of wrong elements."""
    import torch
    batch, heads, dim, total = 2, 4 * nranks, 8, 7 * nranks + 3
    lengths = pattern_lengths(pattern, total, nranks)
    longest, group = max(lengths), heads // nranks
    device_lengths = [torch.tensor([n], dtype=torch.int64, device="cuda") for n in lengths]
    x = torch.randn(batch, lengths[0], heads, dim, device="cuda").to(dtype)
    got = seq_to_head_local(x, device_lengths, nranks)
    padded = torch.nn.functional.pad(x, (0, 0, 0, 0, 0, longest - lengths[0]))
    expected = torch.cat([padded[:, :n, r * group:(r + 1) * group] for r, n in enumerate(lengths)], 1)
    wrong = int((got != expected).sum()) if got.shape == expected.shape else got.numel() + 1
    y = torch.randn(batch, total, group, dim, device="cuda").to(dtype)
    got = head_to_seq_local(y, device_lengths, 0, nranks)
    offsets = [sum(lengths[:r]) for r in range(nranks)]
    pieces = [torch.nn.functional.pad(y[:, offsets[r]:offsets[r] + lengths[r]],
                                      (0, 0, 0, 0, 0, longest - lengths[r]))[:, :lengths[0]]
              for r in range(nranks)]
    expected = torch.cat(pieces, 2)
    wrong += int((got != expected).sum()) if got.shape == expected.shape else got.numel() + 1
    return wrong


def main():
    args = parse_args()
    import torch

    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    shapes = {}
    gpus = set()
    with open(args.kernel_perf_jsonl) as f:
        for line in f:
            row = json.loads(line)
            # The grouped-query modes' rows (-m gqa, qkv) have no reference here.
            if row.get("bench") != "kernel_perf" or row["op"] not in ("seq2head", "head2seq"):
                continue
            gpus.add(row["gpu"])
            pattern = row.get("pattern", "equal")
            expected_local = pattern_lengths(pattern, row["total_length"], row["ranks"])[0]
            if row["local_length"] != expected_local:
                sys.exit(f"{args.kernel_perf_jsonl}: pattern {pattern} at P = {row['ranks']}, "
                         f"total {row['total_length']} gives rank 0 {expected_local} rows, "
                         f"kernel_perf ran {row['local_length']}")
            key = (pattern, row["ranks"], row["head_dim"], row["total_length"], row["op"])
            entry = shapes.setdefault(key, {"row": row, "us": 0.0, "stages": []})
            if row["skipped"] is None:
                entry["us"] += row["stage_us"]
                entry["stages"].append(row["stage"])
    if not shapes:
        sys.exit(f"{args.kernel_perf_jsonl}: no kernel_perf rows")
    gpu = torch.cuda.get_device_name()
    if gpus != {gpu}:
        sys.exit(f"kernel_perf ran on {sorted(gpus)}, this is {gpu}: not the same GPU")

    props = torch.cuda.get_device_properties(0)
    flush = torch.empty(max(256 << 20, 4 * getattr(props, "L2_cache_size", 64 << 20)) // 4, dtype=torch.int32,
                        device="cuda")
    if args.c:
        wrong = 0
        for pattern, nranks, dtype_name in sorted({(k[0], k[1], e["row"]["dtype"]) for k, e in shapes.items()}):
            bad = check_passes(nranks, pattern, dtypes[dtype_name])
            print(f"# check {pattern} P={nranks} {dtype_name}: {bad} wrong elements")
            wrong += bad
        if wrong:
            sys.exit(f"the PyTorch passes put {wrong} elements where the reference does not")
    out = open(args.j, "w") if args.j else None
    print(f"# torch_baseline: the reference algorithm's local passes (PyTorch {torch.__version__})"
          f" vs ulysses' stages from {args.kernel_perf_jsonl}")
    print(f"# GPU: {gpu}; rank 0 of P; all-to-all left out; L2 flushed per call")
    print(f"# {'pattern':>7} {'P':>4} {'headDim':>7} {'totalLen':>10} {'op':>9} {'bytes':>13} "
          f"{'torch_us':>11} {'ulysses_us':>11} {'ratio':>8}  ulysses stages")
    ratios = {}
    for (pattern, nranks, head_dim, total, op), entry in sorted(shapes.items()):
        row = entry["row"]
        dtype = dtypes[row["dtype"]]
        batch, heads, local = row["batch"], row["heads"], row["local_length"]
        lengths = [torch.tensor([n], dtype=torch.int64, device="cuda")
                   for n in pattern_lengths(pattern, total, nranks)]
        if op == "seq2head":
            x = torch.ones(batch, local, heads, head_dim, dtype=dtype, device="cuda")
            call = lambda: seq_to_head_local(x, lengths, nranks)  # noqa: E731
        else:
            y = torch.ones(batch, total, heads // nranks, head_dim, dtype=dtype, device="cuda")
            call = lambda: head_to_seq_local(y, lengths, 0, nranks)  # noqa: E731
        torch_us = time_calls(call, flush, args.n, args.w)
        ours = entry["us"]
        ratio = torch_us / ours if ours > 0 else float("inf")
        ratios.setdefault(pattern, []).append(ratio)
        stages = "+".join(entry["stages"]) or "none (direct)"
        print(f"  {pattern:>7} {nranks:>4} {head_dim:>7} {total:>10} {op:>9} {row['bytes']:>13} "
              f"{torch_us:>11.1f} {ours:>11.1f} {ratio:>8.2f}  {stages}")
        if out:
            out.write(json.dumps({"bench": "torch_baseline", "gpu": gpu, "torch": torch.__version__,
                                  "pattern": pattern, "ranks": nranks, "head_dim": head_dim, "total_length": total,
                                  "local_length": local, "batch": batch, "heads": heads,
                                  "dtype": row["dtype"], "op": op, "bytes": row["bytes"],
                                  "torch_us": round(torch_us, 3), "ulysses_us": round(ours, 3),
                                  "ratio": round(ratio, 4), "ulysses_stages": stages}) + "\n")
        del call
        torch.cuda.empty_cache()
    for pattern in sorted(ratios):
        finite = [r for r in ratios[pattern] if r != float("inf")]
        if finite:
            print(f"# ratio torch / ulysses, {pattern} lengths: min {min(finite):.2f}, "
                  f"max {max(finite):.2f} over {len(finite)} rows")
    if out:
        out.close()


if __name__ == "__main__":
    main()
