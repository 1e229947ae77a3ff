//! Distinct users over the last 5 minutes, hour and day, in bounded memory.
//!
//! Each minute of the last hour and each hour of the last day has a
//! HyperLogLog sketch (1,024 one-byte registers, about 3% standard error,
//! exact for the first few dozen users thanks to linear counting); a window
//! is the union of its slots. Memory is about 85 KiB whatever the number of
//! users.

use std::hash::{BuildHasher, Hasher};

const PRECISION: u32 = 10;
const REGISTERS: usize = 1 << PRECISION;
const MINUTE_SLOTS: usize = 60;
const HOUR_SLOTS: usize = 25;

#[derive(Clone)]
struct Sketch {
    registers: Box<[u8; REGISTERS]>,
}

impl Sketch {
    fn new() -> Self {
        Self { registers: Box::new([0; REGISTERS]) }
    }

    fn clear(&mut self) {
        self.registers.fill(0);
    }

    fn insert(&mut self, hash: u64) {
        let index = (hash >> (64 - PRECISION)) as usize;
        // The remaining bits, with a sentinel so rho is at most 64 - p + 1.
        let rest = (hash << PRECISION) | (1 << (PRECISION - 1));
        let rho = rest.leading_zeros() as u8 + 1;
        let register = &mut self.registers[index];
        *register = (*register).max(rho);
    }

    fn merge_into(&self, target: &mut [u8; REGISTERS]) {
        for (t, s) in target.iter_mut().zip(self.registers.iter()) {
            *t = (*t).max(*s);
        }
    }
}

fn estimate(registers: &[u8; REGISTERS]) -> u64 {
    let m = REGISTERS as f64;
    let zeros = registers.iter().filter(|&&r| r == 0).count();
    let sum: f64 = registers.iter().map(|&r| 2f64.powi(-i32::from(r))).sum();
    let alpha = 0.7213 / (1.0 + 1.079 / m);
    let raw = alpha * m * m / sum;
    let value = if raw <= 2.5 * m && zeros > 0 { m * (m / zeros as f64).ln() } else { raw };
    value.round() as u64
}

struct Slot {
    /// The minute (or hour) since the Unix epoch this slot holds.
    period: i64,
    sketch: Sketch,
}

pub struct ActiveUsers {
    minutes: Vec<Slot>,
    hours: Vec<Slot>,
    hasher: std::hash::BuildHasherDefault<std::collections::hash_map::DefaultHasher>,
}

impl Default for ActiveUsers {
    fn default() -> Self {
        let slots = |n| (0..n).map(|_| Slot { period: i64::MIN, sketch: Sketch::new() }).collect();
        Self { minutes: slots(MINUTE_SLOTS), hours: slots(HOUR_SLOTS), hasher: Default::default() }
    }
}

/// The active-user counts exported as `context_active_users{window}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ActiveCounts {
    pub last_5m: u64,
    pub last_1h: u64,
    pub last_24h: u64,
}

impl ActiveUsers {
    pub fn record(&mut self, user: &str, timestamp_us: i64) {
        let mut hasher = self.hasher.build_hasher();
        hasher.write(user.as_bytes());
        let hash = hasher.finish();
        let minute = timestamp_us.div_euclid(60_000_000);
        let hour = minute.div_euclid(60);
        for (slots, period) in [(&mut self.minutes, minute), (&mut self.hours, hour)] {
            let len = slots.len() as i64;
            let slot = &mut slots[period.rem_euclid(len) as usize];
            if slot.period < period {
                slot.period = period;
                slot.sketch.clear();
            }
            if slot.period == period {
                slot.sketch.insert(hash);
            }
        }
    }

    pub fn counts(&self, now_us: i64) -> ActiveCounts {
        let minute = now_us.div_euclid(60_000_000);
        let hour = minute.div_euclid(60);
        ActiveCounts {
            last_5m: union(&self.minutes, minute - 4, minute),
            last_1h: union(&self.minutes, minute - 59, minute),
            last_24h: union(&self.hours, hour - 23, hour),
        }
    }
}

fn union(slots: &[Slot], from: i64, to: i64) -> u64 {
    let mut registers = [0u8; REGISTERS];
    for slot in slots.iter().filter(|s| (from..=to).contains(&s.period)) {
        slot.sketch.merge_into(&mut registers);
    }
    estimate(&registers)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000_000;

    #[test]
    fn small_counts_are_exact_and_windows_expire() {
        let mut users = ActiveUsers::default();
        let t0 = 1_700_000_000 * 1_000_000;
        for user in ["alice", "bob", "carol", "alice"] {
            users.record(user, t0);
        }
        users.record("dave", t0 + 10 * MIN);
        assert_eq!(users.counts(t0 + 10 * MIN), ActiveCounts { last_5m: 1, last_1h: 4, last_24h: 4 });
        assert_eq!(users.counts(t0 + 3 * 60 * MIN).last_1h, 0);
        assert_eq!(users.counts(t0 + 3 * 60 * MIN).last_24h, 4);
        assert_eq!(users.counts(t0 + 30 * 60 * MIN).last_24h, 0);
    }

    #[test]
    fn large_counts_are_within_a_few_percent() {
        let mut users = ActiveUsers::default();
        let t0 = 1_700_000_000 * 1_000_000;
        for i in 0..50_000 {
            users.record(&format!("user-{i}"), t0 + (i % 50) * MIN / 50);
        }
        let counted = users.counts(t0 + MIN).last_1h as f64;
        assert!((counted - 50_000.0).abs() / 50_000.0 < 0.06, "counted {counted}");
    }
}
