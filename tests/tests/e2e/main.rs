//! End-to-end tests: the real `fluxgate` and `fluxgate-agent` binaries over real TCP,
//! with a Flux Receiver stand-in.

mod dashboard;
mod delivery;
mod explain;
mod first_steps;
mod hook_security;
mod ingest;
mod kas;
mod kubernetes;
mod notify;
mod pipeline;
mod receiver_outage;
mod recovery;
mod replicas;
mod stream;
mod sync;
mod tls;
