/* LD_PRELOAD shim for benches/compare.sh: answers "yes" to oneMKL's "is this an Intel CPU?"
 * query, so that MKL's matrix products (PyTorch's float32 CPU GEMM) take the AVX-512 code path
 * on AMD CPUs that have AVX-512, as they do on Intel CPUs. Without it, oneMKL 2024 takes its
 * generic path on AMD (MKL_VERBOSE prints "Intel(R) Architecture processors"): on a Zen 5 it
 * reaches about 220 GFLOP/s on two threads, with the shim about 500 (AVX-512 on the same cores).
 * The results are the same kind of IEEE float32 products; only the kernel choice changes.
 *
 *   cc -shared -fPIC -O2 -o target/libmkl_intel_path.so benches/mkl_intel_path.c
 *   LD_PRELOAD=target/libmkl_intel_path.so MKL_VERBOSE=1 python3 -c "import torch; torch.ones(8, 8) @ torch.ones(8, 8)"
 */
int mkl_serv_intel_cpu_true(void) { return 1; }
int mkl_serv_intel_cpu(void) { return 1; }
