//! The channel kinds: one folder per built-in kind, each registering itself
//! through `inventory`, and `external/` for `.so` channels. The
//! [`ChannelRegistry`] puts both together: it lists every kind and builds a
//! configured channel of any of them.

pub mod alertmanager;
pub mod email;
pub mod external;
pub mod http;
pub mod log;
pub mod options;
pub mod slack;
pub mod webhook;

use std::{path::Path, sync::Arc};

use plugin_api::HostLogger;
use serde::Serialize;

use crate::alerting::channel::{
    Channel, ChannelContext, ChannelKind, ChannelSource, Notification, builtin_kinds,
};
use external::ExternalKind;

/// One kind as listed by `GET /alerts/channels`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KindInfo {
    pub kind: String,
    pub description: String,
    /// `{"source": "builtin"}` or `{"source": "external", "path": "…"}`.
    #[serde(flatten)]
    pub source: ChannelSource,
}

/// Every channel kind this plugin can build: built-in ones and those loaded
/// from the channels folder.
#[derive(Debug)]
pub struct ChannelRegistry {
    builtin: Vec<&'static ChannelKind>,
    external: Vec<ExternalKind>,
}

impl ChannelRegistry {
    /// Only the built-in kinds.
    pub fn builtin() -> Self {
        ChannelRegistry { builtin: builtin_kinds(), external: Vec::new() }
    }

    /// The built-in kinds plus every `*.so` of `channels_dir` that passes the
    /// checks. Each refused file gives one line in the returned list (also
    /// logged as a warning); a refused file never stops the others, and an
    /// external kind may not take the name of a built-in or an earlier one.
    pub fn load(channels_dir: Option<&Path>, logger: &HostLogger) -> (ChannelRegistry, Vec<String>) {
        let mut registry = ChannelRegistry::builtin();
        let Some(dir) = channels_dir else {
            return (registry, Vec::new());
        };
        let (kinds, mut errors) = external::load_dir(dir);
        for kind in kinds {
            if let Some(source) = registry.source_of(&kind.kind) {
                let taken_by = match source {
                    ChannelSource::Builtin => "a built-in kind".to_owned(),
                    ChannelSource::External { path } => format!("'{path}'"),
                };
                errors.push(format!(
                    "channel library '{}' refused: kind '{}' is already provided by {taken_by}",
                    kind.path.display(),
                    kind.kind
                ));
                continue;
            }
            logger.info(&format!(
                "alert channel kind '{}' {} loaded from '{}'",
                kind.kind,
                kind.version,
                kind.path.display()
            ));
            registry.external.push(kind);
        }
        for error in &errors {
            logger.warn(error);
        }
        (registry, errors)
    }

    fn source_of(&self, kind: &str) -> Option<ChannelSource> {
        if self.builtin.iter().any(|k| k.kind == kind) {
            return Some(ChannelSource::Builtin);
        }
        self.external
            .iter()
            .find(|k| k.kind == kind)
            .map(|k| ChannelSource::External { path: k.path.display().to_string() })
    }

    /// Every kind, sorted by name.
    pub fn kinds(&self) -> Vec<KindInfo> {
        let mut kinds: Vec<KindInfo> = self
            .builtin
            .iter()
            .map(|k| KindInfo {
                kind: k.kind.to_owned(),
                description: k.description.to_owned(),
                source: ChannelSource::Builtin,
            })
            .chain(self.external.iter().map(|k| KindInfo {
                kind: k.kind.clone(),
                description: k.description.clone(),
                source: ChannelSource::External { path: k.path.display().to_string() },
            }))
            .collect();
        kinds.sort_by(|a, b| a.kind.cmp(&b.kind));
        kinds
    }

    /// Builds a configured channel of `kind` from its options; an unknown
    /// kind's message lists the known ones.
    pub fn build(&self, kind: &str, ctx: &ChannelContext<'_>) -> Result<Arc<dyn Channel>, String> {
        if let Some(builtin) = self.builtin.iter().find(|k| k.kind == kind) {
            return (builtin.build)(ctx);
        }
        if let Some(external) = self.external.iter().find(|k| k.kind == kind) {
            return external.build(ctx);
        }
        let known = self.kinds().iter().map(|k| format!("{:?}", k.kind)).collect::<Vec<_>>().join(", ");
        Err(format!(
            "alerting.channels.{:?}.kind: unknown channel kind {kind:?}; known kinds: {known}",
            ctx.name
        ))
    }
}

/// The one-line summary: the `summary` annotation, else the rule's name.
pub(crate) fn summary(n: &Notification) -> String {
    n.annotations.get("summary").filter(|s| !s.trim().is_empty()).cloned().unwrap_or_else(|| n.rule.clone())
}

/// A measured value for people: integers without decimals, others with at
/// most four significant decimals.
pub(crate) fn format_value(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        let text = format!("{value:.4}");
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_kind_registers_itself() {
        let kinds: Vec<String> = ChannelRegistry::builtin().kinds().into_iter().map(|k| k.kind).collect();
        assert_eq!(kinds, ["alertmanager", "email", "log", "slack", "webhook"]);
    }

    #[test]
    fn values_are_formatted_for_people() {
        assert_eq!(format_value(3.0), "3");
        assert_eq!(format_value(0.25), "0.25");
        assert_eq!(format_value(2.123456), "2.1235");
    }
}
