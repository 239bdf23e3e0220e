//! The process's allocator: mimalloc. glibc's malloc was 11% of the CPU
//! samples of forwarding (hyper's header maps, the request's future, the
//! origin connection's buffers: blocks past its per-thread cache go to its
//! shared bins); with mimalloc a forwarded request takes 12.8% fewer
//! instructions. docs/BENCHMARKS.md has the figures, for requests and for
//! idle connections.
//!
//! Part of the `usher` binary only (declared in `main.rs`): the library
//! and the test binaries keep the system allocator.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

/// The alignment of every block `mi_malloc` returns: its blocks are
/// multiples of 8 bytes from 8-aligned page starts.
const PLAIN_ALIGN: usize = 8;

/// mimalloc, asked for alignment only when a layout needs more than its
/// blocks have. The `mimalloc` crate asks `mi_malloc_aligned` for every
/// block; in mimalloc 3 a block over 1 KiB whose size is not a power of
/// two then takes its over-allocating path (12 times a forwarded
/// request). Asking `mi_malloc` instead took 3% off the instructions of
/// a forwarded request and of a holding page.
struct MiMalloc;

type Plain = unsafe extern "C" fn(usize) -> *mut c_void;
type Aligned = unsafe extern "C" fn(usize, usize) -> *mut c_void;

/// A new block for `layout`: from `plain` when mimalloc's own alignment
/// is enough, else from `aligned`.
///
/// # Safety
/// As [`GlobalAlloc::alloc`]: `layout` has a non-zero size.
#[inline]
unsafe fn fresh(layout: Layout, plain: Plain, aligned: Aligned) -> *mut u8 {
    if layout.align() <= PLAIN_ALIGN {
        plain(layout.size()).cast()
    } else {
        aligned(layout.size(), layout.align()).cast()
    }
}

// SAFETY: every block comes from mimalloc with at least the layout's
// size and alignment (`PLAIN_ALIGN` above, or asked for), and only
// blocks it returned go back to it, through `mi_free` or its realloc of
// the same kind.
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        fresh(layout, mi::mi_malloc, mi::mi_malloc_aligned)
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        fresh(layout, mi::mi_zalloc, mi::mi_zalloc_aligned)
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi::mi_free(ptr.cast());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= PLAIN_ALIGN {
            mi::mi_realloc(ptr.cast(), new_size).cast()
        } else {
            mi::mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
        }
    }
}

/// `mi_option_purge_delay` in mimalloc 3's `mi_option_e` (the crate
/// names only the options older versions had; a test checks this one
/// by its default).
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Memory freed by a connection going idle goes back to the system 50 ms
/// later, not mimalloc's 1 s: a crowd that connects and then waits
/// makes no calls that would purge it. With 1 s, 10,000 idle
/// connections held 4.9-6.1 KB each; with 50 ms, 3.6-5.0 KB (glibc's
/// malloc: 4.3-4.6 KB). Measured again with the alarm (2026-12-06):
/// 3,160 B each with 50 ms, 3,600 B with 1 s; under forwarding at c=256,
/// 50 ms costs 4,500 page faults a second (1 s: 200) and about 1% of
/// usher's CPU, within the run's noise in requests/s. The crowd's memory
/// wins. `MIMALLOC_PURGE_DELAY` in the environment (mimalloc's own
/// setting) is left as the operator set it.
pub fn tune() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        // Set by whoever started usher: mimalloc read it at its start.
        return;
    }
    // SAFETY: sets a plain integer option, before any other thread runs.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, 50) };
}

#[cfg(test)]
mod tests {
    use std::alloc::{GlobalAlloc, Layout};

    #[test]
    fn every_block_has_its_layouts_alignment_and_keeps_its_bytes() {
        let a = super::MiMalloc;
        for align in [1, 2, 4, 8, 16, 32, 64, 128, 4096] {
            for size in [
                1, 3, 7, 8, 9, 24, 40, 100, 1000, 1032, 1500, 3200, 9000, 70_000,
            ] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: a non-zero layout; the block is written within
                // its size and freed once, by the allocator that made it.
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    p.write_bytes(0xA5, size);
                    let grown = a.realloc(p, layout, size * 3);
                    assert_eq!(grown as usize % align, 0, "realloc {size} align {align}");
                    assert!((0..size).all(|i| *grown.add(i) == 0xA5));
                    a.dealloc(grown, Layout::from_size_align(size * 3, align).unwrap());
                    let z = a.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0, "zeroed {size} align {align}");
                    assert!((0..size).all(|i| *z.add(i) == 0));
                    a.dealloc(z, layout);
                }
            }
        }
    }

    #[test]
    fn the_purge_delay_option_is_the_one_named() {
        // mimalloc 3's default purge delay is 1000 ms; another option
        // at this index would have another default.
        // SAFETY: reads an integer option.
        let delay = unsafe { libmimalloc_sys::mi_option_get(super::PURGE_DELAY) };
        assert_eq!(delay, 1000);
        super::tune();
        assert_eq!(
            unsafe { libmimalloc_sys::mi_option_get(super::PURGE_DELAY) },
            50
        );
    }
}
