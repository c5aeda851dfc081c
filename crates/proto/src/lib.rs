//! Wire types for fluxgate's gRPC APIs, generated from `proto/` at build time.
//!
//! Client stubs are behind the `client` feature (the agent), server stubs behind `server`
//! (the broker). Nothing outside the edge of a service should use these types: convert
//! them to `fluxgate-core` domain types where they are received.

pub mod codec;

pub use prost;
pub use prost_types;
pub use tonic;

/// The native agent API (`fluxgate.v1`).
pub mod v1 {
    #![allow(clippy::all, missing_docs, rust_2018_idioms)]
    tonic::include_proto!("fluxgate.v1");
}
