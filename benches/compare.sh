#!/usr/bin/env bash
# Runs our benches, candle's MM-DiT and the PyTorch reference on this machine, in one go, and
# writes the CPU tables of docs/benchmarks.md (benches/report.py). Needs a venv with torch +
# diffusers: python3 -m venv .venv && .venv/bin/pip install torch diffusers safetensors
#
# Every process gets the same allocator setting (glibc mmap/trim thresholds: ours through
# `cpu::tune_allocator()` in the benches, PyTorch and candle through the environment) and the
# same thread count. Also measured: the crate with glibc's default allocator settings, and
# the CPU backends flex / ndarray / ndarray + system OpenBLAS (needs `libopenblas-dev`; set
# BACKENDS=0 to skip; their builds go to $BACKENDS_TARGET_DIR).
#
# The main table alternates: ROUNDS rounds (default 3), each runs our criterion benches and then
# the PyTorch reference, so both sides see the same machine state; report.py takes the median of
# the rounds (and of the per-round ratios) and prints the spread (min-max over the rounds).
#
# MKL_AVX512 (auto | 1 | 0): oneMKL, PyTorch's float32 GEMM on x86, takes a generic code path on
# AMD CPUs (about 40% of a Zen 5's AVX-512 peak) but its AVX-512 kernels on Intel's. With 1, or
# with auto on an AMD CPU with AVX-512, every round also times PyTorch with MKL's AVX-512 path
# (benches/mkl_intel_path.c preloaded), as PyTorch runs on an Intel CPU: a second PyTorch column.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${THREADS:-$(nproc)}"
PY="${PY:-.venv/bin/python}"
BACKENDS="${BACKENDS:-1}"
ROUNDS="${ROUNDS:-3}"
BACKENDS_TARGET_DIR="${BACKENDS_TARGET_DIR:-target/backends}"
source benches/common.sh
VECTOR="$(grep -q avx512f /proc/cpuinfo && echo AVX-512 || (grep -q avx2 /proc/cpuinfo && echo AVX2 || echo SSE))"
MACHINE="${MACHINE:-$(cpu_field 'model name') (family $(cpu_field 'cpu family'), model $(cpu_field model), $VECTOR), $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB}"
export RAYON_NUM_THREADS="$THREADS" OMP_NUM_THREADS="$THREADS" OPENBLAS_NUM_THREADS="$THREADS"
rm -rf target/criterion target/criterion-* target/bench_memory.jsonl target/pytorch*.json
MKL_AVX512="${MKL_AVX512:-auto}"
if [ "$MKL_AVX512" = auto ]; then
    MKL_AVX512=0
    if grep -q AuthenticAMD /proc/cpuinfo && grep -q avx512f /proc/cpuinfo; then MKL_AVX512=1; fi
fi
MKL_SHIM=()
if [ "$MKL_AVX512" = 1 ]; then
    shim="$(mkl_shim)"
    if mkl_path LD_PRELOAD="$shim" | grep -q "AVX-512"; then
        MKL_SHIM=(LD_PRELOAD="$shim")
    else
        echo "compare.sh: MKL did not take its AVX-512 path with the shim; no MKL AVX-512 column" >&2
    fi
fi

ROUND_ARGS=()
for round in $(seq 1 "$ROUNDS"); do
    CRITERION_HOME="target/criterion-round-$round" cargo bench --bench dit --bench models --bench samplers -- --noplot
    env "${TUNED[@]}" "$PY" benches/pytorch_reference.py --threads "$THREADS" --out "target/pytorch-round-$round.json"
    ROUND_ARGS+=(--criterion "target/criterion-round-$round" --pytorch "target/pytorch-round-$round.json")
    if [ ${#MKL_SHIM[@]} -gt 0 ]; then
        env "${TUNED[@]}" "${MKL_SHIM[@]}" "$PY" benches/pytorch_reference.py --threads "$THREADS" \
            --out "target/pytorch-mkl-avx512-round-$round.json"
        ROUND_ARGS+=(--pytorch-mkl-intel "target/pytorch-mkl-avx512-round-$round.json")
    fi
done
# candle-transformers' MM-DiT next to ours, one process (ids mmdit_forward/{ours,candle}/...).
env "${TUNED[@]}" CRITERION_HOME=target/criterion-candle cargo bench --features bench-candle --bench mmdit_candle -- --noplot
ROUND_ARGS+=(--candle target/criterion-candle)

# Side tables (DiT-S/2, batch 8): glibc's default allocator settings, and the CPU backends.
DT_DEFAULT_MALLOC=1 CRITERION_HOME=target/criterion-default-malloc \
    cargo bench --bench dit -- "DiT-S/2/b8" --noplot
"$PY" benches/pytorch_reference.py --threads "$THREADS" --only "DiT-S/2/b8" --out target/pytorch-default-malloc.json
SIDE=(--side "flex, glibc default malloc=target/criterion-default-malloc")
if [ "$BACKENDS" = 1 ]; then
    for features in ndarray ndarray-openblas; do
        CARGO_TARGET_DIR="$BACKENDS_TARGET_DIR" BURN_DEVICE=ndarray CRITERION_HOME="target/criterion-$features" \
            cargo bench --features "$features" --bench dit -- "DiT-S/2/b8" --noplot
        SIDE+=(--side "$features=target/criterion-$features")
    done
fi

cargo run --release --example bench_flops > target/flops.json
"$PY" benches/report.py "${ROUND_ARGS[@]}" \
    --pytorch-default-malloc target/pytorch-default-malloc.json --flops target/flops.json \
    --memory target/bench_memory.jsonl "${SIDE[@]}" --machine "$MACHINE" --out docs/benchmarks.md
