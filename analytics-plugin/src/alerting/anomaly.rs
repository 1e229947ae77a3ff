//! Seasonal anomaly detection (median/MAD baselines).
