//! Process-wide settings of the C allocator (glibc's malloc), which Rust's
//! default global allocator uses.
//!
//! By default glibc serves every allocation above 128 KiB-32 MiB (a
//! threshold that adapts) with its own `mmap` and unmaps it on free, so a
//! model that makes and drops the same large temporaries layer after layer
//! (activations, attention scores, im2col bands) page-faults them in and
//! has the kernel zero them again every time: a tenth of an embedding
//! batch's time went to that. [`keep_freed_memory`] raises the thresholds so
//! that such blocks come from the heap and are reused. The cost: up to
//! [`TRIM_THRESHOLD`] of freed memory stays with the process instead of
//! going back to the system.

/// Allocations from this size up still get their own mapping (huge tensors
/// such as a model's weights, returned to the system when freed).
pub const MMAP_THRESHOLD: usize = 256 << 20;

/// Free memory at the top of the heap kept for reuse before it is returned.
pub const TRIM_THRESHOLD: usize = 1 << 30;

/// Extra room asked of the system each time the heap grows.
const TOP_PAD: usize = 64 << 20;

/// Makes freed large blocks reusable instead of unmapped (see the module
/// documentation). Call once at start-up, before threads allocate; without
/// glibc it does nothing.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; the values are in
    // range for a 64-bit process.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as libc::c_int);
        libc::mallopt(libc::M_TOP_PAD, TOP_PAD as libc::c_int);
    }
}
