//! Alerting: rules evaluated over the plugin's own measures, anomaly
//! detection, acknowledgements and silences, and notifications delivered
//! through channel sub-plugins.

pub mod anomaly;
pub mod channel;
pub mod channels;
