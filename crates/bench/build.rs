//! Compiles `proto/stock_peer.proto` (the stock tonic peer of the idle benchmark) with
//! protox (no system `protoc`) and tonic's default prost codec.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("proto");
    let file = proto_root.join("stock_peer.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    let descriptors = protox::compile([&file], [&proto_root])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
