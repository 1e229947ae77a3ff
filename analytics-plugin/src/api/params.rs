//! Query parameters of the analytics routes, checked one by one: unknown or
//! repeated parameters and bad values are 400s that quote the value and list
//! what is allowed.

use super::error::ApiError;
use crate::time::{format_rfc3339, parse_rfc3339};

const MINUTE: i64 = 60_000_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;
/// Most buckets one response may hold.
pub const MAX_BUCKETS: i64 = 5_000;

pub const TIMERANGES: [(&str, i64, i64); 5] = [
    ("1h", HOUR, MINUTE),
    ("6h", 6 * HOUR, 5 * MINUTE),
    ("24h", DAY, 15 * MINUTE),
    ("7d", 7 * DAY, HOUR),
    ("30d", 30 * DAY, 6 * HOUR),
];

pub const AGGREGATIONS: [&str; 8] = ["avg", "min", "max", "p50", "p95", "p99", "count", "sum"];

/// A bucket-aligned time range: [from, to) in whole steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub from_us: i64,
    pub to_us: i64,
    pub step_us: i64,
}

impl Range {
    pub fn buckets(&self) -> impl Iterator<Item = i64> {
        let step = self.step_us;
        (0..(self.to_us - self.from_us) / step).map(move |i| self.from_us + i * step)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "from": format_rfc3339(self.from_us),
            "to": format_rfc3339(self.to_us),
            "step_seconds": self.step_us / 1_000_000,
        })
    }
}

pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Parses the raw query string, refusing parameters not in `allowed`
    /// and repeated ones.
    pub fn parse(query: Option<&str>, allowed: &[&str]) -> Result<Self, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
            .map_err(|e| ApiError::bad_parameter("query", format!("malformed query string: {e}")))?;
        for (i, (key, _)) in pairs.iter().enumerate() {
            if !allowed.contains(&key.as_str()) {
                return Err(ApiError::bad_parameter(
                    key,
                    format!("unknown parameter '{}' (expected {})", clip(key), allowed.join(", ")),
                ));
            }
            if pairs[..i].iter().any(|(k, _)| k == key) {
                return Err(ApiError::bad_parameter(
                    key,
                    format!("parameter '{key}' is given more than once"),
                ));
            }
        }
        Ok(Self { pairs })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// One of `choices`, or `default` when absent.
    pub fn choice<'a>(&self, key: &str, choices: &[&'a str], default: &'a str) -> Result<&'a str, ApiError> {
        match self.get(key) {
            None => Ok(default),
            Some(value) => choices.iter().find(|c| **c == value).copied().ok_or_else(|| {
                ApiError::bad_parameter(
                    key,
                    format!("unknown {key} '{}' (expected {})", clip(value), choices.join(", ")),
                )
            }),
        }
    }

    pub fn integer(&self, key: &str, min: i64, max: i64, default: i64) -> Result<i64, ApiError> {
        match self.get(key) {
            None => Ok(default),
            Some(value) => value.parse::<i64>().ok().filter(|v| (min..=max).contains(v)).ok_or_else(|| {
                ApiError::bad_parameter(
                    key,
                    format!("invalid {key} '{}' (expected an integer from {min} to {max})", clip(value)),
                )
            }),
        }
    }

    pub fn number(&self, key: &str, min: f64, max: f64, default: f64) -> Result<f64, ApiError> {
        match self.get(key) {
            None => Ok(default),
            Some(value) => value
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= min && *v <= max)
                .ok_or_else(|| {
                    ApiError::bad_parameter(
                        key,
                        format!("invalid {key} '{}' (expected a number from {min} to {max})", clip(value)),
                    )
                }),
        }
    }

    pub fn boolean(&self, key: &str) -> Result<bool, ApiError> {
        match self.get(key) {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(value) => Err(ApiError::bad_parameter(
                key,
                format!("invalid {key} '{}' (expected true or false)", clip(value)),
            )),
        }
    }

    /// `project`: a project name, or absent for all projects.
    pub fn project(&self) -> Result<Option<String>, ApiError> {
        match self.get("project") {
            None => Ok(None),
            Some(p) if p.is_empty() || p.chars().count() > 200 || p.chars().any(char::is_control) => {
                Err(ApiError::bad_parameter(
                    "project",
                    format!(
                        "invalid project '{}' (expected a project name of 1 to 200 printable characters)",
                        clip(p)
                    ),
                ))
            }
            Some(p) => Ok(Some(p.to_owned())),
        }
    }

    /// `timerange` (1h, 6h, 24h, 7d, 30d; default 24h), or `from` and `to`
    /// (RFC 3339), with an optional `step`; aligned to whole steps.
    pub fn range(&self, now_us: i64) -> Result<Range, ApiError> {
        let (from, to, default_step) = match (self.get("from"), self.get("to")) {
            (None, None) => {
                let name = self.choice("timerange", &TIMERANGES.map(|t| t.0), "24h")?;
                let (_, span, step) =
                    TIMERANGES.iter().find(|t| t.0 == name).copied().expect("a listed range");
                (now_us - span, now_us, step)
            }
            (Some(_), None) | (None, Some(_)) => {
                let missing = if self.get("from").is_none() { "from" } else { "to" };
                return Err(ApiError::bad_parameter(
                    missing,
                    format!("'{missing}' is required with 'from'/'to' (both RFC 3339 times)"),
                ));
            }
            (Some(from), Some(to)) => {
                if self.get("timerange").is_some() {
                    return Err(ApiError::bad_parameter(
                        "timerange",
                        "give either timerange or from/to, not both",
                    ));
                }
                let parse = |key: &str, value: &str| {
                    parse_rfc3339(value).ok_or_else(|| {
                        ApiError::bad_parameter(
                            key,
                            format!(
                                "invalid {key} '{}' (expected an RFC 3339 time such as 2026-11-28T08:00:00Z)",
                                clip(value)
                            ),
                        )
                    })
                };
                let (from, to) = (parse("from", from)?, parse("to", to)?);
                if to <= from {
                    return Err(ApiError::bad_parameter(
                        "to",
                        format!(
                            "'to' ({}) must be after 'from' ({})",
                            format_rfc3339(to),
                            format_rfc3339(from)
                        ),
                    ));
                }
                let span = to - from;
                let step = TIMERANGES.iter().find(|t| span <= t.1).map_or(DAY, |t| t.2);
                (from, to, step)
            }
        };
        let step = match self.get("step") {
            None => default_step,
            Some(text) => parse_step(text)?,
        };
        let range = Range {
            from_us: from.div_euclid(step) * step,
            to_us: (to + step - 1).div_euclid(step) * step,
            step_us: step,
        };
        let buckets = (range.to_us - range.from_us) / step;
        if buckets > MAX_BUCKETS {
            return Err(ApiError::bad_parameter(
                "step",
                format!(
                    "step '{}' gives {buckets} buckets over this range (at most {MAX_BUCKETS}: choose a longer step)",
                    self.get("step").unwrap_or("default")
                ),
            ));
        }
        Ok(range)
    }
}

/// `<n>m`, `<n>h` or `<n>d`: whole minutes, at least one.
pub fn parse_step(text: &str) -> Result<i64, ApiError> {
    let invalid = || {
        ApiError::bad_parameter(
            "step",
            format!(
                "invalid step '{}' (expected a whole number of minutes, hours or days such as 1m, 5m, 15m, 1h, 6h, 1d)",
                clip(text)
            ),
        )
    };
    // Split before the last character, not byte: the text may be any UTF-8.
    let cut = text.char_indices().next_back().map_or(0, |(i, _)| i);
    let (digits, unit) = text.split_at(cut);
    let n: i64 = digits.parse().ok().filter(|n| *n >= 1 && *n <= 10_000).ok_or_else(invalid)?;
    let unit = match unit {
        "m" => MINUTE,
        "h" => HOUR,
        "d" => DAY,
        _ => return Err(invalid()),
    };
    Ok(n * unit)
}

/// A value quoted in an error message, cut to a readable length.
pub fn clip(value: &str) -> String {
    let mut out: String = value.chars().filter(|c| !c.is_control()).take(80).collect();
    if value.chars().count() > 80 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(q: &str) -> Result<Range, String> {
        Params::parse(Some(q), &["timerange", "from", "to", "step"])
            .and_then(|p| p.range(10 * DAY + 7))
            .map_err(|e| e.message)
    }

    #[test]
    fn ranges_default_and_align() {
        let r = parse("timerange=1h").unwrap();
        assert_eq!((r.step_us, r.to_us - r.from_us), (MINUTE, HOUR + MINUTE));
        assert_eq!(r.to_us % MINUTE, 0);
        let r = parse("from=2026-11-01T00:00:00Z&to=2026-11-02T00:00:00Z&step=1h").unwrap();
        assert_eq!(r.buckets().count(), 24);
    }

    #[test]
    fn bad_values_are_quoted_with_what_is_allowed() {
        assert_eq!(
            parse("timerange=2w").unwrap_err(),
            "unknown timerange '2w' (expected 1h, 6h, 24h, 7d, 30d)"
        );
        assert!(parse("step=7s").unwrap_err().starts_with("invalid step '7s' (expected"));
        // Regression (found by schemathesis): a multi-byte last character panicked.
        assert!(parse("step=1%C3%A9").unwrap_err().starts_with("invalid step '1é' (expected"));
        assert!(parse("from=2026-11-01T00:00:00Z").unwrap_err().starts_with("'to' is required"));
        assert!(
            parse("from=2026-11-02T00:00:00Z&to=2026-11-01T00:00:00Z").unwrap_err().contains("must be after")
        );
        assert!(
            parse("bogus=1")
                .unwrap_err()
                .starts_with("unknown parameter 'bogus' (expected timerange, from, to, step)")
        );
        assert!(parse("timerange=1h&timerange=6h").unwrap_err().contains("more than once"));
        assert!(parse("timerange=30d&step=1m").unwrap_err().contains("buckets over this range"));
    }
}
