//! docs/configuration.md cannot drift from the config types, either way:
//! its full example loads with the real `deny_unknown_fields` types, every
//! key those types accept (found by asking them: an unknown key's error
//! lists the accepted ones) appears in the example and in the reference
//! tables, every key in the tables exists, and every value in the example
//! and in the tables' default column is the real default.
//!
//! Conventions for the page: one row per key, `| `path` | default | what |`,
//! paths relative to `[plugins.analytics.config]`, items of an array of
//! tables as `list[].key` with default `required`; a key unset by default
//! has default `none` (it may be left out of the example, or shown with a
//! value there).

use std::collections::BTreeMap;

use context_analytics::config::AnalyticsConfig;

const DOC: &str = "docs/configuration.md";
const PROBE: &str = "zz_probe_key";

fn doc() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(DOC);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The TOML block under `## Full example`.
fn example(doc: &str) -> toml::Table {
    let section =
        doc.split("## Full example").nth(1).unwrap_or_else(|| panic!("{DOC}: no '## Full example'"));
    let block = section
        .split("```toml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .unwrap_or_else(|| panic!("{DOC}: no ```toml block under '## Full example'"));
    toml::from_str(block).unwrap_or_else(|e| panic!("{DOC}: the full example is not TOML: {e}"))
}

/// `[plugins.analytics.config]` of the example.
fn plugin_table(example: &toml::Table) -> toml::Table {
    example
        .get("plugins")
        .and_then(|p| p.get("analytics"))
        .and_then(|a| a.get("config"))
        .and_then(toml::Value::as_table)
        .cloned()
        .unwrap_or_else(|| panic!("{DOC}: the full example has no [plugins.analytics.config]"))
}

/// The accepted keys of the table at `path` (`array`: an array of tables),
/// or None when that path is not a table of a `deny_unknown_fields` type.
fn accepted_keys(path: &[String], array: bool) -> Option<Vec<String>> {
    let text = if path.is_empty() {
        format!("{PROBE} = 1\n")
    } else if array {
        format!("[[{}]]\n{PROBE} = 1\n", path.join("."))
    } else {
        format!("[{}]\n{PROBE} = 1\n", path.join("."))
    };
    let error = AnalyticsConfig::from_toml(&text).err()?;
    if !error.contains(&format!("unknown field `{PROBE}`")) {
        return None;
    }
    let listed = error.split(&format!("unknown field `{PROBE}`")).nth(1).unwrap_or("");
    if listed.contains("there are no fields") {
        return Some(Vec::new());
    }
    Some(listed.split('`').skip(1).step_by(2).map(str::to_owned).collect())
}

/// Every leaf key the config types accept, as dotted paths (`[]` marks the
/// items of an array of tables), found by probing the real types.
fn discover(path: &mut Vec<String>, shown: &str, out: &mut Vec<String>) {
    let keys = accepted_keys(path, false).expect("a table of the config");
    for key in keys {
        path.push(key.clone());
        let name = if shown.is_empty() { key.clone() } else { format!("{shown}.{key}") };
        if accepted_keys(path, false).is_some() {
            discover(path, &name, out);
        } else if let Some(items) = accepted_keys(path, true) {
            out.push(name.clone());
            for item in items {
                out.push(format!("{name}[].{item}"));
            }
        } else {
            out.push(name);
        }
        path.pop();
    }
}

fn all_keys() -> Vec<String> {
    let mut keys = Vec::new();
    discover(&mut Vec::new(), "", &mut keys);
    keys
}

/// The value at a dotted path of the example (`[]`: the first item).
fn lookup<'a>(table: &'a toml::Table, path: &str) -> Option<&'a toml::Value> {
    let mut parts = path.split('.');
    let first = parts.next()?;
    let mut value = table.get(first.trim_end_matches("[]"))?;
    if first.ends_with("[]") {
        value = value.as_array()?.first()?;
    }
    for part in parts {
        let (name, item) = match part.strip_suffix("[]") {
            Some(name) => (name, true),
            None => (part, false),
        };
        value = value.get(name)?;
        if item {
            value = value.as_array()?.first()?;
        }
    }
    Some(value)
}

/// Reference rows: `| `key` | default | what |` under `## Reference`.
fn reference_rows(doc: &str) -> BTreeMap<String, String> {
    let reference = doc.split("## Reference").nth(1).unwrap_or_else(|| panic!("{DOC}: no '## Reference'"));
    let mut rows = BTreeMap::new();
    for line in reference.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split(" | ").collect();
        let key = cells[0].trim_start_matches("| ").trim_matches('`').to_owned();
        let default = cells.get(1).map(|c| c.trim().to_owned()).unwrap_or_default();
        assert!(rows.insert(key.clone(), default).is_none(), "{DOC}: `{key}` has two rows");
    }
    rows
}

#[test]
fn the_full_example_loads_with_the_real_types() {
    let table = plugin_table(&example(&doc()));
    let text = toml::to_string(&table).unwrap();
    AnalyticsConfig::from_toml(&text).unwrap_or_else(|e| panic!("{DOC}: the full example is refused: {e}"));
}

#[test]
fn every_accepted_key_is_in_the_example_and_the_reference() {
    let keys = all_keys();
    assert!(keys.len() >= 29, "probing found only {keys:?}");
    for expected in ["max_projects", "storage.url", "pipeline.spool_max_bytes", "auth.tokens[].sha256"] {
        assert!(keys.contains(&expected.to_owned()), "probing missed {expected}: {keys:?}");
    }
    let doc = doc();
    let table = plugin_table(&example(&doc));
    let rows = reference_rows(&doc);
    let missing_example: Vec<&String> = keys
        .iter()
        .filter(|k| lookup(&table, k).is_none() && rows.get(*k).is_none_or(|d| d != "none"))
        .collect();
    assert!(missing_example.is_empty(), "{DOC}: keys missing from the full example: {missing_example:?}");
    let missing_rows: Vec<&String> = keys.iter().filter(|k| !rows.contains_key(*k)).collect();
    assert!(missing_rows.is_empty(), "{DOC}: keys without a reference row: {missing_rows:?}");
    let stale: Vec<&String> = rows.keys().filter(|k| !keys.contains(k)).collect();
    assert!(stale.is_empty(), "{DOC}: reference rows for keys the plugin does not accept: {stale:?}");
}

#[test]
fn documented_defaults_are_the_real_ones() {
    let doc = doc();
    let rows = reference_rows(&doc);
    let mut table = plugin_table(&example(&doc));
    // The default column shows each key's value in the example...
    for (key, default) in &rows {
        if key.contains("[]") || default == "none" {
            continue;
        }
        let value = lookup(&table, key).unwrap_or_else(|| panic!("{DOC}: `{key}` is not in the example"));
        let shown = match value {
            toml::Value::Array(a) if a.iter().all(toml::Value::is_table) => "[]".to_owned(),
            other => other.to_string(),
        };
        assert_eq!(default, &format!("`{shown}`"), "{DOC}: `{key}`: the table and the example disagree");
    }
    // ...and the example, without its arrays of tables, is the default config.
    fn strip(table: &mut toml::Table) {
        table.retain(|_, v| !matches!(v, toml::Value::Array(a) if a.iter().any(toml::Value::is_table)));
        for (_, value) in table.iter_mut() {
            if let toml::Value::Table(t) = value {
                strip(t);
            }
        }
    }
    strip(&mut table);
    // Keys unset by default (documented default `none`) are shown in the
    // example with a value; leave them out of the comparison.
    fn remove(table: &mut toml::Table, path: &[&str]) {
        match path {
            [last] => {
                table.remove(*last);
            }
            [first, rest @ ..] => {
                if let Some(inner) = table.get_mut(*first).and_then(toml::Value::as_table_mut) {
                    remove(inner, rest);
                }
            }
            [] => {}
        }
    }
    for (key, default) in &rows {
        if default == "none" && !key.contains("[]") {
            remove(&mut table, &key.split('.').collect::<Vec<_>>());
        }
    }
    let documented = AnalyticsConfig::from_toml(&toml::to_string(&table).unwrap()).unwrap();
    let real = AnalyticsConfig::from_toml("").unwrap();
    assert_eq!(
        format!("{documented:#?}"),
        format!("{real:#?}"),
        "{DOC}: the full example's values are not the defaults"
    );
}
