mod cli;

// The tokenizer pipeline allocates per pre-token; glibc malloc took ~40% of data
// rendering time, mimalloc a fraction of that.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (index 15 in both its v2 and v3 option enums).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() {
    // Training frees and re-allocates the same large activation buffers every step; by
    // default mimalloc hands freed pages back to the OS after 10 ms and they return as
    // zeroed page faults (keeping them measured ~15% faster LoRA steps). A user's
    // MIMALLOC_PURGE_DELAY wins.
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: setting an allocator option; no allocation is in flight here.
        unsafe {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1);
        }
    }
    // candle runs elementwise ops on its own thread pool, whose idle workers spin 25,000
    // rounds before sleeping, while our kernels run on rayon's: on 2 cores the spinning
    // steals the core the other pool needs. A short spin measured 176-185 LoRA tokens/s
    // against 148-170 (three runs each, interleaved). Set before any candle op, while
    // this process has one thread; a user's own setting wins.
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "1000");
    }
    // Piped into `head` and the like: end quietly on a closed pipe, as Unix tools do,
    // instead of panicking on the next print.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    if let Err(e) = cli::run() {
        // One line a user can act on; no backtrace.
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
