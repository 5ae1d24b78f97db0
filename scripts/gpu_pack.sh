#!/usr/bin/env bash
# Builds and packs what `scripts/gpu_session.sh` runs on a lent GPU machine (which has no Rust
# and no network): the release binaries `dit`, `models`, `sd3_step_time` and `conformance`
# with the `vulkan` feature (or `$FEATURE`), stripped, in one xz stream with a dictionary
# large enough to share their common code (4 x 100 MiB -> about 35 MiB); diffusers' wheel
# and its two requirements missing there; Vulkan's loader as Debian packages. About 16
# minutes of building on 2 cores and 5 of packing.
#
#   scripts/gpu_pack.sh                 # writes .gpu/ and .gl/ (add both to .git/info/exclude)
#   FEATURE=wgpu scripts/gpu_pack.sh    # the WGSL build instead (lavapipe crashes on SPIR-V
#                                       # matmuls: docs/known-issues.md; if NVIDIA's does too)
#
# The tree that travels to the device machine is limited to 64 MiB: leave the 47 MiB
# Inception fixture behind for the call (`git rm -q --cached tests/fixtures/inception_fid_64px.*`
# with both paths in .git/info/exclude, then `git reset -q -- tests/fixtures/inception_fid_64px.*`
# after it), carry `.gpu` and `.gl`, and run `bash scripts/gpu_session.sh 530` with a limit
# of about 580 s.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
feature=${FEATURE:-vulkan}
cargo build --release --features "$feature" --bench dit --bench models --test conformance --example sd3_step_time
mkdir -p .gpu/whl .gl "$target/gpu-pack/$feature"
for b in dit models conformance; do
    bin=$(ls -t "$target"/release/deps/"$b"-* | grep -v '\.d$' | head -1)
    strip -o "$target/gpu-pack/$feature/$b" "$bin"
done
strip -o "$target/gpu-pack/$feature/sd3_step_time" "$target/release/examples/sd3_step_time"
(cd "$target/gpu-pack" && tar cf - "$feature"/dit "$feature"/models "$feature"/sd3_step_time "$feature"/conformance) |
    xz -T1 --lzma2=preset=6,dict=384MiB >.gpu/bins.tar.xz
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .gpu/whl \
    diffusers==0.42.1 importlib_metadata zipp
o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
mkdir -p /tmp/amd64/partial
apt-get $o update >/dev/null
(cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
ls -la .gpu .gpu/whl .gl
