//! Generates `binlog` (Binlog, Pump, Cistern) from our own .proto files.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/binlog.proto", "proto/pump.proto", "proto/cistern.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&protos, &["proto"])?;
    Ok(())
}
