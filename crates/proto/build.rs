//! Compiles the `.proto` files under `proto/` at the workspace root (fluxgate's own API and
//! the GitLab KAS APIs fluxgate serves) with protox (pure Rust, no system
//! `protoc`), then generates prost messages and tonic stubs into `OUT_DIR`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "fluxgate/v1/agent.proto",
        "gitlab/agent/event/event.proto",
        "gitlab/agent/notifications/rpc/rpc.proto",
        "gitlab/agent/flux/rpc/rpc.proto",
    ];
    let paths: Vec<PathBuf> = files.iter().map(|f| proto_root.join(f)).collect();
    for path in &paths {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    let descriptors = protox::compile(&paths, [&proto_root])?;
    tonic_prost_build::configure()
        .codec_path("crate::codec::CompactCodec")
        .client_mod_attribute(".", r#"#[cfg(feature = "client")]"#)
        .server_mod_attribute(".", r#"#[cfg(feature = "server")]"#)
        .compile_fds(descriptors)?;

    // The broker's AgentService server again, answering with `crate::outbound`'s message
    // (an event encoded once for every stream); every other type is the one generated above.
    let broker_out = PathBuf::from(std::env::var("OUT_DIR")?).join("outbound");
    std::fs::create_dir_all(&broker_out)?;
    let agent_api = protox::compile([&paths[0]], [&proto_root])?;
    tonic_prost_build::configure()
        .codec_path("crate::codec::CompactCodec")
        .build_client(false)
        .server_mod_attribute(".", r#"#[cfg(feature = "server")]"#)
        .extern_path(".fluxgate.v1", "crate::v1")
        .extern_path(
            ".fluxgate.v1.BrokerMessage",
            "crate::outbound::OutboundMessage",
        )
        .out_dir(broker_out)
        .compile_fds(agent_api)?;
    Ok(())
}
