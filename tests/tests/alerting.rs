//! Alerting end to end: the real host with the real plugin `.so`, failing
//! searches that cross a rule's threshold, and notifications checked where
//! they arrive — real HTTP receivers on 127.0.0.1 for the webhook (HMAC
//! signed) and Slack (Block Kit payload) channels, and the external
//! file-channel `.so`. Fire, repeat, acknowledge, resolve, silence; a
//! receiver down then up gets each notification once; two hosts on one
//! PostgreSQL notify once and the survivor takes over when the leader dies.

use std::{
    collections::BTreeSet,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use context_e2e::{ANALYTICS, Host, HostSpec, Postgres, Received, Receiver, Scratch, artifact, write_files};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

const SECRET: &str = "webhook-test-secret";
const FILE_CHANNEL: &str = "libfile_channel.so";

fn project(scratch: &Scratch) -> std::path::PathBuf {
    let root = scratch.path().join("sample");
    write_files(
        &root,
        &[("src/main.rs", b"fn main() { let needle = 1; }\n"), ("src/lib.rs", b"pub fn needle() {}\n")],
    );
    root
}

/// The plugin's config: a rule on the search error rate with short
/// windows, the given channels, and optional storage.
fn config(storage: Option<&str>, channels: &str) -> String {
    let storage = storage
        .map(|url| format!("[plugins.analytics.config.storage]\nurl = \"{url}\"\n"))
        .unwrap_or_default();
    format!(
        r#"{storage}
[plugins.analytics.config.alerting]
evaluation_interval = "250ms"
keep_firing_for = "0s"
default_rules = false
channels_dir = "channels"
external_url = "http://context.example"

[plugins.analytics.config.alerting.delivery]
timeout = "2s"
initial_backoff = "200ms"
max_backoff = "1s"
horizon = "5m"

[[plugins.analytics.config.alerting.rules]]
name = "SearchErrors"
measure = "search_error_rate"
window = "3s"
op = ">"
threshold = 0.5
for = "1s"
severity = "critical"
min_samples = 3
per_project = true
repeat_interval = "3s"
labels = {{ team = "search" }}
annotations = {{ summary = "search errors of {{{{ $labels.project }}}} at {{{{ $value }}}}", runbook_url = "https://runbooks.example/search-errors" }}
{channels}"#
    )
}

fn webhook(receiver: &Receiver) -> String {
    format!(
        r#"
[[plugins.analytics.config.alerting.channels]]
name = "hook"
kind = "webhook"
[plugins.analytics.config.alerting.channels.options]
url = "{}"
secret_env = "HOOK_SECRET"
"#,
        receiver.url("/hook")
    )
}

fn spec(scratch: &Scratch, config: String) -> HostSpec {
    HostSpec {
        libraries: vec![artifact(ANALYTICS)],
        plugins: vec![("analytics".into(), true, config)],
        projects: vec![("sample".into(), project(scratch))],
        env: vec![("HOOK_SECRET".into(), SECRET.into())],
        ..Default::default()
    }
}

/// Sends failing searches (an invalid regex) until stopped.
struct Failing(Arc<AtomicBool>, Option<thread::JoinHandle<()>>);

impl Failing {
    fn start(base_url: &str) -> Failing {
        let on = Arc::new(AtomicBool::new(true));
        let (flag, url) =
            (on.clone(), format!("{base_url}/api/v1/search?project=sample&kind=regex&q=(needle"));
        let handle = thread::spawn(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
            while flag.load(Ordering::SeqCst) {
                let _ = agent.get(&url).header("X-Context-User", "tester").call();
                thread::sleep(Duration::from_millis(100));
            }
        });
        Failing(on, Some(handle))
    }

    fn stop(mut self) {
        self.0.store(false, Ordering::SeqCst);
        if let Some(h) = self.1.take() {
            h.join().unwrap();
        }
    }
}

impl Drop for Failing {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

fn verify_signature(r: &Received) {
    let header = r.headers.get("x-context-signature").unwrap_or_else(|| panic!("no signature: {r:?}"));
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(r.body.as_bytes());
    let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(header, &format!("sha256={expected}"), "HMAC-SHA256 of the body with the shared secret");
}

fn statuses(got: &[Received]) -> Vec<(String, u64)> {
    got.iter()
        .map(|r| (r.json()["status"].as_str().unwrap().to_owned(), r.json()["repeat"].as_u64().unwrap()))
        .collect()
}

fn ids_distinct(got: &[Received]) {
    let ids: Vec<String> = got.iter().map(|r| r.json()["id"].as_str().unwrap().to_owned()).collect();
    let set: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(set.len(), ids.len(), "a notification arrived twice: {ids:?}");
}

const LIMIT: Duration = Duration::from_secs(20);

#[test]
fn fire_repeat_acknowledge_resolve_and_silence_reach_webhook_slack_and_an_external_channel() {
    let hook = Receiver::start();
    let slack = Receiver::start();
    let scratch = Scratch::new("alerting-e2e");
    let notes = scratch.path().join("notifications.ndjson");
    let channels = format!(
        r##"{}
[[plugins.analytics.config.alerting.channels]]
name = "oncall-slack"
kind = "slack"
severities = ["critical"]
match = {{ team = "search" }}
[plugins.analytics.config.alerting.channels.options]
url = "{}"
channel = "#search-oncall"

[[plugins.analytics.config.alerting.channels]]
name = "archive"
kind = "file"
send_resolved = false
[plugins.analytics.config.alerting.channels.options]
path = "{}"

[[plugins.analytics.config.alerting.channels]]
name = "journal"
kind = "log"
severities = ["critical"]

[[plugins.analytics.config.alerting.channels]]
name = "other-team"
kind = "log"
match = {{ team = "storage" }}
"##,
        webhook(&hook),
        slack.url("/services/T000/B000/XXXX"),
        notes.display()
    );
    let host_dir = Scratch::new("alerting-host");
    // Relative to the plugin's own data folder.
    let channels_dir = host_dir.path().join("data/plugins/analytics/channels");
    std::fs::create_dir_all(&channels_dir).unwrap();
    std::fs::copy(artifact(FILE_CHANNEL), channels_dir.join(FILE_CHANNEL)).unwrap();
    let host = Host::start_in(host_dir, spec(&scratch, config(None, &channels)));
    host.wait_indexed(1);

    // Every kind is listed, the external one with its path.
    let (status, listed) = host.get_json("/api/v1/analytics/alerts/channels", "ops");
    assert_eq!(status, 200, "{listed}\n{}", host.log());
    let kinds: Vec<&str> =
        listed["kinds"].as_array().unwrap().iter().map(|k| k["kind"].as_str().unwrap()).collect();
    for kind in ["alertmanager", "email", "file", "log", "slack", "webhook"] {
        assert!(kinds.contains(&kind), "{kind} missing from {listed}");
    }
    let file_kind = listed["kinds"].as_array().unwrap().iter().find(|k| k["kind"] == "file").unwrap();
    assert_eq!(file_kind["source"], "external");
    assert!(file_kind["path"].as_str().unwrap().ends_with(FILE_CHANNEL), "{file_kind}");
    assert_eq!(listed["channels"].as_array().unwrap().len(), 5);

    // Fire.
    let failing = Failing::start(&host.base_url);
    let got = hook.wait("the firing notification", LIMIT, |g| !g.is_empty());
    let first = got[0].json();
    verify_signature(&got[0]);
    assert_eq!(first["status"], "firing");
    assert_eq!(first["rule"], "SearchErrors");
    assert_eq!(first["severity"], "critical");
    assert_eq!(first["labels"]["project"], "sample");
    assert_eq!(first["labels"]["alertname"], "SearchErrors");
    assert_eq!(first["labels"]["team"], "search");
    assert_eq!(first["threshold"], 0.5);
    assert!(first["value"].as_f64().unwrap() > 0.5, "{first}");
    assert!(
        first["annotations"]["summary"].as_str().unwrap().starts_with("search errors of sample at "),
        "{first}"
    );
    assert!(
        first["generator_url"]
            .as_str()
            .unwrap()
            .starts_with("http://context.example/api/v1/analytics/alerts?fingerprint=")
    );
    let fingerprint = first["fingerprint"].as_str().unwrap().to_owned();

    let s = slack.wait("the Slack message", LIMIT, |g| !g.is_empty());
    let message = s[0].json();
    assert_eq!(s[0].path, "/services/T000/B000/XXXX");
    assert_eq!(message["channel"], "#search-oncall");
    assert!(message["text"].as_str().unwrap().contains("SearchErrors"), "{message}");
    let blocks = message["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    assert!(blocks[0]["text"]["text"].as_str().unwrap().contains("SearchErrors"), "{message}");

    // The external .so channel wrote the same notification.
    host.wait_until("the file channel's line", || {
        std::fs::read_to_string(&notes).is_ok_and(|t| !t.is_empty())
    });
    let line: Value =
        serde_json::from_str(std::fs::read_to_string(&notes).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(line["id"], first["id"]);

    // The API shows it firing, with its annotations filled in.
    let (_, active) = host.get_json("/api/v1/analytics/alerts?state=firing", "ops");
    let alert = &active["alerts"][0];
    assert_eq!(alert["fingerprint"], fingerprint.as_str());
    assert_eq!(alert["labels"]["project"], "sample");
    assert!(alert["annotations"]["summary"].as_str().unwrap().starts_with("search errors of sample"));
    assert_eq!(active["leader"], true);

    // Repeat after 3 s while still firing.
    let got = hook.wait("the repeat", LIMIT, |g| g.len() >= 2);
    assert_eq!(statuses(&got)[..2], [("firing".to_owned(), 0), ("firing".to_owned(), 1)]);

    // Acknowledged: no more repeats while it fires.
    let (status, body) = host.post_json(
        &format!("/api/v1/analytics/alerts/{fingerprint}/ack"),
        "ops",
        &json!({"by": "ana", "comment": "on it"}),
    );
    assert_eq!(status, 200, "{body}");
    let acked_at = hook.received().len();
    thread::sleep(Duration::from_secs(5));
    assert_eq!(hook.received().len(), acked_at, "no repeat after the acknowledgement");
    let (_, active) = host.get_json("/api/v1/analytics/alerts", "ops");
    assert_eq!(active["alerts"][0]["acknowledgement"]["by"], "ana");
    let (status, body) = host.post_json("/api/v1/analytics/alerts/nope/ack", "ops", &json!({"by": "ana"}));
    assert_eq!(status, 404, "{body}");
    let (status, body) = host.post_json(
        &format!("/api/v1/analytics/alerts/{fingerprint}/ack"),
        "ops",
        &json!({"comment": "x"}),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("missing field `by`"), "{body}");

    // Resolve: the errors leave the 3-second window.
    failing.stop();
    let got =
        hook.wait("the resolved notification", LIMIT, |g| g.iter().any(|r| r.json()["status"] == "resolved"));
    let resolved = got.iter().find(|r| r.json()["status"] == "resolved").unwrap().json();
    assert_eq!(resolved["fingerprint"], fingerprint.as_str());
    assert!(resolved["ends_at"].is_string());
    let (_, active) = host.get_json("/api/v1/analytics/alerts", "ops");
    assert_eq!(active["alerts"].as_array().unwrap().len(), 0, "{active}");
    ids_distinct(&hook.received());

    // Silence project=sample, fail again: firing, but nobody is told...
    let (status, silence) = host.post_json(
        "/api/v1/analytics/alerts/silences",
        "ops",
        &json!({"matchers": [{"name": "project", "value": "sample"}], "duration": "10m", "created_by": "ana", "comment": "deploy"}),
    );
    assert_eq!(status, 201, "{silence}");
    let silence: Value = serde_json::from_str(&silence).unwrap();
    assert_eq!(silence["status"], "active");
    let before = hook.received().len();
    let failing = Failing::start(&host.base_url);
    host.wait_until("the silenced alert to fire", || {
        let (_, a) = host.get_json("/api/v1/analytics/alerts?state=firing", "ops");
        a["alerts"].as_array().is_some_and(|a| a.len() == 1 && a[0]["silenced_by"][0] == silence["id"])
    });
    thread::sleep(Duration::from_secs(1));
    assert_eq!(hook.received().len(), before, "silenced");
    // ...until the silence is expired.
    let id = silence["id"].as_str().unwrap();
    let response =
        ureq::delete(format!("{}/api/v1/analytics/alerts/silences/{id}", host.base_url)).call().unwrap();
    assert_eq!(response.status(), 204);
    let got = hook.wait("the notification after the silence", LIMIT, |g| g.len() > before);
    assert_eq!(got[before].json()["status"], "firing");
    failing.stop();

    // History, newest first, names every step.
    let (_, history) =
        host.get_json("/api/v1/analytics/alerts/history?rule=SearchErrors&timerange=1h", "ops");
    let events: Vec<&str> =
        history["events"].as_array().unwrap().iter().rev().map(|e| e["event"].as_str().unwrap()).collect();
    for (a, b) in [
        ("pending", "firing"),
        ("firing", "notified"),
        ("notified", "repeat"),
        ("acknowledged", "resolved"),
        ("silenced", "notified"),
    ] {
        let ia = events.iter().position(|e| *e == a).unwrap_or_else(|| panic!("{a} missing: {events:?}"));
        assert!(events[ia..].contains(&b), "{b} after {a}: {events:?}");
    }
    // The log channel wrote each firing notification to the host log once:
    // the channel matching team=storage got none.
    for r in hook.received() {
        let id = r.json()["id"].as_str().unwrap().to_owned();
        host.wait_until("the log channel's line", || host.log_lines(&format!(" id={id} ")).len() == 1);
        assert!(
            host.log_lines(&format!(" id={id} "))[0].contains("alert FIRING critical rule=\"SearchErrors\"")
                || r.json()["status"] == "resolved"
        );
    }
    assert_eq!(
        slack.received().len(),
        hook.received().len(),
        "slack routes critical team=search: all of them"
    );
    // The archive does not take resolutions (send_resolved = false).
    let archived = std::fs::read_to_string(&notes).unwrap();
    assert!(archived.lines().all(|l| !l.contains("\"resolved\"")), "{archived}");
    ids_distinct(&hook.received());
    let metrics = host.metrics();
    assert!(
        metrics.sum(
            "context_analytics_alert_notifications_total",
            &["channel=\"hook\"", "outcome=\"delivered\""]
        ) >= 4.0
    );
    assert_eq!(metrics.value("context_analytics_alert_leader"), 1.0);
}

#[test]
fn a_receiver_down_then_up_gets_each_notification_exactly_once() {
    // A port with nothing listening: connections are refused.
    let port = context_e2e::free_port();
    let scratch = Scratch::new("alerting-down");
    let channels = format!(
        r#"
[[plugins.analytics.config.alerting.channels]]
name = "hook"
kind = "webhook"
[plugins.analytics.config.alerting.channels.options]
url = "http://127.0.0.1:{port}/hook"
"#
    );
    let host = Host::start(spec(&scratch, config(None, &channels)));
    host.wait_indexed(1);
    let failing = Failing::start(&host.base_url);
    host.wait_until("failed attempts", || {
        host.metrics().sum("context_analytics_alert_notifications_total", &["outcome=\"retry\""]) >= 3.0
    });
    // Back up: the queued firing notification arrives, once.
    let hook = Receiver::start_on(port);
    let got = hook.wait("the firing notification", LIMIT, |g| !g.is_empty());
    assert_eq!(got[0].json()["status"], "firing");
    failing.stop();
    let got =
        hook.wait("the resolved notification", LIMIT, |g| g.iter().any(|r| r.json()["status"] == "resolved"));
    thread::sleep(Duration::from_secs(2));
    let got_all = hook.received();
    assert_eq!(got_all.len(), got.len(), "nothing more arrives");
    // (a repeat may come in between: the errors stay in the window a while)
    let changes: Vec<(String, u64)> =
        statuses(&got_all).into_iter().filter(|(_, repeat)| *repeat == 0).collect();
    assert_eq!(changes, [("firing".to_owned(), 0), ("resolved".to_owned(), 0)]);
    ids_distinct(&got_all);
    let (_, dead) = host.get_json("/api/v1/analytics/alerts/dead-letters", "ops");
    assert_eq!(dead["dead_letters"].as_array().unwrap().len(), 0, "{dead}");

    // A receiver refusing the payload for good (400) gives a dead letter.
    hook.answer(400);
    let failing = Failing::start(&host.base_url);
    host.wait_until("a dead letter", || {
        let (_, dead) = host.get_json("/api/v1/analytics/alerts/dead-letters", "ops");
        dead["dead_letters"].as_array().is_some_and(|d| !d.is_empty())
    });
    failing.stop();
    let (_, dead) = host.get_json("/api/v1/analytics/alerts/dead-letters", "ops");
    let letter = &dead["dead_letters"][0];
    assert_eq!(letter["channel"], "hook");
    assert!(letter["last_error"].as_str().unwrap().contains("400"), "{letter}");
    assert_eq!(letter["notification"]["rule"], "SearchErrors");
    assert!(host.metrics().sum("context_analytics_alert_dead_letters_total", &["channel=\"hook\""]) >= 1.0);
}

fn leader(host: &Host) -> bool {
    let (status, health) = host.get_json("/api/v1/analytics/health", "ops");
    status == 200 && health["alerting"]["leader"] == true
}

#[test]
fn two_hosts_on_one_postgres_notify_once_and_the_survivor_takes_over() {
    let pg = Postgres::start();
    let hook = Receiver::start();
    let scratch = Scratch::new("alerting-two");
    let start = |id: &str| {
        let mut s = spec(&scratch, config(Some(&pg.url), &webhook(&hook)));
        s.instance_id = Some(id.to_owned());
        Host::start(s)
    };
    let a = start("host-a");
    let b = start("host-b");
    a.wait_indexed(1);
    b.wait_indexed(1);
    a.wait_until("one leader", || leader(&a) != leader(&b));
    let failing = Failing::start(&a.base_url);
    hook.wait("the firing notification", LIMIT, |g| !g.is_empty());
    // Both evaluate the shared database; only the leader notifies.
    thread::sleep(Duration::from_secs(1));
    let firing: Vec<Received> = hook.received().into_iter().filter(|r| r.json()["repeat"] == 0).collect();
    assert_eq!(firing.len(), 1, "one notification for two hosts: {firing:#?}");

    // Kill the leader; the other takes over within a few evaluations and
    // sends the resolution.
    let (leader_host, survivor) = if leader(&a) { (a, b) } else { (b, a) };
    failing.stop();
    let failing = Failing::start(&survivor.base_url);
    let killed = std::time::Instant::now();
    leader_host.kill9();
    survivor.wait_until("the survivor to lead", || leader(&survivor));
    eprintln!("takeover after {:?} (evaluation interval 250 ms)", killed.elapsed());
    failing.stop();
    let got =
        hook.wait("the resolved notification", LIMIT, |g| g.iter().any(|r| r.json()["status"] == "resolved"));
    thread::sleep(Duration::from_secs(1));
    ids_distinct(&hook.received());
    assert_eq!(got.iter().filter(|r| r.json()["status"] == "resolved").count(), 1);
    assert_eq!(
        hook.received().iter().filter(|r| r.json()["repeat"] == 0 && r.json()["status"] == "firing").count(),
        1
    );
}
