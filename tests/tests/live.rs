//! Issue 8 through the real host: the page and its assets, the live route's
//! parameters, its event stream forwarded through the host's reply sink
//! (a long-lived streamed reply), and a host that stops promptly while a
//! stream is open. The page itself is tested in Chromium (tests/browser).

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use context_e2e::{ANALYTICS, Host, HostSpec, Scratch, artifact, write_files};

fn host() -> Host {
    let scratch = Scratch::new("live");
    let root = scratch.path().join("project");
    write_files(&root, &[("src/main.rs", b"fn main() { let needle = 1; }\n")]);
    Host::start_in(
        scratch,
        HostSpec {
            libraries: vec![artifact(ANALYTICS)],
            plugins: vec![("analytics".into(), true, String::new())],
            projects: vec![("sample".into(), root)],
            ..Default::default()
        },
    )
}

/// Opens an event stream on a raw connection and returns it after its head.
fn open_stream(host: &Host, query: &str) -> (BufReader<TcpStream>, String) {
    let address = host.base_url.trim_start_matches("http://");
    let mut socket = TcpStream::connect(address).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        socket,
        "GET /api/v1/analytics/live?{query} HTTP/1.1\r\nHost: {address}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(socket);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        head.push_str(&line);
    }
    (reader, head)
}

/// Reads until `needle` has been seen (or the connection ends).
fn read_until(reader: &mut BufReader<TcpStream>, needle: &str) -> String {
    let mut seen = String::new();
    let mut line = String::new();
    while !seen.contains(needle) {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        seen.push_str(&line);
    }
    seen
}

#[test]
fn page_assets_and_live_parameters() {
    let host = host();
    let (status, body) = host.get("/analytics/", "t");
    assert_eq!(status, 200);
    assert!(body.contains("<title>Context analytics</title>"), "{body}");
    let (status, _) = host.get("/analytics/uPlot.iife.min.js", "t");
    assert_eq!(status, 200);
    let (status, body) = host.get("/analytics/missing.js", "t");
    assert_eq!(status, 404);
    assert!(body.contains("\"code\":\"not_found\""), "{body}");

    let (status, body) = host.get_json("/api/v1/analytics/live?interval=0", "t");
    assert_eq!(status, 400);
    assert_eq!(body["error"]["parameter"], "interval");
    assert!(body["error"]["message"].as_str().unwrap().contains("from 1 to 60"), "{body}");
    let (status, body) = host.get_json("/api/v1/analytics/live?timerange=1w", "t");
    assert_eq!((status, body["error"]["parameter"].as_str()), (400, Some("timerange")));
    let (status, body) = host.get_json("/api/v1/analytics/live?duration=99999", "t");
    assert_eq!((status, body["error"]["parameter"].as_str()), (400, Some("duration")));

    host.wait_indexed(1);
    host.wait_until("storage ready", || {
        host.get_json("/api/v1/analytics/health", "t").1["storage"]["ready"] == serde_json::json!(true)
    });
    let (status, snapshot) = host.get_json("/api/v1/analytics/live?timerange=6h&project=sample", "t");
    assert_eq!(status, 200, "{snapshot}");
    assert_eq!(snapshot["query"], "timerange=6h&project=sample");
    for (name, source) in snapshot["sources"].as_object().unwrap() {
        assert_eq!(source["status"], 200, "{name}: {}", source["body"]);
    }
    assert_eq!(snapshot["sources"]["latency_p99"]["body"]["aggregation"], "p99");
    assert_eq!(snapshot["sources"]["code_health"]["body"]["project"], "sample");
    // The alerts route answered for this project, as it answers directly.
    let (status, alerts) = host.get_json("/api/v1/analytics/alerts?project=sample", "t");
    assert_eq!(snapshot["sources"]["alerts"]["status"], status);
    assert_eq!(snapshot["sources"]["alerts"]["body"]["alerts"], alerts["alerts"]);
}

#[test]
fn event_stream_through_the_host_ends_by_duration_and_at_shutdown() {
    let mut host = host();
    let (mut short, head) = open_stream(&host, "timerange=1h&duration=1");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/event-stream"), "{head}");
    let mut rest = String::new();
    let _ = short.read_to_string(&mut rest); // ends: the stream's duration is over
    assert!(rest.contains("event: snapshot"), "{rest}");
    assert!(rest.contains("event: end"), "{rest}");

    let (mut open, _) = open_stream(&host, "timerange=1h&interval=1");
    let first = read_until(&mut open, "event: snapshot");
    assert!(first.contains("retry: 2000"), "{first}");
    let more = read_until(&mut open, "\"seq\":2");
    assert!(more.contains("\"seq\":2"), "a second event within the interval");
    // A stopping host ends the stream instead of waiting for it.
    let asked = Instant::now();
    let status = host.stop();
    let took = asked.elapsed();
    assert!(status.success(), "exit status {status}:\n{}", host.log());
    assert!(took < Duration::from_secs(5), "host took {took:?} to stop with a stream open");
    let mut tail = Vec::new();
    let _ = open.read_to_end(&mut tail); // EOF, not a timeout
    assert!(!host.log().contains("PANIC"), "{}", host.log());
}
