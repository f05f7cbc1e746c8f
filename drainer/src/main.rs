//! The `drainer` binary.
fn main() {
    eprintln!("drainer: not built yet");
    std::process::exit(2);
}
