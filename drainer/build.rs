//! Generates the sink protos (`slave.binlog` for Kafka, `pb_binlog` for files) from our own .proto files.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/secondary_binlog.proto", "proto/pb_binlog.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        .compile_protos(&protos, &["proto"])?;
    Ok(())
}
