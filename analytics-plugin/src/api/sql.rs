//! How each backend spells the few things the API's queries need: bound
//! parameters, times (Unix µs on SQLite, timestamptz on PostgreSQL), time
//! buckets and result-path arrays. Everything else is portable SQL, so one
//! query text per dataset serves every backend and gives the same answer.

use crate::storage::Backend;

#[derive(Debug, Clone, Copy)]
pub struct Sql {
    pub backend: Backend,
}

const MINUTE: i64 = 60_000_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

/// Where a query reads: raw events, or a rollup of a given resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Raw,
    Minute,
    Hour,
    Day,
}

impl Sql {
    pub fn new(backend: Backend) -> Self {
        Self { backend }
    }

    fn pg(&self) -> bool {
        self.backend != Backend::Sqlite
    }

    /// Bound parameter number `n` (from 1).
    pub fn p(&self, n: usize) -> String {
        if self.pg() { format!("${n}") } else { format!("?{n}") }
    }

    /// Bound parameter `n`, a Unix-µs time, as the backend's time type.
    pub fn time(&self, n: usize) -> String {
        if self.pg() {
            format!("(TIMESTAMPTZ 'epoch' + ${n}::bigint * INTERVAL '1 microsecond')")
        } else {
            format!("?{n}")
        }
    }

    /// A time column as Unix µs.
    pub fn us(&self, col: &str) -> String {
        if self.pg() {
            format!("CAST(extract(epoch FROM {col}) * 1000000 AS BIGINT)")
        } else {
            col.to_owned()
        }
    }

    /// The start (Unix µs) of the `step`-long bucket holding a time column.
    pub fn bucket(&self, col: &str, step: i64) -> String {
        format!("(({} / {step}) * {step})", self.us(col))
    }

    /// A FROM item yielding one `path` row per result path of `search_events s`.
    pub fn result_paths(&self) -> &'static str {
        if self.pg() { "unnest(s.top_results) AS r(path)" } else { "json_each(s.top_results) AS r" }
    }

    /// The path column of [`Sql::result_paths`].
    pub fn result_path_col(&self) -> &'static str {
        if self.pg() { "r.path" } else { crate::storage::sqlite::RESULT_PATH }
    }

    /// The finest rollup whose buckets divide `step` (raw on TimescaleDB
    /// below an hour: it keeps no minute rollups).
    pub fn source_for(&self, step: i64) -> Source {
        if step % DAY == 0 {
            Source::Day
        } else if step % HOUR == 0 {
            Source::Hour
        } else if step % MINUTE == 0 && self.backend != Backend::Timescaledb {
            Source::Minute
        } else {
            Source::Raw
        }
    }

    /// Day of week (0 = Sunday) and hour of day of a time column, in UTC.
    pub fn dow_hour(&self, col: &str) -> (String, String) {
        let us = self.us(col);
        // 1970-01-01 was a Thursday (4).
        (format!("((({us} / {DAY}) + 4) % 7)"), format!("(({us} / {HOUR}) % 24)"))
    }
}

impl Source {
    /// Table name for a rollup family (`search_rollup` → `search_rollup_1h`),
    /// or the raw table.
    pub fn table(self, rollup: &str, raw: &str) -> String {
        match self {
            Source::Raw => raw.to_owned(),
            Source::Minute => format!("{rollup}_1m"),
            Source::Hour => format!("{rollup}_1h"),
            Source::Day => format!("{rollup}_1d"),
        }
    }

    /// A rollup's bucket width; None for raw events.
    pub fn resolution_us(self) -> Option<i64> {
        match self {
            Source::Raw => None,
            Source::Minute => Some(MINUTE),
            Source::Hour => Some(HOUR),
            Source::Day => Some(DAY),
        }
    }

    pub fn time_col(self) -> &'static str {
        if self == Source::Raw { "time" } else { "bucket" }
    }

    pub fn name(self) -> &'static str {
        match self {
            Source::Raw => "raw",
            Source::Minute => "1m",
            Source::Hour => "1h",
            Source::Day => "1d",
        }
    }
}
