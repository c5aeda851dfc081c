//! Peers: other servers run in the same session as the broker, so a scenario can print its
//! figure as a ratio to something measured on the same machine at the same time.

pub mod tonic_stock;
