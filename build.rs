//! Generates the gRPC code from `proto/` with protox (a pure-Rust protobuf compiler), so a
//! build needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/switchyard/v1/catalog.proto",
        "proto/switchyard/v1/cluster.proto",
        "proto/switchyard/v1/auth.proto",
        "proto/switchyard/v1/registry.proto",
        "proto/switchyard/v1/watch.proto",
        "proto/switchyard/raft/v1/raft.proto",
        "proto/flagd/sync/v1/sync.proto",
        "proto/flagd/evaluation/v1/evaluation.proto",
        "proto/flagd/evaluation/v2/evaluation.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("switchyard_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    // The public messages also serialize to JSON, for the console's API (src/api/console).
    tonic_prost_build::configure()
        .type_attribute(".switchyard.v1", "#[derive(serde::Serialize)]")
        .compile_fds(fds)?;
    Ok(())
}
