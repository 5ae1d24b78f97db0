//! Writing a tensor into its parameter's memory in one pass, from the row blocks it is made of
//! (one block for a plain tensor; the q, k and v parts of a fused projection, each straight
//! from the file's pages): concatenated, or transposed from PyTorch's `[out, in]` to Burn's
//! `[in, out]`. Large tensors are split over the CPU threads ([`cpu::num_threads`]), each
//! writing its own band of the destination.
//!
//! The transpose stages tiles of 32 source rows by 64 columns in a small buffer, so each
//! source line is read once and each destination line written whole: with a plain tiled
//! loop, row strides that are multiples of 4 KiB (SD3-medium's `[9216, 1536]` weights) put
//! every row of a tile in one cache set, and the transpose ran at a third of this speed.
//!
//! [`cpu::num_threads`]: crate::cpu::num_threads

use crate::cpu::{for_each_chunk, num_threads};

/// Below this many bytes a copy runs on the calling thread alone (starting threads would
/// cost more than they save).
const PARALLEL_BYTES: usize = 1 << 20;

/// The threads to split a copy of `bytes` over.
pub(crate) fn threads_for(bytes: usize) -> usize {
    if bytes < PARALLEL_BYTES { 1 } else { num_threads() }
}

/// Writes `parts` one after another into `dst` (exactly as long as all of them), split over
/// `threads` threads.
pub(crate) fn concat_into(parts: &[&[u8]], dst: &mut [u8], threads: usize) {
    let chunk = dst.len().div_ceil(threads.max(1)).max(1);
    for_each_chunk(dst, chunk, |i, out| {
        let (start, end) = (i * chunk, i * chunk + out.len());
        let mut at = 0;
        for p in parts {
            let (lo, hi) = (at.max(start), (at + p.len()).min(end));
            if lo < hi {
                out[lo - start..hi - start].copy_from_slice(&p[lo - at..hi - at]);
            }
            at += p.len();
        }
    });
}

/// Writes the transpose of the `[rows, cols]` matrix stacked from `parts` (each
/// `(bytes, rows_i)`: a `[rows_i, cols]` block of `elem`-byte elements) into `dst` as
/// `[cols, rows]`, split over `threads` threads. Returns `false`, writing nothing, for an
/// element size other than 1, 2, 4 or 8 bytes.
pub(crate) fn transpose_into(parts: &[(&[u8], usize)], cols: usize, elem: usize, dst: &mut [u8], threads: usize) -> bool {
    match elem {
        1 => typed::<1>(parts, cols, dst, threads),
        2 => typed::<2>(parts, cols, dst, threads),
        4 => typed::<4>(parts, cols, dst, threads),
        8 => typed::<8>(parts, cols, dst, threads),
        _ => return false,
    }
    true
}

/// [`transpose_into`] on elements of `N` bytes: thread `t` writes destination rows (source
/// columns) `t * band..(t + 1) * band`, from every part in turn.
fn typed<const N: usize>(parts: &[(&[u8], usize)], cols: usize, dst: &mut [u8], threads: usize) {
    let rows: usize = parts.iter().map(|p| p.1).sum();
    if rows == 0 || cols == 0 {
        return;
    }
    let parts: Vec<(&[[u8; N]], usize)> = parts.iter().map(|&(b, r)| (b.as_chunks::<N>().0, r)).collect();
    let band = cols.div_ceil(threads.max(1));
    for_each_chunk(dst.as_chunks_mut::<N>().0, band * rows, |i, out| {
        let mut first_row = 0;
        for &(src, r) in &parts {
            tiles(src, r, cols, i * band, out, rows, first_row);
            first_row += r;
        }
    });
}

/// Transposes source columns `j0..j0 + out.len() / stride` of the `[rows, cols]` block `src`
/// into `out` (destination rows of `stride` elements), at column `first_row` of each.
fn tiles<T: Copy>(src: &[T], rows: usize, cols: usize, j0: usize, out: &mut [T], stride: usize, first_row: usize) {
    const R: usize = 32;
    const C: usize = 64;
    let width = out.len() / stride;
    let Some(&any) = src.first() else { return };
    let mut buf = [[any; C]; R];
    for i0 in (0..rows).step_by(R) {
        let ih = R.min(rows - i0);
        for c0 in (0..width).step_by(C) {
            let cw = C.min(width - c0);
            for (ii, b) in buf[..ih].iter_mut().enumerate() {
                let s = (i0 + ii) * cols + j0 + c0;
                b[..cw].copy_from_slice(&src[s..s + cw]);
            }
            for c in 0..cw {
                let d = (c0 + c) * stride + first_row + i0;
                for (slot, b) in out[d..d + ih].iter_mut().zip(&buf[..ih]) {
                    *slot = b[c];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(v: &[u32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_ne_bytes()).collect()
    }

    #[test]
    fn stacked_blocks_transpose_as_one_matrix_for_any_thread_count() {
        // q, k, v blocks of 45, 45 and 7 rows by 70 columns: not multiples of the 32 x 64 tile
        let (blocks, cols) = ([45usize, 45, 7], 70);
        let rows: usize = blocks.iter().sum();
        let whole: Vec<u32> = (0..(rows * cols) as u32).collect();
        let want: Vec<u32> = (0..cols).flat_map(|j| (0..rows).map(move |i| (i * cols + j) as u32)).collect();
        let mut at = 0;
        let owned: Vec<(Vec<u8>, usize)> = blocks
            .iter()
            .map(|&r| {
                at += r * cols;
                (bytes(&whole[at - r * cols..at]), r)
            })
            .collect();
        let parts: Vec<(&[u8], usize)> = owned.iter().map(|(b, r)| (&b[..], *r)).collect();
        for threads in [1, 2, 3, 8] {
            let mut dst = vec![0u8; rows * cols * 4];
            assert!(transpose_into(&parts, cols, 4, &mut dst, threads));
            assert_eq!(dst, bytes(&want), "{threads} threads");
        }
        // 2-byte elements (bf16): the same permutation
        let halves: Vec<u8> = whole.iter().flat_map(|&x| (x as u16).to_ne_bytes()).collect();
        let mut dst = vec![0u8; rows * cols * 2];
        assert!(transpose_into(&[(&halves, rows)], cols, 2, &mut dst, 2));
        let got: Vec<u16> = dst.chunks(2).map(|c| u16::from_ne_bytes([c[0], c[1]])).collect();
        assert!(got.iter().zip(&want).all(|(&a, &b)| a == b as u16));
        assert!(!transpose_into(&parts, cols, 3, &mut dst, 1));
    }

    #[test]
    fn concat_joins_parts_across_thread_boundaries() {
        let parts: [&[u8]; 3] = [&[1, 2, 3], &[4], &[5, 6, 7, 8, 9]];
        for threads in [1, 2, 3, 4, 20] {
            let mut dst = [0u8; 9];
            concat_into(&parts, &mut dst, threads);
            assert_eq!(dst, [1, 2, 3, 4, 5, 6, 7, 8, 9], "{threads} threads");
        }
        assert_eq!(threads_for(10), 1);
    }
}
