#!/usr/bin/env bash
# The conformance test (every fixture in tests/fixtures) on several Burn backends, one run each:
# flex, ndarray and wgpu by default, or the backends named on the command line
# (flex, ndarray, wgpu, vulkan, cuda). wgpu runs on whatever adapter the machine offers: a GPU, or
# Mesa's software Vulkan driver lavapipe (Debian: `apt-get install mesa-vulkan-drivers`) on a
# machine without one. One build with every needed feature serves all the runs (the first
# build with `wgpu` takes about 15 minutes on 2 cores).
#
#   scripts/conformance_backends.sh               # flex, ndarray, wgpu
#   scripts/conformance_backends.sh wgpu cuda     # only these
#   scripts/conformance_backends.sh vulkan        # wgpu with the SPIR-V compiler (a second build:
#                                                 # not together with `wgpu`, which it includes)
#   DT_DTYPE=bf16 scripts/conformance_backends.sh flex   # measure bf16 against the f32 references
#
# Exits non-zero when any backend fails a fixture; prints one summary line per backend.
set -uo pipefail
cd "$(dirname "$0")/.."

backends=("$@")
[ ${#backends[@]} -eq 0 ] && backends=(flex ndarray wgpu)
features=()
for b in "${backends[@]}"; do
    case "$b" in
        flex) ;;
        ndarray | wgpu | vulkan | cuda) features+=("$b") ;;
        *) echo "unknown backend '$b' (flex, ndarray, wgpu, vulkan or cuda)" >&2; exit 2 ;;
    esac
done
feature_list=$(IFS=,; echo "${features[*]:-}")
cargo_args=(test --test conformance)
[ -n "$feature_list" ] && cargo_args+=(--features "$feature_list")

cargo "${cargo_args[@]}" --no-run || exit 1
status=0
summary=()
for b in "${backends[@]}"; do
    echo "=== DT_DEVICE=$b"
    log=$(mktemp)
    device=$b
    [ "$b" = vulkan ] && device=wgpu # the wgpu device, with the SPIR-V compiler compiled in
    DT_DEVICE="$device" cargo "${cargo_args[@]}" 2>&1 | tee "$log"
    code=${PIPESTATUS[0]}
    line=$(grep '^conformance:' "$log" | tail -1)
    summary+=("$b: ${line:-no summary (exit $code)}")
    [ "$code" -ne 0 ] && status=1
    rm -f "$log"
done
echo "=== summary"
printf '%s\n' "${summary[@]}"
exit $status
