//! `context-host`: a working stand-in of the Context server's plugin host.
//!
//! It loads plugins per its config ([`plugins`]), indexes and searches real
//! files ([`engine`]) so hooks carry real data, and serves its routes and the
//! plugins' routes and middleware over HTTP ([`server`]). [`workload`]
//! generates corpora and load for demos, tests and benchmarks; [`bench`]
//! runs the benchmarks that need whole host processes.

pub mod bench;
pub mod config;
pub mod engine;
pub mod plugins;
pub mod run;
pub mod server;
pub mod workload;
