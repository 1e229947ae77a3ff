//! The channel kinds: one folder per built-in kind, each registering itself
//! through `inventory`, and `external/` for `.so` channels.

use std::{path::Path, sync::Arc};

use plugin_api::HostLogger;
use serde::Serialize;

use crate::alerting::channel::{Channel, ChannelContext, ChannelKind, ChannelSource, builtin_kinds};

/// One kind as listed by `GET /alerts/channels`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KindInfo {
    pub kind: String,
    pub description: String,
    #[serde(flatten)]
    pub source: ChannelSource,
}

/// Every channel kind this plugin can build.
#[derive(Debug)]
pub struct ChannelRegistry {
    builtin: Vec<&'static ChannelKind>,
}

impl ChannelRegistry {
    pub fn load(_channels_dir: Option<&Path>, _logger: &HostLogger) -> (ChannelRegistry, Vec<String>) {
        (ChannelRegistry { builtin: builtin_kinds() }, Vec::new())
    }

    pub fn kinds(&self) -> Vec<KindInfo> {
        self.builtin
            .iter()
            .map(|k| KindInfo {
                kind: k.kind.to_owned(),
                description: k.description.to_owned(),
                source: ChannelSource::Builtin,
            })
            .collect()
    }

    pub fn build(&self, kind: &str, ctx: &ChannelContext<'_>) -> Result<Arc<dyn Channel>, String> {
        match self.builtin.iter().find(|k| k.kind == kind) {
            Some(k) => (k.build)(ctx),
            None => Err(format!("unknown channel kind '{kind}'")),
        }
    }
}
