//! What the host hands a plugin when it constructs it.

use abi_stable::{
    StableAbi,
    std_types::{RStr, RString},
};

/// Severity of a log line sent to the host's log.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// Services the host offers, as a prefix-type vtable so later hosts can
/// append services without breaking plugins built against this version.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = HostServicesRef)))]
#[sabi(missing_field(panic))]
pub struct HostServices {
    /// Writes one line to the host's log: level, target (the plugin's
    /// module or component), message.
    #[sabi(last_prefix_field)]
    pub log: extern "C" fn(LogLevel, RStr<'_>, RStr<'_>),
}

impl HostServices {
    /// Builds the services vtable. It is leaked: a host builds it once and
    /// hands the same reference to every plugin.
    pub fn leak(log: extern "C" fn(LogLevel, RStr<'_>, RStr<'_>)) -> HostServicesRef {
        use abi_stable::prefix_type::WithMetadata;
        let with_metadata: &'static WithMetadata<HostServices> =
            Box::leak(Box::new(WithMetadata::new(HostServices { log })));
        HostServicesRef(with_metadata.static_as_prefix())
    }
}

/// Identity of the host and its services, given to the plugin constructor.
#[repr(C)]
#[derive(StableAbi, Clone)]
pub struct HostContext {
    /// The plugin's name in the host config (`[plugins.<name>]`).
    pub plugin_name: RString,
    pub host_name: RString,
    pub host_version: RString,
    /// Unique per running host process; several hosts may share a database.
    pub instance_id: RString,
    /// A directory the plugin may write to (spool, embedded database).
    pub data_dir: RString,
    pub services: HostServicesRef,
}

impl HostContext {
    /// A logger that writes to the host's log under `target`.
    pub fn logger(&self, target: &str) -> HostLogger {
        HostLogger { log: self.services.log(), target: RString::from(target) }
    }
}

/// A cheap, cloneable handle on the host's log.
#[derive(Clone)]
pub struct HostLogger {
    log: extern "C" fn(LogLevel, RStr<'_>, RStr<'_>),
    target: RString,
}

impl HostLogger {
    pub fn log(&self, level: LogLevel, message: &str) {
        (self.log)(level, self.target.as_rstr(), RStr::from(message));
    }
    pub fn error(&self, message: &str) {
        self.log(LogLevel::Error, message);
    }
    pub fn warn(&self, message: &str) {
        self.log(LogLevel::Warn, message);
    }
    pub fn info(&self, message: &str) {
        self.log(LogLevel::Info, message);
    }
    pub fn debug(&self, message: &str) {
        self.log(LogLevel::Debug, message);
    }
}

impl std::fmt::Debug for HostLogger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostLogger").field("target", &self.target).finish()
    }
}
