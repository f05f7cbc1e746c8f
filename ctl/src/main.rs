//! The `binlogctl` binary.

// Wired into `-cmd diff` once the command dispatch lands.
#[allow(dead_code)]
mod diff;
fn main() {
    eprintln!("binlogctl: not built yet");
    std::process::exit(2);
}
