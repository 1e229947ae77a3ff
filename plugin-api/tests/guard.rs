//! The adapter catches panics at every entry point: a panicking plugin
//! returns neutral values, is told which entry point panicked, and logs one
//! line to the host.

use std::sync::{
    Mutex,
    atomic::{AtomicU64, Ordering},
};

use abi_stable::std_types::{ROption, RResult, RSlice, RStr, RString};
use plugin_api::{
    CacheOutcome, ErrorKind, HostContext, HostServices, LogLevel, Plugin, PluginError, PluginInfo, QueryKind,
    RequestHead, SearchExecuted, SearchStatus, guarded_constructor,
};

static LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());

extern "C" fn log(level: LogLevel, target: RStr<'_>, message: RStr<'_>) {
    LOG.lock().unwrap().push(format!("{level:?} {target}: {message}"));
}

fn host() -> HostContext {
    HostContext {
        plugin_name: RString::from("boom"),
        host_name: RString::from("test"),
        host_version: RString::from("0"),
        instance_id: RString::from("i-1"),
        data_dir: RString::from("/nonexistent"),
        services: HostServices::leak(log),
    }
}

struct Boom {
    panics: &'static AtomicU64,
}

impl Plugin for Boom {
    fn on_search_executed(&self, _event: &SearchExecuted<'_>) {
        panic!("search hook exploded");
    }
    fn before_request(&self, _head: &RequestHead<'_>) -> Option<plugin_api::HttpResponse> {
        panic!("middleware exploded");
    }
    fn shutdown(&self) -> Result<(), PluginError> {
        panic!("shutdown exploded");
    }
    fn on_panic(&self, _entry_point: &'static str) {
        self.panics.fetch_add(1, Ordering::Relaxed);
    }
}

static PANICS: AtomicU64 = AtomicU64::new(0);

fn new_boom(_host: HostContext, config: &str) -> Result<Boom, PluginError> {
    if config.contains("refuse") {
        return Err(PluginError::config("unknown key 'refuse'"));
    }
    if config.contains("explode") {
        panic!("constructor exploded");
    }
    Ok(Boom { panics: &PANICS })
}

#[test]
fn panics_at_every_entry_point_are_caught_counted_and_logged() {
    let info = PluginInfo::new("boom", "1.2.3");
    let plugin = match guarded_constructor(info, host(), RStr::from(""), new_boom) {
        RResult::ROk(plugin) => plugin,
        RResult::RErr(e) => panic!("constructor failed: {e}"),
    };
    assert_eq!(plugin.info(), PluginInfo::new("boom", "1.2.3"));

    let top = [RStr::from("a.rs")];
    let event = SearchExecuted {
        search_id: RStr::from("s1"),
        project: RStr::from("p"),
        user: RStr::from("u"),
        query: RStr::from("q"),
        kind: QueryKind::Literal,
        cache: CacheOutcome::Miss,
        status: SearchStatus::Ok,
        error_code: RStr::from(""),
        latency_ns: 1,
        result_count: 1,
        top_results: RSlice::from_slice(&top),
        timestamp_us: 0,
    };
    plugin.on_search_executed(&event);
    plugin.on_search_executed(&event);
    let head = RequestHead {
        method: RStr::from("GET"),
        path: RStr::from("/x"),
        query: RStr::from(""),
        headers: RSlice::from_slice(&[]),
    };
    assert!(matches!(plugin.before_request(&head), ROption::RNone));
    match plugin.shutdown() {
        RResult::RErr(e) => assert_eq!(e.kind, ErrorKind::Panic),
        RResult::ROk(()) => panic!("a panicking shutdown must report an error"),
    }
    assert_eq!(PANICS.load(Ordering::Relaxed), 4);

    let log = LOG.lock().unwrap().clone();
    let abandoned: Vec<_> = log.iter().filter(|l| l.contains("the call was abandoned")).collect();
    assert_eq!(abandoned.len(), 4, "{log:#?}");
    assert!(
        abandoned[0]
            .starts_with("Error boom: plugin 'boom' panicked in on_search_executed: search hook exploded")
    );
    assert!(log.iter().any(|l| l.contains("panicked in before_request: middleware exploded")));
}

#[test]
fn constructor_errors_and_panics_become_plugin_errors() {
    let info = || PluginInfo::new("boom", "1.2.3");
    match guarded_constructor(info(), host(), RStr::from("refuse = 1"), new_boom) {
        RResult::RErr(e) => assert_eq!(e.to_string(), "config error: unknown key 'refuse'"),
        RResult::ROk(_) => panic!("expected a config error"),
    }
    match guarded_constructor(info(), host(), RStr::from("explode = 1"), new_boom) {
        RResult::RErr(e) => {
            assert_eq!(e.kind, ErrorKind::Panic);
            assert_eq!(e.message.as_str(), "plugin constructor panicked: constructor exploded");
        }
        RResult::ROk(_) => panic!("expected a panic error"),
    }
}
