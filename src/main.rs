use std::io::Write;

// Reading a 10,000-task state allocates a few hundred thousand small
// strings; mimalloc does that about twice as fast as glibc's malloc.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

unsafe extern "C" {
    /// mimalloc's own (linked in through the `mimalloc` crate).
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// mimalloc's defaults keep freed memory for a while and commit its arenas
/// up front: a run of 10,000 tasks would hold twice the memory glibc does.
/// Return freed memory at once and commit on demand (option numbers from
/// mimalloc.h, v3: `mi_option_arena_eager_commit`, `mi_option_purge_delay`).
fn tune_allocator() {
    const ARENA_EAGER_COMMIT: std::ffi::c_int = 4;
    const PURGE_DELAY: std::ffi::c_int = 15;
    // SAFETY: options may be set at any time; these only change when memory
    // is committed and returned.
    unsafe {
        mi_option_set(ARENA_EAGER_COMMIT, 0);
        mi_option_set(PURGE_DELAY, 0);
    }
}

fn main() {
    tune_allocator();
    let mut args = std::env::args_os();
    let _ = args.next();
    let rest: Vec<_> = args.collect();
    if rest.first().and_then(|a| a.to_str()) == Some(flocks::supervisor::SUBCOMMAND) {
        std::process::exit(flocks::supervisor::main(rest[1..].to_vec()));
    }
    let cli = flocks::help::parse();
    let code = match flocks::commands::dispatch(cli) {
        Ok(exit) => exit.code(),
        Err(e) => {
            // Red on a terminal (as --color says); quiet if stderr is gone.
            let red = anstyle::AnsiColor::Red.on_default().bold();
            let _ = writeln!(anstream::stderr(), "{red}error:{red:#} {e}");
            e.exit().code()
        }
    };
    std::process::exit(code);
}
