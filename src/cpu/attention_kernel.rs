//! The `float32` attention kernels behind [`attention`](crate::cpu::attention) on flex: per
//! `(batch, head)` blocks of query rows, the two (forward) or five (backward) matrix products
//! with the `gemm` crate (flex's own matmul kernels) and the row softmax with the vectorised
//! loops of [`simd`](super::simd), split across threads.
//!
//! ```text
//! forward   S = Q K^T,  P = softmax(scale S) (rows),  O = P V,  lse_i = log sum_j exp(scale S_ij)
//! backward  P = exp(scale S - lse),  dV = P^T dO,  dP = dO V^T,  D_i = sum_d dO_id O_id,
//!           dS = scale P (dP - D),  dQ = dS K,  dK = dS^T Q
//! ```
//!
//! Only `lse` (one value per query row) is kept for the backward, which recomputes `P` block by
//! block, so no `[N, N]` matrix outlives a call. Operands are read in place through their
//! strides (the head-split views of a fused qkv projection are not copied).

use std::ops::Range;

use super::simd;

/// Score elements per block of query rows (1 MiB of `f32`, like flex's own attention).
const BLOCK_ELEMENTS: usize = 1 << 18;

/// Fewest query rows in a block (below this the matrix products get inefficient).
const MIN_BLOCK_ROWS: usize = 16;

/// Below this many multiply-adds a call runs on one thread.
const PARALLEL_MIN_MACS: usize = 1 << 20;

/// A read-only 4-D `[B, H, N, D]` operand: its buffer, start offset and strides (elements).
#[derive(Clone, Copy, Debug)]
pub struct View<'a> {
    /// The whole buffer.
    pub data: &'a [f32],
    /// Element offset of `[0, 0, 0, 0]`.
    pub offset: usize,
    /// Strides of the four axes.
    pub strides: [isize; 4],
}

impl View<'_> {
    /// Pointer to row `n` of head `(b, h)`.
    fn row(&self, b: usize, h: usize, n: usize) -> *const f32 {
        let [sb, sh, sn, _] = self.strides;
        let at = self.offset as isize + b as isize * sb + h as isize * sh + n as isize * sn;
        // SAFETY: the index lies inside the buffer for every in-range (b, h, n) of a valid layout
        // (checked in debug builds); pointer arithmetic itself stays in the allocation.
        debug_assert!(at >= 0 && (at as usize) <= self.data.len());
        unsafe { self.data.as_ptr().offset(at) }
    }
}

/// A raw pointer that may cross to the worker threads; every thread writes disjoint elements.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
// SAFETY: the kernels below hand each thread disjoint rows of the buffers behind the pointer.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

/// The attention sizes: `B*H` heads (`h` per batch), `nq` queries, `nk` keys, widths `dk`, `dv`.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    /// Batch size.
    pub b: usize,
    /// Heads.
    pub h: usize,
    /// Query tokens.
    pub nq: usize,
    /// Key (and value) tokens.
    pub nk: usize,
    /// Query and key width.
    pub dk: usize,
    /// Value width.
    pub dv: usize,
}

/// `dst (+)= lhs rhs` for row-major-by-strides `[m, k] x [k, n]` operands (`accumulate`
/// keeps what `dst` holds).
///
/// # Safety
/// Every pointer with its strides must address valid `f32`s for the given sizes, and `dst`
/// must not be written by another thread meanwhile.
#[allow(clippy::too_many_arguments)]
unsafe fn matmul(
    [m, n, k]: [usize; 3],
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: (*const f32, isize, isize),
    rhs: (*const f32, isize, isize),
) {
    let ((lhs, lhs_rs, lhs_cs), (rhs, rhs_rs, rhs_cs)) = (lhs, rhs);
    // SAFETY: forwarded to the caller.
    unsafe {
        gemm::gemm(
            m, n, k, dst, 1, dst_rs as isize, accumulate, lhs, lhs_cs, lhs_rs, rhs, rhs_cs, rhs_rs,
            1.0, 1.0, false, false, false, gemm::Parallelism::None,
        );
    }
}

/// Runs `f(units, scratch)` over `0..n_units` split into contiguous ranges, one per thread,
/// each thread with its own scratch from `scratch()`.
fn parallel<S>(n_units: usize, macs: usize, scratch: impl Fn() -> S + Sync, f: impl Fn(Range<usize>, &mut S) + Sync) {
    let threads = if macs < PARALLEL_MIN_MACS { 1 } else { crate::cpu::num_threads().min(n_units) };
    if threads < 2 {
        f(0..n_units, &mut scratch());
        return;
    }
    let per = n_units.div_ceil(threads);
    std::thread::scope(|scope| {
        let (f, scratch) = (&f, &scratch);
        for t in 1..threads {
            let units = (t * per).min(n_units)..((t + 1) * per).min(n_units);
            scope.spawn(move || f(units, &mut scratch()));
        }
        f(0..per.min(n_units), &mut scratch());
    });
}

/// Query rows per block: the score block within [`BLOCK_ELEMENTS`], and at least `want` blocks
/// overall so that every thread gets work.
fn block_rows(d: &Dims, want: usize) -> usize {
    let per_budget = (BLOCK_ELEMENTS / d.nk.max(1)).max(MIN_BLOCK_ROWS);
    let per_thread = d.nq.div_ceil(want.div_ceil(d.b * d.h).max(1)).max(MIN_BLOCK_ROWS);
    per_budget.min(per_thread).min(d.nq).max(1)
}

/// Forward: writes `o` (laid out `[B, Nq, H, Dv]`, contiguous) and `lse` (`[B, H, Nq]`).
pub fn forward(q: View, k: View, v: View, d: Dims, scale: f32, o: &mut [f32], lse: &mut [f32]) {
    assert_eq!(o.len(), d.b * d.nq * d.h * d.dv, "attention output size");
    assert_eq!(lse.len(), d.b * d.h * d.nq, "attention lse size");
    let rows = block_rows(&d, 4 * crate::cpu::num_threads());
    let blocks = d.nq.div_ceil(rows);
    let (o_ptr, lse_ptr) = (SharedMut(o.as_mut_ptr()), SharedMut(lse.as_mut_ptr()));
    let macs = d.b * d.h * d.nq * d.nk * (d.dk + d.dv);
    let scratch = || (vec![0.0f32; rows * d.nk], vec![0.0f32; rows]);
    parallel(d.b * d.h * blocks, macs, scratch, |units, (scores, inv_sum)| {
        let (o_ptr, lse_ptr) = (o_ptr, lse_ptr);
        for unit in units {
            let (bh, block) = (unit / blocks, unit % blocks);
            let (b, h) = (bh / d.h, bh % d.h);
            let r0 = block * rows;
            let m = rows.min(d.nq - r0);
            let s = &mut scores[..m * d.nk];
            // SAFETY: operands addressed through their own layouts; this unit alone writes rows
            // r0..r0+m of head (b, h) in `o` and `lse`.
            unsafe {
                matmul(
                    [m, d.nk, d.dk],
                    s.as_mut_ptr(),
                    d.nk,
                    false,
                    (q.row(b, h, r0), q.strides[2], q.strides[3]),
                    (k.row(b, h, 0), k.strides[3], k.strides[2]),
                );
                let lse_rows = std::slice::from_raw_parts_mut(lse_ptr.0.add(bh * d.nq + r0), m);
                simd::softmax_rows(s, d.nk, scale, lse_rows, &mut inv_sum[..m]);
                let o_row = o_ptr.0.add(((b * d.nq + r0) * d.h + h) * d.dv);
                matmul(
                    [m, d.dv, d.nk],
                    o_row,
                    d.h * d.dv,
                    false,
                    (s.as_ptr(), d.nk as isize, 1),
                    (v.row(b, h, 0), v.strides[2], v.strides[3]),
                );
                for (i, &f) in inv_sum[..m].iter().enumerate() {
                    for x in std::slice::from_raw_parts_mut(o_row.add(i * d.h * d.dv), d.dv) {
                        *x *= f;
                    }
                }
            }
        }
    });
}

/// The saved forward results and the upstream gradient of the backward.
#[derive(Clone, Copy, Debug)]
pub struct Saved<'a> {
    /// The forward output `[B, H, Nq, Dv]` (any strides).
    pub o: View<'a>,
    /// Row log-sum-exps `[B, H, Nq]`, contiguous.
    pub lse: &'a [f32],
    /// Upstream gradient `[B, H, Nq, Dv]` (any strides).
    pub d_o: View<'a>,
}

/// Backward: writes `dq`, `dk`, `dv`, each laid out `[B, H, N, D]` (contiguous).
#[allow(clippy::too_many_arguments)]
pub fn backward(q: View, k: View, v: View, saved: Saved, d: Dims, scale: f32, dq: &mut [f32], dk: &mut [f32], dv: &mut [f32]) {
    assert_eq!(dq.len(), d.b * d.h * d.nq * d.dk, "attention dq size");
    assert_eq!(dk.len(), d.b * d.h * d.nk * d.dk, "attention dk size");
    assert_eq!(dv.len(), d.b * d.h * d.nk * d.dv, "attention dv size");
    let Saved { o, lse, d_o } = saved;
    // one unit per head: dK and dV sum over all query blocks of the head
    let rows = block_rows(&d, 1);
    let (dq_ptr, dk_ptr, dv_ptr) = (SharedMut(dq.as_mut_ptr()), SharedMut(dk.as_mut_ptr()), SharedMut(dv.as_mut_ptr()));
    let macs = d.b * d.h * d.nq * d.nk * (3 * d.dk + 2 * d.dv);
    let scratch = || (vec![0.0f32; rows * d.nk], vec![0.0f32; rows * d.nk], vec![0.0f32; rows]);
    parallel(d.b * d.h, macs, scratch, |heads, (p, dp, rowdot)| {
        let (dq_ptr, dk_ptr, dv_ptr) = (dq_ptr, dk_ptr, dv_ptr);
        for bh in heads {
            let (b, h) = (bh / d.h, bh % d.h);
            for r0 in (0..d.nq).step_by(rows) {
                let m = rows.min(d.nq - r0);
                let (p, dp) = (&mut p[..m * d.nk], &mut dp[..m * d.nk]);
                let first = r0 == 0;
                let q_rows = (q.row(b, h, r0), q.strides[2], q.strides[3]);
                let do_rows = (d_o.row(b, h, r0), d_o.strides[2], d_o.strides[3]);
                // SAFETY: operands addressed through their own layouts; this unit alone writes
                // head (b, h) of `dq`, `dk` and `dv`.
                unsafe {
                    matmul([m, d.nk, d.dk], p.as_mut_ptr(), d.nk, false, q_rows, (k.row(b, h, 0), k.strides[3], k.strides[2]));
                    simd::softmax_from_lse(p, d.nk, scale, &lse[bh * d.nq + r0..][..m]);
                    let dv_head = dv_ptr.0.add(bh * d.nk * d.dv);
                    matmul([d.nk, d.dv, m], dv_head, d.dv, !first, (p.as_ptr(), 1, d.nk as isize), do_rows);
                    matmul([m, d.nk, d.dv], dp.as_mut_ptr(), d.nk, false, do_rows, (v.row(b, h, 0), v.strides[3], v.strides[2]));
                    for (i, dot) in rowdot[..m].iter_mut().enumerate() {
                        *dot = row_dot(o.row(b, h, r0 + i), o.strides[3], d_o.row(b, h, r0 + i), d_o.strides[3], d.dv);
                    }
                    simd::softmax_grad_rows(dp, p, d.nk, &rowdot[..m], scale);
                    let dq_rows = dq_ptr.0.add((bh * d.nq + r0) * d.dk);
                    matmul([m, d.dk, d.nk], dq_rows, d.dk, false, (dp.as_ptr(), d.nk as isize, 1), (k.row(b, h, 0), k.strides[2], k.strides[3]));
                    let dk_head = dk_ptr.0.add(bh * d.nk * d.dk);
                    matmul([d.nk, d.dk, m], dk_head, d.dk, !first, (dp.as_ptr(), 1, d.nk as isize), q_rows);
                }
            }
        }
    });
}

/// `sum_i x[i] y[i]` over `n` elements at strides `sx`, `sy`.
///
/// # Safety
/// Both pointers with their strides must address `n` valid `f32`s.
unsafe fn row_dot(x: *const f32, sx: isize, y: *const f32, sy: isize, n: usize) -> f32 {
    // SAFETY: forwarded to the caller.
    unsafe {
        if sx == 1 && sy == 1 {
            let (x, y) = (std::slice::from_raw_parts(x, n), std::slice::from_raw_parts(y, n));
            return x.iter().zip(y).map(|(a, b)| a * b).sum();
        }
        (0..n as isize).map(|i| *x.offset(i * sx) * *y.offset(i * sy)).sum()
    }
}
