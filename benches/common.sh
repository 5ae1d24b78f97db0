# Shell helpers of benches/compare.sh and benches/compare_avx2.sh (sourced; run from the repo root).

# A field of /proc/cpuinfo (`model name`, `cpu family`, `model`).
cpu_field() { sed -n "s/^$1\s*:\s*//p" /proc/cpuinfo | head -1; }

# glibc malloc settings as `cpu::tune_allocator()` makes them, for the processes that are not ours.
TUNED=(MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824 MALLOC_ARENA_MAX=1)

# Builds benches/mkl_intel_path.c (oneMKL takes the code path of Intel CPUs with it preloaded)
# and prints the library's path.
mkl_shim() {
    mkdir -p target && cc -shared -fPIC -O2 -o target/libmkl_intel_path.so benches/mkl_intel_path.c
    echo "$PWD/target/libmkl_intel_path.so"
}

# The code path oneMKL names for a float32 product in "$PY" under the environment settings
# given as arguments (e.g. LD_PRELOAD=..., MKL_ENABLE_INSTRUCTIONS=AVX2).
mkl_path() {
    env "$@" MKL_VERBOSE=1 "$PY" -c "import torch; torch.ones(8, 8) @ torch.ones(8, 8)" 2>&1 \
        | sed -n 's/.*Intel(R) 64 architecture \(.*\), Lnx.*/\1/p' | head -1
}
