"""Combine criterion results (ours, candle) and benches/pytorch_reference.py results into the
CPU section of docs/benchmarks.md: per workload, medians, the ratios ours/PyTorch and
ours/candle, achieved GFLOP/s and its share of the machine's measured FP32 peak, and peak
resident memory; plus side tables (allocator setting, CPU backends) for DiT-S/2 at batch 8.

Criterion ids `<group>/ours/<rest>` and `<group>/candle/<rest>` (benches/mmdit_candle.rs) are
one workload `<group>/<rest>`. The section between the `<!-- compare.sh: TITLE -->` markers of
the output file is replaced; the rest of the file is kept.

    python3 benches/report.py --criterion target/criterion --pytorch target/pytorch.json \
        --flops target/flops.json --memory target/bench_memory.jsonl --machine "..." --out docs/benchmarks.md
"""
import argparse
import datetime
import glob
import json
import os
import re


def criterion_medians(root):
    out = {}
    for bench in glob.glob(os.path.join(root, "**", "new", "benchmark.json"), recursive=True):
        with open(bench) as f:
            full_id = json.load(f)["full_id"]
        with open(os.path.join(os.path.dirname(bench), "estimates.json")) as f:
            out[full_id] = json.load(f)["median"]["point_estimate"] / 1e9
    return out


def split_candle(medians):
    """(ours, candle): criterion medians keyed by workload, `/ours` and `/candle` removed."""
    ours, candle = {}, {}
    for full_id, v in medians.items():
        parts = full_id.split("/")
        if len(parts) > 2 and parts[1] == "candle":
            candle["/".join(parts[:1] + parts[2:])] = v
        elif len(parts) > 2 and parts[1] == "ours":
            ours.setdefault("/".join(parts[:1] + parts[2:]), v)
        else:
            ours[full_id] = v
    return ours, candle


def locked_version(name, lock="Cargo.lock"):
    if not os.path.exists(lock):
        return None
    m = re.search(r'name = "' + re.escape(name) + r'"\nversion = "([^"]+)"', open(lock).read())
    return m.group(1) if m else None


def read_memory(path):
    out = {}
    if path and os.path.exists(path):
        with open(path) as f:
            for line in f:
                if line.strip():
                    rec = json.loads(line)
                    out[rec["id"]] = rec["peak_rss_bytes"]
    return out


def ms(v):
    return f"{v * 1e3:.1f}" if v else "n/a"


def ratio(a, b):
    return f"{a / b:.2f}" if a and b else "n/a"


def mib(v):
    return f"{v / 2**20:.0f}" if v else "n/a"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--criterion", required=True)
    ap.add_argument("--pytorch", required=True)
    ap.add_argument("--pytorch-default-malloc", help="pytorch_reference.py output without the malloc setting")
    ap.add_argument("--flops", help="JSON from `cargo run --example bench_flops`")
    ap.add_argument("--memory", help="target/bench_memory.jsonl written by the benches")
    ap.add_argument("--side", action="append", default=[], help="LABEL=CRITERION_DIR for the DiT-S/2 b8 side table")
    ap.add_argument("--machine", required=True)
    ap.add_argument("--title", default="CPU")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    ours, candle = split_candle(criterion_medians(args.criterion))
    with open(args.pytorch) as f:
        pt = json.load(f)
    flops = {}
    if args.flops and os.path.exists(args.flops):
        with open(args.flops) as f:
            flops = json.load(f)
    peak = flops.pop("peak_fp32_flops", None)
    memory = read_memory(args.memory)
    pt_memory = pt.get("peak_rss_bytes", {})
    meta = pt["meta"]
    lines = [
        f"<!-- compare.sh: {args.title} -->",
        f"## {args.title}: {datetime.date.today().isoformat()}",
        "",
        f"Machine: {args.machine}; measured FP32 peak "
        + (f"{peak / 1e9:.0f} GFLOP/s" if peak else "n/a")
        + " (`examples/bench_flops.rs`: FMA chains in the widest vector registers on every thread). "
        f"Ours: criterion medians, `flex` backend. PyTorch {meta['torch']} eager ({meta['threads']} threads, "
        f"{meta['dtype']}, median of repeated calls after warm-up)"
        + (
            f"; candle: candle-transformers {locked_version('candle-transformers') or '?'} `mmdit`, "
            "criterion medians in the same process as ours (`benches/mmdit_candle.rs`)"
            if candle
            else ""
        )
        + ". Every process ran with the same thread count and glibc's mmap/trim thresholds raised "
        "(`cpu::tune_allocator()` for ours, `MALLOC_MMAP_THRESHOLD_`/`MALLOC_TRIM_THRESHOLD_` for the others). "
        "GFLOP/s counts matrix products only (2 per multiply-accumulate; a training step = 3x the "
        "forward); peak RSS is the whole process's resident high-water mark during the workload "
        "(weights, optimiser state and activations included).",
        "",
        "| workload | ours (ms) | PyTorch (ms) | ours / PyTorch | candle (ms) | ours / candle | ours GFLOP/s | % of peak | ours peak RSS (MiB) | PyTorch peak RSS (MiB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key in sorted(set(ours) | set(pt["median_s"]) | set(candle)):
        o, p, c = ours.get(key), pt["median_s"].get(key), candle.get(key)
        gfs = flops[key] / o if o and key in flops else None
        share = f"{100 * gfs / peak:.0f}%" if gfs and peak else "n/a"
        lines.append(
            f"| {key} | {ms(o)} | {ms(p)} | {ratio(o, p)} | {ms(c)} | {ratio(o, c)} | "
            f"{f'{gfs / 1e9:.0f}' if gfs else 'n/a'} | {share} | {mib(memory.get(key))} | {mib(pt_memory.get(key))} |"
        )
    # Side table: DiT-S/2 batch 8 under other settings.
    pt_default = {}
    if args.pytorch_default_malloc and os.path.exists(args.pytorch_default_malloc):
        with open(args.pytorch_default_malloc) as f:
            pt_default = json.load(f)["median_s"]
    if args.side:
        lines += [
            "",
            "DiT-S/2 at batch 8 under other settings (same run; ratio against PyTorch with the same "
            "allocator setting):",
            "",
            "| setting | forward (ms) | forward / PyTorch | train step (ms) | train / PyTorch |",
            "|---|---|---|---|---|",
        ]
        fwd, train = "dit_forward/DiT-S/2/b8", "dit_train_step/DiT-S/2/b8"
        rows = [("flex, tuned malloc (the table above)", ours, pt["median_s"])]
        for side in args.side:
            label, root = side.split("=", 1)
            other = pt_default if "default malloc" in label else pt["median_s"]
            rows.append((label, criterion_medians(root), other))
        for label, med, ref in rows:
            f, t = med.get(fwd), med.get(train)
            lines.append(f"| {label} | {ms(f)} | {ratio(f, ref.get(fwd))} | {ms(t)} | {ratio(t, ref.get(train))} |")
        if pt_default:
            lines.append(
                f"| PyTorch, glibc default malloc | {ms(pt_default.get(fwd))} | | {ms(pt_default.get(train))} | |"
            )
    lines += ["", f"<!-- /compare.sh: {args.title} -->"]
    section = "\n".join(lines)

    existing = open(args.out).read() if os.path.exists(args.out) else "# Benchmarks\n\n"
    start, end = f"<!-- compare.sh: {args.title} -->", f"<!-- /compare.sh: {args.title} -->"
    if start in existing and end in existing:
        head, rest = existing.split(start, 1)
        tail = rest.split(end, 1)[1]
        text = head + section + tail
    else:
        text = existing.rstrip("\n") + "\n\n" + section + "\n"
    with open(args.out, "w") as f:
        f.write(text)
    print(section)


if __name__ == "__main__":
    main()
