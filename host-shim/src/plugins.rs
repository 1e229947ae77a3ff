//! Loading plugin libraries from the plugins folder and dispatching hooks,
//! routes and middleware to them.
//!
//! abi_stable's `RootModule::load_from_file` caches one module per type, so a
//! second file would silently return the first: every file is loaded by its
//! own path through `lib_header_from_path`. Libraries are never unloaded.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use abi_stable::{
    library::{LibraryError, RootModule, lib_header_from_path},
    std_types::{ROption, RResult, RStr, RString},
};
use plugin_api::{
    FileIndexed, FileOpened, HostContext, HostServices, LogLevel, MiddlewareSpec, PluginBox, PluginInfo,
    PluginModuleRef, ProjectSnapshot, RequestHead, RequestRecord, RouteSpec, SearchExecuted,
};

use crate::config::PluginsConfig;

/// A plugin library that passed the interface checks.
pub struct PluginLibrary {
    pub path: PathBuf,
    pub module: PluginModuleRef,
    pub info: PluginInfo,
    /// The interface version the library was built against.
    pub interface_version: String,
}

/// Loads one library and checks it against this host's interface. The
/// error is one line: abi_stable's own report on a layout mismatch runs to
/// thousands of lines.
pub fn load_library(path: &Path) -> Result<PluginLibrary, String> {
    let header = lib_header_from_path(path).map_err(|e| one_line_error(&e))?;
    let built_for = header.version_strings().version.as_str().to_owned();
    let module = header.init_root_module::<PluginModuleRef>().map_err(|e| match e {
        LibraryError::IncompatibleVersionNumber { .. } => {
            format!(
                "built for plugin interface {built_for}, this host speaks {}",
                plugin_api::INTERFACE_VERSION
            )
        }
        // Same version, another layout: some other root module, such as an
        // alert channel dropped into the plugins folder.
        LibraryError::AbiInstability(_) if built_for == plugin_api::INTERFACE_VERSION => format!(
            "not a Context plugin: its root module is not the plugin module of interface {built_for} \
             (an alert channel belongs in the analytics plugin's channels folder)"
        ),
        LibraryError::AbiInstability(_) => {
            format!(
                "built for plugin interface {built_for}, this host speaks {}",
                plugin_api::INTERFACE_VERSION
            )
        }
        other => one_line_error(&other),
    })?;
    let info = (module.info())();
    Ok(PluginLibrary { path: path.to_owned(), module, info, interface_version: built_for })
}

fn one_line_error(error: &LibraryError) -> String {
    let text = match error {
        LibraryError::OpenError { err, .. } => format!("not a loadable library: {err}"),
        LibraryError::GetSymbolError { .. } => {
            "not a Context plugin (it exports no plugin root module)".to_owned()
        }
        other => other.to_string(),
    };
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("unknown error").trim();
    let mut line = line.to_owned();
    if line.len() > 300 {
        line.truncate(line.floor_char_boundary(300));
        line.push('…');
    }
    line
}

/// One constructed, enabled plugin and what it registered.
pub struct LoadedPlugin {
    pub info: PluginInfo,
    pub object: PluginBox,
    pub routes: Vec<RouteSpec>,
    pub middleware: MiddlewareSpec,
}

/// Everything the host needs to build a plugin's [`HostContext`].
pub struct HostIdentity {
    pub host_name: String,
    pub host_version: String,
    pub instance_id: String,
    pub data_dir: PathBuf,
}

/// The enabled plugins, in load order.
#[derive(Default)]
pub struct PluginSet {
    plugins: Vec<LoadedPlugin>,
}

impl PluginSet {
    /// Loads every `*.so` in the folder and constructs the enabled ones.
    /// Anything refused is logged in one line and skipped: the host serves
    /// without it.
    pub fn load(config: &PluginsConfig, identity: &HostIdentity) -> Self {
        let mut set = PluginSet::default();
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&config.dir) {
            Ok(dir) => dir
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "so"))
                .collect(),
            Err(e) => {
                tracing::warn!("plugins folder '{}' cannot be read: {e}", config.dir.display());
                Vec::new()
            }
        };
        files.sort();
        let mut found = std::collections::BTreeSet::new();
        for path in files {
            let library = match load_library(&path) {
                Ok(library) => library,
                Err(reason) => {
                    tracing::warn!("plugin '{}' refused: {reason}", path.display());
                    continue;
                }
            };
            let name = library.info.name.to_string();
            if !found.insert(name.clone()) {
                tracing::warn!(
                    "plugin '{}' refused: another library already provides plugin '{name}'",
                    path.display()
                );
                continue;
            }
            let Some(entry) = config.entries.get(&name).filter(|e| e.enabled) else {
                tracing::info!(
                    "plugin '{name}' {} from '{}' is not enabled ([plugins.{name}] enabled = true)",
                    library.info.version,
                    path.display()
                );
                continue;
            };
            match construct(&library, identity, &entry.config_toml) {
                Ok(plugin) => {
                    tracing::info!(
                        "plugin '{name}' {} loaded from '{}' (interface {}), {} route(s)",
                        plugin.info.version,
                        path.display(),
                        library.interface_version,
                        plugin.routes.len()
                    );
                    set.plugins.push(plugin);
                }
                Err(reason) => tracing::error!("plugin '{name}' failed to start: {reason}"),
            }
        }
        for (name, entry) in &config.entries {
            if entry.enabled && !found.contains(name) {
                tracing::warn!(
                    "plugin '{name}' is enabled but no library in '{}' provides it",
                    config.dir.display()
                );
            }
        }
        set
    }

    pub fn plugins(&self) -> &[LoadedPlugin] {
        &self.plugins
    }

    /// The plugin and route serving `path` (the longest matching prefix).
    pub fn route_for(&self, path: &str) -> Option<(&LoadedPlugin, &RouteSpec)> {
        self.plugins
            .iter()
            .flat_map(|p| p.routes.iter().map(move |r| (p, r)))
            .filter(|(_, r)| prefix_matches(r.prefix.as_str(), path))
            .max_by_key(|(_, r)| r.prefix.len())
    }

    /// Runs the before-request middleware of every plugin that asked for
    /// `path`; the first response returned answers the request.
    pub fn before_request(&self, head: &RequestHead<'_>) -> Option<plugin_api::HttpResponse> {
        let path = head.path.as_str();
        self.plugins
            .iter()
            .filter(|p| p.middleware.before_prefixes.iter().any(|pre| prefix_matches(pre, path)))
            .find_map(|p| match p.object.before_request(head) {
                ROption::RSome(response) => Some(response),
                ROption::RNone => None,
            })
    }

    pub fn wants_after_request(&self) -> bool {
        self.plugins.iter().any(|p| p.middleware.after_all)
    }

    pub fn after_request(&self, record: &RequestRecord<'_>) {
        for plugin in self.plugins.iter().filter(|p| p.middleware.after_all) {
            plugin.object.after_request(record);
        }
    }

    pub fn search_executed(&self, event: &SearchExecuted<'_>) {
        for plugin in &self.plugins {
            plugin.object.on_search_executed(event);
        }
    }

    pub fn file_indexed(&self, event: &FileIndexed<'_>) {
        for plugin in &self.plugins {
            plugin.object.on_file_indexed(event);
        }
    }

    pub fn file_opened(&self, event: &FileOpened<'_>) {
        for plugin in &self.plugins {
            plugin.object.on_file_opened(event);
        }
    }

    pub fn project_snapshot(&self, event: &ProjectSnapshot<'_>) {
        for plugin in &self.plugins {
            plugin.object.on_project_snapshot(event);
        }
    }

    /// Tells every plugin to flush. The caller guarantees no hook runs
    /// concurrently or afterwards (the server and the indexer are stopped).
    pub fn shutdown(&self) {
        for plugin in &self.plugins {
            match plugin.object.shutdown() {
                RResult::ROk(()) => tracing::info!("plugin '{}' shut down", plugin.info.name),
                RResult::RErr(e) => {
                    tracing::error!("plugin '{}' shutdown failed: {e}", plugin.info.name)
                }
            }
        }
    }
}

/// `prefix` serves `path` when they are equal or `path` continues it after a
/// `/` (so `/metrics` does not serve `/metricsfoo`).
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || prefix.ends_with('/'),
        None => false,
    }
}

/// Constructs one plugin from a checked library (its data dir is created
/// under the host's).
pub fn construct(
    library: &PluginLibrary,
    identity: &HostIdentity,
    config_toml: &str,
) -> Result<LoadedPlugin, String> {
    let name = library.info.name.to_string();
    let data_dir = identity.data_dir.join("plugins").join(&name);
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| format!("cannot create data dir '{}': {e}", data_dir.display()))?;
    let context = HostContext {
        plugin_name: RString::from(name.as_str()),
        host_name: RString::from(identity.host_name.as_str()),
        host_version: RString::from(identity.host_version.as_str()),
        instance_id: RString::from(identity.instance_id.as_str()),
        data_dir: RString::from(data_dir.to_string_lossy().as_ref()),
        services: host_services(),
    };
    let object = match (library.module.new())(context, RStr::from(config_toml)) {
        RResult::ROk(object) => object,
        RResult::RErr(e) => return Err(e.to_string()),
    };
    let info = object.info();
    let routes = object.routes().into_vec();
    let middleware = object.middleware();
    Ok(LoadedPlugin { info, object, routes, middleware })
}

fn host_services() -> plugin_api::HostServicesRef {
    static SERVICES: std::sync::OnceLock<plugin_api::HostServicesRef> = std::sync::OnceLock::new();
    *SERVICES.get_or_init(|| HostServices::leak(plugin_log))
}

/// Plugin log lines land in the host's log, tagged with their target.
extern "C" fn plugin_log(level: LogLevel, target: RStr<'_>, message: RStr<'_>) {
    let (target, message) = (target.as_str(), message.as_str());
    match level {
        LogLevel::Error => tracing::error!(plugin = target, "{message}"),
        LogLevel::Warn => tracing::warn!(plugin = target, "{message}"),
        LogLevel::Info => tracing::info!(plugin = target, "{message}"),
        LogLevel::Debug => tracing::debug!(plugin = target, "{message}"),
        LogLevel::Trace => tracing::trace!(plugin = target, "{message}"),
    }
}

/// `context-host check-plugin FILE`: what an operator sees before enabling.
pub fn describe_library(path: &Path) -> Result<String, String> {
    let library = load_library(path)?;
    Ok(format!(
        "name: {}\nversion: {}\ninterface: {} (this host speaks {})\nbase name: {}",
        library.info.name,
        library.info.version,
        library.interface_version,
        plugin_api::INTERFACE_VERSION,
        PluginModuleRef::BASE_NAME,
    ))
}

/// Shared handle used by the server, the indexer and the search engine.
pub type SharedPlugins = Arc<PluginSet>;

#[cfg(test)]
mod tests {
    use super::prefix_matches;

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(prefix_matches("/metrics", "/metrics"));
        assert!(prefix_matches("/api/v1/analytics", "/api/v1/analytics/health"));
        assert!(!prefix_matches("/metrics", "/metricsfoo"));
        assert!(prefix_matches("/analytics/", "/analytics/app.js"));
        assert!(!prefix_matches("/api/v1/analytics", "/api/v1"));
    }
}
