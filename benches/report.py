"""Combine criterion results (ours, candle) and benches/pytorch_reference.py results into the
CPU section of docs/benchmarks.md: per workload, medians, the ratios ours/PyTorch and
ours/candle, achieved GFLOP/s and its share of the machine's measured FP32 peak, and peak
resident memory; plus side tables (allocator setting, CPU backends) for DiT-S/2 at batch 8.

Criterion ids `<group>/ours/<rest>` and `<group>/candle/<rest>` (benches/mmdit_candle.rs) are
one workload `<group>/<rest>`. The section between the `<!-- compare.sh: TITLE -->` markers of
the output file is replaced; the rest of the file is kept.

    python3 benches/report.py --criterion target/criterion-round-1 --pytorch target/pytorch-round-1.json \
        [--criterion ... --pytorch ... (more rounds)] [--candle target/criterion-candle] \
        --flops target/flops.json --memory target/bench_memory.jsonl --machine "..." --out docs/benchmarks.md

Several `--criterion`/`--pytorch` pairs are alternating rounds (ours then PyTorch, repeated):
each table entry is the median over the rounds, the ratio is the median of the per-round
ratios, and the spread (min-max over the rounds) is printed beside it. `--pytorch-mkl-intel`
(one per round, optional) adds a table against PyTorch run with oneMKL's Intel code path forced
(benches/mkl_intel_path.c): AVX-512 in compare.sh (its MKL_AVX512), AVX2 in compare_avx2.sh
(`--mkl-label AVX2`).
"""
import argparse
import datetime
import glob
import json
import os
import re
import statistics


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
                    out[rec["id"]] = max(out.get(rec["id"], 0), rec["peak_rss_bytes"])
    return out


def ms(v):
    return f"{v * 1e3:.1f}" if v else "n/a"


def ratio(a, b):
    return f"{a / b:.2f}" if a and b else "n/a"


def rounds_of(per_round, key):
    """The values of `key` in every round that measured it."""
    return [r[key] for r in per_round if r.get(key)]


def median(values):
    return statistics.median(values) if values else None


def spread(values, fmt):
    """`min-max` over the rounds, empty with fewer than two."""
    return f"{fmt(min(values))}-{fmt(max(values))}" if len(values) > 1 else ""


def round_ratios(ours_rounds, pt_rounds, key):
    """Per-round ratios ours / PyTorch of the rounds where both sides measured `key`."""
    return [o[key] / p[key] for o, p in zip(ours_rounds, pt_rounds) if o.get(key) and p.get(key)]


def mib(v):
    return f"{v / 2**20:.0f}" if v else "n/a"


def pytorch_rounds(paths):
    """The pytorch_reference.py JSONs of the rounds: (the runs, their per-workload medians,
    each workload's peak RSS: the largest over the rounds)."""
    runs = []
    for path in paths:
        with open(path) as f:
            runs.append(json.load(f))
    rounds = [r["median_s"] for r in runs]
    rss = {k: max(r.get("peak_rss_bytes", {}).get(k) or 0 for r in runs) for k in set().union(*rounds)}
    return runs, rounds, rss


def mkl_intel_table(paths, ours_rounds, ours, keys, memory, label="AVX-512"):
    """Lines of the table against PyTorch with oneMKL's Intel code path (`label`: AVX-512, or AVX2
    when MKL is restricted to it), one JSON per round (paired with ours of the same round for the
    per-round ratios)."""
    _, rounds, rss = pytorch_rounds(paths)
    lines = [
        "",
        f"Against PyTorch with oneMKL's {label} path (same rounds: each also ran the PyTorch reference "
        f"with `benches/mkl_intel_path.c` preloaded, which makes oneMKL take the {label} kernels it "
        "takes on Intel CPUs; without it, on this AMD CPU, MKL's float32 GEMM takes its generic path):",
        "",
        f"| workload | ours (ms) | PyTorch, MKL {label} (ms) | spread | ours / PyTorch MKL {label} | spread | ours peak RSS (MiB) | its peak RSS (MiB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key in keys:
        p = median(rounds_of(rounds, key))
        if not p:
            continue
        ratios = round_ratios(ours_rounds, rounds, key)
        r = f"{median(ratios):.2f}" if ratios else ratio(ours.get(key), p)
        lines.append(
            f"| {key} | {ms(ours.get(key))} | {ms(p)} | {spread(rounds_of(rounds, key), ms)} | {r} | "
            f"{spread(ratios, lambda v: f'{v:.2f}')} | {mib(memory.get(key))} | {mib(rss.get(key))} |"
        )
    return lines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--criterion", action="append", required=True, help="criterion dir of one round (repeatable)")
    ap.add_argument("--pytorch", action="append", required=True, help="pytorch_reference.py JSON of one round (repeatable)")
    ap.add_argument("--pytorch-mkl-intel", "--pytorch-mkl-avx512", action="append", default=[],
                    help="pytorch_reference.py JSON of one round, MKL's Intel path forced (repeatable)")
    ap.add_argument("--candle", help="criterion dir of benches/mmdit_candle.rs")
    ap.add_argument("--pytorch-default-malloc", help="pytorch_reference.py output without the malloc setting")
    ap.add_argument("--flops", help="JSON from `cargo run --example bench_flops`")
    ap.add_argument("--memory", help="target/bench_memory.jsonl written by the benches")
    ap.add_argument("--side", action="append", default=[], help="LABEL=CRITERION_DIR for the DiT-S/2 b8 side table")
    ap.add_argument("--machine", required=True)
    ap.add_argument("--title", default="CPU")
    ap.add_argument("--mkl-label", default="AVX-512", help="oneMKL code path of the --pytorch-mkl-intel runs")
    ap.add_argument("--note", default="", help="a sentence added after the machine's description")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    ours_rounds = [split_candle(criterion_medians(root))[0] for root in args.criterion]
    candle_ours, candle = split_candle(criterion_medians(args.candle)) if args.candle else ({}, {})
    pts, pt_rounds, pt_rss = pytorch_rounds(args.pytorch)
    keys = sorted(set().union(*ours_rounds, *pt_rounds, candle))
    ours = {k: median(rounds_of(ours_rounds, k)) or candle_ours.get(k) for k in keys}
    pt = {"median_s": {k: median(rounds_of(pt_rounds, k)) for k in keys}, "meta": pts[0]["meta"]}
    pt["peak_rss_bytes"] = pt_rss
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
        + (f"{args.note} " if args.note else "")
        + f"{len(args.criterion)} alternating round(s): each ran our benches, then PyTorch's; every entry is "
        "the median over the rounds, the ratio is the median of the per-round ratios, and the spread columns "
        "give min-max over the rounds. "
        f"Ours: criterion medians, `flex` backend. PyTorch {meta['torch']} eager ({meta['threads']} threads, "
        f"{meta['dtype']}, median of repeated calls after warm-up)"
        + (
            f"; candle: candle-transformers {locked_version('candle-transformers') or '?'} `mmdit`, "
            "criterion medians in the same process as ours (`benches/mmdit_candle.rs`)"
            if candle
            else ""
        )
        + ". Every process ran with the same thread count and glibc's mmap/trim thresholds raised "
        "and one malloc arena (`cpu::tune_allocator()` for ours, `MALLOC_MMAP_THRESHOLD_`/`MALLOC_TRIM_THRESHOLD_`/"
        "`MALLOC_ARENA_MAX` for the others). "
        "GFLOP/s counts matrix products only (2 per multiply-accumulate; a training step = 3x the "
        "forward); peak RSS is the whole process's resident high-water mark during the workload "
        "(weights, optimiser state and activations included).",
        "",
        "| workload | ours (ms) | spread | PyTorch (ms) | spread | ours / PyTorch | spread | candle (ms) | ours / candle | ours GFLOP/s | % of peak | ours peak RSS (MiB) | PyTorch peak RSS (MiB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key in keys:
        o, p, c = ours.get(key), pt["median_s"].get(key), candle.get(key)
        ratios = round_ratios(ours_rounds, pt_rounds, key)
        r = f"{median(ratios):.2f}" if ratios else ratio(o, p)
        gfs = flops[key] / o if o and key in flops else None
        share = f"{100 * gfs / peak:.0f}%" if gfs and peak else "n/a"
        lines.append(
            f"| {key} | {ms(o)} | {spread(rounds_of(ours_rounds, key), ms)} | {ms(p)} | "
            f"{spread(rounds_of(pt_rounds, key), ms)} | {r} | {spread(ratios, lambda v: f'{v:.2f}')} | "
            f"{ms(c)} | {ratio(o, c)} | "
            f"{f'{gfs / 1e9:.0f}' if gfs else 'n/a'} | {share} | {mib(memory.get(key))} | {mib(pt_memory.get(key))} |"
        )
    if args.pytorch_mkl_intel:
        lines += mkl_intel_table(args.pytorch_mkl_intel, ours_rounds, ours, keys, memory, args.mkl_label)
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
        rows = [("flex, tuned malloc (the table above, medians over the rounds)", ours, pt["median_s"])]
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
