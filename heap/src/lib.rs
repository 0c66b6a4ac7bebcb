//! The heap of ociguard's per-operation binaries: [talc] over anonymous mappings that are
//! never returned.
//!
//! `ociguard-hook` lives for about a millisecond and allocates a few hundred KiB at most, all of
//! it freed at exit; `ociguard` decides, rewrites a bundle and then `execve`s the runtime (or
//! exits), a few MiB at most. Neither ever frees memory back to a long life. The C library's allocator is tuned for the opposite: musl's returns memory
//! to the kernel as soon as a group of blocks is free, so a hook run made ~40 `mmap`/`munmap`
//! pairs (each a page-table change and a TLB flush); glibc's pays its arena set-up. Here the
//! first allocation maps [`CHUNK`] bytes (touched pages only are backed) and every later one
//! is served from it; a request that does not fit maps another chunk of at least its size, so
//! there is no limit but the machine's.
//!
//! Measured for the hook with `perf stat` over 300 `createRuntime` runs against a live monitor (musl build):
//! task-clock 1.9 ms instead of 2.7 ms, page faults 118 instead of 148, for the whole run
//! including the shell that starts it.
//!
//! [talc]: https://docs.rs/talc

// Mapping memory and handing it to the allocator is the one thing here that needs `unsafe`.
#![allow(unsafe_code)]

use std::alloc::Layout;
use std::num::NonZeroUsize;

use nix::sys::mman::{mmap_anonymous, MapFlags, ProtFlags};
use talc::{OomHandler, Span, Talc, Talck};

/// What the heap grows by, at least. A hook run, and a create of a usual bundle, fit in one.
pub const CHUNK: usize = 4 << 20;
/// Room for talc's tags and, in the first chunk, its bins (~1 KiB).
const OVERHEAD: usize = 64 << 10;
const PAGE: usize = 4096;

/// Grows the heap by mapping fresh anonymous memory when it runs out.
#[derive(Debug)]
pub struct MapOnOom;

impl OomHandler for MapOnOom {
    fn handle_oom(talc: &mut Talc<Self>, layout: Layout) -> Result<(), ()> {
        let size = layout
            .size()
            .checked_add(layout.align())
            .and_then(|n| n.checked_add(OVERHEAD))
            .and_then(|n| n.max(CHUNK).checked_next_multiple_of(PAGE))
            .and_then(NonZeroUsize::new)
            .ok_or(())?;
        // SAFETY: a new private anonymous mapping: nothing else refers to it.
        let base = unsafe {
            mmap_anonymous(
                None,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE,
            )
        }
        .map_err(|_| ())?;
        // SAFETY: the mapping is readable and writable, overlaps no other heap and is never
        // unmapped, so it stays valid for as long as the allocator is used.
        unsafe { talc.claim(Span::from_base_size(base.as_ptr().cast(), size.get())) }.map(|_| ())
    }
}

/// The allocator type; `#[global_allocator]` in the binary.
pub type Heap = Talck<spin::Mutex<()>, MapOnOom>;

/// An empty heap; it maps its first chunk on the first allocation.
pub const fn heap() -> Heap {
    Talc::new(MapOnOom).lock()
}

#[cfg(test)]
mod tests {
    use std::alloc::GlobalAlloc;

    use super::*;

    fn fill(p: *mut u8, len: usize, byte: u8) {
        // SAFETY: the caller allocated `len` bytes at `p`.
        unsafe { p.write_bytes(byte, len) };
    }

    fn all(p: *const u8, len: usize, byte: u8) -> bool {
        // SAFETY: the caller allocated and filled `len` bytes at `p`.
        unsafe { std::slice::from_raw_parts(p, len) }
            .iter()
            .all(|b| *b == byte)
    }

    #[test]
    fn serves_small_and_large_blocks_and_grows_past_a_chunk() {
        let heap = heap();
        let mut blocks = Vec::new();
        // Many small blocks (the first maps a chunk), then blocks larger than a chunk.
        for (i, size) in (1..2000)
            .map(|i| (i, i * 7))
            .chain([(3, CHUNK), (4, 3 * CHUNK)])
        {
            let layout = Layout::from_size_align(size, 8).unwrap();
            // SAFETY: a non-zero size.
            let p = unsafe { heap.alloc(layout) };
            assert!(!p.is_null(), "{size} bytes");
            fill(p, size, i as u8);
            blocks.push((p, layout, i as u8));
        }
        for (p, layout, byte) in &blocks {
            assert!(all(*p, layout.size(), *byte), "{} bytes", layout.size());
        }
        for (p, layout, _) in blocks {
            // SAFETY: allocated above with this layout, freed once.
            unsafe { heap.dealloc(p, layout) };
        }
    }

    #[test]
    fn keeps_alignment_and_contents_across_realloc() {
        let heap = heap();
        let layout = Layout::from_size_align(100, 4096).unwrap();
        // SAFETY: a non-zero size.
        let p = unsafe { heap.alloc(layout) };
        assert_eq!(p as usize % 4096, 0);
        fill(p, 100, 0xab);
        // SAFETY: `p` was allocated with `layout`; the new size is non-zero.
        let q = unsafe { heap.realloc(p, layout, 2 * CHUNK) };
        assert!(!q.is_null());
        assert_eq!(q as usize % 4096, 0);
        assert!(all(q, 100, 0xab));
        let grown = Layout::from_size_align(2 * CHUNK, 4096).unwrap();
        // SAFETY: `q` holds `2 * CHUNK` bytes now.
        unsafe { heap.dealloc(q, grown) };
    }

    #[test]
    fn an_impossible_request_is_refused_not_a_crash() {
        let heap = heap();
        let layout = Layout::from_size_align(isize::MAX as usize - 8192, 8).unwrap();
        // SAFETY: a non-zero size; a null answer is the expected outcome.
        let p = unsafe { heap.alloc(layout) };
        assert!(p.is_null());
    }
}
