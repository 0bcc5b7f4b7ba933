#!/usr/bin/env python3
"""One PNG from the benches' JSON lines: bandwidth against bytes per stage.

    python3 bench/plot.py KERNEL_PERF.jsonl [TORCH_BASELINE.jsonl] -o kernel_perf.png

One panel per head dim: ulysses' pack and unpack stages (GB/s counting bytes
read plus written), cudaMemcpyAsync device to device of the same bytes in the
same run (the roofline), and, where given, the PyTorch baseline's local work
per exchange expressed the same way (2 * bytes / its time).
"""
import argparse
import collections
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kernel_perf")
    parser.add_argument("baseline", nargs="?")
    parser.add_argument("-o", default="kernel_perf.png")
    args = parser.parse_args()
    rows = [r for r in read(args.kernel_perf) if r.get("skipped") is None]
    base = read(args.baseline) if args.baseline else []
    dims = sorted({r["head_dim"] for r in rows})
    fig, axes = plt.subplots(1, len(dims), figsize=(6 * len(dims), 4.5), squeeze=False)
    for ax, dim in zip(axes[0], dims):
        series = collections.defaultdict(list)
        roofline = collections.defaultdict(list)  # one point per size: the mean of its runs
        for r in rows:
            if r["head_dim"] != dim:
                continue
            label = f"ulysses {r['op']} {r['stage']} P={r['ranks']}"
            series[label].append((r["bytes"], r["stage_gbps"]))
            roofline[r["bytes"]].append(r["memcpy_gbps"])
        for b in base:
            if b["head_dim"] == dim:
                series[f"PyTorch reference {b['op']} P={b['ranks']}"].append(
                    (b["bytes"], 2 * b["bytes"] / (b["torch_us"] * 1e3)))
        series["cudaMemcpy D2D (roofline)"] = [(b, sum(v) / len(v)) for b, v in roofline.items()]
        for label, points in sorted(series.items()):
            points.sort()
            style = "k--" if label.startswith("cudaMemcpy") else (
                ":x" if label.startswith("PyTorch") else "-o")
            ax.plot([p[0] for p in points], [p[1] for p in points], style, label=label,
                    markersize=3, linewidth=1)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("bytes per stage")
        ax.set_ylabel("GB/s (read + written)")
        ax.set_title(f"head dim {dim}, {rows[0]['gpu']}")
        ax.grid(True, alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.tight_layout(rect=(0, 0, 0.8, 1))
    fig.legend(handles, labels, loc="center right", fontsize=7)
    fig.savefig(args.o, dpi=120)
    print(f"wrote {args.o}")


if __name__ == "__main__":
    main()
