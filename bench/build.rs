//! Compiles the subset of etcd's KV API that `put --target etcd` uses (pure Rust, protox).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let file = "proto/etcd/kv.proto";
    println!("cargo:rerun-if-changed={file}");
    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(protox::compile([file], ["proto"])?)?;
    Ok(())
}
