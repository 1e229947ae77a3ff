//! Issue 4 through the real host: tokens and roles enforced by the plugin's
//! middleware, storage down as a 503 with the reason, and an export streamed
//! through the host's reply sink.

use context_e2e::{ANALYTICS, Host, HostSpec, Scratch, artifact, free_port, write_files};

/// Test tokens and their names.
const VIEWER: (&str, &str) = ("viewer-token", "grafana");
const ADMIN: (&str, &str) = ("admin-token", "ops");

fn sha256(text: &str) -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("printf %s '{text}' | sha256sum"))
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_owned()
}

fn project(scratch: &Scratch) -> std::path::PathBuf {
    let root = scratch.path().join("project");
    write_files(
        &root,
        &[("src/main.rs", b"fn main() { let needle = 1; }\n"), ("src/lib.rs", b"pub fn needle() {}\n")],
    );
    root
}

fn host(root: &std::path::Path, config: &str) -> Host {
    Host::start(HostSpec {
        libraries: vec![artifact(ANALYTICS)],
        plugins: vec![("analytics".into(), true, config.into())],
        projects: vec![("sample".into(), root.to_owned())],
        ..Default::default()
    })
}

fn get_with(host: &Host, path: &str, token: Option<&str>) -> (u16, String, Vec<(String, String)>) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut request = agent.get(format!("{}{path}", host.base_url));
    if let Some(token) = token {
        request = request.header("Authorization", &format!("Bearer {token}"));
    }
    let mut response = request.call().unwrap();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let status = response.status().as_u16();
    (status, response.body_mut().read_to_string().unwrap_or_default(), headers)
}

#[test]
fn tokens_and_roles_guard_every_analytics_route() {
    assert_eq!(sha256(VIEWER.0).len(), 64);
    let scratch = Scratch::new("auth");
    let root = project(&scratch);
    let config = format!(
        "[plugins.analytics.config.auth]\ntokens = [{{ name = \"grafana\", role = \"viewer\", sha256 = \"{}\" }}, {{ name = \"ops\", role = \"admin\", sha256 = \"{}\" }}]",
        sha256(VIEWER.0),
        sha256(ADMIN.0)
    );
    let host = host(&root, &config);
    host.wait_indexed(1);
    host.wait_until("storage ready", || {
        let (_, body, _) = get_with(&host, "/api/v1/analytics/health", Some(VIEWER.0));
        serde_json::from_str::<serde_json::Value>(&body)
            .map(|h| h["storage"]["ready"] == true)
            .unwrap_or(false)
    });
    for i in 0..5 {
        host.get(&format!("/api/v1/search?q=needle{i}&project=sample"), "alice");
    }
    for path in
        ["/metrics", "/api/v1/analytics/health", "/api/v1/analytics/usage", "/api/v1/analytics/openapi.json"]
    {
        let (status, body, headers) = get_with(&host, path, None);
        assert_eq!(status, 401, "{path}: {body}");
        assert!(
            headers.iter().any(|(k, v)| k == "www-authenticate" && v.starts_with("Bearer")),
            "{headers:?}"
        );
        let error: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(error["error"]["code"], "unauthorized");
        let (status, _, _) = get_with(&host, path, Some("not-a-token"));
        assert_eq!(status, 401, "{path} with a wrong token");
        let (status, body, _) = get_with(&host, path, Some(VIEWER.0));
        assert_eq!(status, 200, "{path} as viewer: {body}");
    }
    // The host's own routes are not the plugin's to guard.
    assert_eq!(host.get("/api/v1/search?q=needle&project=sample", "a").0, 200);

    let raw = "/api/v1/analytics/export?dataset=raw-searches&timerange=1h";
    let (status, body, _) = get_with(&host, raw, Some(VIEWER.0));
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("needs the admin role"), "{body}");
    host.wait_until("searches stored", || {
        let (_, csv, _) = get_with(&host, raw, Some(ADMIN.0));
        csv.trim_end().split("\r\n").count() == 1 + 6
    });
    let (status, csv, headers) = get_with(&host, raw, Some(ADMIN.0));
    assert_eq!(status, 200, "{csv}");
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "content-disposition" && v.contains("context-analytics-raw-searches-"))
    );
    assert_eq!(csv.trim_end().split("\r\n").count(), 1 + 6, "five searches and one more: {csv}");
    let (status, body, _) = get_with(&host, "/api/v1/analytics/nope", Some(VIEWER.0));
    assert_eq!(status, 404);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["error"]["code"], "not_found");
}

#[test]
fn storage_down_is_a_503_that_says_why() {
    let scratch = Scratch::new("api503");
    let root = project(&scratch);
    let host = host(
        &root,
        &format!(
            "[plugins.analytics.config.storage]\nurl = \"postgres://postgres@127.0.0.1:{}/x\"",
            free_port()
        ),
    );
    host.wait_indexed(1);
    // `starting` until the first connection attempt has failed (the pool
    // retries a refused connection for its acquire timeout).
    host.wait_until("the first connection attempt failed", || {
        host.get_json("/api/v1/analytics/health", "").1["status"] == "degraded"
    });
    let (status, body, headers) = get_with(&host, "/api/v1/analytics/search-performance?timerange=1h", None);
    assert_eq!(status, 503, "{body}");
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"]["code"], "storage_unavailable");
    assert!(headers.contains(&("retry-after".to_owned(), "5".to_owned())), "{headers:?}");
    assert!(
        error["error"]["message"].as_str().unwrap().starts_with("analytics database unreachable: "),
        "{error}"
    );
    let (status, body, _) = get_with(&host, "/api/v1/analytics/search-performance?timerange=2w", None);
    assert_eq!(status, 400, "a bad parameter is still a 400: {body}");
}

/// A database that takes its time to open (here: a port that accepts
/// connections and never answers) is `starting`, with Retry-After, after a
/// bounded wait: not "unreachable", and not a request left hanging.
#[test]
fn a_store_still_opening_is_starting_with_retry_after() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let scratch = Scratch::new("api-starting");
    let root = project(&scratch);
    let host = host(
        &root,
        &format!("[plugins.analytics.config.storage]\nurl = \"postgres://postgres@127.0.0.1:{port}/x\""),
    );
    for path in ["/api/v1/analytics/search-performance?timerange=1h", "/api/v1/analytics/alerts"] {
        let (status, body, headers) = get_with(&host, path, None);
        let error: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!((status, error["error"]["code"].as_str()), (503, Some("starting")), "{path}: {body}");
        assert!(headers.contains(&("retry-after".to_owned(), "1".to_owned())), "{headers:?}");
    }
    let (_, health, _) = get_with(&host, "/api/v1/analytics/health", None);
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["status"], "starting", "{health}");
    drop(silent);
}

#[test]
fn a_large_export_streams_through_the_host() {
    let scratch = Scratch::new("export");
    let root = project(&scratch);
    let host = host(&root, "");
    host.wait_indexed(1);
    // More rows than one body chunk (1,000), so several chunks stream.
    let n = 2_500;
    for i in 0..n {
        host.get(&format!("/api/v1/search?q=w{}&project=sample", i % 50), "bulk");
    }
    host.wait_until("searches stored", || {
        let (_, body, _) = get_with(&host, "/api/v1/analytics/health", None);
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["storage"]["events_written"]
            .as_u64()
            .unwrap_or(0)
            >= n
    });
    let (status, ndjson, headers) =
        get_with(&host, "/api/v1/analytics/export?dataset=raw-searches&format=ndjson&timerange=1h", None);
    assert_eq!(status, 200);
    assert!(!headers.iter().any(|(k, _)| k == "content-length"), "streamed, not buffered: {headers:?}");
    let lines: Vec<serde_json::Value> = ndjson.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), n as usize);
    let mut seqs: Vec<i64> = lines.iter().map(|l| l["seq"].as_i64().unwrap()).collect();
    seqs.dedup();
    assert_eq!(seqs.len(), n as usize, "no row twice across chunks");
    let m = host.metrics();
    assert!(
        m.value(r#"context_http_response_size_bytes_sum{method="GET",route="/api/v1/analytics/export"}"#)
            >= ndjson.len() as f64
    );
}
