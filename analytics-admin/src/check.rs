//! `check-config`: the plugin's section of a host config, checked with the
//! plugin's own types and constructors (what `AnalyticsPlugin::new` checks
//! before it starts anything).

use std::path::Path;

use anyhow::{Context, anyhow, bail};
use context_analytics::{
    api::auth::Auth,
    config::AnalyticsConfig,
    storage::{self, privacy::Privacy},
};

pub fn run(file: &Path, plugin: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read config file '{}'", file.display()))?;
    let host: toml::Table =
        toml::from_str(&text).with_context(|| format!("'{}' is not valid TOML", file.display()))?;
    let section = host
        .get("plugins")
        .and_then(|p| p.get(plugin))
        .ok_or_else(|| anyhow!("'{}' has no [plugins.{plugin}] section", file.display()))?;
    let enabled = section.get("enabled").and_then(toml::Value::as_bool).unwrap_or(false);
    let table = match section.get("config") {
        None => toml::Table::new(),
        Some(toml::Value::Table(t)) => t.clone(),
        Some(other) => bail!("plugins.{plugin}.config must be a table, got {other}"),
    };
    let config_text = toml::to_string(&table)?;
    // Line numbers from the parser count lines of the re-serialized table,
    // not of the file: leave them out (the key is named).
    let place = |e: String| anyhow!("{}: {}", file.display(), without_line(&e));
    let config = AnalyticsConfig::from_toml(&config_text).map_err(place)?;
    let section_name = "invalid [plugins.analytics.config]";
    Privacy::from_config(&config.privacy).map_err(|e| place(format!("{section_name}: {e}")))?;
    let auth = Auth::from_config(&config.auth).map_err(|e| place(format!("{section_name}: {e}")))?;
    let target = storage::Target::parse(&config.storage.url, Path::new("<data_dir>/plugins/analytics"))
        .map_err(|e| place(format!("{section_name}: {e}")))?;
    let store = match target {
        storage::Target::Sqlite(path) => format!("SQLite file {}", path.display()),
        storage::Target::Postgres(url) => {
            format!("PostgreSQL {} (timescaledb: {:?})", storage::redact(&url), config.storage.timescaledb)
        }
    };
    let r = &config.retention;
    Ok(format!(
        "plugin {plugin}: {}\nstorage: {store}\nretention: raw {} d, minute {} d, hourly {} d, daily {} d, compress after {} d\nprivacy: user ids {:?}, queries {:?}\nauth: {}\n",
        if enabled { "enabled" } else { "disabled" },
        r.raw_days,
        r.minute_days,
        r.hourly_days,
        r.daily_days,
        r.compress_after_days,
        config.privacy.user_ids,
        config.privacy.queries,
        if auth.enabled() {
            format!("{} token(s)", config.auth.tokens.len())
        } else {
            "open (no tokens)".into()
        },
    ))
}

fn without_line(message: &str) -> String {
    match (message.find(" (line "), message.find("): ")) {
        (Some(start), Some(end)) if end > start => format!("{}{}", &message[..start], &message[end + 1..]),
        _ => message.to_owned(),
    }
}
