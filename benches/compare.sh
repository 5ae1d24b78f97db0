#!/usr/bin/env bash
# Runs our benches and the PyTorch reference on this machine, in one go, and writes
# docs/benchmarks.md. Needs a venv with torch + diffusers: python3 -m venv .venv &&
# .venv/bin/pip install torch diffusers safetensors
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${THREADS:-$(nproc)}"
PY="${PY:-.venv/bin/python}"
MACHINE="${MACHINE:-$(lscpu | sed -n 's/^Model name:\s*//p' | head -1), $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB}"
export RAYON_NUM_THREADS="$THREADS"
cargo bench --bench dit -- --noplot
"$PY" benches/pytorch_reference.py --threads "$THREADS" --out target/pytorch.json
cargo run --release --example bench_flops > target/flops.json
python3 benches/report.py --criterion target/criterion --pytorch target/pytorch.json \
    --flops target/flops.json --machine "$MACHINE" --out docs/benchmarks.md
