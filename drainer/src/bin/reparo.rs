//! The `reparo` binary.
fn main() {
    eprintln!("reparo: not built yet");
    std::process::exit(2);
}
