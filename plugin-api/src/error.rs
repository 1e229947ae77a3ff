//! The one error type that crosses the boundary.

use std::fmt;

use abi_stable::{StableAbi, std_types::RString};

/// What went wrong, coarsely, so a host can react without parsing messages.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The plugin's configuration was rejected; the message names the key.
    Config,
    /// A storage or network resource failed.
    Io,
    /// The plugin panicked; the panic was caught at the boundary.
    Panic,
    /// Anything else inside the plugin.
    Internal,
}

/// An error returned across the boundary: a kind and a one-line message
/// (lowercase, no trailing period, quoting the offending value).
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct PluginError {
    pub kind: ErrorKind,
    pub message: RString,
}

impl PluginError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: RString::from(message.into()) }
    }

    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            ErrorKind::Config => "config",
            ErrorKind::Io => "io",
            ErrorKind::Panic => "panic",
            ErrorKind::Internal => "internal",
        };
        write!(f, "{kind} error: {}", self.message)
    }
}

impl std::error::Error for PluginError {}
