//! Alerting's tables (`sql/*/0004_alerting.sql`): rules changed through the
//! API, the state of active alerts, history, silences and the delivery
//! queue. Every statement is parameterized; times are Unix µs in Rust and
//! the backend's own time type in the database ([`Sql`]).

use std::{collections::BTreeMap, sync::Arc};

use serde::{Deserialize, Serialize};

use super::{
    channel::{Notification, Severity},
    config::RuleConfig,
};
use crate::{
    api::sql::Sql,
    storage::{Storage, StorageError, Value},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Pending,
    Firing,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ack {
    pub by: String,
    pub at_us: i64,
    pub comment: String,
}

/// A pending or firing alert.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertState {
    pub fingerprint: String,
    pub rule: String,
    pub severity: Severity,
    pub labels: BTreeMap<String, String>,
    pub phase: Phase,
    /// Pending since (while pending), or start of the episode once firing.
    pub active_since_us: i64,
    pub fired_at_us: Option<i64>,
    /// Last evaluation at which the condition held.
    pub last_true_at_us: i64,
    pub value: Option<f64>,
    /// Last notification sent (None: firing not notified yet, e.g. silenced).
    pub last_notified_at_us: Option<i64>,
    pub repeats: u32,
    pub ack: Option<Ack>,
}

/// One label matcher of a silence, as Alertmanager writes them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Matcher {
    pub name: String,
    pub value: String,
    /// `=`, `!=`, `=~` or `!~` (regular expressions match the whole value).
    #[serde(default = "eq")]
    pub op: String,
}

fn eq() -> String {
    "=".to_owned()
}

impl Matcher {
    pub fn validate(&self) -> Result<(), String> {
        match self.op.as_str() {
            "=" | "!=" => Ok(()),
            "=~" | "!~" => regex::Regex::new(&format!("^(?:{})$", self.value)).map(|_| ()).map_err(|e| {
                format!(
                    "matcher '{}': value '{}' is not a valid regular expression: {e}",
                    self.name, self.value
                )
            }),
            other => Err(format!("matcher '{}': op '{other}' is not one of =, !=, =~, !~", self.name)),
        }
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&self.name).map(String::as_str).unwrap_or("");
        let re = || regex::Regex::new(&format!("^(?:{})$", self.value)).is_ok_and(|r| r.is_match(v));
        match self.op.as_str() {
            "=" => v == self.value,
            "!=" => v != self.value,
            "=~" => re(),
            "!~" => !re(),
            _ => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Silence {
    pub id: String,
    pub matchers: Vec<Matcher>,
    pub starts_at_us: i64,
    pub ends_at_us: i64,
    pub created_by: String,
    pub comment: String,
    pub created_at_us: i64,
}

impl Silence {
    pub fn active(&self, now_us: i64) -> bool {
        self.starts_at_us <= now_us && now_us < self.ends_at_us
    }
    pub fn silences(&self, labels: &BTreeMap<String, String>, now_us: i64) -> bool {
        self.active(now_us) && self.matchers.iter().all(|m| m.matches(labels))
    }
}

/// One history row to write.
#[derive(Debug, Clone)]
pub struct HistoryEvent<'a> {
    pub time_us: i64,
    pub alert: &'a AlertState,
    pub event: &'static str,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub notification_id: String,
    pub channel: String,
    pub status: String,
    pub attempts: i64,
    pub created_at_us: i64,
    pub next_attempt_at_us: i64,
    pub finished_at_us: Option<i64>,
    pub last_error: Option<String>,
    #[serde(skip)]
    pub payload: String,
}

/// Filters of `GET /alerts/history`.
#[derive(Debug, Default, Clone)]
pub struct HistoryFilter {
    pub rule: Option<String>,
    pub severity: Option<String>,
    pub project: Option<String>,
    pub from_us: i64,
    pub to_us: i64,
    pub limit: i64,
}

pub struct AlertStore {
    pub store: Arc<dyn Storage>,
    pub sql: Sql,
}

fn opt_text(v: Option<&str>) -> Value {
    v.map_or(Value::Null, |s| Value::Text(s.to_owned()))
}
// Nullable numbers are bound as text (cast in the SQL): a NULL is bound as
// text, and PostgreSQL keeps the first bind's type for a prepared
// statement, so a parameter must have the same type whether set or not.
fn opt_int(v: Option<i64>) -> Value {
    v.map_or(Value::Null, |v| Value::Text(v.to_string()))
}
fn opt_float(v: Option<f64>) -> Value {
    v.filter(|x| x.is_finite()).map_or(Value::Null, |v| Value::Text(format!("{v:?}")))
}
fn opt_time(v: &Value) -> Option<i64> {
    (*v != Value::Null).then(|| v.as_i64())
}

impl AlertStore {
    pub fn new(store: Arc<dyn Storage>) -> Self {
        let sql = Sql::new(store.backend());
        Self { store, sql }
    }

    fn t(&self, n: usize) -> String {
        self.sql.time(n)
    }
    /// A nullable float parameter (a NULL is bound as text: cast it).
    fn f(&self, n: usize) -> String {
        format!("CAST({} AS DOUBLE PRECISION)", self.sql.p(n))
    }
    fn p(&self, n: usize) -> String {
        self.sql.p(n)
    }
    fn us(&self, col: &str) -> String {
        self.sql.us(col)
    }

    async fn run(&self, sql: &str, binds: Vec<Value>) -> Result<Vec<Vec<Value>>, StorageError> {
        self.store.query(sql, &binds).await
    }

    // ---- rules ----

    /// Rules written through the API: (name, definition or None if deleted,
    /// updated at, by).
    pub async fn rule_overrides(
        &self,
    ) -> Result<Vec<(String, Option<RuleConfig>, i64, String)>, StorageError> {
        let rows = self
            .run(
                &format!(
                    "SELECT name, definition, {}, updated_by FROM alert_rules ORDER BY name",
                    self.us("updated_at")
                ),
                vec![],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let def = r[1].as_str().and_then(|d| serde_json::from_str::<RuleConfig>(d).ok());
                (
                    r[0].as_str().unwrap_or("").to_owned(),
                    def,
                    r[2].as_i64(),
                    r[3].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect())
    }

    pub async fn put_rule(
        &self,
        name: &str,
        rule: Option<&RuleConfig>,
        by: &str,
        now_us: i64,
    ) -> Result<(), StorageError> {
        let def = rule.map(|r| serde_json::to_string(r).unwrap_or_default());
        self.run(
            &format!(
                "INSERT INTO alert_rules (name, definition, updated_at, updated_by) VALUES ({}, {}, {}, {}) \
                 ON CONFLICT (name) DO UPDATE SET definition = excluded.definition, \
                 updated_at = excluded.updated_at, updated_by = excluded.updated_by",
                self.p(1),
                self.p(2),
                self.t(3),
                self.p(4)
            ),
            vec![
                Value::Text(name.to_owned()),
                opt_text(def.as_deref()),
                Value::Int(now_us),
                Value::Text(by.to_owned()),
            ],
        )
        .await?;
        Ok(())
    }

    // ---- state ----

    pub async fn load_state(&self) -> Result<Vec<AlertState>, StorageError> {
        let rows = self
            .run(
                &format!(
                    "SELECT fingerprint, rule, severity, labels, state, {}, {}, {}, value, {}, repeats, ack_by, {}, ack_comment \
                     FROM alert_state ORDER BY fingerprint",
                    self.us("active_since"),
                    self.us("fired_at"),
                    self.us("last_true_at"),
                    self.us("last_notified_at"),
                    self.us("ack_at"),
                ),
                vec![],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| AlertState {
                fingerprint: r[0].as_str().unwrap_or("").to_owned(),
                rule: r[1].as_str().unwrap_or("").to_owned(),
                severity: r[2].as_str().and_then(Severity::parse).unwrap_or(Severity::Warning),
                labels: r[3].as_str().and_then(|l| serde_json::from_str(l).ok()).unwrap_or_default(),
                phase: if r[4].as_str() == Some("firing") { Phase::Firing } else { Phase::Pending },
                active_since_us: r[5].as_i64(),
                fired_at_us: opt_time(&r[6]),
                last_true_at_us: r[7].as_i64(),
                value: r[8].as_f64(),
                last_notified_at_us: opt_time(&r[9]),
                repeats: r[10].as_i64().max(0) as u32,
                ack: r[11].as_str().map(|by| Ack {
                    by: by.to_owned(),
                    at_us: r[12].as_i64(),
                    comment: r[13].as_str().unwrap_or("").to_owned(),
                }),
            })
            .collect())
    }

    /// Writes the engine's part of a state (acknowledgements are the API's).
    pub async fn save_state(&self, s: &AlertState) -> Result<(), StorageError> {
        self.run(
            &format!(
                "INSERT INTO alert_state (fingerprint, rule, severity, labels, state, active_since, fired_at, \
                 last_true_at, value, last_notified_at, repeats) VALUES ({}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}) \
                 ON CONFLICT (fingerprint) DO UPDATE SET rule = excluded.rule, severity = excluded.severity, \
                 labels = excluded.labels, state = excluded.state, active_since = excluded.active_since, \
                 fired_at = excluded.fired_at, last_true_at = excluded.last_true_at, value = excluded.value, \
                 last_notified_at = excluded.last_notified_at, repeats = excluded.repeats",
                self.p(1),
                self.p(2),
                self.p(3),
                self.p(4),
                self.p(5),
                self.t(6),
                self.t(7),
                self.t(8),
                self.f(9),
                self.t(10),
                self.p(11),
            ),
            vec![
                Value::Text(s.fingerprint.clone()),
                Value::Text(s.rule.clone()),
                Value::Text(s.severity.as_str().to_owned()),
                Value::Text(serde_json::to_string(&s.labels).unwrap_or_default()),
                Value::Text(if s.phase == Phase::Firing { "firing" } else { "pending" }.to_owned()),
                Value::Int(s.active_since_us),
                opt_int(s.fired_at_us),
                Value::Int(s.last_true_at_us),
                opt_float(s.value),
                opt_int(s.last_notified_at_us),
                Value::Int(i64::from(s.repeats)),
            ],
        )
        .await?;
        Ok(())
    }

    pub async fn delete_state(&self, fingerprint: &str) -> Result<(), StorageError> {
        self.run(
            &format!("DELETE FROM alert_state WHERE fingerprint = {}", self.p(1)),
            vec![Value::Text(fingerprint.to_owned())],
        )
        .await?;
        Ok(())
    }

    /// Acknowledges a firing alert; false when no such alert fires.
    pub async fn acknowledge(&self, fingerprint: &str, ack: &Ack) -> Result<bool, StorageError> {
        let rows = self
            .run(
                &format!(
                    "UPDATE alert_state SET ack_by = {}, ack_at = {}, ack_comment = {} \
                     WHERE fingerprint = {} AND state = 'firing' RETURNING fingerprint",
                    self.p(1),
                    self.t(2),
                    self.p(3),
                    self.p(4)
                ),
                vec![
                    Value::Text(ack.by.clone()),
                    Value::Int(ack.at_us),
                    Value::Text(ack.comment.clone()),
                    Value::Text(fingerprint.to_owned()),
                ],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    // ---- history ----

    pub async fn record(&self, e: &HistoryEvent<'_>) -> Result<(), StorageError> {
        let a = e.alert;
        self.run(
            &format!(
                "INSERT INTO alert_history (time, fingerprint, rule, severity, project, event, value, labels, detail) \
                 VALUES ({}, {}, {}, {}, {}, {}, {}, {}, {})",
                self.t(1),
                self.p(2),
                self.p(3),
                self.p(4),
                self.p(5),
                self.p(6),
                self.f(7),
                self.p(8),
                self.p(9)
            ),
            vec![
                Value::Int(e.time_us),
                Value::Text(a.fingerprint.clone()),
                Value::Text(a.rule.clone()),
                Value::Text(a.severity.as_str().to_owned()),
                opt_text(a.labels.get("project").map(String::as_str)),
                Value::Text(e.event.to_owned()),
                opt_float(a.value),
                Value::Text(serde_json::to_string(&a.labels).unwrap_or_default()),
                opt_text(e.detail.as_deref()),
            ],
        )
        .await?;
        Ok(())
    }

    pub async fn history(&self, f: &HistoryFilter) -> Result<Vec<serde_json::Value>, StorageError> {
        let mut conds = vec![format!("time >= {} AND time < {}", self.t(1), self.t(2))];
        let mut binds = vec![Value::Int(f.from_us), Value::Int(f.to_us)];
        for (col, v) in [("rule", &f.rule), ("severity", &f.severity), ("project", &f.project)] {
            if let Some(v) = v {
                binds.push(Value::Text(v.clone()));
                conds.push(format!("{col} = {}", self.p(binds.len())));
            }
        }
        binds.push(Value::Int(f.limit));
        let rows = self
            .run(
                &format!(
                    "SELECT {}, fingerprint, rule, severity, project, event, value, labels, detail FROM alert_history \
                     WHERE {} ORDER BY time DESC, id DESC LIMIT {}",
                    self.us("time"),
                    conds.join(" AND "),
                    self.p(binds.len())
                ),
                binds,
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                serde_json::json!({
                    "time": crate::time::format_rfc3339(r[0].as_i64()),
                    "fingerprint": r[1].as_str(),
                    "rule": r[2].as_str(),
                    "severity": r[3].as_str(),
                    "project": r[4].as_str(),
                    "event": r[5].as_str(),
                    "value": r[6].as_f64(),
                    "labels": r[7].as_str().and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok()),
                    "detail": r[8].as_str(),
                })
            })
            .collect())
    }

    /// Removes history older than the horizon.
    pub async fn prune_history(&self, before_us: i64) -> Result<(), StorageError> {
        self.run(
            &format!("DELETE FROM alert_history WHERE time < {}", self.t(1)),
            vec![Value::Int(before_us)],
        )
        .await?;
        self.run(
            &format!("DELETE FROM alert_deliveries WHERE status <> 'pending' AND created_at < {}", self.t(1)),
            vec![Value::Int(before_us)],
        )
        .await?;
        self.run(
            &format!("DELETE FROM alert_silences WHERE ends_at < {}", self.t(1)),
            vec![Value::Int(before_us)],
        )
        .await?;
        Ok(())
    }

    // ---- silences ----

    pub async fn silences(&self) -> Result<Vec<Silence>, StorageError> {
        let rows = self
            .run(
                &format!(
                    "SELECT id, matchers, {}, {}, created_by, comment, {} FROM alert_silences ORDER BY created_at, id",
                    self.us("starts_at"),
                    self.us("ends_at"),
                    self.us("created_at")
                ),
                vec![],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| Silence {
                id: r[0].as_str().unwrap_or("").to_owned(),
                matchers: r[1].as_str().and_then(|m| serde_json::from_str(m).ok()).unwrap_or_default(),
                starts_at_us: r[2].as_i64(),
                ends_at_us: r[3].as_i64(),
                created_by: r[4].as_str().unwrap_or("").to_owned(),
                comment: r[5].as_str().unwrap_or("").to_owned(),
                created_at_us: r[6].as_i64(),
            })
            .collect())
    }

    pub async fn add_silence(&self, s: &Silence) -> Result<(), StorageError> {
        self.run(
            &format!(
                "INSERT INTO alert_silences (id, matchers, starts_at, ends_at, created_by, comment, created_at) \
                 VALUES ({}, {}, {}, {}, {}, {}, {})",
                self.p(1),
                self.p(2),
                self.t(3),
                self.t(4),
                self.p(5),
                self.p(6),
                self.t(7)
            ),
            vec![
                Value::Text(s.id.clone()),
                Value::Text(serde_json::to_string(&s.matchers).unwrap_or_default()),
                Value::Int(s.starts_at_us),
                Value::Int(s.ends_at_us),
                Value::Text(s.created_by.clone()),
                Value::Text(s.comment.clone()),
                Value::Int(s.created_at_us),
            ],
        )
        .await?;
        Ok(())
    }

    /// Ends a silence now; false when it does not exist or already ended.
    pub async fn expire_silence(&self, id: &str, now_us: i64) -> Result<bool, StorageError> {
        let rows = self
            .run(
                &format!(
                    "UPDATE alert_silences SET ends_at = {} WHERE id = {} AND ends_at > {} RETURNING id",
                    self.t(1),
                    self.p(2),
                    self.t(1)
                ),
                vec![Value::Int(now_us), Value::Text(id.to_owned())],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    // ---- deliveries ----

    /// Queues a notification for a channel; a second enqueue of the same
    /// notification id (a new leader redoing a state change) is ignored.
    pub async fn enqueue(&self, n: &Notification, channel: &str, now_us: i64) -> Result<bool, StorageError> {
        let rows = self
            .run(
                &format!(
                    "INSERT INTO alert_deliveries (notification_id, channel, status, attempts, payload, created_at, \
                     next_attempt_at) VALUES ({}, {}, 'pending', 0, {}, {}, {}) \
                     ON CONFLICT (notification_id, channel) DO NOTHING RETURNING notification_id",
                    self.p(1),
                    self.p(2),
                    self.p(3),
                    self.t(4),
                    self.t(4)
                ),
                vec![
                    Value::Text(n.id.clone()),
                    Value::Text(channel.to_owned()),
                    Value::Text(serde_json::to_string(n).unwrap_or_default()),
                    Value::Int(now_us),
                ],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    pub async fn pending_count(&self, channel: &str) -> Result<i64, StorageError> {
        let rows = self
            .run(
                &format!(
                    "SELECT CAST(count(*) AS BIGINT) FROM alert_deliveries WHERE channel = {} AND status = 'pending'",
                    self.p(1)
                ),
                vec![Value::Text(channel.to_owned())],
            )
            .await?;
        Ok(rows.first().map_or(0, |r| r[0].as_i64()))
    }

    fn delivery_cols(&self) -> String {
        format!(
            "notification_id, channel, status, attempts, {}, {}, {}, last_error, payload",
            self.us("created_at"),
            self.us("next_attempt_at"),
            self.us("finished_at")
        )
    }

    fn delivery(r: Vec<Value>) -> Delivery {
        Delivery {
            notification_id: r[0].as_str().unwrap_or("").to_owned(),
            channel: r[1].as_str().unwrap_or("").to_owned(),
            status: r[2].as_str().unwrap_or("").to_owned(),
            attempts: r[3].as_i64(),
            created_at_us: r[4].as_i64(),
            next_attempt_at_us: r[5].as_i64(),
            finished_at_us: opt_time(&r[6]),
            last_error: r[7].as_str().map(str::to_owned),
            payload: r[8].as_str().unwrap_or("").to_owned(),
        }
    }

    /// The oldest pending deliveries of a channel whose time has come, in
    /// the order they were queued.
    pub async fn due(&self, channel: &str, now_us: i64, limit: i64) -> Result<Vec<Delivery>, StorageError> {
        let rows = self
            .run(
                &format!(
                    "SELECT {} FROM alert_deliveries WHERE channel = {} AND status = 'pending' \
                     AND next_attempt_at <= {} ORDER BY created_at, notification_id LIMIT {}",
                    self.delivery_cols(),
                    self.p(1),
                    self.t(2),
                    self.p(3)
                ),
                vec![Value::Text(channel.to_owned()), Value::Int(now_us), Value::Int(limit)],
            )
            .await?;
        Ok(rows.into_iter().map(Self::delivery).collect())
    }

    /// Records an attempt: `status` delivered, dead, or pending with the
    /// next attempt's time.
    pub async fn attempted(
        &self,
        d: &Delivery,
        status: &str,
        next_at_us: i64,
        error: Option<&str>,
        now_us: i64,
    ) -> Result<(), StorageError> {
        let finished = (status != "pending").then_some(now_us);
        self.run(
            &format!(
                "UPDATE alert_deliveries SET status = {}, attempts = attempts + 1, next_attempt_at = {}, \
                 finished_at = {}, last_error = {} WHERE notification_id = {} AND channel = {}",
                self.p(1),
                self.t(2),
                self.t(3),
                self.p(4),
                self.p(5),
                self.p(6)
            ),
            vec![
                Value::Text(status.to_owned()),
                Value::Int(next_at_us),
                opt_int(finished),
                opt_text(error),
                Value::Text(d.notification_id.clone()),
                Value::Text(d.channel.clone()),
            ],
        )
        .await?;
        Ok(())
    }

    /// Deliveries with a given status, newest first.
    pub async fn deliveries(&self, status: &str, limit: i64) -> Result<Vec<Delivery>, StorageError> {
        let rows = self
            .run(
                &format!(
                    "SELECT {} FROM alert_deliveries WHERE status = {} ORDER BY created_at DESC LIMIT {}",
                    self.delivery_cols(),
                    self.p(1),
                    self.p(2)
                ),
                vec![Value::Text(status.to_owned()), Value::Int(limit)],
            )
            .await?;
        Ok(rows.into_iter().map(Self::delivery).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn matchers_work_like_alertmanager_ones() {
        let l = labels(&[("alertname", "ContextSearchLatencyHigh"), ("project", "web")]);
        let m = |name: &str, op: &str, value: &str| Matcher {
            name: name.into(),
            value: value.into(),
            op: op.into(),
        };
        assert!(m("project", "=", "web").matches(&l));
        assert!(!m("project", "=", "we").matches(&l));
        assert!(m("project", "!=", "docs").matches(&l));
        assert!(m("alertname", "=~", "ContextSearch.*").matches(&l));
        assert!(!m("alertname", "=~", "Search").matches(&l), "regex matches the whole value");
        assert!(m("team", "=", "").matches(&l), "a missing label is the empty string");
        assert!(m("project", "!~", "docs|api").matches(&l));
        assert!(m("x", "~", "a").validate().unwrap_err().contains("not one of =, !=, =~, !~"));
        assert!(m("x", "=~", "(").validate().unwrap_err().contains("not a valid regular expression"));
        let s = Silence {
            id: "s".into(),
            matchers: vec![m("project", "=", "web")],
            starts_at_us: 10,
            ends_at_us: 20,
            created_by: "a".into(),
            comment: String::new(),
            created_at_us: 0,
        };
        assert!(s.silences(&l, 15));
        assert!(!s.silences(&l, 20), "ends_at is exclusive");
        assert!(!s.silences(&labels(&[("project", "docs")]), 15));
    }
}
