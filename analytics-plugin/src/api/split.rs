//! How the usage, top-queries and code-health datasets split a range
//! between the usage rollups and raw events: whole clean days from the
//! daily rollups, whole clean hours from the hourly ones, and the rest
//! (partial hours at the range's ends, hours written since the last
//! maintenance run, as `rollup_dirty` says, and hours it left pending
//! because they had not ended, as `usage_dirty` says) from raw events. Each part is
//! a list of [from, to) intervals; together they are the range, without
//! overlap, so sums and distinct counts over the parts equal those over
//! raw events alone.

use crate::storage::{Value, rollup::merge_ranges};

const HOUR: i64 = 3_600_000_000;
const DAY: i64 = 24 * HOUR;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Split {
    pub raw: Vec<(i64, i64)>,
    pub hours: Vec<(i64, i64)>,
    pub days: Vec<(i64, i64)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Raw,
    Hour,
    Day,
}

fn push(list: &mut Vec<(i64, i64)>, from: i64, to: i64) {
    if from >= to {
        return;
    }
    match list.last_mut() {
        Some(last) if last.1 == from => last.1 = to,
        _ => list.push((from, to)),
    }
}

impl Split {
    /// Splits [from, to). `dirty` are the [from, to] (inclusive) ranges
    /// the usage rollups do not hold yet (both tables); a day holding any
    /// of them is read by hours, and those hours from raw events; `hours`/`days` say which rollup
    /// resolutions may serve (a per-bucket series can use only those its
    /// step is a multiple of).
    pub fn new(from: i64, to: i64, dirty: &[(i64, i64)], hours: bool, days: bool) -> Split {
        let mut split = Split::default();
        let first = (from + HOUR - 1).div_euclid(HOUR) * HOUR;
        let last = to.div_euclid(HOUR) * HOUR;
        if !hours || first >= last {
            push(&mut split.raw, from, to);
            return split;
        }
        let dirty = merge_ranges(dirty.to_vec());
        let clean = |start: i64, end: i64| !dirty.iter().any(|(a, b)| *a < end && *b >= start);
        push(&mut split.raw, from, first);
        let mut hour = first;
        while hour < last {
            let day_end = hour + DAY;
            let (part, end) = if days && hour % DAY == 0 && day_end <= last && clean(hour, day_end) {
                (Part::Day, day_end)
            } else if clean(hour, hour + HOUR) {
                (Part::Hour, hour + HOUR)
            } else {
                (Part::Raw, hour + HOUR)
            };
            let list = match part {
                Part::Raw => &mut split.raw,
                Part::Hour => &mut split.hours,
                Part::Day => &mut split.days,
            };
            push(list, hour, end);
            hour = end;
        }
        push(&mut split.raw, last, to);
        split
    }

    /// The rollup parts (hours and days) as one sorted list.
    pub fn covered(&self) -> Vec<(i64, i64)> {
        let mut all: Vec<(i64, i64)> = self.hours.iter().chain(&self.days).copied().collect();
        all.sort_unstable();
        let mut out = Vec::new();
        for (a, b) in all {
            push(&mut out, a, b);
        }
        out
    }
}

/// `(col >= t AND col < t' OR ...)` over `parts`, binding the times after
/// `binds` (`time(n)` spells parameter n as the column's time type).
pub fn within(
    col: &str,
    parts: &[(i64, i64)],
    binds: &mut Vec<Value>,
    time: impl Fn(usize) -> String,
) -> String {
    if parts.is_empty() {
        return "1 = 0".to_owned();
    }
    let mut terms = Vec::new();
    for (from, to) in parts {
        binds.push(Value::Int(*from));
        let a = time(binds.len());
        binds.push(Value::Int(*to));
        let b = time(binds.len());
        terms.push(format!("({col} >= {a} AND {col} < {b})"));
    }
    format!("({})", terms.join(" OR "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_are_raw_whole_days_and_hours_from_rollups_dirty_hours_raw() {
        let d0 = 100 * DAY;
        // From 22:30 on day 0 to 02:15 on day 3.
        let (from, to) = (d0 + 22 * HOUR + 30 * 60_000_000, d0 + 3 * DAY + 2 * HOUR + 15 * 60_000_000);
        let s = Split::new(from, to, &[], true, true);
        assert_eq!(s.raw, vec![(from, d0 + 23 * HOUR), (d0 + 3 * DAY + 2 * HOUR, to)]);
        assert_eq!(s.hours, vec![(d0 + 23 * HOUR, d0 + DAY), (d0 + 3 * DAY, d0 + 3 * DAY + 2 * HOUR)]);
        assert_eq!(s.days, vec![(d0 + DAY, d0 + 3 * DAY)]);
        // A write at 05:10 on day 2 makes that hour raw and day 2 hours.
        let w = d0 + 2 * DAY + 5 * HOUR + 10 * 60_000_000;
        let s = Split::new(from, to, &[(w, w + 5)], true, true);
        assert_eq!(s.days, vec![(d0 + DAY, d0 + 2 * DAY)]);
        assert!(s.raw.contains(&(d0 + 2 * DAY + 5 * HOUR, d0 + 2 * DAY + 6 * HOUR)));
        assert_eq!(
            s.hours,
            vec![
                (d0 + 23 * HOUR, d0 + DAY),
                (d0 + 2 * DAY, d0 + 2 * DAY + 5 * HOUR),
                (d0 + 2 * DAY + 6 * HOUR, d0 + 3 * DAY + 2 * HOUR)
            ]
        );
        // Without hours, all raw; within one hour, all raw.
        assert_eq!(Split::new(from, to, &[], false, false).raw, vec![(from, to)]);
        assert_eq!(Split::new(from, from + 10, &[], true, true).raw, vec![(from, from + 10)]);
        let total: i64 = [s.raw, s.hours, s.days].iter().flatten().map(|(a, b)| b - a).sum();
        assert_eq!(total, to - from);
    }
}
