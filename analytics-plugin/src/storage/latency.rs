//! The fixed log-scale latency histogram every backend stores: bucket `i`
//! holds latencies in [1.01^i, 1.01^(i+1)) nanoseconds. Buckets merge by
//! addition across time, projects and instances, and a percentile read from
//! them (the geometric middle of its bucket) is within 0.5% of the exact one.

/// Growth factor between bucket bounds.
pub const BASE: f64 = 1.01;

/// The bucket of a latency (0 for latencies under 1 ns).
pub fn bucket_of_ns(latency_ns: u64) -> i16 {
    if latency_ns <= 1 {
        return 0;
    }
    let index = ((latency_ns as f64).ln() / BASE.ln()).floor();
    index.clamp(0.0, f64::from(i16::MAX)) as i16
}

/// The representative latency of a bucket, in milliseconds.
pub fn bucket_value_ms(bucket: i16) -> f64 {
    BASE.powf(f64::from(bucket) + 0.5) / 1e6
}

/// The `q`-quantile (0..=1) of a histogram given as (bucket, count) pairs in
/// any order, by the nearest-rank method; `None` when it is empty.
pub fn quantile_ms(histogram: &[(i16, u64)], q: f64) -> Option<f64> {
    let total: u64 = histogram.iter().map(|(_, c)| c).sum();
    if total == 0 {
        return None;
    }
    let mut sorted = histogram.to_vec();
    sorted.sort_unstable_by_key(|(b, _)| *b);
    let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (bucket, count) in sorted {
        seen += count;
        if seen >= rank {
            return Some(bucket_value_ms(bucket));
        }
    }
    None
}

/// The exact `q`-quantile of raw values by the same nearest-rank method.
pub fn exact_quantile(values: &mut [f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q.clamp(0.0, 1.0) * values.len() as f64).ceil() as usize).max(1);
    Some(values[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_values_are_within_half_a_percent() {
        for ns in [2u64, 999, 1_000, 12_345, 1_000_000, 7_654_321, 2_000_000_000, 99_000_000_000] {
            let value = bucket_value_ms(bucket_of_ns(ns)) * 1e6;
            let error = (value - ns as f64).abs() / ns as f64;
            assert!(error <= 0.005, "{ns} ns → {value} ({error})");
        }
    }

    #[test]
    fn quantiles_from_buckets_match_exact_ones() {
        let latencies: Vec<u64> = (1..=10_000u64).map(|i| i * i * 97 % 50_000_000 + 10_000).collect();
        let mut histogram = std::collections::BTreeMap::new();
        for &ns in &latencies {
            *histogram.entry(bucket_of_ns(ns)).or_insert(0u64) += 1;
        }
        let histogram: Vec<(i16, u64)> = histogram.into_iter().collect();
        let mut exact: Vec<f64> = latencies.iter().map(|&ns| ns as f64 / 1e6).collect();
        for q in [0.5, 0.95, 0.99] {
            let estimate = quantile_ms(&histogram, q).unwrap();
            let truth = exact_quantile(&mut exact, q).unwrap();
            assert!((estimate - truth).abs() / truth <= 0.01, "q{q}: {estimate} vs {truth}");
        }
    }
}
