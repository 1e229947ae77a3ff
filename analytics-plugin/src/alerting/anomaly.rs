//! Seasonal anomaly detection (median/MAD baselines). (Interface only until
//! the detector lands from its branch.)

#[derive(Debug, Clone, serde::Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AnomalyConfig {}

impl AnomalyConfig {
    pub fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub ts: i64,
    pub value: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Direction {
    Above,
    Below,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Basis {
    Seasonal { weeks: usize },
    Rolling { points: usize },
    Insufficient,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub anomalous: bool,
    pub direction: Option<Direction>,
    pub expected: f64,
    pub spread: f64,
    pub score: f64,
    pub basis: Basis,
    pub low_volume: bool,
}

pub fn check(_cfg: &AnomalyConfig, _history: &[Point], _current: Point, _step_secs: i64) -> Verdict {
    Verdict {
        anomalous: false,
        direction: None,
        expected: 0.0,
        spread: 0.0,
        score: 0.0,
        basis: Basis::Insufficient,
        low_volume: true,
    }
}
