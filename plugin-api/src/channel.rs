//! The alert-channel interface: how an external alert channel, built as its
//! own `.so`, is loaded by the analytics plugin from its channels folder.
//!
//! A channel library exports a [`ChannelModule`] (a prefix type: `info` and
//! `new`) through [`export_channel!`](crate::export_channel). `new` gets the
//! channel's `options` table as JSON and returns a [`ChannelObject`]; its one
//! method, `deliver`, gets one notification as JSON and blocks until the
//! receiver took it or refused it. The caller runs it on a blocking thread
//! and bounds it with the channel's timeout.
//!
//! Authors implement the safe [`ExternalChannel`] trait; the adapter here runs every
//! entry point (`new`, `deliver`, drop) under `catch_unwind`, so a panicking
//! channel fails one delivery instead of ending the host process.
//!
//! # Versions
//!
//! Two checks refuse a library at load, before any of its code runs beyond
//! `info`: abi_stable compares the `plugin-api` version the library was built
//! against and the layout of every type reachable from [`ChannelModule`];
//! then the loader compares [`ChannelInfo::interface`] with
//! [`CHANNEL_INTERFACE`]. Bump [`CHANNEL_INTERFACE`] when the meaning of the
//! JSON handed to `new` or `deliver` changes in a way old channels would
//! misread; new methods go at the end of [`ChannelObject`] (prefix type),
//! like the plugin hooks (see the versioning guide in the crate docs).
//!
//! # Writing a channel
//!
//! See `tests/fixtures/file-channel` for a complete, commented example.
//!
//! 1. A crate with `crate-type = ["cdylib"]`, depending on this crate (and
//!    `abi_stable`, which the macro's expansion names). Keep the profile's
//!    `panic = "unwind"`: the guards catch panics only then.
//! 2. `new(options_json)` checks every option, refuses unknown ones, and
//!    says which option is wrong and what it accepts (the message reaches
//!    the operator as `alerting.channels."<name>": channel '<kind>' … refused
//!    its options: <message>`). Open what can be opened here, so a wrong
//!    setting fails at start, not at the first alert.
//! 3. `deliver(notification_json)` sends once and returns: `Ok` when the
//!    receiver took it; [`DeliveryFailure::retry`] (or `retry_after` when the
//!    receiver said when) if trying again may work; [`DeliveryFailure::permanent`]
//!    if it never will. Do not retry inside: the plugin's queue retries with
//!    backoff and keeps dead letters. The same notification may come again
//!    after a failure or a timeout: receivers de-duplicate on `id`. It may be
//!    called from several threads at once.
//! 4. Export it with [`export_channel!`](crate::export_channel), build, and
//!    drop the `.so` into the plugin's channels folder; a config entry with
//!    `kind = "<kind>"` then uses it.
//!
//! The notification JSON (fields of the analytics plugin's `Notification`):
//! `id` (`<fingerprint>-<seq>`, unique per state change and repeat),
//! `status` (`"firing"`/`"resolved"`), `rule`, `severity` (`"info"`,
//! `"warning"`, `"error"`, `"critical"`), `fingerprint` (stable per alert),
//! `labels` and `annotations` (string maps; `summary`, `description`,
//! `runbook_url` among the annotations), `value` and `threshold` (numbers
//! or null), `starts_at` and `ends_at` (RFC 3339; `ends_at` null while
//! firing), `generator_url`, `repeat` (0 for the state change itself).
//!
//! ```ignore
//! use plugin_api::{export_channel, DeliveryFailure, ExternalChannel};
//!
//! struct Stdout;
//!
//! impl ExternalChannel for Stdout {
//!     fn deliver(&self, notification_json: &str) -> Result<(), DeliveryFailure> {
//!         println!("{notification_json}");
//!         Ok(())
//!     }
//! }
//!
//! fn new(_options_json: &str) -> Result<Stdout, String> {
//!     Ok(Stdout)
//! }
//!
//! export_channel!(kind: "stdout", description: "prints notifications", version: "0.1.0", new: new);
//! ```

use std::{
    any::Any,
    mem::ManuallyDrop,
    panic::{AssertUnwindSafe, catch_unwind},
};

use abi_stable::{
    StableAbi, declare_root_module_statics,
    library::RootModule,
    package_version_strings, sabi_trait,
    sabi_trait::TD_Opaque,
    sabi_types::VersionStrings,
    std_types::{RBox, ROption, RResult, RStr, RString},
};

/// The channel interface version a library declares in its [`ChannelInfo`];
/// the loader refuses any other.
pub const CHANNEL_INTERFACE: u32 = 1;

/// What a channel library is, read without constructing anything.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct ChannelInfo {
    /// The kind name configs use (`kind = "<kind>"`).
    pub kind: RString,
    /// One line, listed by `GET /alerts/channels`.
    pub description: RString,
    /// The library's own version.
    pub version: RString,
    /// [`CHANNEL_INTERFACE`] of the `plugin-api` the library was built with.
    pub interface: u32,
}

impl ChannelInfo {
    pub fn new(kind: &str, description: &str, version: &str) -> Self {
        Self {
            kind: RString::from(kind),
            description: RString::from(description),
            version: RString::from(version),
            interface: CHANNEL_INTERFACE,
        }
    }
}

/// Why a delivery failed.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct DeliveryFailure {
    /// Worth trying again later (receiver down, timeout, rate limit).
    pub retryable: bool,
    /// When the receiver said when to come back (milliseconds from now).
    pub retry_after_ms: ROption<u64>,
    pub message: RString,
}

impl DeliveryFailure {
    /// A failure worth retrying (after the caller's backoff).
    pub fn retry(message: impl Into<String>) -> Self {
        Self { retryable: true, retry_after_ms: ROption::RNone, message: RString::from(message.into()) }
    }

    /// A failure worth retrying after `after_ms` milliseconds.
    pub fn retry_after(message: impl Into<String>, after_ms: u64) -> Self {
        Self {
            retryable: true,
            retry_after_ms: ROption::RSome(after_ms),
            message: RString::from(message.into()),
        }
    }

    /// A failure that will repeat as configured: not retried.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self { retryable: false, retry_after_ms: ROption::RNone, message: RString::from(message.into()) }
    }
}

/// The channel object as the loader sees it. Authors implement [`ExternalChannel`].
///
/// New methods go at the end (prefix type).
#[sabi_trait]
pub trait ChannelObject: Send + Sync {
    /// Sends one notification (JSON of the analytics plugin's
    /// `Notification`). Blocks until done; called on a blocking thread.
    #[sabi(last_prefix_field)]
    fn deliver(&self, notification_json: RStr<'_>) -> RResult<(), DeliveryFailure>;
}

/// An owned channel object.
pub type ChannelBox = ChannelObject_TO<'static, RBox<()>>;

/// The root module every channel library exports (through
/// [`export_channel!`](crate::export_channel)).
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = ChannelModuleRef)))]
#[sabi(missing_field(panic))]
pub struct ChannelModule {
    /// Kind, description and versions, without constructing anything.
    pub info: extern "C" fn() -> ChannelInfo,

    /// Builds one configured channel from its `options` table as JSON. The
    /// error is shown to the operator as is: name the option and say what
    /// is allowed.
    #[sabi(last_prefix_field)]
    pub new: extern "C" fn(RStr<'_>) -> RResult<ChannelBox, RString>,
}

impl RootModule for ChannelModuleRef {
    declare_root_module_statics! {ChannelModuleRef}
    const BASE_NAME: &'static str = "context_channel";
    const NAME: &'static str = "context_channel";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

/// An alert channel, in safe Rust.
pub trait ExternalChannel: Send + Sync + 'static {
    /// Sends one notification given as JSON; blocking is fine (the caller
    /// runs it on a blocking thread and gives up after its timeout).
    fn deliver(&self, notification_json: &str) -> Result<(), DeliveryFailure>;
}

/// The adapter from [`ExternalChannel`] to [`ChannelObject`]: every call under
/// `catch_unwind`.
struct GuardedChannel<C: ExternalChannel> {
    inner: ManuallyDrop<C>,
}

impl<C: ExternalChannel> ChannelObject for GuardedChannel<C> {
    fn deliver(&self, notification_json: RStr<'_>) -> RResult<(), DeliveryFailure> {
        match catch_unwind(AssertUnwindSafe(|| self.inner.deliver(notification_json.as_str()))) {
            Ok(result) => result.into(),
            // A panic is a bug of the channel: retrying would panic again.
            Err(payload) => RResult::RErr(DeliveryFailure::permanent(format!(
                "channel panicked: {}",
                panic_message(&*payload)
            ))),
        }
    }
}

impl<C: ExternalChannel> Drop for GuardedChannel<C> {
    fn drop(&mut self) {
        // SAFETY: `inner` is never used after this point.
        let inner = unsafe { ManuallyDrop::take(&mut self.inner) };
        // Nothing to report a panic to while dropping: it is contained.
        let _ = catch_unwind(AssertUnwindSafe(move || drop(inner)));
    }
}

/// Body of the `info` entry point generated by [`export_channel!`](crate::export_channel).
pub fn guarded_channel_info(kind: &str, description: &str, version: &str) -> ChannelInfo {
    ChannelInfo::new(kind, description, version)
}

/// Body of the `new` entry point generated by
/// [`export_channel!`](crate::export_channel): runs the constructor under
/// `catch_unwind` and wraps the channel in the panic-catching adapter.
pub fn guarded_channel_constructor<C: ExternalChannel>(
    options_json: RStr<'_>,
    new: fn(&str) -> Result<C, String>,
) -> RResult<ChannelBox, RString> {
    match catch_unwind(AssertUnwindSafe(|| new(options_json.as_str()))) {
        Ok(Ok(channel)) => RResult::ROk(ChannelObject_TO::from_value(
            GuardedChannel { inner: ManuallyDrop::new(channel) },
            TD_Opaque,
        )),
        Ok(Err(message)) => RResult::RErr(RString::from(message)),
        Err(payload) => RResult::RErr(RString::from(format!(
            "channel constructor panicked: {}",
            panic_message(&*payload)
        ))),
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-string panic payload")
}

/// Exports an [`ExternalChannel`] as the root module of a `cdylib`.
///
/// `new` is `fn(&str) -> Result<C, String>`: the `&str` is the channel's
/// `options` table as JSON. `kind` is the name configs use
/// (`kind = "<kind>"`); it must not be the name of a built-in kind.
#[macro_export]
macro_rules! export_channel {
    (kind: $kind:expr, description: $description:expr, version: $version:expr, new: $new:path $(,)?) => {
        #[$crate::abi_stable::export_root_module]
        pub fn __context_channel_root_module() -> $crate::ChannelModuleRef {
            use $crate::abi_stable::prefix_type::PrefixTypeTrait;
            $crate::ChannelModule { info: __context_channel_info, new: __context_channel_new }.leak_into_prefix()
        }

        extern "C" fn __context_channel_info() -> $crate::ChannelInfo {
            $crate::guarded_channel_info($kind, $description, $version)
        }

        extern "C" fn __context_channel_new(
            options_json: $crate::abi_stable::std_types::RStr<'_>,
        ) -> $crate::abi_stable::std_types::RResult<$crate::ChannelBox, $crate::abi_stable::std_types::RString> {
            $crate::guarded_channel_constructor(options_json, $new)
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Flaky;

    impl ExternalChannel for Flaky {
        fn deliver(&self, notification_json: &str) -> Result<(), DeliveryFailure> {
            match notification_json {
                "ok" => Ok(()),
                "busy" => Err(DeliveryFailure::retry_after("busy", 1500)),
                _ => panic!("cannot handle {notification_json}"),
            }
        }
    }

    impl Drop for Flaky {
        fn drop(&mut self) {
            panic!("dropping panics too");
        }
    }

    fn new_flaky(options_json: &str) -> Result<Flaky, String> {
        match options_json {
            "{}" => Ok(Flaky),
            "{\"x\":1}" => Err("options.x: unknown option".to_owned()),
            _ => panic!("constructor panics"),
        }
    }

    #[test]
    fn every_entry_point_is_guarded() {
        let channel = guarded_channel_constructor(RStr::from("{}"), new_flaky).unwrap();
        assert_eq!(channel.deliver(RStr::from("ok")), RResult::ROk(()));
        let busy = channel.deliver(RStr::from("busy")).unwrap_err();
        assert!(busy.retryable);
        assert_eq!(busy.retry_after_ms, ROption::RSome(1500));
        let panicked = channel.deliver(RStr::from("boom")).unwrap_err();
        assert!(!panicked.retryable);
        assert_eq!(panicked.message.as_str(), "channel panicked: cannot handle boom");
        // Dropping a channel whose Drop panics does not unwind out.
        drop(channel);

        let error = |options: &str| match guarded_channel_constructor(RStr::from(options), new_flaky) {
            RResult::ROk(_) => panic!("{options} was accepted"),
            RResult::RErr(message) => message.into_string(),
        };
        assert_eq!(error("{\"x\":1}"), "options.x: unknown option");
        assert_eq!(error("[]"), "channel constructor panicked: constructor panics");
        assert_eq!(guarded_channel_info("file", "d", "1.0").interface, CHANNEL_INTERFACE);
    }
}
