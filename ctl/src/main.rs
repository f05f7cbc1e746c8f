//! The `binlogctl` binary.
fn main() {
    eprintln!("binlogctl: not built yet");
    std::process::exit(2);
}
