//! Compiles `protos/` with protox (a protobuf compiler in Rust: no system `protoc`) and generates
//! the tonic servers and clients, plus the encoded descriptor set served by gRPC reflection.

use std::path::PathBuf;

const FILES: [&str; 4] = [
    "deployflow/deployflow.proto",
    "application/application.proto",
    "pod/pod.proto",
    "agent/agent.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=protos");
    let fds = protox::compile(FILES, ["protos"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("triton_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
