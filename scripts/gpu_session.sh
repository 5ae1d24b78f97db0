#!/usr/bin/env bash
# One lent-GPU session's checks, run on the GPU machine in one call, in order of priority,
# each under its own time cap and all under one deadline (steps that no longer fit are skipped):
#   1. the conformance test on wgpu (every fixture present), SPIR-V build, f32;
#   2. the `dit` and `models` criterion benches on wgpu (SPIR-V and WGSL builds), f32, with
#      `benches/pytorch_reference.py --device cuda` in the same run;
#   3. SD3-medium step and VAE decode times (`examples/sd3_step_time.rs` against
#      `benches/pytorch_sd3_step.py`), f16 and f32;
#   4. the `dit` bench in f16 against PyTorch f16; the conformance test in f16 (errors against
#      the f32 references) and on the WGSL build; `examples/bench_linear_layout.rs`.
#
# Binaries are built here, not there (no network there, and no Rust): `scripts/gpu_pack.sh`
# builds and packs them (and says how to leave the large Inception fixture behind), as
#   cargo build --release --features vulkan --bench dit --bench models --test conformance \
#       --example sd3_step_time --example bench_linear_layout      (and again with `wgpu`)
# and carried, stripped, as `.gpu/bins.tar.xz` holding `vulkan/` and `wgpu/` with any of the
# binaries `dit`, `models`, `conformance`, `sd3_step_time`, `bench_linear_layout` (a step whose
# binary is absent is skipped; the tree that travels is limited to 64 MiB, and one such binary
# is about 100 MiB, 15 MiB compressed); diffusers' wheel and its two
# missing requirements in `.gpu/whl`; Vulkan's loader as Debian packages in `.gl` (see the
# device tool's notes). Logs go to `$OUT` (or `./gpu-out`).
#
#   scripts/gpu_session.sh [deadline-seconds, default 540]
set -uo pipefail
cd "$(dirname "$0")/.."
deadline=${1:-540}
out=${OUT:-gpu-out}
mkdir -p "$out"
start=$(date +%s)
summary="$out/summary.txt"
log() { echo "[$(($(date +%s) - start)) s] $*" | tee -a "$summary"; }

# step NAME CAP LOGFILE COMMAND...: runs COMMAND under min(CAP, time left), appending to LOGFILE.
step() {
    local name=$1 cap=$2 file=$3
    shift 3
    local left=$((deadline - ($(date +%s) - start)))
    if [ "$left" -lt 20 ]; then
        log "skipped $name (deadline)"
        return
    fi
    if [[ $1 == /* && ! -x $1 ]]; then
        log "skipped $name (no $1)"
        return
    fi
    [ "$cap" -gt "$left" ] && cap=$left
    log "start $name (cap $cap s)"
    echo "=== $name" >>"$file"
    timeout "$cap" "$@" >>"$file" 2>&1
    log "end $name: exit $?"
}

if [ -d .gl ]; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
fi
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
[ -f "$icd" ] && export VK_DRIVER_FILES=$icd
egl=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
[ -f "$egl" ] && export __EGL_VENDOR_LIBRARY_FILENAMES=$egl
{
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
    lscpu | grep -E 'Model name|^CPU\(s\)'
    python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name(0))'
} >>"$summary" 2>&1
if [ -d .gpu/whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/whl/*.whl
    export PYTHONPATH=/tmp/site
fi
bins=/tmp/gpu-bins
mkdir -p $bins && python3 -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" .gpu/bins.tar.xz $bins
export BURN_DEVICE=wgpu DT_DEVICE=wgpu
# the main build: `vulkan` (SPIR-V), or `wgpu` (WGSL) where only that was packed
main=vulkan
[ -d $bins/vulkan ] || main=wgpu
crit=(--bench --warm-up-time 1 --measurement-time 2 --noplot)

step "conformance $main f32" 100 "$out/conformance.log" $bins/$main/conformance
grep '^conformance:' "$out/conformance.log" | tee -a "$summary"
step "dit bench $main f32" 90 "$out/bench.log" $bins/$main/dit "${crit[@]}"
step "pytorch cuda f32" 100 "$out/bench.log" python3 benches/pytorch_reference.py --device cuda --repeat 20 --out "$out/torch_f32.json"
[ $main = vulkan ] && step "dit bench wgpu (WGSL) f32" 90 "$out/bench.log" $bins/wgpu/dit "${crit[@]}"
step "models bench $main f32" 100 "$out/bench.log" $bins/$main/models "${crit[@]}"
step "sd3 $main f16" 70 "$out/sd3.log" $bins/$main/sd3_step_time --dtype f16 --steps 3 --warmup 1
step "sd3 pytorch f16" 50 "$out/sd3.log" python3 benches/pytorch_sd3_step.py --device cuda --dtype float16 --steps 3
step "sd3 $main f32" 70 "$out/sd3.log" $bins/$main/sd3_step_time --steps 3 --warmup 1
step "sd3 pytorch f32" 50 "$out/sd3.log" python3 benches/pytorch_sd3_step.py --device cuda --steps 3
grep -E '^=== |denoising|VAE decode' "$out/sd3.log" | tee -a "$summary"
DT_DTYPE=f16 step "dit bench $main f16" 80 "$out/bench.log" $bins/$main/dit "${crit[@]}"
step "pytorch cuda f16 (DiT)" 40 "$out/bench.log" python3 benches/pytorch_reference.py --device cuda --dtype float16 --repeat 20 --only DiT --out "$out/torch_f16.json"
DT_DTYPE=f16 step "conformance $main f16" 70 "$out/conformance.log" $bins/$main/conformance
[ $main = vulkan ] && step "conformance wgpu (WGSL) f32" 70 "$out/conformance.log" $bins/wgpu/conformance
grep '^conformance:' "$out/conformance.log" | tee -a "$summary"
step "linear layout $main f32" 40 "$out/misc.log" $bins/$main/bench_linear_layout
step "linear layout $main f16" 40 "$out/misc.log" $bins/$main/bench_linear_layout f16
log "done"
