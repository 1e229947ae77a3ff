//! External channel kinds: `.so` files in the channels folder, loaded
//! through `plugin_api`'s ABI-stable channel interface and adapted to
//! [`Channel`].
//!
//! Each file is loaded by its own path (`lib_header_from_path`):
//! `RootModule::load_from_file` caches one module per type, so a second
//! file would silently return the first (DESIGN.md). A library is refused,
//! in one line, when it is not a loadable library, exports no root module,
//! was built against another `plugin-api` version or layout (that includes
//! a *plugin* `.so` dropped into the channels folder), or declares another
//! [`CHANNEL_INTERFACE`]. Libraries are never unloaded.
//!
//! A delivery runs the library's blocking `deliver` on tokio's blocking
//! pool, bounded by the channel's timeout. A thread that overruns cannot be
//! cancelled: the delivery is reported as `Retry` and the call finishes on
//! its own.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use abi_stable::{
    library::{LibraryError, lib_header_from_path},
    std_types::{ROption, RResult, RStr},
};
use async_trait::async_trait;
use plugin_api::{CHANNEL_INTERFACE, ChannelBox, ChannelModuleRef};

use crate::alerting::channel::{Channel, ChannelContext, DeliveryError, Notification};

/// An external kind that passed the checks.
#[derive(Clone)]
pub struct ExternalKind {
    pub kind: String,
    pub description: String,
    pub version: String,
    pub path: PathBuf,
    module: ChannelModuleRef,
}

impl std::fmt::Debug for ExternalKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalKind").field("kind", &self.kind).field("path", &self.path).finish()
    }
}

/// Every `*.so` of `dir`, in name order: the kinds loaded, and one line per
/// refused file (`'<path>' refused: <why>`).
pub fn load_dir(dir: &Path) -> (Vec<ExternalKind>, Vec<String>) {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "so") && p.is_file())
            .collect(),
        Err(e) => {
            return (Vec::new(), vec![format!("channels folder '{}' cannot be read: {e}", dir.display())]);
        }
    };
    files.sort();
    let mut kinds = Vec::new();
    let mut errors = Vec::new();
    for path in files {
        match load_library(&path) {
            Ok(kind) => kinds.push(kind),
            Err(reason) => errors.push(format!("channel library '{}' refused: {reason}", path.display())),
        }
    }
    (kinds, errors)
}

/// Loads one channel library and checks its interface; the error is one
/// line (abi_stable's own report on a layout mismatch runs to thousands).
pub fn load_library(path: &Path) -> Result<ExternalKind, String> {
    let header = lib_header_from_path(path).map_err(|e| one_line_error(&e))?;
    let built_for = header.version_strings().version.as_str().to_owned();
    let module = header.init_root_module::<ChannelModuleRef>().map_err(|e| match e {
        LibraryError::IncompatibleVersionNumber { .. } => format!(
            "built against plugin-api {built_for}, this plugin loads channels of plugin-api {}",
            plugin_api::INTERFACE_VERSION
        ),
        LibraryError::AbiInstability(_) => format!(
            "not an alert channel of this interface (built against plugin-api {built_for}, its root module \
             is not the channel module of plugin-api {}; is it a plugin rather than a channel?)",
            plugin_api::INTERFACE_VERSION
        ),
        other => one_line_error(&other),
    })?;
    let info = (module.info())();
    if info.interface != CHANNEL_INTERFACE {
        return Err(format!(
            "channel '{}' speaks channel interface {}, this plugin speaks {CHANNEL_INTERFACE}",
            info.kind, info.interface
        ));
    }
    let kind = info.kind.to_string();
    if kind.is_empty() || !kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(format!("kind name {kind:?} is not allowed (letters, digits, '-' and '_' only)"));
    }
    Ok(ExternalKind {
        kind,
        description: info.description.to_string(),
        version: info.version.to_string(),
        path: path.to_owned(),
        module,
    })
}

fn one_line_error(error: &LibraryError) -> String {
    let text = match error {
        LibraryError::OpenError { err, .. } => format!("not a loadable library: {err}"),
        LibraryError::GetSymbolError { .. } => {
            "not a Context alert channel (it exports no root module)".to_owned()
        }
        other => other.to_string(),
    };
    let mut line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("unknown error").trim().to_owned();
    if line.len() > 300 {
        line.truncate(line.floor_char_boundary(300));
        line.push('…');
    }
    line
}

impl ExternalKind {
    /// Constructs one channel: the options table goes across as JSON.
    pub fn build(&self, ctx: &ChannelContext<'_>) -> Result<Arc<dyn Channel>, String> {
        let options = serde_json::to_string(ctx.options).map_err(|e| {
            format!(
                "alerting.channels.{:?}.options: cannot be handed to channel '{}': {e}",
                ctx.name, self.kind
            )
        })?;
        match (self.module.new())(RStr::from(options.as_str())) {
            RResult::ROk(object) => Ok(Arc::new(ExternalChannel {
                kind: self.kind.clone(),
                object: Arc::new(object),
                timeout: ctx.timeout,
            })),
            RResult::RErr(message) => Err(format!(
                "alerting.channels.{:?}: channel '{}' ({}) refused its options: {message}",
                ctx.name,
                self.kind,
                self.path.display()
            )),
        }
    }
}

struct ExternalChannel {
    kind: String,
    object: Arc<ChannelBox>,
    timeout: Duration,
}

#[async_trait]
impl Channel for ExternalChannel {
    async fn deliver(&self, notification: &Notification) -> Result<(), DeliveryError> {
        let json =
            serde_json::to_string(notification).map_err(|e| DeliveryError::permanent(e.to_string()))?;
        let object = Arc::clone(&self.object);
        let call = tokio::task::spawn_blocking(move || object.deliver(RStr::from(json.as_str())));
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(RResult::ROk(()))) => Ok(()),
            Ok(Ok(RResult::RErr(failure))) => {
                let reason = format!("channel '{}': {}", self.kind, failure.message);
                Err(if failure.retryable {
                    let after = match failure.retry_after_ms {
                        ROption::RSome(ms) => Some(Duration::from_millis(ms)),
                        ROption::RNone => None,
                    };
                    DeliveryError::Retry { reason, after }
                } else {
                    DeliveryError::Permanent { reason }
                })
            }
            // The library catches its own panics; a join error means the
            // runtime is shutting down.
            Ok(Err(join)) => {
                Err(DeliveryError::retry(format!("channel '{}': delivery abandoned: {join}", self.kind)))
            }
            Err(_) => Err(DeliveryError::retry(format!(
                "channel '{}': timed out after {:?}",
                self.kind, self.timeout
            ))),
        }
    }
}
