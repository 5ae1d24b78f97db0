"""Combine criterion results (ours) and benches/pytorch_reference.py results into
docs/benchmarks.md: per workload, medians, the ratio ours/PyTorch and achieved GFLOP/s.

    python3 benches/report.py --criterion target/criterion --pytorch target/pytorch.json \
        --flops target/flops.json --machine "..." --out docs/benchmarks.md
"""
import argparse
import datetime
import glob
import json
import os


def criterion_medians(root):
    out = {}
    for bench in glob.glob(os.path.join(root, "**", "new", "benchmark.json"), recursive=True):
        with open(bench) as f:
            full_id = json.load(f)["full_id"]
        with open(os.path.join(os.path.dirname(bench), "estimates.json")) as f:
            out[full_id] = json.load(f)["median"]["point_estimate"] / 1e9
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--criterion", required=True)
    ap.add_argument("--pytorch", required=True)
    ap.add_argument("--flops", help="JSON {workload: flops per run} from `cargo run --example bench_flops`")
    ap.add_argument("--machine", required=True)
    ap.add_argument("--title", default="CPU")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    ours = criterion_medians(args.criterion)
    with open(args.pytorch) as f:
        pt = json.load(f)
    flops = {}
    if args.flops and os.path.exists(args.flops):
        with open(args.flops) as f:
            flops = json.load(f)
    lines = [
        f"## {args.title}: {datetime.date.today().isoformat()}",
        "",
        f"Machine: {args.machine}. PyTorch {pt['meta']['torch']} ({pt['meta']['threads']} threads, "
        f"device {pt['meta']['device']}, {pt['meta']['dtype']}); ours: criterion medians.",
        "",
        "| workload | ours (ms) | PyTorch (ms) | ours / PyTorch | ours GFLOP/s |",
        "|---|---|---|---|---|",
    ]
    for key in sorted(set(ours) | set(pt["median_s"])):
        o, p = ours.get(key), pt["median_s"].get(key)
        ratio = f"{o / p:.2f}" if o and p else "n/a"
        gfs = f"{flops[key] / o / 1e9:.1f}" if o and key in flops else "n/a"
        fmt = lambda v: f"{v * 1e3:.1f}" if v else "n/a"
        lines.append(f"| {key} | {fmt(o)} | {fmt(p)} | {ratio} | {gfs} |")
    lines.append("")
    section = "\n".join(lines)
    header = "# Benchmarks\n\nEvery table below was written by `benches/compare.sh` from one run on the machine named.\n\n"
    existing = ""
    if os.path.exists(args.out):
        with open(args.out) as f:
            existing = f.read()
        if existing.startswith("# Benchmarks"):
            existing = existing.split("\n\n", 2)[2] if existing.count("\n\n") >= 2 else ""
    with open(args.out, "w") as f:
        f.write(header + section + "\n" + existing)
    print(section)


if __name__ == "__main__":
    main()
