//! The host's TOML configuration.
//!
//! ```toml
//! [server]
//! listen = "127.0.0.1:8080"
//! data_dir = "data"
//!
//! [plugins]
//! dir = "plugins"
//!
//! [plugins.analytics]
//! enabled = true
//! [plugins.analytics.config]      # handed to the plugin as TOML text
//! max_projects = 50
//!
//! [index]                        # optional; these are the defaults
//! max_file_bytes = 1048576        # larger files are skipped with `too_large`
//! workers = 1                     # indexer threads
//!
//! [search]                        # optional; these are the defaults
//! l1_entries = 256                # per project and query kind: exact queries
//! l2_entries = 4096               # per project and query kind: normalized queries
//! l3_bytes = 33554432             # per project: per-term posting lists
//!
//! [[projects]]
//! name = "demo"
//! path = "examples/demo-project"
//! ```

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::{Context, anyhow, bail};
use serde::Deserialize;

#[derive(Debug, Clone)]
pub struct HostConfig {
    pub server: ServerConfig,
    pub plugins: PluginsConfig,
    pub index: IndexConfig,
    pub search: SearchConfig,
    pub projects: Vec<ProjectConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on, for example `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Where the host and its plugins keep state.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Identity of this host among several sharing one database; defaults
    /// to `hostname:port`.
    pub instance_id: Option<String>,
    /// Seconds between project snapshots sent to plugins.
    #[serde(default = "default_snapshot_interval")]
    pub snapshot_interval_secs: u64,
    /// A search running longer than this ends with status `timeout`.
    #[serde(default = "default_search_timeout_ms")]
    pub search_timeout_ms: u64,
}

/// `[index]`: how files become searchable.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IndexConfig {
    /// Files larger than this are skipped with `too_large` (never read).
    pub max_file_bytes: u64,
    /// Indexer threads working through the index queue.
    pub workers: usize,
}

impl Default for IndexConfig {
    fn default() -> Self {
        Self { max_file_bytes: 1024 * 1024, workers: 1 }
    }
}

/// `[search]`: sizes of the three cache layers. L1 and L2 hold whole
/// answers and are exact only for the index they were computed on; L3 holds
/// per-term posting lists that are repaired after files change.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchConfig {
    /// L1: answers by exact query text, per project and query kind (LRU).
    pub l1_entries: usize,
    /// L2: answers by normalized query, per project and query kind (LRU).
    pub l2_entries: usize,
    /// L3: bytes of per-term posting lists kept per project (LRU).
    pub l3_bytes: u64,
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self { l1_entries: 256, l2_entries: 4096, l3_bytes: 32 * 1024 * 1024 }
    }
}

#[derive(Debug, Clone, Default)]
pub struct PluginsConfig {
    /// Folder scanned for `*.so` plugin libraries.
    pub dir: PathBuf,
    /// `[plugins.<name>]` sections, by plugin name.
    pub entries: BTreeMap<String, PluginEntry>,
}

#[derive(Debug, Clone, Default)]
pub struct PluginEntry {
    pub enabled: bool,
    /// The `[plugins.<name>.config]` table, as TOML text for the plugin.
    pub config_toml: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectConfig {
    pub name: String,
    pub path: PathBuf,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}
fn default_snapshot_interval() -> u64 {
    15
}
fn default_search_timeout_ms() -> u64 {
    2_000
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: ServerConfig,
    #[serde(default)]
    plugins: Option<toml::Table>,
    #[serde(default)]
    index: IndexConfig,
    #[serde(default)]
    search: SearchConfig,
    #[serde(default)]
    projects: Vec<ProjectConfig>,
}

impl HostConfig {
    /// Reads the file; relative paths in it are taken from the file's folder.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file '{}'", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base).with_context(|| format!("invalid config file '{}'", path.display()))
    }

    pub fn parse(text: &str, base: &Path) -> anyhow::Result<Self> {
        let raw: RawConfig = toml::from_str(text)?;
        let mut server = raw.server;
        server.data_dir = base.join(&server.data_dir);
        let plugins = parse_plugins(raw.plugins.unwrap_or_default(), base)?;
        let mut projects = raw.projects;
        let mut seen = std::collections::HashSet::new();
        for project in &mut projects {
            if project.name.is_empty() || project.name.contains('/') {
                bail!("project name '{}' must be non-empty and contain no '/'", project.name);
            }
            if !seen.insert(project.name.clone()) {
                bail!("project '{}' is listed twice in [[projects]]", project.name);
            }
            project.path = base.join(&project.path);
        }
        if raw.index.workers == 0 {
            bail!("index.workers must be at least 1");
        }
        Ok(Self { server, plugins, index: raw.index, search: raw.search, projects })
    }

    /// What the config sets up, one fact a line (`check-config`).
    pub fn summary(&self) -> String {
        let mut out = format!(
            "listen: {}\ndata dir: {}\ninstance id: {}\nplugins dir: {}\n",
            self.server.listen,
            self.server.data_dir.display(),
            self.instance_id(),
            self.plugins.dir.display()
        );
        for (name, entry) in &self.plugins.entries {
            let state = if entry.enabled { "enabled" } else { "disabled" };
            fn leaves(value: &toml::Value) -> usize {
                match value {
                    toml::Value::Table(t) => t.values().map(leaves).sum(),
                    _ => 1,
                }
            }
            let keys = toml::from_str::<toml::Table>(&entry.config_toml)
                .map(|t| t.values().map(leaves).sum::<usize>())
                .unwrap_or(0);
            out.push_str(&format!("plugin {name}: {state}, {keys} config key(s)\n"));
        }
        for project in &self.projects {
            out.push_str(&format!("project {}: {}\n", project.name, project.path.display()));
        }
        out
    }

    pub fn instance_id(&self) -> String {
        self.server.instance_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "localhost".to_owned());
            format!("{host}:{}", self.server.listen.port())
        })
    }
}

/// `[plugins]` mixes one fixed key (`dir`) with one table per plugin, so it
/// is read by hand; every error names the key and what is allowed.
fn parse_plugins(table: toml::Table, base: &Path) -> anyhow::Result<PluginsConfig> {
    let mut config = PluginsConfig { dir: base.join("plugins"), entries: BTreeMap::new() };
    for (key, value) in table {
        if key == "dir" {
            let dir =
                value.as_str().ok_or_else(|| anyhow!("plugins.dir must be a string path, got {value}"))?;
            config.dir = base.join(dir);
            continue;
        }
        let section = value.as_table().ok_or_else(|| {
            anyhow!("plugins.{key} must be a table ([plugins.{key}] enabled = true) or the key 'dir'")
        })?;
        let mut entry = PluginEntry::default();
        for (field, value) in section {
            match field.as_str() {
                "enabled" => {
                    entry.enabled = value
                        .as_bool()
                        .ok_or_else(|| anyhow!("plugins.{key}.enabled must be true or false, got {value}"))?;
                }
                "config" => {
                    let table =
                        value.as_table().ok_or_else(|| anyhow!("plugins.{key}.config must be a table"))?;
                    entry.config_toml = toml::to_string(table)?;
                }
                other => bail!("unknown key 'plugins.{key}.{other}' (expected 'enabled' or 'config')"),
            }
        }
        config.entries.insert(key, entry);
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_sections_become_entries_with_config_text() {
        let config = HostConfig::parse(
            r#"
            [server]
            listen = "127.0.0.1:0"
            [plugins]
            dir = "p"
            [plugins.analytics]
            enabled = true
            [plugins.analytics.config]
            max_projects = 3
            [plugins.other]
            enabled = false
            "#,
            Path::new("/base"),
        )
        .unwrap();
        assert_eq!(config.plugins.dir, PathBuf::from("/base/p"));
        let analytics = &config.plugins.entries["analytics"];
        assert!(analytics.enabled);
        assert_eq!(analytics.config_toml.trim(), "max_projects = 3");
        assert!(!config.plugins.entries["other"].enabled);
    }

    #[test]
    fn unknown_plugin_key_is_named() {
        let error = HostConfig::parse(
            "[server]\nlisten = \"127.0.0.1:0\"\n[plugins.analytics]\nenable = true\n",
            Path::new("."),
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "unknown key 'plugins.analytics.enable' (expected 'enabled' or 'config')"
        );
    }
}
