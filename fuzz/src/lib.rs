//! Shared by the fuzz targets: a global allocator that aborts on any single
//! allocation above [`MAX_ALLOCATION`], so a length field that makes a
//! decoder allocate unboundedly is a crash libFuzzer records (with
//! `--sanitizer none` libFuzzer's own `-malloc_limit_mb` sees no Rust
//! allocations, and an untouched huge allocation would not show in RSS).

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;

/// Largest single allocation allowed. Fuzz inputs are a few KiB; no parser
/// has a reason to ask for more than this.
pub const MAX_ALLOCATION: usize = 16 * 1024 * 1024;

/// The system allocator with the [`MAX_ALLOCATION`] cap.
pub struct Capped;

fn over(size: usize) -> ! {
    // No allocation here: stderr is unbuffered and the message is static.
    let _ = std::io::stderr().write_all(b"durabus-fuzz: single allocation over the 16 MiB cap\n");
    let _ = size;
    std::process::abort()
}

// SAFETY: forwards to `System` unchanged; only refuses (aborts) oversized requests.
unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOCATION {
            over(layout.size());
        }
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOCATION {
            over(layout.size());
        }
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > MAX_ALLOCATION {
            over(new_size);
        }
        System.realloc(ptr, layout, new_size)
    }
}

/// Declares the capped allocator and a fuzz target that panics when `check`
/// reports a violated property.
#[macro_export]
macro_rules! target {
    ($check:path) => {
        #[global_allocator]
        static ALLOC: $crate::Capped = $crate::Capped;

        libfuzzer_sys::fuzz_target!(|data: &[u8]| {
            if let Err(e) = $check(data) {
                panic!("{e}");
            }
        });
    };
}
