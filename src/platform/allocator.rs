//! The memory allocator's settings for the long-running service (issue 17, item 5:
//! idle RSS under 30 MB, flat across launches).
//!
//! With glibc's defaults the service's RSS grew with use and stayed grown: the
//! instance list builds buffers of several hundred KiB (rows, DTOs, the printed body);
//! glibc serves the first from mmap, then raises its mmap threshold to their size and
//! keeps later ones in its heaps, which it rarely gives back; and each thread that
//! allocates (tokio's workers and blocking pool) may get a heap (arena) of its own.
//! Measured on 1,000 rows, release build: 18.9 MB after start; after 300 lists then
//! 8 clients × 30, 37 MB and 51 MB with the defaults, 20.5 MB and 22.5 MB with the
//! threshold fixed at 128 KiB and two arenas.

/// Fixes glibc's mmap threshold (large buffers are returned to the system when freed)
/// and caps its arenas at two. Nothing to do with other C libraries.
pub fn tune_for_service() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before the runtime starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
