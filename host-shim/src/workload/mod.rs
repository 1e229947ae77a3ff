//! Workloads for demos, tests and benchmarks: a generated corpus of
//! source-like files ([`corpus`]) and a bounded load generator that talks to
//! a running host over loopback HTTP ([`loadgen`]).

pub mod corpus;
pub mod http;
pub mod latency;
pub mod loadgen;
pub mod random;
