//! The rule engine: at every evaluation interval the leader measures each
//! rule, moves every alert through inactive → pending → firing → resolved,
//! and turns state changes into notifications queued per channel.
//!
//! Flapping is damped by `keep_firing_for`: a firing alert resolves only
//! after its condition has stayed false that long. A notification's id is
//! derived from the alert and its episode (`<fingerprint>-<pending since>-f<n>`
//! or `-r`), so a new leader redoing a state change queues the same id and
//! the queue ignores it: one notification per state change per channel.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use parking_lot::Mutex;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{
    channel::{Channel, Notification, NotificationStatus},
    config::{AlertingConfig, ChannelConfig, Op, RuleConfig},
    measure::{Measurer, ProcessSampler, Sample, Tick},
    store::{AlertState, AlertStore, HistoryEvent, Phase, Silence},
};
use crate::{plugin::now_us, time::format_rfc3339};

/// Key of the PostgreSQL advisory lock the alerting leader holds.
pub const LEADER_LOCK: i64 = 0x636f_6e74_6578_7402;

/// A configured channel, ready to deliver.
pub struct ChannelHandle {
    pub config: ChannelConfig,
    pub channel: Arc<dyn Channel>,
}

/// A rule as the engine runs it, and where it came from.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ActiveRule {
    #[serde(flatten)]
    pub rule: RuleConfig,
    /// `config` or `api`.
    pub source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<String>,
}

/// Alerting metrics, on the plugin's registry.
pub struct AlertMetrics {
    pub evaluations: prometheus::IntCounterVec,
    pub evaluation_seconds: prometheus::Histogram,
    pub alerts: prometheus::IntGaugeVec,
    pub leader: prometheus::IntGauge,
    pub notifications: prometheus::IntCounterVec,
    pub dead_letters: prometheus::IntCounterVec,
    pub queue_depth: prometheus::IntGaugeVec,
}

impl AlertMetrics {
    pub fn new(registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        use prometheus::{HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts};
        let m = Self {
            evaluations: IntCounterVec::new(
                Opts::new(
                    "context_analytics_alert_evaluations_total",
                    "Rule evaluations by this instance, by outcome.",
                ),
                &["outcome"],
            )?,
            evaluation_seconds: prometheus::Histogram::with_opts(
                HistogramOpts::new(
                    "context_analytics_alert_evaluation_duration_seconds",
                    "Time one evaluation of every rule took.",
                )
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            )?,
            alerts: IntGaugeVec::new(
                Opts::new(
                    "context_analytics_alerts",
                    "Alerts pending or firing (as seen by the leader), by state and severity.",
                ),
                &["state", "severity"],
            )?,
            leader: IntGauge::new(
                "context_analytics_alert_leader",
                "1 while this instance evaluates alerts and sends notifications.",
            )?,
            notifications: IntCounterVec::new(
                Opts::new(
                    "context_analytics_alert_notifications_total",
                    "Delivery attempts of notifications, by channel and outcome (delivered, retry, dead).",
                ),
                &["channel", "outcome"],
            )?,
            dead_letters: IntCounterVec::new(
                Opts::new(
                    "context_analytics_alert_dead_letters_total",
                    "Notifications given up on (retry horizon passed, permanent error or queue full), by channel.",
                ),
                &["channel"],
            )?,
            queue_depth: IntGaugeVec::new(
                Opts::new(
                    "context_analytics_alert_queue_depth",
                    "Notifications waiting to be delivered, by channel.",
                ),
                &["channel"],
            )?,
        };
        registry.register(Box::new(m.evaluations.clone()))?;
        registry.register(Box::new(m.evaluation_seconds.clone()))?;
        registry.register(Box::new(m.alerts.clone()))?;
        registry.register(Box::new(m.leader.clone()))?;
        registry.register(Box::new(m.notifications.clone()))?;
        registry.register(Box::new(m.dead_letters.clone()))?;
        registry.register(Box::new(m.queue_depth.clone()))?;
        Ok(m)
    }
}

pub struct Engine {
    pub config: AlertingConfig,
    pub store: AlertStore,
    pub channels: Vec<ChannelHandle>,
    pub metrics: AlertMetrics,
    pub logger: plugin_api::HostLogger,
    pub process: ProcessSampler,
    pub leader: AtomicBool,
    /// Wakes the delivery workers when notifications were queued.
    pub queued: tokio::sync::Notify,
    /// When the last evaluation ran and what it found (health, API).
    pub last: Mutex<serde_json::Value>,
    /// Per-second aggregates of recent events, kept between evaluations.
    pub recent: Arc<Mutex<super::measure::Recent>>,
}

/// What one evaluation changed.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Report {
    pub rules: usize,
    pub errors: Vec<String>,
    pub notifications: Vec<Notification>,
}

fn fingerprint(rule: &str, labels: &BTreeMap<String, String>) -> String {
    let mut h = Sha256::new();
    h.update(rule.as_bytes());
    for (k, v) in labels {
        h.update([0]);
        h.update(k.as_bytes());
        h.update([1]);
        h.update(v.as_bytes());
    }
    h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// A number as people read it: integers plainly, others to 4 significant digits.
pub fn human(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        return format!("{v:.0}");
    }
    let digits = (4 - v.abs().log10().ceil() as i32).clamp(0, 10) as usize;
    let s = format!("{v:.digits$}");
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_owned() } else { s }
}

/// Fills `{{ $value }}`, `{{ $threshold }}` and `{{ $labels.NAME }}`.
pub fn expand(
    template: &str,
    value: Option<f64>,
    threshold: Option<f64>,
    labels: &BTreeMap<String, String>,
) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let Some(len) = rest[start..].find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let expr = rest[start + 2..start + len].trim();
        match expr {
            "$value" => out.push_str(&value.map_or("n/a".to_owned(), human)),
            "$threshold" => out.push_str(&threshold.map_or("n/a".to_owned(), human)),
            _ => match expr.strip_prefix("$labels.") {
                Some(name) => out.push_str(labels.get(name).map_or("", String::as_str)),
                None => out.push_str(&rest[start..start + len + 2]),
            },
        }
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    out
}

impl Engine {
    /// The rules in force: the config's, with API changes applied.
    pub async fn rules(&self) -> Result<Vec<ActiveRule>, crate::storage::StorageError> {
        let mut rules: BTreeMap<String, ActiveRule> = self
            .config
            .config_rules()
            .into_iter()
            .map(|rule| (rule.name.clone(), ActiveRule { rule, source: "config", updated_by: None }))
            .collect();
        for (name, def, _, by) in self.store.rule_overrides().await? {
            match def {
                Some(rule) => {
                    rules.insert(name, ActiveRule { rule, source: "api", updated_by: Some(by) });
                }
                None => {
                    rules.remove(&name);
                }
            }
        }
        Ok(rules.into_values().collect())
    }

    fn notification(
        &self,
        a: &AlertState,
        rule: &RuleConfig,
        status: NotificationStatus,
        now: i64,
    ) -> Notification {
        // The episode is named by when it became pending: stored before any
        // notification, so a leader redoing a state change makes the same id.
        let episode = a.active_since_us;
        let id = match status {
            NotificationStatus::Firing => format!("{}-{episode}-f{}", a.fingerprint, a.repeats),
            NotificationStatus::Resolved => format!("{}-{episode}-r", a.fingerprint),
        };
        let annotations = rule
            .annotations
            .iter()
            .map(|(k, v)| (k.clone(), expand(v, a.value, rule.threshold, &a.labels)))
            .collect();
        Notification {
            id,
            status,
            rule: rule.name.clone(),
            severity: rule.severity,
            fingerprint: a.fingerprint.clone(),
            labels: a.labels.clone(),
            annotations,
            value: a.value,
            threshold: rule.threshold,
            starts_at: format_rfc3339(a.fired_at_us.unwrap_or(episode)),
            ends_at: (status == NotificationStatus::Resolved).then(|| format_rfc3339(now)),
            generator_url: format!(
                "{}/api/v1/analytics/alerts?fingerprint={}",
                self.config.external_url.trim_end_matches('/'),
                a.fingerprint
            ),
            repeat: if status == NotificationStatus::Firing { a.repeats } else { 0 },
        }
    }

    /// Queues a notification on every channel it is routed to. Returns the
    /// channels that took it.
    async fn send(&self, n: &Notification, now: i64) -> Vec<String> {
        let mut took = Vec::new();
        for ch in &self.channels {
            if !ch.config.routes(n.severity, &n.labels)
                || (n.status == NotificationStatus::Resolved && !ch.config.send_resolved)
            {
                continue;
            }
            let name = &ch.config.name;
            match self.store.pending_count(name).await {
                Ok(depth) if depth as usize >= self.config.delivery.queue_capacity => {
                    self.metrics.dead_letters.with_label_values(&[name]).inc();
                    self.logger.error(&format!(
                        "alert channel '{name}': queue full ({depth} notifications), notification {} dropped",
                        n.id
                    ));
                    continue;
                }
                Err(e) => self.logger.warn(&format!("alert channel '{name}': cannot read its queue: {e}")),
                Ok(_) => {}
            }
            match self.store.enqueue(n, name, now).await {
                Ok(_) => took.push(name.clone()),
                Err(e) => self.logger.error(&format!("alert channel '{name}': cannot queue {}: {e}", n.id)),
            }
        }
        if !took.is_empty() {
            self.queued.notify_waiters();
        }
        took
    }

    /// One evaluation of every rule at `now` (Unix µs).
    pub async fn evaluate(&self, now: i64) -> Report {
        let mut report = Report::default();
        let rules = match self.rules().await {
            Ok(r) => r,
            Err(e) => {
                report.errors.push(format!("cannot read rules: {e}"));
                return report;
            }
        };
        let (states, silences) = match (self.store.load_state().await, self.store.silences().await) {
            (Ok(s), Ok(l)) => (s, l),
            (Err(e), _) | (_, Err(e)) => {
                report.errors.push(format!("cannot read alert state: {e}"));
                return report;
            }
        };
        let mut states: BTreeMap<String, AlertState> =
            states.into_iter().map(|s| (s.fingerprint.clone(), s)).collect();
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let measurer = Measurer {
            store: &*self.store.store,
            recent: &self.recent,
            sql: self.store.sql,
            process: &self.process,
            anomaly: &self.config.anomaly,
            now_us: now,
        };
        let mut tick = Tick::default();
        for active in rules.iter().filter(|r| r.rule.enabled) {
            let rule = &active.rule;
            report.rules += 1;
            let samples = match measurer.measure(&mut tick, rule).await {
                Ok(s) => s,
                Err(e) => {
                    report.errors.push(format!("rule '{}': {e}", rule.name));
                    // Keep its alerts as they are: no data is not a resolution.
                    for s in states.values().filter(|s| s.rule == rule.name) {
                        seen.insert(s.fingerprint.clone());
                    }
                    continue;
                }
            };
            for sample in samples {
                let mut labels = rule.labels.clone();
                labels.insert("alertname".into(), rule.name.clone());
                labels.insert("severity".into(), rule.severity.as_str().into());
                if let Some(p) = &sample.project {
                    labels.insert("project".into(), p.clone());
                }
                let fp = fingerprint(&rule.name, &labels);
                let holds = condition(rule, &sample);
                seen.insert(fp.clone());
                let existing = states.remove(&fp);
                if let Some(next) = self
                    .step(existing, holds, &fp, rule, labels, sample.value, &silences, now, &mut report)
                    .await
                {
                    states.insert(fp, next);
                }
            }
        }
        // Alerts whose rule is gone, disabled, or whose group no longer
        // reports: their condition no longer holds.
        let stale: Vec<String> = states.keys().filter(|fp| !seen.contains(*fp)).cloned().collect();
        for fp in stale {
            let existing = states.remove(&fp);
            let Some(a) = existing.clone() else { continue };
            let rule = rules
                .iter()
                .find(|r| r.rule.name == a.rule && r.rule.enabled)
                .map(|r| r.rule.clone())
                .unwrap_or_else(|| orphan_rule(&a));
            if let Some(next) = self
                .step(existing, false, &fp, &rule, a.labels.clone(), a.value, &silences, now, &mut report)
                .await
            {
                states.insert(fp, next);
            }
        }
        for state in ["pending", "firing"] {
            for severity in super::channel::Severity::ALL {
                self.metrics.alerts.with_label_values(&[state, severity.as_str()]).set(0);
            }
        }
        for s in states.values() {
            let phase = if s.phase == Phase::Firing { "firing" } else { "pending" };
            self.metrics.alerts.with_label_values(&[phase, s.severity.as_str()]).inc();
        }
        report
    }

    /// Moves one alert one step; returns its state to keep (None: inactive).
    #[allow(clippy::too_many_arguments)]
    async fn step(
        &self,
        existing: Option<AlertState>,
        holds: bool,
        fp: &str,
        rule: &RuleConfig,
        labels: BTreeMap<String, String>,
        value: Option<f64>,
        silences: &[Silence],
        now: i64,
        report: &mut Report,
    ) -> Option<AlertState> {
        let keep_firing_for = rule.keep_firing_for.unwrap_or(self.config.keep_firing_for).as_us();
        let silenced_by = |labels: &BTreeMap<String, String>| {
            silences.iter().find(|s| s.silences(labels, now)).map(|s| s.id.clone())
        };
        let mut a = match (existing, holds) {
            (None, false) => return None,
            (None, true) => {
                let a = AlertState {
                    fingerprint: fp.to_owned(),
                    rule: rule.name.clone(),
                    severity: rule.severity,
                    labels,
                    phase: Phase::Pending,
                    active_since_us: now,
                    fired_at_us: None,
                    last_true_at_us: now,
                    value,
                    last_notified_at_us: None,
                    repeats: 0,
                    ack: None,
                };
                self.history(now, &a, "pending", None).await;
                a
            }
            (Some(mut a), true) => {
                a.last_true_at_us = now;
                a.value = value;
                a.severity = rule.severity;
                a
            }
            (Some(mut a), false) => {
                if value.is_some() {
                    a.value = value;
                }
                if a.phase == Phase::Pending {
                    self.history(
                        now,
                        &a,
                        "inactive",
                        Some("condition no longer holds before `for` elapsed".into()),
                    )
                    .await;
                    self.forget(&a).await;
                    return None;
                }
                if now - a.last_true_at_us < keep_firing_for {
                    self.save(&a).await;
                    return Some(a);
                }
                // Resolved: notify if firing was notified, clear the ack.
                if a.last_notified_at_us.is_some() {
                    let n = self.notification(&a, rule, NotificationStatus::Resolved, now);
                    let channels = self.send(&n, now).await;
                    report.notifications.push(n);
                    self.history(now, &a, "resolved", Some(routed(&channels))).await;
                } else {
                    self.history(now, &a, "resolved", Some("firing was never notified (silenced)".into()))
                        .await;
                }
                self.forget(&a).await;
                return None;
            }
        };
        if a.phase == Phase::Pending && now - a.active_since_us >= rule.for_.as_us() {
            a.phase = Phase::Firing;
            a.fired_at_us = Some(now);
            a.repeats = 0;
            self.history(now, &a, "firing", None).await;
        }
        if a.phase == Phase::Firing {
            let due = match a.last_notified_at_us {
                None => true,
                Some(last) => {
                    a.ack.is_none()
                        && !rule.repeat_interval.0.is_zero()
                        && now - last >= rule.repeat_interval.as_us()
                }
            };
            if due {
                if let Some(silence) = silenced_by(&a.labels) {
                    // Recorded when it starts firing, not at every evaluation;
                    // once the silence ends the firing notification goes out.
                    if a.fired_at_us == Some(now) {
                        self.history(now, &a, "silenced", Some(format!("silenced by {silence}"))).await;
                    }
                } else {
                    if a.last_notified_at_us.is_some() {
                        a.repeats += 1;
                    }
                    let n = self.notification(&a, rule, NotificationStatus::Firing, now);
                    let channels = self.send(&n, now).await;
                    report.notifications.push(n);
                    a.last_notified_at_us = Some(now);
                    if a.repeats > 0 {
                        self.history(now, &a, "repeat", Some(routed(&channels))).await;
                    } else {
                        self.history(now, &a, "notified", Some(routed(&channels))).await;
                    }
                }
            }
        }
        self.save(&a).await;
        Some(a)
    }

    async fn save(&self, a: &AlertState) {
        if let Err(e) = self.store.save_state(a).await {
            self.logger.error(&format!("alert {} ({}): cannot store its state: {e}", a.rule, a.fingerprint));
        }
    }

    async fn forget(&self, a: &AlertState) {
        if let Err(e) = self.store.delete_state(&a.fingerprint).await {
            self.logger.error(&format!("alert {} ({}): cannot clear its state: {e}", a.rule, a.fingerprint));
        }
    }

    async fn history(&self, now: i64, a: &AlertState, event: &'static str, detail: Option<String>) {
        let e = HistoryEvent { time_us: now, alert: a, event, detail };
        if let Err(e) = self.store.record(&e).await {
            self.logger.error(&format!("alert {}: cannot record history: {e}", a.rule));
        }
    }

    /// The evaluation loop: tries to lead, evaluates while leading.
    pub async fn run(self: Arc<Self>, storage_ready: impl Fn() -> bool + Send + Sync + 'static) {
        let every = self.config.evaluation_interval.0;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_prune = 0i64;
        // Evaluations are timed by the schedule, not by when they happen to
        // run: `for` then spans a whole number of intervals exactly, instead
        // of missing by a few microseconds and waiting one more interval.
        let (mut base_instant, mut base_us) = (tokio::time::Instant::now(), now_us());
        loop {
            let scheduled = tick.tick().await;
            self.process.sample();
            if !storage_ready() {
                continue;
            }
            let leading = match self.store.store.lead(LEADER_LOCK).await {
                Ok(l) => l,
                Err(e) => {
                    self.logger.warn(&format!("alerting: cannot take or keep the leader lock: {e}"));
                    false
                }
            };
            let was = self.leader.swap(leading, Ordering::SeqCst);
            self.metrics.leader.set(i64::from(leading));
            if leading != was {
                self.logger.info(if leading {
                    "alerting: this instance now evaluates rules and sends notifications"
                } else {
                    "alerting: another instance leads; this one stands by"
                });
                if leading {
                    self.queued.notify_waiters();
                }
            }
            if !leading {
                continue;
            }
            let started = std::time::Instant::now();
            let mut now = base_us + scheduled.duration_since(base_instant).as_micros() as i64;
            // Follow the wall clock (events are stamped by it) when it moved.
            if (now - now_us()).abs() > every.as_micros() as i64 / 2 {
                (base_instant, base_us) = (scheduled, now_us());
                now = base_us;
            }
            let report = self.evaluate(now).await;
            self.metrics.evaluation_seconds.observe(started.elapsed().as_secs_f64());
            let outcome = if report.errors.is_empty() { "ok" } else { "error" };
            self.metrics.evaluations.with_label_values(&[outcome]).inc();
            for e in &report.errors {
                self.logger.warn(&format!("alerting: {e}"));
            }
            *self.last.lock() = json!({
                "at": format_rfc3339(now),
                "rules": report.rules,
                "notifications": report.notifications.len(),
                "errors": report.errors,
                "duration_ms": started.elapsed().as_secs_f64() * 1000.0,
            });
            if now - last_prune > 3_600_000_000 {
                last_prune = now;
                let horizon = now - i64::from(self.config.history_days) * 86_400_000_000;
                if let Err(e) = self.store.prune_history(horizon).await {
                    self.logger.warn(&format!("alerting: cannot prune history: {e}"));
                }
            }
        }
    }

    pub fn leading(&self) -> bool {
        self.leader.load(Ordering::SeqCst)
    }

    pub fn interval(&self) -> Duration {
        self.config.evaluation_interval.0
    }
}

fn routed(channels: &[String]) -> String {
    if channels.is_empty() {
        "no channel routes it".to_owned()
    } else {
        format!("queued for {}", channels.join(", "))
    }
}

/// Whether a rule's condition holds for one sample.
pub fn condition(rule: &RuleConfig, sample: &Sample) -> bool {
    if sample.samples < rule.min_samples {
        return false;
    }
    match (rule.op, &sample.verdict) {
        (Op::Anomalous, Some(v)) => v.anomalous,
        (Op::Anomalous, None) => false,
        (op, _) => match (sample.value, rule.threshold) {
            (Some(v), Some(t)) => op.holds(v, t),
            _ => false,
        },
    }
}

/// A stand-in for a rule that no longer exists, so its alerts can resolve.
fn orphan_rule(a: &AlertState) -> RuleConfig {
    RuleConfig {
        name: a.rule.clone(),
        measure: super::config::Measure::RequestRate,
        percentile: None,
        window: super::config::Dur::mins(5),
        op: Op::Gt,
        threshold: None,
        for_: super::config::Dur::default(),
        keep_firing_for: Some(super::config::Dur::default()),
        severity: a.severity,
        min_samples: 0,
        per_project: false,
        labels: BTreeMap::new(),
        annotations: BTreeMap::from([(
            "summary".to_owned(),
            format!("rule {} was deleted or disabled while this alert fired", a.rule),
        )]),
        repeat_interval: super::config::Dur::default(),
        enabled: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_value_threshold_and_labels() {
        let labels = BTreeMap::from([("project".to_owned(), "web".to_owned())]);
        assert_eq!(
            expand(
                "p95 of {{ $labels.project }} is {{$value}} ms (> {{ $threshold }})",
                Some(612.345678),
                Some(500.0),
                &labels
            ),
            "p95 of web is 612.3 ms (> 500)"
        );
        assert_eq!(expand("{{ $value }} {{ $other }} {{", None, None, &labels), "n/a {{ $other }} {{");
        assert_eq!(human(0.052631), "0.05263");
        assert_eq!(human(2147483648.0), "2147483648");
    }

    #[test]
    fn fingerprints_depend_on_rule_and_labels_only() {
        let a = BTreeMap::from([("project".to_owned(), "web".to_owned())]);
        let b = BTreeMap::from([("project".to_owned(), "docs".to_owned())]);
        assert_eq!(fingerprint("r", &a), fingerprint("r", &a.clone()));
        assert_ne!(fingerprint("r", &a), fingerprint("r", &b));
        assert_ne!(fingerprint("r", &a), fingerprint("s", &a));
        assert_eq!(fingerprint("r", &a).len(), 16);
    }
}
