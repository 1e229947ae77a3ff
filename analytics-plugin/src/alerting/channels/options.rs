//! Reading a channel's `options` table: every message names the option as
//! the operator wrote it (`alerting.channels."<name>".options.<key>`), says
//! what was wrong and what is allowed; keys no kind reads are refused.

use std::{cell::RefCell, collections::BTreeSet};

use crate::alerting::channel::ChannelContext;

/// A view on one channel's options that remembers which keys were read, so
/// [`Options::finish`] can refuse the others.
pub struct Options<'a> {
    name: &'a str,
    table: &'a toml::Table,
    env: &'a (dyn Fn(&str) -> Option<String> + Sync),
    known: RefCell<BTreeSet<&'static str>>,
}

impl<'a> Options<'a> {
    pub fn new(ctx: &'a ChannelContext<'a>) -> Self {
        Options { name: ctx.name, table: ctx.options, env: ctx.env, known: RefCell::new(BTreeSet::new()) }
    }

    /// `alerting.channels."<name>".options.<key>`
    pub fn path(&self, key: &str) -> String {
        format!("alerting.channels.{:?}.options.{key}", self.name)
    }

    /// An error about `key`: `<path>: <what>`.
    pub fn error(&self, key: &str, what: impl std::fmt::Display) -> String {
        format!("{}: {what}", self.path(key))
    }

    fn get(&self, key: &'static str) -> Option<&'a toml::Value> {
        self.known.borrow_mut().insert(key);
        self.table.get(key)
    }

    /// An optional string; `what` says what the value is (for messages).
    pub fn string(&self, key: &'static str, what: &str) -> Result<Option<String>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
            Some(toml::Value::String(_)) => Err(self.error(key, format!("is empty; expected {what}"))),
            Some(other) => {
                Err(self.error(key, format!("is a {}; expected a string, {what}", other.type_str())))
            }
        }
    }

    pub fn required_string(&self, key: &'static str, what: &str) -> Result<String, String> {
        self.string(key, what)?.ok_or_else(|| self.error(key, format!("is missing; expected {what}")))
    }

    /// One of `allowed`, or `default` when absent.
    pub fn choice(
        &self,
        key: &'static str,
        allowed: &[&'static str],
        default: &'static str,
    ) -> Result<&'static str, String> {
        let list = allowed.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(", ");
        match self.get(key) {
            None => Ok(default),
            Some(toml::Value::String(s)) => allowed
                .iter()
                .copied()
                .find(|a| a == s)
                .ok_or_else(|| self.error(key, format!("{s:?} is not allowed; expected one of {list}"))),
            Some(other) => Err(self.error(key, format!("is a {}; expected one of {list}", other.type_str()))),
        }
    }

    /// A string or a list of strings (at least one when present).
    pub fn string_list(&self, key: &'static str, what: &str) -> Result<Option<Vec<String>>, String> {
        let expected = format!("a string or a non-empty list of strings, {what}");
        match self.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) if !s.trim().is_empty() => Ok(Some(vec![s.clone()])),
            Some(toml::Value::Array(items)) if !items.is_empty() => {
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| match item {
                        toml::Value::String(s) if !s.trim().is_empty() => Ok(s.clone()),
                        _ => Err(self
                            .error(key, format!("item {i} is not a non-empty string; expected {expected}"))),
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Some)
            }
            Some(_) => Err(self.error(key, format!("expected {expected}"))),
        }
    }

    /// A table of string values (for example extra HTTP headers).
    pub fn string_table(&self, key: &'static str, what: &str) -> Result<Vec<(String, String)>, String> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(toml::Value::Table(table)) => table
                .iter()
                .map(|(k, v)| match v {
                    toml::Value::String(s) => Ok((k.clone(), s.clone())),
                    other => Err(self.error(
                        &format!("{key}.{k}"),
                        format!("is a {}; expected a string ({what})", other.type_str()),
                    )),
                })
                .collect(),
            Some(other) => {
                Err(self
                    .error(key, format!("is a {}; expected a table of strings ({what})", other.type_str())))
            }
        }
    }

    /// An optional integer within `min..=max`.
    pub fn integer(&self, key: &'static str, min: i64, max: i64) -> Result<Option<i64>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(toml::Value::Integer(n)) if (min..=max).contains(n) => Ok(Some(*n)),
            Some(toml::Value::Integer(n)) => {
                Err(self.error(key, format!("{n} is out of range; expected {min} to {max}")))
            }
            Some(other) => Err(self
                .error(key, format!("is a {}; expected an integer from {min} to {max}", other.type_str()))),
        }
    }

    /// A secret read from the environment variable named by `key` (a
    /// `*_env` option). The variable must be set when the channel is built.
    pub fn secret_from_env(&self, key: &'static str, what: &str) -> Result<Option<String>, String> {
        let Some(var) = self.string(key, &format!("the name of an environment variable holding {what}"))?
        else {
            return Ok(None);
        };
        match (self.env)(&var) {
            Some(value) if !value.is_empty() => Ok(Some(value)),
            Some(_) => {
                Err(self.error(key, format!("environment variable {var} is empty; it must hold {what}")))
            }
            None => {
                Err(self.error(key, format!("environment variable {var} is not set; it must hold {what}")))
            }
        }
    }

    /// An `http(s)` URL, given directly (`url_key`) or through an
    /// environment variable (`env_key`): exactly one of the two.
    pub fn url(&self, url_key: &'static str, env_key: Option<&'static str>) -> Result<reqwest::Url, String> {
        let direct = self.string(url_key, "an http:// or https:// URL")?;
        let from_env = match env_key {
            Some(env_key) => {
                self.secret_from_env(env_key, "an http:// or https:// URL")?.map(|v| (env_key, v))
            }
            None => None,
        };
        let (key, text) = match (direct, from_env) {
            (Some(_), Some((env_key, _))) => {
                return Err(self.error(url_key, format!("and `{env_key}` are both set; set only one")));
            }
            (Some(text), None) => (url_key, text),
            (None, Some((env_key, text))) => (env_key, text),
            (None, None) => {
                let hint = env_key
                    .map(|k| format!(" (or `{k}`, naming an environment variable)"))
                    .unwrap_or_default();
                return Err(
                    self.error(url_key, format!("is missing; expected an http:// or https:// URL{hint}"))
                );
            }
        };
        let url =
            reqwest::Url::parse(text.trim()).map_err(|e| self.error(key, format!("is not a URL ({e})")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(self.error(
                key,
                format!("scheme {:?} is not allowed; expected an http:// or https:// URL", url.scheme()),
            ));
        }
        Ok(url)
    }

    /// Refuses every key no getter asked for, listing the accepted ones.
    pub fn finish(&self) -> Result<(), String> {
        let known = self.known.borrow();
        let unknown: Vec<&String> = self.table.keys().filter(|k| !known.contains(k.as_str())).collect();
        if let Some(first) = unknown.first() {
            let accepted = known.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ");
            return Err(format!("{}: unknown option; this kind accepts {accepted}", self.path(first)));
        }
        Ok(())
    }
}
