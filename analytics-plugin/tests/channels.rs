//! The alert channels against real receivers on 127.0.0.1: HTTP receivers
//! (axum) that check the payloads, a real SMTP server (aiosmtpd, Debian's
//! `python3-aiosmtpd`), a real Alertmanager (Debian's
//! `prometheus-alertmanager`, queried with `amtool`), and the external
//! `file` channel `.so` loaded from a folder.
//!
//! Tools a test needs and does not find make it fail with what to install
//! (`scripts/install-deps.sh` installs them all). The external-channel test
//! needs `cargo build --workspace` (or `-p file-channel`) first.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    io::{BufRead, BufReader},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use abi_stable::std_types::{RStr, RString};
use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use context_analytics::alerting::{
    channel::{
        Channel, ChannelContext, ChannelSource, DeliveryError, Notification, NotificationStatus, Severity,
    },
    channels::ChannelRegistry,
};
use hmac::{Hmac, KeyInit, Mac};
use plugin_api::{HostContext, HostLogger, HostServices, LogLevel};
use serde_json::Value;
use sha2::Sha256;

// ---------------------------------------------------------------- helpers

static LOG_LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

extern "C" fn capture_log(level: LogLevel, target: RStr<'_>, message: RStr<'_>) {
    LOG_LINES.lock().unwrap().push(format!("{level:?} {target} {message}"));
}

fn logger() -> HostLogger {
    let host = HostContext {
        plugin_name: RString::from("analytics"),
        host_name: RString::from("test"),
        host_version: RString::from("0"),
        instance_id: RString::from("test"),
        data_dir: RString::from(std::env::temp_dir().to_string_lossy().as_ref()),
        services: HostServices::leak(capture_log),
    };
    host.logger("alerting")
}

fn env(name: &str) -> Option<String> {
    match name {
        "TEST_WEBHOOK_SECRET" => Some("s3cret-key".to_owned()),
        "TEST_SMTP_USER" => Some("alerts".to_owned()),
        "TEST_SMTP_PASSWORD" => Some("s3cret".to_owned()),
        "TEST_SMTP_BAD_PASSWORD" => Some("wrong".to_owned()),
        "TEST_EMPTY" => Some(String::new()),
        _ => None,
    }
}

/// Builds a channel of `kind` named `name` from TOML options.
fn build_with(
    registry: &ChannelRegistry,
    kind: &str,
    name: &str,
    options: &str,
    timeout: Duration,
) -> Result<Arc<dyn Channel>, String> {
    let options: toml::Table = toml::from_str(options).expect("test options are TOML");
    let ctx = ChannelContext { name, options: &options, env: &env, timeout, logger: logger() };
    registry.build(kind, &ctx)
}

fn build(kind: &str, options: &str) -> Arc<dyn Channel> {
    build_with(&ChannelRegistry::builtin(), kind, "test", options, Duration::from_secs(5)).unwrap()
}

fn build_err(kind: &str, options: &str) -> String {
    match build_with(&ChannelRegistry::builtin(), kind, "ops", options, Duration::from_secs(5)) {
        Ok(_) => panic!("{kind} accepted {options}"),
        Err(e) => e,
    }
}

fn notification(status: NotificationStatus) -> Notification {
    let labels = BTreeMap::from([
        ("alertname".to_owned(), "SearchLatencyHigh".to_owned()),
        ("severity".to_owned(), "critical".to_owned()),
        ("project".to_owned(), "web".to_owned()),
    ]);
    let annotations = BTreeMap::from([
        ("summary".to_owned(), "p95 search latency is 2.4 s".to_owned()),
        ("description".to_owned(), "p95 over 5m is above 2 s <threshold> & rising".to_owned()),
        ("runbook_url".to_owned(), "https://runbooks.example.com/latency".to_owned()),
    ]);
    Notification {
        id: format!("3f2a9c1d0b7e4a56-{}", if status == NotificationStatus::Firing { 1 } else { 2 }),
        status,
        rule: "SearchLatencyHigh".to_owned(),
        severity: Severity::Critical,
        fingerprint: "3f2a9c1d0b7e4a56".to_owned(),
        labels,
        annotations,
        value: Some(2.4),
        threshold: Some(2.0),
        starts_at: "2026-11-28T09:00:00Z".to_owned(),
        ends_at: (status == NotificationStatus::Resolved).then(|| "2026-11-28T09:30:00Z".to_owned()),
        generator_url: "http://127.0.0.1:8080/api/v1/analytics/alerts?fingerprint=3f2a9c1d0b7e4a56"
            .to_owned(),
        repeat: 0,
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A folder removed at drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(label: &str) -> Scratch {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "channels-{label}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed at drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn require_tool(path: &str, install: &str) {
    assert!(
        Path::new(path).exists() || which(path),
        "{path} is missing: install {install} (scripts/install-deps.sh does)"
    );
}

fn which(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
        .unwrap_or(false)
}

// ---------------------------------------------------------- HTTP receiver

/// What a receiver answers, in order; the last answer repeats.
#[derive(Clone)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, &'static str)>,
    body: &'static str,
    delay: Duration,
}

fn reply(status: u16) -> Reply {
    Reply { status, headers: Vec::new(), body: "", delay: Duration::ZERO }
}

#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }
}

#[derive(Clone)]
struct ReceiverState {
    script: Arc<Mutex<VecDeque<Reply>>>,
    received: Arc<Mutex<Vec<Received>>>,
}

async fn receive(State(state): State<ReceiverState>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let headers = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
        .collect();
    state.received.lock().unwrap().push(Received {
        path: uri.path().to_owned(),
        headers,
        body: body.to_vec(),
    });
    let answer = {
        let mut script = state.script.lock().unwrap();
        if script.len() > 1 {
            script.pop_front().unwrap()
        } else {
            script.front().cloned().unwrap_or_else(|| reply(200))
        }
    };
    tokio::time::sleep(answer.delay).await;
    let mut response = (StatusCode::from_u16(answer.status).unwrap(), answer.body).into_response();
    for (name, value) in answer.headers {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    response
}

/// Starts a receiver on 127.0.0.1; returns its base URL and what it got.
async fn receiver(script: Vec<Reply>) -> (String, Arc<Mutex<Vec<Received>>>) {
    let state = ReceiverState { script: Arc::new(Mutex::new(script.into())), received: Arc::default() };
    let received = Arc::clone(&state.received);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = Router::new().fallback(receive).with_state(state);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{address}"), received)
}

fn expect_retry(result: Result<(), DeliveryError>) -> (String, Option<Duration>) {
    match result {
        Err(DeliveryError::Retry { reason, after }) => (reason, after),
        other => panic!("expected Retry, got {other:?}"),
    }
}

fn expect_permanent(result: Result<(), DeliveryError>) -> String {
    match result {
        Err(DeliveryError::Permanent { reason }) => reason,
        other => panic!("expected Permanent, got {other:?}"),
    }
}

// ----------------------------------------------------------------- webhook

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_posts_the_notification_signed_with_hmac() {
    let (url, received) = receiver(vec![reply(204)]).await;
    let channel = build(
        "webhook",
        &format!(
            "url = \"{url}/hooks/alerts\"\nsecret_env = \"TEST_WEBHOOK_SECRET\"\nheaders = {{ \"X-Team\" = \"search\" }}"
        ),
    );
    let sent = notification(NotificationStatus::Firing);
    channel.deliver(&sent).await.unwrap();

    let got = received.lock().unwrap()[0].clone();
    assert_eq!(got.path, "/hooks/alerts");
    assert_eq!(got.headers["content-type"], "application/json");
    assert_eq!(got.headers["x-team"], "search");
    // Verify the signature as a receiver would: HMAC-SHA256 of the raw body.
    let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret-key").unwrap();
    mac.update(&got.body);
    let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(got.headers["x-context-signature"], format!("sha256={expected}"));

    let body = got.json();
    assert_eq!(body["id"], "3f2a9c1d0b7e4a56-1");
    assert_eq!(body["status"], "firing");
    assert_eq!(body["rule"], "SearchLatencyHigh");
    assert_eq!(body["severity"], "critical");
    assert_eq!(body["labels"]["project"], "web");
    assert_eq!(body["annotations"]["summary"], "p95 search latency is 2.4 s");
    assert_eq!(body["value"], 2.4);
    assert_eq!(body["threshold"], 2.0);
    assert_eq!(body["starts_at"], "2026-11-28T09:00:00Z");
    assert_eq!(body["ends_at"], Value::Null);
    // The body is the notification, whole.
    let back: Notification = serde_json::from_value(body).unwrap();
    assert_eq!(back, sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_speaks_the_alertmanager_v4_shape() {
    let (url, received) = receiver(vec![reply(200)]).await;
    let channel = build("webhook", &format!("url = \"{url}/am\"\nformat = \"alertmanager\""));
    channel.deliver(&notification(NotificationStatus::Resolved)).await.unwrap();
    channel.deliver(&notification(NotificationStatus::Firing)).await.unwrap();

    let got = received.lock().unwrap().clone();
    assert!(!got[0].headers.contains_key("x-context-signature"), "no secret, no signature");
    let resolved = got[0].json();
    assert_eq!(resolved["version"], "4");
    assert_eq!(resolved["status"], "resolved");
    assert_eq!(resolved["receiver"], "test");
    assert_eq!(resolved["groupKey"], "{}:{alertname=\"SearchLatencyHigh\"}");
    assert_eq!(resolved["truncatedAlerts"], 0);
    assert_eq!(resolved["groupLabels"], serde_json::json!({"alertname": "SearchLatencyHigh"}));
    assert_eq!(resolved["commonLabels"]["project"], "web");
    assert_eq!(resolved["commonAnnotations"]["summary"], "p95 search latency is 2.4 s");
    assert_eq!(resolved["externalURL"], "http://127.0.0.1:8080");
    let alerts = resolved["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1);
    let alert = &alerts[0];
    assert_eq!(alert["status"], "resolved");
    assert_eq!(alert["labels"]["alertname"], "SearchLatencyHigh");
    assert_eq!(alert["labels"]["severity"], "critical");
    assert_eq!(alert["annotations"]["runbook_url"], "https://runbooks.example.com/latency");
    assert_eq!(alert["startsAt"], "2026-11-28T09:00:00Z");
    assert_eq!(alert["endsAt"], "2026-11-28T09:30:00Z");
    assert_eq!(alert["generatorURL"], notification(NotificationStatus::Resolved).generator_url);
    assert_eq!(alert["fingerprint"], "3f2a9c1d0b7e4a56");

    let firing = got[1].json();
    assert_eq!(firing["status"], "firing");
    assert_eq!(firing["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_outcomes_are_classified() {
    let firing = notification(NotificationStatus::Firing);

    // 5xx, 408 and 429 are retried; 429's Retry-After is kept.
    for status in [500, 502, 503, 408] {
        let (url, _) = receiver(vec![reply(status)]).await;
        let (reason, after) =
            expect_retry(build("webhook", &format!("url = \"{url}\"")).deliver(&firing).await);
        assert!(reason.contains(&status.to_string()), "{reason}");
        assert_eq!(after, None);
    }
    let limited = Reply { headers: vec![("retry-after", "3")], ..reply(429) };
    let (url, _) = receiver(vec![limited]).await;
    let (_, after) = expect_retry(build("webhook", &format!("url = \"{url}\"")).deliver(&firing).await);
    assert_eq!(after, Some(Duration::from_secs(3)));

    // Other 4xx are permanent, with the status and a body excerpt.
    let refused = Reply { body: "unknown field \"value\"\nat line 1", ..reply(400) };
    let (url, _) = receiver(vec![refused]).await;
    let reason = expect_permanent(build("webhook", &format!("url = \"{url}\"")).deliver(&firing).await);
    assert!(reason.contains("400") && reason.contains("unknown field \"value\" at line 1"), "{reason}");
    let (url, _) = receiver(vec![reply(404)]).await;
    expect_permanent(build("webhook", &format!("url = \"{url}\"")).deliver(&firing).await);
    // Redirects are not followed (the POST must reach the configured URL).
    let moved = Reply { headers: vec![("location", "https://elsewhere.example.com/")], ..reply(301) };
    let (url, received) = receiver(vec![moved]).await;
    let reason = expect_permanent(build("webhook", &format!("url = \"{url}\"")).deliver(&firing).await);
    assert!(reason.contains("elsewhere.example.com"), "{reason}");
    assert_eq!(received.lock().unwrap().len(), 1);

    // Nobody listening: retried.
    let port = free_port();
    let (reason, _) =
        expect_retry(build("webhook", &format!("url = \"http://127.0.0.1:{port}/\"")).deliver(&firing).await);
    assert!(reason.contains("connection"), "{reason}");

    // A receiver slower than the timeout: retried, within the timeout.
    let slow = Reply { delay: Duration::from_secs(5), ..reply(200) };
    let (url, _) = receiver(vec![slow]).await;
    let channel = build_with(
        &ChannelRegistry::builtin(),
        "webhook",
        "slow",
        &format!("url = \"{url}\""),
        Duration::from_millis(300),
    )
    .unwrap();
    let started = Instant::now();
    let (reason, _) = expect_retry(channel.deliver(&firing).await);
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert!(reason.contains("timed out"), "{reason}");
}

// ------------------------------------------------------------------- slack

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_sends_blocks_and_honours_retry_after() {
    let limited = Reply { headers: vec![("retry-after", "2")], body: "rate_limited", ..reply(429) };
    let ok = Reply { body: "ok", ..reply(200) };
    let (url, received) = receiver(vec![limited, ok]).await;
    let channel =
        build("slack", &format!("url = \"{url}/services/T000/B000/XXXX\"\nchannel = \"#search-oncall\""));
    let firing = notification(NotificationStatus::Firing);

    let (reason, after) = expect_retry(channel.deliver(&firing).await);
    assert_eq!(after, Some(Duration::from_secs(2)));
    assert!(reason.contains("429") && reason.contains("rate_limited"), "{reason}");
    assert!(!reason.contains("XXXX"), "the webhook path is a secret: {reason}");
    channel.deliver(&firing).await.unwrap();
    channel.deliver(&notification(NotificationStatus::Resolved)).await.unwrap();

    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].body, got[1].body, "a retry resends the same payload");
    assert_eq!(got[1].path, "/services/T000/B000/XXXX");
    let body = got[1].json();
    assert_eq!(body["channel"], "#search-oncall");
    let text = body["text"].as_str().unwrap();
    assert!(
        text.contains("FIRING")
            && text.contains("SearchLatencyHigh")
            && text.contains("p95 search latency is 2.4 s"),
        "{text}"
    );
    let blocks = body["blocks"].as_array().unwrap();
    let types: Vec<&str> = blocks.iter().map(|b| b["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["header", "section", "context"]);
    // header: plain_text only, at most 150 characters.
    assert_eq!(blocks[0]["text"]["type"], "plain_text");
    let header = blocks[0]["text"]["text"].as_str().unwrap();
    assert!(header.contains(":rotating_light:") && header.contains("FIRING: SearchLatencyHigh"), "{header}");
    assert!(header.chars().count() <= 150);
    // section: mrkdwn text (escaped) and fields.
    assert_eq!(blocks[1]["text"]["type"], "mrkdwn");
    let section = blocks[1]["text"]["text"].as_str().unwrap();
    assert!(section.contains("&lt;threshold&gt; &amp; rising"), "mrkdwn escaping: {section}");
    let fields: Vec<&str> =
        blocks[1]["fields"].as_array().unwrap().iter().map(|f| f["text"].as_str().unwrap()).collect();
    assert!(fields.contains(&"*Severity*\ncritical"), "{fields:?}");
    assert!(fields.contains(&"*Value*\n2.4") && fields.contains(&"*Threshold*\n2"), "{fields:?}");
    assert!(fields.contains(&"*Project*\nweb"), "{fields:?}");
    assert!(fields.len() <= 10);
    // context: links.
    let links = blocks[2]["elements"][0]["text"].as_str().unwrap();
    assert!(links.contains("|Runbook>") && links.contains("|Open in Context analytics>"), "{links}");
    assert_eq!(body["attachments"][0]["color"], "#A30200");

    let resolved = got[2].json();
    assert!(resolved["blocks"][0]["text"]["text"].as_str().unwrap().contains(":white_check_mark: RESOLVED"));
    assert_eq!(resolved["attachments"][0]["color"], "#2EB67D");
}

// ------------------------------------------------------------ validation

#[test]
fn options_are_checked_with_messages_naming_them() {
    let e = build_err("webhook", "url = \"http://x\"\nformt = \"json\"");
    assert!(
        e.starts_with("alerting.channels.\"ops\".options.formt: unknown option;") && e.contains("`format`"),
        "{e}"
    );
    let e = build_err("webhook", "url = \"http://x\"\nformat = \"xml\"");
    assert_eq!(
        e,
        "alerting.channels.\"ops\".options.format: \"xml\" is not allowed; expected one of \"json\", \"alertmanager\""
    );
    let e = build_err("webhook", "url = \"ftp://x\"");
    assert!(e.starts_with("alerting.channels.\"ops\".options.url: scheme \"ftp\" is not allowed"), "{e}");
    let e = build_err("webhook", "");
    assert!(
        e.starts_with("alerting.channels.\"ops\".options.url: is missing") && e.contains("url_env"),
        "{e}"
    );
    let e = build_err("webhook", "url = \"http://x\"\nsecret_env = \"NOT_SET_ANYWHERE\"");
    assert!(e.contains("options.secret_env: environment variable NOT_SET_ANYWHERE is not set"), "{e}");
    let e = build_err("webhook", "url = \"http://x\"\nheaders = { \"Bad Header\" = \"x\" }");
    assert!(e.contains("options.headers.Bad Header: is not a valid HTTP header name"), "{e}");
    let e = build_err("slack", "url_env = \"NOT_SET_ANYWHERE\"");
    assert!(e.contains("options.url_env: environment variable NOT_SET_ANYWHERE is not set"), "{e}");
    let e = build_err("slack", "url = \"http://x\"\nurl_env = \"TEST_EMPTY\"");
    assert!(e.contains("options.url_env: environment variable TEST_EMPTY is empty"), "{e}");
    let e = build_err("email", "host = \"smtp\"\nfrom = \"a@example.com\"\nto = []");
    assert!(e.contains("options.to: expected a string or a non-empty list"), "{e}");
    let e = build_err("email", "host = \"smtp\"\nfrom = \"not an address\"\nto = \"b@example.com\"");
    assert!(e.contains("options.from: \"not an address\" is not a mail address"), "{e}");
    let e = build_err(
        "email",
        "host = \"smtp\"\nfrom = \"a@example.com\"\nto = \"b@example.com\"\ntls = \"ssl\"",
    );
    assert!(
        e.contains("options.tls: \"ssl\" is not allowed; expected one of \"starttls\", \"tls\", \"none\""),
        "{e}"
    );
    let e =
        build_err("email", "host = \"smtp\"\nfrom = \"a@example.com\"\nto = \"b@example.com\"\nport = 70000");
    assert!(e.contains("options.port: 70000 is out of range; expected 1 to 65535"), "{e}");
    let e = build_err(
        "email",
        "host = \"smtp\"\nfrom = \"a@example.com\"\nto = \"b@example.com\"\nusername_env = \"TEST_SMTP_USER\"",
    );
    assert!(e.contains("options.password_env: is missing while `username_env` is set"), "{e}");
    let e = build_err("alertmanager", "url = \"http://am:9093\"\nreceiver = \"x\"");
    assert!(e.contains("options.receiver: unknown option"), "{e}");
    let e = build_err("log", "level = \"loud\"");
    assert!(e.contains("options.level: \"loud\" is not allowed"), "{e}");

    let e = build_err("pager", "");
    assert_eq!(
        e,
        "alerting.channels.\"ops\".kind: unknown channel kind \"pager\"; known kinds: \
         \"alertmanager\", \"email\", \"log\", \"slack\", \"webhook\""
    );
}

// --------------------------------------------------------------------- log

#[tokio::test]
async fn log_writes_one_line_per_notification_to_the_host_log() {
    let channel = build("log", "");
    channel.deliver(&notification(NotificationStatus::Firing)).await.unwrap();
    channel.deliver(&notification(NotificationStatus::Resolved)).await.unwrap();
    let lines: Vec<String> =
        LOG_LINES.lock().unwrap().iter().filter(|l| l.contains("id=3f2a9c1d0b7e4a56-")).cloned().collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with("Error alerting alert FIRING critical rule=\"SearchLatencyHigh\""),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].contains("summary=\"p95 search latency is 2.4 s\" value=2.4 threshold=2"),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains("project=\"web\""), "{}", lines[0]);
    assert!(lines[1].starts_with("Info alerting alert RESOLVED critical"), "{}", lines[1]);
    assert!(lines[1].contains("ends_at=2026-11-28T09:30:00Z"), "{}", lines[1]);
}

// ------------------------------------------------------------------- email

const PYTHON: &str = "/usr/bin/python3";

struct SmtpServer {
    _proc: Proc,
    port: u16,
    out: Scratch,
}

/// Starts the aiosmtpd receiver (`tests/smtp_receiver.py`); `tls` is
/// `("starttls" | "tls", certificate, key)`.
fn smtp_server(tls: Option<(&str, &Path, &Path)>) -> SmtpServer {
    require_tool(PYTHON, "Debian's python3 and python3-aiosmtpd");
    let probe = Command::new(PYTHON).args(["-c", "import aiosmtpd"]).output().unwrap();
    assert!(
        probe.status.success(),
        "aiosmtpd is missing: install Debian's python3-aiosmtpd (scripts/install-deps.sh does)"
    );
    let out = Scratch::new("smtp");
    let port = free_port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smtp_receiver.py");
    let mut command = Command::new(PYTHON);
    command.arg(script).arg(port.to_string()).arg(&out.0);
    if let Some((mode, cert, key)) = tls {
        command.arg(mode).arg(cert).arg(key);
    }
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "the SMTP receiver did not start");
    SmtpServer { _proc: Proc(child), port, out }
}

impl SmtpServer {
    /// Waits for `count` messages and returns them, oldest first.
    fn messages(&self, count: usize) -> Vec<Value> {
        self.messages_within(count, Duration::from_secs(10))
    }

    fn messages_within(&self, count: usize, wait: Duration) -> Vec<Value> {
        let deadline = Instant::now() + wait;
        loop {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&self.out.0)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "json"))
                .collect();
            if files.len() >= count || Instant::now() > deadline {
                files.sort();
                return files
                    .iter()
                    .map(|f| serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap())
                    .collect();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_reaches_a_real_smtp_server_with_text_and_html() {
    let server = smtp_server(None);
    let channel = build(
        "email",
        &format!(
            "host = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nfrom = \"Context alerts <alerts@example.com>\"\n\
             to = [\"oncall@example.com\", \"Team Lead <lead@example.com>\"]",
            server.port
        ),
    );
    channel.deliver(&notification(NotificationStatus::Firing)).await.unwrap();
    channel.deliver(&notification(NotificationStatus::Resolved)).await.unwrap();

    let messages = server.messages(2);
    assert_eq!(messages.len(), 2);
    let firing = &messages[0];
    assert_eq!(firing["mail_from"], "alerts@example.com");
    assert_eq!(firing["rcpt_tos"], serde_json::json!(["oncall@example.com", "lead@example.com"]));
    assert_eq!(firing["tls"], false);
    assert_eq!(firing["subject"], "[FIRING critical] SearchLatencyHigh: p95 search latency is 2.4 s");
    assert_eq!(firing["from"], "Context alerts <alerts@example.com>");
    assert!(firing["to"].as_str().unwrap().contains("Team Lead <lead@example.com>"), "{}", firing["to"]);
    assert_eq!(firing["message_id"], "<3f2a9c1d0b7e4a56-1@context-analytics>");
    assert_eq!(firing["content_type"], "multipart/alternative");
    // Mail lines end in CRLF.
    let text = firing["parts"]["text/plain"].as_str().unwrap().replace("\r\n", "\n");
    assert!(text.starts_with("p95 search latency is 2.4 s\n"), "{text}");
    assert!(text.contains("p95 over 5m is above 2 s <threshold> & rising"), "{text}");
    assert!(text.contains("Value        2.4") && text.contains("Threshold    2\n"), "{text}");
    assert!(text.contains("Runbook: https://runbooks.example.com/latency"), "{text}");
    let html = firing["parts"]["text/html"].as_str().unwrap().replace("\r\n", "\n");
    assert!(html.contains("<h2") && html.contains("p95 search latency is 2.4 s</h2>"), "{html}");
    assert!(html.contains("&lt;threshold&gt; &amp; rising"), "HTML escaping: {html}");
    assert!(html.contains("<th align=\"left\">Severity</th><td>critical</td>"), "{html}");
    assert!(html.contains("href=\"https://runbooks.example.com/latency\""), "{html}");

    let resolved = &messages[1];
    assert_eq!(resolved["subject"], "[RESOLVED critical] SearchLatencyHigh: p95 search latency is 2.4 s");
    assert!(
        resolved["parts"]["text/plain"].as_str().unwrap().contains("Resolved     2026-11-28T09:30:00Z"),
        "{resolved}"
    );
}

/// A private CA and a server certificate for `localhost` and 127.0.0.1.
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    require_tool("openssl", "Debian's openssl");
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    run(&[
        &["req", "-x509"],
        &ec[..],
        &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=Channels test CA"],
    ]
    .concat());
    run(&[&["req"], &ec[..], &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"]]
        .concat());
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    (dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_uses_starttls_and_authenticates() {
    let certs = Scratch::new("certs");
    let (ca, cert, key) = certificates(&certs.0);
    let server = smtp_server(Some(("starttls", &cert, &key)));
    let options = |password_env: &str| {
        format!(
            "host = \"127.0.0.1\"\nport = {}\ntls = \"starttls\"\nca_file = \"{}\"\ntls_server_name = \"localhost\"\n\
             from = \"alerts@example.com\"\nto = \"oncall@example.com\"\n\
             username_env = \"TEST_SMTP_USER\"\npassword_env = \"{password_env}\"",
            server.port,
            ca.display()
        )
    };
    build("email", &options("TEST_SMTP_PASSWORD"))
        .deliver(&notification(NotificationStatus::Firing))
        .await
        .unwrap();
    let messages = server.messages(1);
    assert_eq!(messages[0]["tls"], true, "the mail went through STARTTLS");
    assert_eq!(messages[0]["authenticated"], true);
    assert_eq!(messages[0]["rcpt_tos"], serde_json::json!(["oncall@example.com"]));

    // A refused password is an SMTP 5xx: permanent.
    let reason = expect_permanent(
        build("email", &options("TEST_SMTP_BAD_PASSWORD"))
            .deliver(&notification(NotificationStatus::Firing))
            .await,
    );
    assert!(reason.contains("535") || reason.to_lowercase().contains("authentication"), "{reason}");

    // A certificate from another CA is refused (not delivered); retried,
    // since a renewed certificate may fix it.
    let other = Scratch::new("other-ca");
    let (other_ca, _, _) = certificates(&other.0);
    let wrong_ca =
        options("TEST_SMTP_PASSWORD").replace(&ca.display().to_string(), &other_ca.display().to_string());
    let (reason, _) =
        expect_retry(build("email", &wrong_ca).deliver(&notification(NotificationStatus::Firing)).await);
    assert!(reason.to_lowercase().contains("certificate") || reason.contains("tls"), "{reason}");
    assert_eq!(server.messages_within(2, Duration::from_millis(500)).len(), 1, "nothing else arrived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_uses_implicit_tls() {
    let certs = Scratch::new("certs-implicit");
    let (ca, cert, key) = certificates(&certs.0);
    let server = smtp_server(Some(("tls", &cert, &key)));
    let options = format!(
        "host = \"127.0.0.1\"\nport = {}\ntls = \"tls\"\nca_file = \"{}\"\ntls_server_name = \"localhost\"\n\
         from = \"alerts@example.com\"\nto = \"oncall@example.com\"\n\
         username_env = \"TEST_SMTP_USER\"\npassword_env = \"TEST_SMTP_PASSWORD\"",
        server.port,
        ca.display()
    );
    build("email", &options).deliver(&notification(NotificationStatus::Resolved)).await.unwrap();
    let messages = server.messages(1);
    assert_eq!(messages[0]["tls"], true);
    assert_eq!(messages[0]["authenticated"], true);
    assert_eq!(messages[0]["subject"], "[RESOLVED critical] SearchLatencyHigh: p95 search latency is 2.4 s");

    // STARTTLS required against a server that only speaks TLS from the
    // first byte: no mail leaves, and it is retried.
    let mismatch = options.replace("tls = \"tls\"", "tls = \"starttls\"");
    let channel =
        build_with(&ChannelRegistry::builtin(), "email", "m", &mismatch, Duration::from_secs(2)).unwrap();
    expect_retry(channel.deliver(&notification(NotificationStatus::Firing)).await);
    assert_eq!(server.messages_within(2, Duration::from_millis(300)).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_to_nobody_listening_is_retried() {
    let port = free_port();
    let channel = build(
        "email",
        &format!(
            "host = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\nfrom = \"a@example.com\"\nto = \"b@example.com\""
        ),
    );
    expect_retry(channel.deliver(&notification(NotificationStatus::Firing)).await);
}

// ------------------------------------------------------------ alertmanager

const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";
const AMTOOL: &str = "/usr/bin/amtool";

fn amtool_alerts(url: &str) -> Vec<Value> {
    let out = Command::new(AMTOOL)
        .args([
            "alert",
            "query",
            "--output=json",
            &format!("--alertmanager.url={url}"),
            "alertname=SearchLatencyHigh",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "amtool: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<Vec<Value>>(&out.stdout)
        .unwrap_or_else(|e| panic!("amtool output {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_receives_alerts_that_amtool_shows() {
    require_tool(ALERTMANAGER, "Debian's prometheus-alertmanager");
    require_tool(AMTOOL, "Debian's prometheus-alertmanager");
    let dir = Scratch::new("alertmanager");
    std::fs::write(
        dir.0.join("alertmanager.yml"),
        "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n",
    )
    .unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let _am = Proc(
        Command::new(ALERTMANAGER)
            .arg(format!("--config.file={}", dir.0.join("alertmanager.yml").display()))
            .arg(format!("--storage.path={}", dir.0.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // reqwest is built without a default TLS provider (ring is installed
    // by the channels; here, by hand, before the first client).
    context_analytics::alerting::channels::http::install_crypto_provider();
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !http.get(format!("{url}/-/ready")).send().await.is_ok_and(|r| r.status().is_success()) {
        assert!(Instant::now() < deadline, "alertmanager did not become ready on {url}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let channel = build("alertmanager", &format!("url = \"{url}/\""));
    channel.deliver(&notification(NotificationStatus::Firing)).await.unwrap();
    let alerts = amtool_alerts(&url);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let alert = &alerts[0];
    assert_eq!(alert["labels"]["alertname"], "SearchLatencyHigh");
    assert_eq!(alert["labels"]["severity"], "critical");
    assert_eq!(alert["labels"]["project"], "web");
    assert_eq!(alert["annotations"]["summary"], "p95 search latency is 2.4 s");
    assert_eq!(alert["annotations"]["value"], "2.4");
    assert_eq!(alert["annotations"]["threshold"], "2");
    assert_eq!(alert["generatorURL"], notification(NotificationStatus::Firing).generator_url);
    assert_eq!(alert["startsAt"], "2026-11-28T09:00:00.000Z");
    assert_eq!(alert["status"]["state"], "active");

    // Resolved: it carries endsAt (in the past) and leaves the active list.
    channel.deliver(&notification(NotificationStatus::Resolved)).await.unwrap();
    assert_eq!(amtool_alerts(&url), Vec::<Value>::new());

    // A label name Alertmanager refuses: 400, permanent.
    let mut bad = notification(NotificationStatus::Firing);
    bad.labels.insert("bad-label name".to_owned(), "x".to_owned());
    let reason = expect_permanent(channel.deliver(&bad).await);
    assert!(reason.contains("400"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_down_or_failing_is_retried() {
    let (url, received) = receiver(vec![Reply { body: "upstream down", ..reply(503) }]).await;
    let channel = build("alertmanager", &format!("url = \"{url}/am-prefix\""));
    let (reason, _) = expect_retry(channel.deliver(&notification(NotificationStatus::Firing)).await);
    assert!(reason.contains("503") && reason.contains("upstream down"), "{reason}");
    let got = received.lock().unwrap()[0].clone();
    assert_eq!(got.path, "/am-prefix/api/v2/alerts");
    let body = got.json();
    assert!(body.is_array() && body[0]["endsAt"].is_null(), "{body}");

    let port = free_port();
    let channel = build("alertmanager", &format!("url = \"http://127.0.0.1:{port}\""));
    expect_retry(channel.deliver(&notification(NotificationStatus::Firing)).await);
}

// ---------------------------------------------------------------- external

/// A library cargo built (`cargo build --workspace`).
fn artifact(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    let path = target.join(profile).join(name);
    assert!(path.exists(), "{} is missing: run `cargo build --workspace` first", path.display());
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_channels_load_from_a_folder_list_and_deliver() {
    let folder = Scratch::new("channels-dir");
    let dir = folder.0.join("channels");
    std::fs::create_dir(&dir).unwrap();
    // The example channel, a plugin (not a channel), a library built for
    // another interface version, and a file that is no library at all.
    std::fs::copy(artifact("libfile_channel.so"), dir.join("libfile_channel.so")).unwrap();
    std::fs::copy(artifact("libpanicking_plugin.so"), dir.join("libpanicking_plugin.so")).unwrap();
    std::fs::copy(artifact("libincompatible_plugin.so"), dir.join("libincompatible_plugin.so")).unwrap();
    std::fs::write(dir.join("libnotes.so"), "not a library").unwrap();

    let (registry, errors) = ChannelRegistry::load(Some(&dir), &logger());
    assert_eq!(errors.len(), 3, "{errors:#?}");
    for error in &errors {
        assert!(!error.contains('\n') && error.len() < 400, "one short line: {error}");
    }
    let refused = |file: &str| {
        errors.iter().find(|e| e.contains(file)).unwrap_or_else(|| panic!("{file} in {errors:#?}"))
    };
    assert!(refused("libpanicking_plugin.so").contains("not an alert channel"), "{errors:#?}");
    assert!(refused("libincompatible_plugin.so").contains("built against plugin-api 1.0.0"), "{errors:#?}");
    assert!(refused("libnotes.so").contains("not a loadable library"), "{errors:#?}");

    let kinds = registry.kinds();
    let names: Vec<&str> = kinds.iter().map(|k| k.kind.as_str()).collect();
    assert_eq!(names, ["alertmanager", "email", "file", "log", "slack", "webhook"]);
    let file = kinds.iter().find(|k| k.kind == "file").unwrap();
    let so_path = dir.join("libfile_channel.so").display().to_string();
    assert_eq!(file.source, ChannelSource::External { path: so_path.clone() });
    assert!(file.description.contains("NDJSON"));
    let listed = serde_json::to_value(file).unwrap();
    assert_eq!(listed["source"], "external");
    assert_eq!(listed["path"], so_path.as_str());
    assert_eq!(serde_json::to_value(&kinds[0]).unwrap()["source"], "builtin");

    // Its own option checks come back as build errors.
    let e = build_with(&registry, "file", "audit", "colour = \"red\"", Duration::from_secs(5)).err().unwrap();
    assert!(
        e.starts_with("alerting.channels.\"audit\": channel 'file'")
            && e.contains("options.colour: unknown option"),
        "{e}"
    );

    let out = folder.0.join("alerts.ndjson");
    let options = format!("path = \"{}\"", out.display());
    let channel = build_with(&registry, "file", "audit", &options, Duration::from_secs(5)).unwrap();
    channel.deliver(&notification(NotificationStatus::Firing)).await.unwrap();
    channel.deliver(&notification(NotificationStatus::Resolved)).await.unwrap();
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<Notification> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines, [notification(NotificationStatus::Firing), notification(NotificationStatus::Resolved)]);

    // Loading the folder again (each file by its own path) gives the same.
    let (again, errors_again) = ChannelRegistry::load(Some(&dir), &logger());
    assert_eq!(again.kinds(), kinds);
    assert_eq!(errors_again, errors);
    // No folder configured: built-in kinds only.
    let (builtin, none) = ChannelRegistry::load(None, &logger());
    assert_eq!(builtin.kinds().len(), 5);
    assert!(none.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_channel_panics_stay_inside_and_hangs_time_out() {
    let folder = Scratch::new("misbehaving");
    std::fs::copy(artifact("libmisbehaving_channel.so"), folder.0.join("libmisbehaving_channel.so")).unwrap();
    let (registry, errors) = ChannelRegistry::load(Some(&folder.0), &logger());
    assert!(errors.is_empty(), "{errors:?}");
    let firing = notification(NotificationStatus::Firing);

    // A panic in the constructor is a build error, not a crash.
    let e = build_with(&registry, "misbehaving", "bad", "on_new = \"panic\"", Duration::from_secs(5))
        .err()
        .unwrap();
    assert!(e.contains("channel constructor panicked: misbehaving channel: panic in new, as asked"), "{e}");

    // A panic in deliver is a permanent failure of that delivery.
    let channel =
        build_with(&registry, "misbehaving", "bad", "on_deliver = \"panic\"", Duration::from_secs(5))
            .unwrap();
    let reason = expect_permanent(channel.deliver(&firing).await);
    assert_eq!(
        reason,
        "channel 'misbehaving': channel panicked: misbehaving channel: panic in deliver, as asked"
    );
    // ...and the channel keeps answering.
    expect_permanent(channel.deliver(&firing).await);

    // A deliver that overruns the timeout is cut off and retried.
    let slow = build_with(
        &registry,
        "misbehaving",
        "slow",
        "on_deliver = \"sleep\"\nms = 1500",
        Duration::from_millis(300),
    )
    .unwrap();
    let started = Instant::now();
    let (reason, _) = expect_retry(slow.deliver(&firing).await);
    assert!(reason.contains("timed out after 300ms"), "{reason}");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    // Within its time it succeeds.
    let quick = build_with(
        &registry,
        "misbehaving",
        "quick",
        "on_deliver = \"sleep\"\nms = 10",
        Duration::from_secs(5),
    )
    .unwrap();
    quick.deliver(&firing).await.unwrap();
}
