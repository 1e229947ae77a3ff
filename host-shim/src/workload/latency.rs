//! A latency histogram for the load generator: exact to the microsecond up
//! to 100 µs, then buckets 1% wide, so quantiles are within 1% at any scale
//! and memory stays constant however long a run is.

use std::time::Duration;

const EXACT_US: u64 = 100;
const GROWTH: f64 = 1.01;

#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    sum_us: f64,
    max_us: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self { counts: vec![0; 2048], total: 0, sum_us: 0.0, max_us: 0 }
    }
}

fn bucket(us: u64) -> usize {
    if us <= EXACT_US {
        us as usize
    } else {
        EXACT_US as usize + ((us as f64 / EXACT_US as f64).ln() / GROWTH.ln()) as usize
    }
}

/// A representative value of a bucket (its geometric middle).
fn value_us(bucket: usize) -> f64 {
    if bucket as u64 <= EXACT_US {
        bucket as f64
    } else {
        EXACT_US as f64 * GROWTH.powf((bucket as u64 - EXACT_US) as f64 + 0.5)
    }
}

impl Histogram {
    pub fn record(&mut self, elapsed: Duration) {
        let us = elapsed.as_micros().min(u64::MAX as u128) as u64;
        let b = bucket(us);
        if b >= self.counts.len() {
            self.counts.resize(b + 1, 0);
        }
        self.counts[b] += 1;
        self.total += 1;
        self.sum_us += us as f64;
        self.max_us = self.max_us.max(us);
    }

    pub fn merge(&mut self, other: &Histogram) {
        if other.counts.len() > self.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.sum_us += other.sum_us;
        self.max_us = self.max_us.max(other.max_us);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    /// The `q` quantile (0..=1) in milliseconds; 0 when empty.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return (value_us(i) / 1e3).min(self.max_us as f64 / 1e3);
            }
        }
        self.max_us as f64 / 1e3
    }

    pub fn mean_ms(&self) -> f64 {
        if self.total == 0 { 0.0 } else { self.sum_us / self.total as f64 / 1e3 }
    }

    pub fn max_ms(&self) -> f64 {
        self.max_us as f64 / 1e3
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_one_percent() {
        let mut h = Histogram::default();
        for us in 1..=10_000u64 {
            h.record(Duration::from_micros(us));
        }
        for (q, expected) in [(0.5, 5.0), (0.9, 9.0), (0.99, 9.9)] {
            let got = h.quantile_ms(q);
            assert!((got - expected).abs() / expected < 0.01, "q{q}: {got} vs {expected}");
        }
        assert_eq!(h.max_ms(), 10.0);
        let mut merged = Histogram::default();
        merged.record(Duration::from_secs(100));
        merged.merge(&h);
        assert_eq!(merged.count(), 10_001);
        assert_eq!(merged.max_ms(), 100_000.0);
    }
}
