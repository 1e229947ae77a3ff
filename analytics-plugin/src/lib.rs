//! context-analytics: the real-time analytics plugin of the Context server.
//!
//! Data flows through the folders in order: an event enters through a hook
//! ([`plugin`]), is counted by the [`collector`], queued and consumed by the
//! [`pipeline`], written by it to [`storage`], and served over HTTP by the
//! [`api`].

pub mod alerting;
pub mod api;
pub mod collector;
pub mod config;
pub mod pipeline;
pub mod plugin;
pub mod storage;
pub mod time;

pub use plugin::AnalyticsPlugin;

/// The name operators enable in the host config: `[plugins.analytics]`.
pub const PLUGIN_NAME: &str = "analytics";

plugin_api::export_plugin!(
    name: PLUGIN_NAME,
    version: env!("CARGO_PKG_VERSION"),
    new: AnalyticsPlugin::new,
);
