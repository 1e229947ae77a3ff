//! The safe trait plugin authors implement, and the adapter that runs every
//! call across the boundary under `catch_unwind`.
//!
//! An uncaught panic unwinding into the host ends the host process, whatever
//! the host does (DESIGN.md). Putting the guard here, once, means no plugin
//! can forget it.

use std::{
    any::Any,
    mem::ManuallyDrop,
    panic::{AssertUnwindSafe, catch_unwind},
};

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{ROption, RResult, RStr, RVec},
};

use crate::{
    ErrorKind, FileIndexed, FileOpened, HostContext, HostLogger, HttpRequest, HttpResponse, MiddlewareSpec,
    PluginBox, PluginError, PluginInfo, PluginObject, PluginObject_TO, ProjectSnapshot, ReplySinkBox,
    RequestHead, RequestRecord, RouteSpec, SearchExecuted,
};

/// A plugin, in safe Rust. Every method has a default that does nothing, so
/// a plugin implements only what it needs.
///
/// Every method is called under `catch_unwind` by the adapter: a panic is
/// logged to the host's log, reported to [`Plugin::on_panic`], and the call
/// returns a neutral value (no response, an error for `shutdown`). The host
/// keeps serving.
pub trait Plugin: Send + Sync + 'static {
    fn routes(&self) -> Vec<RouteSpec> {
        Vec::new()
    }

    fn middleware(&self) -> MiddlewareSpec {
        MiddlewareSpec::default()
    }

    /// Must not block; answer through `reply`. The default answers 404.
    fn handle_request(&self, request: HttpRequest, mut reply: ReplySinkBox) {
        let body = format!("no route for {} {}", request.method, request.path);
        reply.respond(HttpResponse::new(404, "text/plain; charset=utf-8", body));
    }

    fn before_request(&self, _head: &RequestHead<'_>) -> Option<HttpResponse> {
        None
    }

    fn after_request(&self, _record: &RequestRecord<'_>) {}

    fn on_search_executed(&self, _event: &SearchExecuted<'_>) {}

    fn on_file_indexed(&self, _event: &FileIndexed<'_>) {}

    fn on_file_opened(&self, _event: &FileOpened<'_>) {}

    fn on_project_snapshot(&self, _event: &ProjectSnapshot<'_>) {}

    fn shutdown(&self) -> Result<(), PluginError> {
        Ok(())
    }

    /// Told after a panic in `entry_point` was caught (for counting it).
    fn on_panic(&self, _entry_point: &'static str) {}
}

/// The adapter from [`Plugin`] to the ABI-stable [`PluginObject`].
struct Guarded<P: Plugin> {
    inner: ManuallyDrop<P>,
    info: PluginInfo,
    logger: HostLogger,
}

impl<P: Plugin> Guarded<P> {
    fn call<R>(&self, entry_point: &'static str, fallback: R, f: impl FnOnce(&P) -> R) -> R {
        match catch_unwind(AssertUnwindSafe(|| f(&self.inner))) {
            Ok(value) => value,
            Err(payload) => {
                self.logger.error(&format!(
                    "plugin '{}' panicked in {entry_point}: {}; the call was abandoned",
                    self.info.name,
                    panic_message(&*payload)
                ));
                // A panic while counting the panic is dropped: nothing more to do.
                let _ = catch_unwind(AssertUnwindSafe(|| self.inner.on_panic(entry_point)));
                fallback
            }
        }
    }
}

impl<P: Plugin> Drop for Guarded<P> {
    fn drop(&mut self) {
        // SAFETY: `inner` is never used after this point.
        let inner = unsafe { ManuallyDrop::take(&mut self.inner) };
        if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(inner))) {
            self.logger.error(&format!(
                "plugin '{}' panicked while being dropped: {}",
                self.info.name,
                panic_message(&*payload)
            ));
        }
    }
}

impl<P: Plugin> PluginObject for Guarded<P> {
    fn info(&self) -> PluginInfo {
        self.info.clone()
    }

    fn routes(&self) -> RVec<RouteSpec> {
        self.call("routes", RVec::new(), |p| RVec::from(p.routes()))
    }

    fn middleware(&self) -> MiddlewareSpec {
        self.call("middleware", MiddlewareSpec::default(), |p| p.middleware())
    }

    fn handle_request(&self, request: HttpRequest, reply: ReplySinkBox) {
        // On a panic the sink is dropped unanswered and the host sends a 500.
        self.call("handle_request", (), move |p| p.handle_request(request, reply))
    }

    fn before_request(&self, head: &RequestHead<'_>) -> ROption<HttpResponse> {
        self.call("before_request", ROption::RNone, |p| p.before_request(head).into())
    }

    fn after_request(&self, record: &RequestRecord<'_>) {
        self.call("after_request", (), |p| p.after_request(record))
    }

    fn on_search_executed(&self, event: &SearchExecuted<'_>) {
        self.call("on_search_executed", (), |p| p.on_search_executed(event))
    }

    fn on_file_indexed(&self, event: &FileIndexed<'_>) {
        self.call("on_file_indexed", (), |p| p.on_file_indexed(event))
    }

    fn on_file_opened(&self, event: &FileOpened<'_>) {
        self.call("on_file_opened", (), |p| p.on_file_opened(event))
    }

    fn on_project_snapshot(&self, event: &ProjectSnapshot<'_>) {
        self.call("on_project_snapshot", (), |p| p.on_project_snapshot(event))
    }

    fn shutdown(&self) -> RResult<(), PluginError> {
        let panicked = PluginError::new(ErrorKind::Panic, "plugin panicked during shutdown");
        self.call("shutdown", Err(panicked), |p| p.shutdown()).into()
    }
}

/// Body of the `info` entry point generated by [`export_plugin!`](crate::export_plugin).
pub fn guarded_info(name: &str, version: &str) -> PluginInfo {
    PluginInfo::new(name, version)
}

/// Body of the `new` entry point generated by
/// [`export_plugin!`](crate::export_plugin): runs the constructor under
/// `catch_unwind` and wraps the plugin in the panic-catching adapter.
pub fn guarded_constructor<P: Plugin>(
    info: PluginInfo,
    host: HostContext,
    config_toml: RStr<'_>,
    new: fn(HostContext, &str) -> Result<P, PluginError>,
) -> RResult<PluginBox, PluginError> {
    let logger = host.logger(host.plugin_name.as_str());
    route_panic_messages_to_host(&logger);
    let result = catch_unwind(AssertUnwindSafe(|| new(host, config_toml.as_str())));
    match result {
        Ok(Ok(plugin)) => {
            let guarded = Guarded { inner: ManuallyDrop::new(plugin), info, logger };
            RResult::ROk(PluginObject_TO::from_value(guarded, TD_Opaque))
        }
        Ok(Err(error)) => RResult::RErr(error),
        Err(payload) => RResult::RErr(PluginError::new(
            ErrorKind::Panic,
            format!("plugin constructor panicked: {}", panic_message(&*payload)),
        )),
    }
}

/// Replaces the default panic hook of the plugin's own copy of std (each
/// plugin library links its own) with one that writes a single line to the
/// host's log, instead of a backtrace on the host's stderr. It also reports
/// panics on the plugin's own threads, which no guard sees.
fn route_panic_messages_to_host(logger: &HostLogger) {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    let logger = logger.clone();
    INSTALLED.call_once(move || {
        std::panic::set_hook(Box::new(move |info| {
            let location = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_else(|| "unknown location".to_owned());
            let thread = std::thread::current();
            logger.error(&format!(
                "panic on thread '{}' at {location}: {}",
                thread.name().unwrap_or("unnamed"),
                panic_message(info.payload())
            ));
        }));
    });
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-string panic payload")
}
