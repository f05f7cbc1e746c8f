//! The `pump` binary.
fn main() {
    eprintln!("pump: the server is not built yet");
    std::process::exit(2);
}
