//! The Context server's plugin interface: the one ABI boundary between the
//! host and a plugin loaded from a `.so` file.
//!
//! Only [`abi_stable`] types cross it. Nothing here knows tokio, axum or any
//! database: a plugin brings its own runtime and the host brings its own.
//!
//! # Writing a plugin
//!
//! Implement [`Plugin`] for your state and export it with [`export_plugin!`]:
//!
//! ```ignore
//! use plugin_api::{export_plugin, HostContext, Plugin, PluginError, SearchExecuted};
//!
//! struct Counter(std::sync::atomic::AtomicU64);
//!
//! impl Plugin for Counter {
//!     fn on_search_executed(&self, _event: &SearchExecuted<'_>) {
//!         self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
//!     }
//! }
//!
//! fn new(_host: HostContext, _config_toml: &str) -> Result<Counter, PluginError> {
//!     Ok(Counter(Default::default()))
//! }
//!
//! export_plugin!(name: "counter", version: env!("CARGO_PKG_VERSION"), new: new);
//! ```
//!
//! The crate type must be `cdylib` and the profile must keep
//! `panic = "unwind"`: every call across the boundary runs the plugin's code
//! under `catch_unwind` (see [`Plugin`]), so a panic is logged and counted
//! instead of ending the host process.
//!
//! # Alert channels
//!
//! The analytics plugin's alert channels can be `.so` files of their own,
//! written against [`ExternalChannel`] and exported with [`export_channel!`]:
//! see the [`channel`] module for the guide.
//!
//! # Rules a plugin must follow
//!
//! - Hooks (`on_*`) are called on the host's search and index threads. They
//!   must not block or do I/O: copy what is needed into a bounded queue and
//!   return. Event data is borrowed and only valid during the call.
//! - [`Plugin::handle_request`] must not block either: spawn the work on the
//!   plugin's own threads and answer through the [`ReplySink`] later.
//! - A plugin owns its runtime, its metrics registry and its panic handling;
//!   nothing global (tokio, `inventory`, the Prometheus default registry) is
//!   shared with the host, which links its own copies.
//!
//! # Versioning: how to add a hook without breaking plugins
//!
//! The crate version is the interface version. abi_stable embeds it in every
//! plugin and the host refuses a plugin built against an incompatible one
//! (for `0.x` a different minor; from `1.0` a different major), and it also
//! compares the full type layout of everything reachable from the root
//! module, so a mismatch is always refused at load, never undefined
//! behaviour at run time.
//!
//! The root module ([`PluginModule`]) and the plugin object
//! ([`PluginObject`]) are *prefix types*: fields and methods may be
//! **appended** in a later minor version without breaking plugins built
//! against an earlier one. To add a hook:
//!
//! 1. Append the method at the end of [`PluginObject`] (after the current
//!    last method), move `#[sabi(last_prefix_field)]` to it, and give the
//!    [`Plugin`] trait a default implementation that does nothing.
//! 2. Put its event data in a **new** `#[repr(C)]` struct. Never add fields to
//!    or reorder an existing event struct or enum: their layout is frozen for
//!    the major version. A richer search event is a new hook
//!    (`on_search_executed_v2`), not a changed struct.
//! 3. Bump the minor version. The host calls the new method through
//!    `PluginObject_TO::method_name()` variants that return `None`/do nothing
//!    when the loaded plugin predates it (abi_stable's `missing_field`).
//!
//! Removing or changing anything is a major version bump.

// sabi_trait expands to impls inside a generated const; harmless.
#![allow(non_local_definitions)]

pub extern crate abi_stable;

pub mod channel;
mod error;
mod events;
mod guard;
mod host;
mod http;
mod module;

pub use channel::{
    CHANNEL_INTERFACE, ChannelBox, ChannelInfo, ChannelModule, ChannelModuleRef, ChannelObject,
    ChannelObject_TO, DeliveryFailure, ExternalChannel, guarded_channel_constructor, guarded_channel_info,
};
pub use error::{ErrorKind, PluginError};
pub use events::{
    CacheOutcome, FileIndexed, FileOpened, IndexOutcome, ProjectSnapshot, QueryKind, SearchExecuted,
    SearchStatus,
};
pub use guard::{Plugin, guarded_constructor, guarded_info};
pub use host::{HostContext, HostLogger, HostServices, HostServicesRef, LogLevel};
pub use http::{
    Header, HeaderRef, HttpRequest, HttpResponse, MiddlewareSpec, ReplySink, ReplySink_TO, ReplySinkBox,
    RequestHead, RequestRecord, RouteSpec,
};
pub use module::{PluginBox, PluginInfo, PluginModule, PluginModuleRef, PluginObject, PluginObject_TO};

/// The interface version this crate defines; a plugin built against it
/// carries the same string (see the versioning guide above).
pub const INTERFACE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Exports a [`Plugin`] as the root module of a `cdylib`.
///
/// `new` is `fn(HostContext, &str) -> Result<P, PluginError>`; the `&str` is
/// the plugin's own `[plugins.<name>.config]` table as TOML text. `name` is
/// the name under which the host's config switches the plugin on
/// (`[plugins.<name>] enabled = true`).
#[macro_export]
macro_rules! export_plugin {
    (name: $name:expr, version: $version:expr, new: $new:path $(,)?) => {
        #[$crate::abi_stable::export_root_module]
        pub fn __context_plugin_root_module() -> $crate::PluginModuleRef {
            use $crate::abi_stable::prefix_type::PrefixTypeTrait;
            $crate::PluginModule { info: __context_plugin_info, new: __context_plugin_new }.leak_into_prefix()
        }

        extern "C" fn __context_plugin_info() -> $crate::PluginInfo {
            $crate::guarded_info($name, $version)
        }

        extern "C" fn __context_plugin_new(
            host: $crate::HostContext,
            config_toml: $crate::abi_stable::std_types::RStr<'_>,
        ) -> $crate::abi_stable::std_types::RResult<$crate::PluginBox, $crate::PluginError> {
            $crate::guarded_constructor($crate::guarded_info($name, $version), host, config_toml, $new)
        }
    };
}
