#!/usr/bin/env bash
# Times ours against PyTorch as they would run on an AVX2-only x86-64 CPU, on a machine with
# AVX-512, and writes the "CPU, AVX2-only (emulated)" section of docs/benchmarks.md.
#
# Ours: a copy of HEAD (a git worktree in $TREE) built without Burn's `x86-v4` feature, so the
# `gemm` crate has only its AVX2+FMA kernels, and run with DT_CPU_ISA=avx2, so the crate's own
# kernels take their AVX2 path. PyTorch: ATEN_CPU_CAPABILITY=avx2 (ATen's AVX2 kernels) and
# MKL_ENABLE_INSTRUCTIONS=AVX2; once as it is (on an AMD CPU oneMKL then takes its generic
# path, as on an AVX2-only AMD CPU) and once with benches/mkl_intel_path.c preloaded (oneMKL's
# AVX2 kernels, as on an AVX2-only Intel CPU). Not emulated: Burn's own element-wise kernels
# still pick their instruction set at run time (they are memory-bound), and the clock and
# caches are this machine's. No sampler steps (they are DiT-S/2 forwards).
#
# usage: PY=python3 ROUNDS=2 bash benches/compare_avx2.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
THREADS="${THREADS:-$(nproc)}"
PY="${PY:-.venv/bin/python}"
ROUNDS="${ROUNDS:-2}"
TREE="${TREE:-$ROOT/target/avx2-tree}"
export CARGO_TARGET_DIR="${AVX2_TARGET_DIR:-$ROOT/target/avx2}"
source benches/common.sh
MACHINE="${MACHINE:-$(cpu_field 'model name') (family $(cpu_field 'cpu family'), model $(cpu_field model)), $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB}"
export RAYON_NUM_THREADS="$THREADS" OMP_NUM_THREADS="$THREADS"
AVX2=(DT_CPU_ISA=avx2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2)

git worktree remove --force "$TREE" 2>/dev/null || rm -rf "$TREE"
git worktree add --detach "$TREE" HEAD
trap 'git -C "$ROOT" worktree remove --force "$TREE"' EXIT
sed -i 's/, "burn\/x86-v4"//' "$TREE/Cargo.toml"
mkdir -p "$TREE/target"  # the benches append their peak memory to target/bench_memory.jsonl there
if grep -q 'x86-v4' "$TREE/Cargo.toml"; then echo "compare_avx2.sh: could not drop x86-v4 from $TREE/Cargo.toml" >&2; exit 1; fi

SHIM=(LD_PRELOAD="$(mkl_shim)")
echo "oneMKL path as it is: $(mkl_path "${AVX2[@]}")"
echo "oneMKL path with the shim: $(mkl_path "${AVX2[@]}" "${SHIM[@]}")"
mkl_path "${AVX2[@]}" "${SHIM[@]}" | grep -q "AVX2" || { echo "compare_avx2.sh: oneMKL did not take its AVX2 path with the shim" >&2; exit 1; }

OUT="$ROOT/target/avx2-run"
rm -rf "$OUT" && mkdir -p "$OUT"
ARGS=()
for round in $(seq 1 "$ROUNDS"); do
    (cd "$TREE" && env "${AVX2[@]}" CRITERION_HOME="$OUT/criterion-round-$round" \
        cargo bench --bench dit --bench models -- --noplot)
    env "${TUNED[@]}" "${AVX2[@]}" "$PY" benches/pytorch_reference.py --threads "$THREADS" --no-samplers \
        --out "$OUT/pytorch-round-$round.json"
    env "${TUNED[@]}" "${AVX2[@]}" "${SHIM[@]}" "$PY" benches/pytorch_reference.py --threads "$THREADS" --no-samplers \
        --out "$OUT/pytorch-intel-round-$round.json"
    ARGS+=(--criterion "$OUT/criterion-round-$round" --pytorch "$OUT/pytorch-round-$round.json"
        --pytorch-mkl-intel "$OUT/pytorch-intel-round-$round.json")
done
"$PY" benches/report.py "${ARGS[@]}" --mkl-label AVX2 --memory "$TREE/target/bench_memory.jsonl" \
    --title "CPU, AVX2-only (emulated)" --machine "$MACHINE" \
    --note "Emulated AVX2-only CPU (benches/compare_avx2.sh): ours built without Burn's x86-v4 feature (gemm's AVX2 kernels) with DT_CPU_ISA=avx2; PyTorch with ATEN_CPU_CAPABILITY=avx2 and MKL_ENABLE_INSTRUCTIONS=AVX2 (oneMKL's generic path here, as on an AMD CPU; the second table: its AVX2 kernels, as on an Intel CPU)." \
    --out docs/benchmarks.md
