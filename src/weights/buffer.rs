//! Host memory for the tensors a load writes (transposed `Linear` weights, fused q/k/v,
//! converted dtypes), handed to Burn as the tensor's own bytes with no further copy: owned and
//! writable in place (a Burn `AllocationController`).
//!
//! A buffer of at least [`HUGE_PAGE`] bytes is an anonymous mapping whose start is aligned to
//! 2 MiB, smaller ones heap memory. With [`set_huge_pages`] (Linux, opt-in) the whole 2 MiB
//! pages of each mapping are advised as transparent huge pages (`madvise(MADV_HUGEPAGE)`,
//! what the kernel's default `madvise` mode asks for), so the first write faults in 2 MiB at a
//! time instead of 4 KiB: 512 times fewer page faults. It is off by default because the
//! kernel must then find (compact) and zero whole free 2 MiB pages: on the shared VM of
//! `docs/benchmarks.md` that tripled a load's system time (fifth loading measurement).

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::tensor::{AllocationProperty, Bytes, DType, TensorData};
use burn_std::{AccessError, AccessPolicy, AllocationController};

/// Size of a transparent huge page on x86-64 (and on aarch64 with 4 KiB base pages): the
/// smallest buffer mapped, and the alignment of its start.
const HUGE_PAGE: usize = 2 << 20;

/// Whether mappings are advised as huge pages ([`set_huge_pages`]).
static HUGE_PAGES: AtomicBool = AtomicBool::new(false);

/// Backs the large tensors a checkpoint load copies (transposed `Linear` weights, fused q/k/v,
/// converted dtypes; 2 MiB and more) with transparent huge pages from now on, or stops doing
/// so. Process-wide and off by default: huge pages cut the load's page faults 512-fold, but
/// the kernel must compact and zero whole 2 MiB pages, which can cost more than it saves (it
/// did on a shared VM: `docs/benchmarks.md`, Loading, fifth measurement); measure on your
/// machine. Returns whether the setting can take effect (Linux; elsewhere it does nothing).
pub fn set_huge_pages(on: bool) -> bool {
    HUGE_PAGES.store(on, Ordering::Relaxed);
    cfg!(target_os = "linux")
}

/// Zeroed, writable memory of a given length, owned (see the [module docs](self)).
pub(crate) struct Buffer {
    memory: Memory,
    len: usize,
}

enum Memory {
    /// Heap memory in 16-byte units (Burn's largest element alignment).
    Heap(Vec<u128>),
    /// An anonymous mapping, used from `offset` (2 MiB-aligned) on.
    Mapped { map: memmap2::MmapMut, offset: usize },
}

impl Buffer {
    /// `len` zero bytes: mapped (and advised as huge pages on Linux with [`set_huge_pages`])
    /// from [`HUGE_PAGE`] bytes up, on the heap below that or where the mapping fails.
    pub(crate) fn zeroed(len: usize) -> Self {
        if len >= HUGE_PAGE {
            // One huge page more than needed, so a 2 MiB-aligned start lies inside; the
            // slack is never touched, so it takes address space but no memory.
            if let Ok(map) = memmap2::MmapMut::map_anon(len + HUGE_PAGE) {
                let start = map.as_ptr() as usize;
                let offset = start.next_multiple_of(HUGE_PAGE) - start;
                // Only whole huge pages (a partly used last one would waste up to 2 MiB); a
                // refusal (THP not built in or disabled) leaves ordinary pages: ignored.
                #[cfg(target_os = "linux")]
                if HUGE_PAGES.load(Ordering::Relaxed) {
                    let _ = map.advise_range(memmap2::Advice::HugePage, offset, len / HUGE_PAGE * HUGE_PAGE);
                }
                return Self { memory: Memory::Mapped { map, offset }, len };
            }
        }
        Self { memory: Memory::Heap(vec![0; len.div_ceil(16)]), len }
    }

    /// Whether the buffer is a mapping (aligned to a huge page) rather than heap memory.
    #[cfg(test)]
    pub(crate) fn is_mapped(&self) -> bool {
        matches!(self.memory, Memory::Mapped { .. })
    }

    /// The bytes, to write.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        match &mut self.memory {
            Memory::Heap(v) => &mut bytes_of_mut(v)[..self.len],
            Memory::Mapped { map, offset } => &mut map[*offset..*offset + self.len],
        }
    }

    fn as_slice(&self) -> &[u8] {
        match &self.memory {
            Memory::Heap(v) => &bytes_of(v)[..self.len],
            Memory::Mapped { map, offset } => &map[*offset..*offset + self.len],
        }
    }

    /// The buffer as a tensor's data of `shape` and `dtype` (whose size must be the
    /// buffer's), owning the memory: no copy, and writable in place.
    pub(crate) fn into_data(self, shape: Vec<usize>, dtype: DType) -> TensorData {
        let len = self.len;
        // SAFETY: all `len` bytes are initialised (the buffer was zeroed, then written).
        let bytes = unsafe { Bytes::from_controller(Box::new(self), len) };
        TensorData::from_bytes(bytes, shape, dtype)
    }
}

fn bytes_of(v: &[u128]) -> &[u8] {
    // SAFETY: a `u128` is 16 initialised bytes with no padding, and `u8` has alignment 1.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast(), v.len() * 16) }
}

fn bytes_of_mut(v: &mut [u128]) -> &mut [u8] {
    // SAFETY: as `bytes_of`; every byte pattern is a valid `u128`, so any write is sound.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast(), v.len() * 16) }
}

fn uninit(bytes: &[u8]) -> &[MaybeUninit<u8>] {
    // SAFETY: `MaybeUninit<u8>` has the layout of `u8`.
    unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast(), bytes.len()) }
}

impl AllocationController for Buffer {
    fn alloc_align(&self) -> usize {
        // Both kinds start on a multiple of 16 (a mapping on a page): Burn's largest.
        align_of::<u128>()
    }

    fn property(&self) -> AllocationProperty {
        AllocationProperty::Other
    }

    fn memory(&self, _policy: AccessPolicy) -> Result<&[MaybeUninit<u8>], AccessError> {
        Ok(uninit(self.as_slice()))
    }

    unsafe fn memory_mut(&mut self, _policy: AccessPolicy) -> Result<&mut [MaybeUninit<u8>], AccessError> {
        let bytes = self.as_mut_slice();
        // SAFETY: `MaybeUninit<u8>` has the layout of `u8`; the caller writes only initialised
        // bytes (the trait's contract), so the memory stays initialised.
        Ok(unsafe { std::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast(), bytes.len()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_on_the_heap_large_mapped_both_tensor_data() {
        assert_eq!(set_huge_pages(true), cfg!(target_os = "linux"));
        for (len, mapped) in [(40, false), (HUGE_PAGE + 12, true), (3 * HUGE_PAGE, true)] {
            let mut b = Buffer::zeroed(len);
            assert_eq!(b.is_mapped(), mapped);
            assert!(b.as_mut_slice().iter().all(|&x| x == 0));
            for (i, x) in b.as_mut_slice().iter_mut().enumerate() {
                *x = (i % 251) as u8;
            }
            let data = b.into_data(vec![len / 4], DType::F32);
            assert_eq!(data.shape().to_vec(), vec![len / 4]);
            assert!(data.as_bytes().iter().enumerate().all(|(i, &x)| x == (i % 251) as u8));
        }
        set_huge_pages(false);
    }

    #[cfg(feature = "flex")]
    #[test]
    fn a_buffer_is_a_flex_tensors_memory() {
        use burn::prelude::*;
        let mut b = Buffer::zeroed(HUGE_PAGE);
        b.as_mut_slice()[..4].copy_from_slice(&2.0f32.to_ne_bytes());
        let t = Tensor::<1>::from_data(b.into_data(vec![HUGE_PAGE / 4], DType::F32), &Device::flex());
        let v = (t + 1.0).into_data().try_to_vec::<f32>().unwrap();
        assert_eq!((v[0], v[1], v.len()), (3.0, 1.0, HUGE_PAGE / 4));
    }
}
