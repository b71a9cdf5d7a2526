//! The allocator's settings for a process that lives as long as a run.

/// At most two glibc malloc arenas from now on. glibc gives threads that
/// allocate at once arenas of their own (up to 8 per core), and what one
/// arena frees the others do not reuse: a run's tokio workers and blocking
/// threads held the difference. Measured on a 2,000-task run (`cargo bench
/// --bench scale`): peak RSS 49 MiB with glibc's default, 41 MiB with two
/// arenas, 39 MiB with one, the run no slower. Not for the one-shot
/// readers, whose parallel parse is faster with an arena per thread. A
/// `MALLOC_ARENA_MAX` in the environment wins.
pub(crate) fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets one of the allocator's tunables; the
        // arenas that exist stay, new ones are created up to the limit.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}
