//! The alert engine over real storage (SQLite, PostgreSQL, TimescaleDB):
//! the state machine with `for`, repeats, acknowledgement, silences and
//! resolution driven by stored events; one queued notification per state
//! change and channel, also when a second leader redoes an evaluation;
//! delivery retries until the receiver answers; the leader lock on a real
//! PostgreSQL.

mod common;

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use abi_stable::std_types::{RStr, RString};
use async_trait::async_trait;
use context_analytics::{
    alerting::{
        channel::{Channel, DeliveryError, Notification, NotificationStatus, Severity},
        config::{AlertingConfig, ChannelConfig, DeliveryConfig, Dur, Measure, Op, RuleConfig},
        delivery,
        engine::{AlertMetrics, ChannelHandle, Engine, LEADER_LOCK},
        store::{Ack, AlertStore, HistoryFilter, Matcher, Phase, Silence},
    },
    storage::{
        self, Backend, RetentionConfig, Storage, StorageConfig, TimescaleMode, latency,
        rows::{EventId, RowBatch, SearchRow},
    },
};
use parking_lot::Mutex;
use plugin_api::{HostContext, HostServices, LogLevel};

const SEC: i64 = 1_000_000;

extern "C" fn log(level: LogLevel, target: RStr<'_>, message: RStr<'_>) {
    eprintln!("[{level:?} {target}] {message}");
}

fn logger() -> plugin_api::HostLogger {
    HostContext {
        plugin_name: RString::from("analytics"),
        host_name: RString::from("test-host"),
        host_version: RString::from("0"),
        instance_id: RString::from("test"),
        data_dir: RString::from("."),
        services: HostServices::leak(log),
    }
    .logger("alerting-test")
}

static TIMESCALE_TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn fresh(backend: Backend, name: &str) -> Arc<dyn Storage> {
    let reset = [
        "search_events",
        "alert_state",
        "alert_history",
        "alert_silences",
        "alert_deliveries",
        "alert_rules",
    ];
    common::fresh(backend, "alerting", name, &reset).await
}

/// `n` searches of `project` at `time_us`, `errors` of them failed.
async fn searches(store: &dyn Storage, seq: &mut i64, time_us: i64, project: &str, n: usize, errors: usize) {
    searches_of(store, ("inst", 1), seq, time_us, project, n, errors).await;
}

/// The same, written by a given (instance, boot).
async fn searches_of(
    store: &dyn Storage,
    (instance, boot): (&str, i64),
    seq: &mut i64,
    time_us: i64,
    project: &str,
    n: usize,
    errors: usize,
) {
    let mut batch = RowBatch::from_rows(boot, Vec::new());
    for i in 0..n {
        *seq += 1;
        let status = if i < errors { "error" } else { "ok" };
        batch.searches.push((
            EventId { boot_id: boot, seq: *seq },
            SearchRow {
                time_us: time_us + i as i64,
                project: project.into(),
                user_id: format!("u{}", i % 3),
                query: Some("q".into()),
                kind: "literal",
                cache: "miss",
                status,
                error_code: (status != "ok").then(|| "timeout".to_owned()),
                latency_ms: 12.0,
                latency_bucket: latency::bucket_of_ns(12_000_000),
                result_count: 1,
                top_results: ["src/a.rs"].into_iter().collect(),
                search_id: format!("s{seq}"),
            },
        ));
    }
    batch.last_seq = *seq;
    batch.min_time_us = time_us;
    batch.max_time_us = time_us + n as i64;
    store.write(instance, &batch).await.unwrap();
}

/// A channel that records what it is given and fails the first `fail`
/// attempts (a stand-in for a receiver; real receivers are exercised in
/// tests/tests/alerting.rs and the channel tests).
#[derive(Default)]
struct Recorder {
    got: Mutex<Vec<Notification>>,
    attempts: AtomicUsize,
    fail: usize,
}

#[async_trait]
impl Channel for Recorder {
    async fn deliver(&self, n: &Notification) -> Result<(), DeliveryError> {
        let attempt = self.attempts.fetch_add(1, Ordering::SeqCst);
        if attempt < self.fail {
            return Err(DeliveryError::retry(format!("503 Service Unavailable (attempt {attempt})")));
        }
        self.got.lock().push(n.clone());
        Ok(())
    }
}

fn rule() -> RuleConfig {
    RuleConfig {
        name: "SearchErrors".into(),
        measure: Measure::SearchErrorRate,
        percentile: None,
        window: Dur::mins(5),
        op: Op::Gt,
        threshold: Some(0.5),
        for_: Dur::secs(20),
        keep_firing_for: Some(Dur::secs(0)),
        severity: Severity::Error,
        min_samples: 4,
        per_project: true,
        labels: BTreeMap::from([("team".into(), "search".into())]),
        annotations: BTreeMap::from([(
            "summary".into(),
            "errors of {{ $labels.project }} at {{ $value }}".into(),
        )]),
        repeat_interval: Dur::secs(60),
        enabled: true,
    }
}

fn engine(store: Arc<dyn Storage>, channel: Arc<Recorder>, delivery: DeliveryConfig) -> Arc<Engine> {
    let config = AlertingConfig {
        default_rules: false,
        rules: vec![rule()],
        evaluation_interval: Dur(Duration::from_millis(100)),
        delivery,
        ..Default::default()
    };
    let channel_config = ChannelConfig {
        name: "recorder".into(),
        kind: "test".into(),
        severities: vec![Severity::Error, Severity::Critical],
        matchers: BTreeMap::from([("team".into(), "search".into())]),
        send_resolved: true,
        options: Default::default(),
    };
    Arc::new(Engine {
        store: AlertStore::new(store),
        channels: vec![ChannelHandle { config: channel_config, channel: channel as Arc<dyn Channel> }],
        metrics: AlertMetrics::new(&prometheus::Registry::new()).unwrap(),
        logger: logger(),
        process: Default::default(),
        leader: Default::default(),
        queued: tokio::sync::Notify::new(),
        last: Mutex::new(serde_json::Value::Null),
        recent: Default::default(),
        config,
    })
}

async fn queued(e: &Engine) -> Vec<String> {
    let mut ids: Vec<String> = e
        .store
        .due("recorder", i64::MAX / 2, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.notification_id)
        .collect();
    ids.sort();
    ids
}

async fn lifecycle(backend: Backend) {
    let store = fresh(backend, "alert_lifecycle").await;
    let recorder = Arc::new(Recorder::default());
    let e = engine(store.clone(), recorder, DeliveryConfig::default());
    let t0 = (plugin_now() / SEC - 3600) * SEC;
    let mut seq = 0;
    // web: 8 of 10 searches fail; docs: 1 of 10 (below threshold).
    searches(&*store, &mut seq, t0, "web", 10, 8).await;
    searches(&*store, &mut seq, t0, "docs", 10, 1).await;

    let r = e.evaluate(t0 + SEC).await;
    assert_eq!(r.errors, Vec::<String>::new());
    let state = e.store.load_state().await.unwrap();
    assert_eq!(state.len(), 1, "{state:?}");
    let web = &state[0];
    assert_eq!((web.phase, web.labels["project"].as_str(), web.value), (Phase::Pending, "web", Some(0.8)));
    assert!(r.notifications.is_empty(), "pending does not notify");

    // `for` (20 s) elapsed: fires and queues one notification.
    let r = e.evaluate(t0 + 25 * SEC).await;
    assert_eq!(r.notifications.len(), 1);
    let n = &r.notifications[0];
    assert_eq!(n.status, NotificationStatus::Firing);
    assert_eq!(n.annotations["summary"], "errors of web at 0.8");
    assert_eq!(n.labels["alertname"], "SearchErrors");
    assert_eq!(n.labels["severity"], "error");
    assert_eq!(n.threshold, Some(0.5));
    assert_eq!(queued(&e).await, vec![n.id.clone()]);
    let fp = n.fingerprint.clone();

    // Still firing, repeat interval (60 s) not reached: nothing new.
    assert!(e.evaluate(t0 + 40 * SEC).await.notifications.is_empty());
    // A second leader redoing the same state change queues nothing new.
    let other = engine(store.clone(), Arc::new(Recorder::default()), DeliveryConfig::default());
    // (as if the first leader died after queueing, before storing the state)
    store
        .query("UPDATE alert_state SET state = 'pending', fired_at = NULL, last_notified_at = NULL", &[])
        .await
        .unwrap();
    let redo = other.evaluate(t0 + 41 * SEC).await;
    assert_eq!(redo.notifications.len(), 1, "the redo produces the same notification...");
    assert_eq!(redo.notifications[0].id, n.id);
    assert_eq!(queued(&e).await.len(), 1, "...which the queue takes once");

    // Repeat after 60 s.
    let r = e.evaluate(t0 + 102 * SEC).await;
    assert_eq!(r.notifications.len(), 1);
    assert_eq!(r.notifications[0].repeat, 1);
    assert_eq!(queued(&e).await.len(), 2);

    // Acknowledged: no more repeats.
    let ack = Ack { by: "ana".into(), at_us: t0 + 110 * SEC, comment: "looking".into() };
    assert!(e.store.acknowledge(&fp, &ack).await.unwrap());
    assert!(!e.store.acknowledge("nope", &ack).await.unwrap());
    assert!(e.evaluate(t0 + 170 * SEC).await.notifications.is_empty());
    assert_eq!(e.store.load_state().await.unwrap()[0].ack.as_ref().map(|a| a.by.as_str()), Some("ana"));

    // The errors leave the 5-minute window: resolved, notified, ack cleared.
    let r = e.evaluate(t0 + 301 * SEC).await;
    assert_eq!(r.notifications.len(), 1);
    assert_eq!(r.notifications[0].status, NotificationStatus::Resolved);
    assert!(r.notifications[0].ends_at.is_some());
    assert!(e.store.load_state().await.unwrap().is_empty());
    assert_eq!(queued(&e).await.len(), 3);

    // A silence matching project=web: the next episode fires silently...
    let silence = Silence {
        id: "s1".into(),
        matchers: vec![Matcher { name: "project".into(), value: "web".into(), op: "=".into() }],
        starts_at_us: t0 + 400 * SEC,
        ends_at_us: t0 + 500 * SEC,
        created_by: "ana".into(),
        comment: "deploy".into(),
        created_at_us: t0,
    };
    e.store.add_silence(&silence).await.unwrap();
    searches(&*store, &mut seq, t0 + 400 * SEC, "web", 10, 9).await;
    e.evaluate(t0 + 401 * SEC).await;
    let r = e.evaluate(t0 + 430 * SEC).await;
    assert!(r.notifications.is_empty(), "silenced");
    assert_eq!(e.store.load_state().await.unwrap()[0].phase, Phase::Firing);
    // ...and notifies once the silence is expired.
    assert!(e.store.expire_silence("s1", t0 + 440 * SEC).await.unwrap());
    assert!(!e.store.expire_silence("s1", t0 + 441 * SEC).await.unwrap(), "already expired");
    let r = e.evaluate(t0 + 445 * SEC).await;
    assert_eq!(r.notifications.len(), 1);
    assert_eq!(r.notifications[0].repeat, 0);

    let history = e
        .store
        .history(&HistoryFilter {
            rule: Some("SearchErrors".into()),
            from_us: 0,
            to_us: i64::MAX / 2,
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let events: Vec<&str> = history.iter().rev().map(|h| h["event"].as_str().unwrap()).collect();
    assert_eq!(
        events,
        // (the redo of the first firing is recorded too)
        [
            "pending", "firing", "notified", "firing", "notified", "repeat", "resolved", "pending", "firing",
            "silenced", "notified"
        ],
        "{history:#?}"
    );
    store.close().await;
}

/// Wall-clock µs (the engine is driven with explicit times).
fn plugin_now() -> i64 {
    context_analytics::plugin::now_us()
}

async fn delivery_retries(backend: Backend) {
    let store = fresh(backend, "alert_delivery").await;
    let recorder = Arc::new(Recorder { fail: 2, ..Default::default() });
    let config = DeliveryConfig {
        initial_backoff: Dur(Duration::from_millis(50)),
        max_backoff: Dur(Duration::from_millis(200)),
        ..Default::default()
    };
    let e = engine(store.clone(), recorder.clone(), config);
    let now = plugin_now();
    let mut seq = 0;
    searches(&*store, &mut seq, now - 60 * SEC, "web", 10, 10).await;
    e.evaluate(now - 30 * SEC).await;
    let fired = e.evaluate(now).await;
    assert_eq!(fired.notifications.len(), 1);
    e.leader.store(true, Ordering::SeqCst);
    let worker = tokio::spawn(delivery::worker(e.clone(), 0));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while recorder.got.lock().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Give a duplicate the chance to show up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    worker.abort();
    assert_eq!(recorder.attempts.load(Ordering::SeqCst), 3, "two 503s, then delivered");
    assert_eq!(recorder.got.lock().len(), 1, "delivered exactly once");
    assert_eq!(recorder.got.lock()[0].id, fired.notifications[0].id);
    let delivered = e.store.deliveries("delivered", 10).await.unwrap();
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].attempts, 3);
    assert!(e.store.due("recorder", i64::MAX / 2, 10).await.unwrap().is_empty());
    assert_eq!(e.metrics.notifications.with_label_values(&["recorder", "retry"]).get(), 2);
    store.close().await;
}

/// An `anomalous` rule on the request rate: quiet against three weeks of
/// hourly history at the usual level, firing on a spike.
async fn traffic_anomaly(backend: Backend) {
    let store = fresh(backend, "alert_anomaly").await;
    store.query("DELETE FROM search_rollup_1h", &[]).await.unwrap();
    let hour = 3600 * SEC;
    let now = (plugin_now() / hour) * hour + 30 * 60 * SEC;
    // Three weeks of hours: a daily cycle between 240 and 840 searches an
    // hour, with a little deterministic noise.
    let mut values = Vec::new();
    for h in 1..=(21 * 24) {
        let bucket = (now / hour - h) * hour;
        let hour_of_day = (bucket / hour) % 24;
        let level = 540.0 + 300.0 * ((hour_of_day as f64 - 8.0) / 24.0 * std::f64::consts::TAU).sin();
        let noise = ((h * 7919) % 41) as f64 - 20.0;
        let at = match backend {
            Backend::Sqlite => bucket.to_string(),
            _ => format!("TIMESTAMPTZ 'epoch' + {bucket} * INTERVAL '1 microsecond'"),
        };
        values.push(format!(
            "({at}, 'i', 'web', 'literal', 'ok', 'miss', {}, 0, 0, 1.0, 1.0, 1.0)",
            (level + noise).round()
        ));
    }
    for chunk in values.chunks(200) {
        store
            .query(
                &format!(
                    "INSERT INTO search_rollup_1h (bucket, instance_id, project, kind, status, cache, searches, zero_results, \
                     results_sum, latency_ms_sum, latency_ms_min, latency_ms_max) VALUES {}",
                    chunk.join(", ")
                ),
                &[],
            )
            .await
            .unwrap();
    }
    let expected_per_5m = {
        let hour_of_day = (now / hour) % 24;
        (540.0 + 300.0 * ((hour_of_day as f64 - 8.0) / 24.0 * std::f64::consts::TAU).sin()) / 12.0
    };
    let mut rule = rule();
    rule.name = "TrafficSpike".into();
    rule.measure = Measure::RequestRate;
    rule.op = Op::Anomalous;
    rule.threshold = None;
    rule.for_ = Dur::secs(0);
    rule.min_samples = 0;
    rule.per_project = false;
    let e = engine(store.clone(), Arc::new(Recorder::default()), DeliveryConfig::default());
    let mut config = e.config.clone();
    config.rules = vec![rule];
    let e = Engine { config, ..Arc::try_unwrap(e).ok().unwrap() };
    let mut seq = 0;
    // The usual traffic for this hour of the week: no alert.
    searches(&*store, &mut seq, now - 4 * 60 * SEC, "web", expected_per_5m.round() as usize, 0).await;
    let r = e.evaluate(now).await;
    assert_eq!(r.errors, Vec::<String>::new());
    assert!(
        e.store.load_state().await.unwrap().is_empty(),
        "usual traffic ({expected_per_5m:.0} per 5 min) is no anomaly"
    );
    // Five times the usual traffic: fires at once (for = 0).
    // (written as the server writes them: seconds after they happened)
    searches(&*store, &mut seq, now - 5 * SEC, "web", (4.0 * expected_per_5m) as usize, 0).await;
    let r = e.evaluate(now).await;
    assert_eq!(r.notifications.len(), 1, "{:?}", e.store.load_state().await);
    assert_eq!(r.notifications[0].rule, "TrafficSpike");
    assert_eq!(r.notifications[0].threshold, None);
    store.close().await;
}

/// The leader's own events come from its pipeline, not back from the
/// database; other servers' events from the database; none counted twice.
async fn own_events_in_process_others_from_the_database(backend: Backend) {
    let store = fresh(backend, "alert_own").await;
    let mut rule = rule();
    rule.threshold = Some(0.39);
    rule.min_samples = 1;
    let e = engine(store.clone(), Arc::new(Recorder::default()), DeliveryConfig::default());
    let mut config = e.config.clone();
    config.rules = vec![rule];
    let e = Engine {
        config,
        recent: Arc::new(Mutex::new(context_analytics::alerting::measure::Recent::fed_by("inst", 1))),
        ..Arc::try_unwrap(e).ok().unwrap()
    };
    let t = (plugin_now() / SEC) * SEC - 60 * SEC;
    let mut seq = 0;
    // This boot's 10 searches (8 failed): written by its pipeline, and fed.
    searches_of(&*store, ("inst", 1), &mut seq, t, "web", 10, 8).await;
    for i in 0..10 {
        e.recent.lock().record_search(t + i, "web", false, i < 8, latency::bucket_of_ns(12_000_000));
    }
    // Nobody else wrote: the database is not read for the window.
    e.evaluate(t + SEC).await;
    assert_eq!(e.store.load_state().await.unwrap()[0].value, Some(0.8));
    // Another server's 10 good searches, and an earlier boot's 10 failed ones.
    searches_of(&*store, ("other", 5), &mut seq, t + 2 * SEC, "web", 10, 0).await;
    searches_of(&*store, ("inst", 0), &mut seq, t + 2 * SEC, "web", 10, 10).await;
    e.evaluate(t + 3 * SEC).await;
    let state = e.store.load_state().await.unwrap();
    assert_eq!(state[0].value, Some(18.0 / 30.0), "8 + 0 + 10 failed of 30, this boot's counted once");
    store.close().await;
}

macro_rules! suite {
    ($module:ident, $backend:expr) => {
        mod $module {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn pending_firing_repeat_ack_resolve_silence() {
                let _turn =
                    if $backend == Backend::Timescaledb { Some(TIMESCALE_TURN.lock().await) } else { None };
                lifecycle($backend).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn own_events_come_from_the_pipeline_others_from_the_database() {
                let _turn =
                    if $backend == Backend::Timescaledb { Some(TIMESCALE_TURN.lock().await) } else { None };
                own_events_in_process_others_from_the_database($backend).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn deliveries_are_retried_and_sent_once() {
                let _turn =
                    if $backend == Backend::Timescaledb { Some(TIMESCALE_TURN.lock().await) } else { None };
                delivery_retries($backend).await;
            }
        }
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anomalous_traffic_fires_on_sqlite() {
    traffic_anomaly(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anomalous_traffic_fires_on_postgres() {
    traffic_anomaly(Backend::Postgres).await;
}

suite!(sqlite, Backend::Sqlite);
suite!(postgres, Backend::Postgres);
suite!(timescaledb, Backend::Timescaledb);

/// Only one instance leads; when its connection goes, another takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_on_postgres_and_takeover_when_it_goes() {
    let a = fresh(Backend::Postgres, "alert_leader").await;
    let url = common::database_url("CONTEXT_TEST_POSTGRES_URL");
    let (server, _) = url.rsplit_once('/').unwrap();
    let config = StorageConfig {
        url: format!("{server}/alert_leader"),
        timescaledb: TimescaleMode::Off,
        ..Default::default()
    };
    let b = storage::open(&config, &RetentionConfig::default(), &std::env::temp_dir()).unwrap();
    b.prepare().await.unwrap();
    assert!(a.lead(LEADER_LOCK).await.unwrap());
    assert!(a.lead(LEADER_LOCK).await.unwrap(), "keeps leading");
    assert!(!b.lead(LEADER_LOCK).await.unwrap(), "one leader at a time");
    a.resign().await;
    assert!(b.lead(LEADER_LOCK).await.unwrap(), "takes over once the leader's session ends");
    assert!(!a.lead(LEADER_LOCK).await.unwrap());
    b.close().await;
    a.close().await;
}
