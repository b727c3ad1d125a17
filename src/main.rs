mod cli;

fn main() {
    if let Err(e) = cli::run() {
        // One line a user can act on; no backtrace.
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
