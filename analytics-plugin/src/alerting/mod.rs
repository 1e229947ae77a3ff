//! Alerting: rules evaluated over the plugin's own measures, anomaly
//! detection, acknowledgements and silences, and notifications delivered
//! through channel sub-plugins.
//!
//! `config` the rules and channels; `measure` what rules watch; `engine` the
//! evaluation loop and state machine (leader only); `store` the tables;
//! `delivery` the per-channel queues with retries and dead letters;
//! `channel` the contract every channel implements; `channels/` the kinds
//! (built-in folders and external `.so` files); `anomaly` the detector;
//! `api` the `/alerts` routes.

pub mod anomaly;
pub mod api;
pub mod channel;
pub mod channels;
pub mod config;
pub mod delivery;
pub mod engine;
pub mod measure;
pub mod store;

use std::{path::Path, sync::Arc};

use parking_lot::Mutex;

use self::{
    channel::ChannelContext,
    channels::{ChannelRegistry, KindInfo},
    config::AlertingConfig,
    engine::{AlertMetrics, ChannelHandle, Engine},
    store::AlertStore,
};
use crate::storage::Storage;

/// Alerting as the plugin holds it: the engine (when enabled) and every
/// channel kind that could be configured.
pub struct Alerting {
    pub engine: Option<Arc<Engine>>,
    pub kinds: Vec<KindInfo>,
    /// External channel libraries that were refused, one line each.
    pub refused: Vec<String>,
}

/// Loads the channel kinds, builds the configured channels (a channel that
/// cannot be built is a configuration error: the plugin refuses to start,
/// saying which channel and option), and prepares the engine.
pub fn build(
    config: &AlertingConfig,
    storage: Arc<dyn Storage>,
    registry: &prometheus::Registry,
    logger: plugin_api::HostLogger,
    data_dir: &Path,
    identity: (&str, i64),
) -> Result<Alerting, String> {
    let dir = config.channels_dir.as_ref().map(|d| data_dir.join(d));
    let (kinds, refused) = ChannelRegistry::load(dir.as_deref(), &logger);
    let env = |name: &str| std::env::var(name).ok();
    let mut channels = Vec::new();
    for c in &config.channels {
        let ctx = ChannelContext {
            name: &c.name,
            options: &c.options,
            env: &env,
            timeout: config.delivery.timeout.0,
            logger: logger.clone(),
        };
        // The registry's messages name the channel and option already.
        let channel = kinds.build(&c.kind, &ctx)?;
        channels.push(ChannelHandle { config: c.clone(), channel });
    }
    let listed = kinds.kinds();
    if !config.enabled {
        return Ok(Alerting { engine: None, kinds: listed, refused });
    }
    let metrics = AlertMetrics::new(registry).map_err(|e| format!("alerting metrics: {e}"))?;
    // Every series exists from the start (at 0), so rates and absences in
    // dashboards and rules mean what they say.
    for outcome in ["ok", "error"] {
        metrics.evaluations.with_label_values(&[outcome]);
    }
    for state in ["pending", "firing"] {
        for severity in channel::Severity::ALL {
            metrics.alerts.with_label_values(&[state, severity.as_str()]);
        }
    }
    for c in &channels {
        let name = c.config.name.as_str();
        for outcome in ["delivered", "retry", "dead"] {
            metrics.notifications.with_label_values(&[name, outcome]);
        }
        metrics.dead_letters.with_label_values(&[name]);
        metrics.queue_depth.with_label_values(&[name]);
    }
    let engine = Engine {
        config: config.clone(),
        store: AlertStore::new(storage),
        channels,
        metrics,
        logger,
        process: Default::default(),
        leader: Default::default(),
        queued: tokio::sync::Notify::new(),
        last: Mutex::new(serde_json::Value::Null),
        // The pipeline feeds this boot's own events in (plugin.rs).
        recent: Arc::new(Mutex::new(measure::Recent::fed_by(identity.0, identity.1))),
    };
    Ok(Alerting { engine: Some(Arc::new(engine)), kinds: listed, refused })
}

impl Alerting {
    /// Starts the evaluation loop and one delivery worker per channel.
    pub fn start(
        &self,
        runtime: &tokio::runtime::Handle,
        storage_ready: impl Fn() -> bool + Send + Sync + 'static,
    ) {
        if let Some(engine) = &self.engine {
            runtime.spawn(engine.clone().run(storage_ready));
            for index in 0..engine.channels.len() {
                runtime.spawn(delivery::worker(engine.clone(), index));
            }
        }
    }
}
