//! The benchmark scenarios (see docs/benchmarks.md for what each measures and why).

pub mod baseline;
pub mod chaos;
pub mod e2e;
pub mod fanout;
pub mod idle;
pub mod ingest;
pub mod memory;
pub mod replay;
pub mod storm;
