//! Settings for glibc's malloc, used when the gateway is built without the `mimalloc`
//! feature (which is on by default and needs none of this).
//!
//! Pingora reads every upstream response body in 64 KiB buffers, allocated and freed once or
//! more per request. With glibc's defaults, freeing one at the top of the heap often leaves
//! more than 128 KiB free there, which glibc hands back to the kernel at once; the next
//! request maps and zeroes those pages again. On the 100 KiB-body load benchmark that page
//! churn took the gateway from 0.57x to 0.37x nginx's throughput. Keeping up to 64 MiB of
//! freed memory in the process (and serving allocations up to 4 MiB from the heap rather than
//! from fresh mappings) removes it.

/// Freed memory glibc keeps at the top of the heap before returning it to the kernel.
#[cfg(all(target_os = "linux", target_env = "gnu", not(feature = "mimalloc")))]
const TRIM_THRESHOLD: libc::c_int = 64 << 20;

/// Allocations at least this large get their own mapping.
#[cfg(all(target_os = "linux", target_env = "gnu", not(feature = "mimalloc")))]
const MMAP_THRESHOLD: libc::c_int = 4 << 20;

/// Applies the settings; call before the first threads start.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu", not(feature = "mimalloc")))]
    // SAFETY: mallopt only changes glibc's malloc parameters; these two are documented as
    // safe to set at any time, and it is called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}
