//! The root module a plugin exports and the plugin object it constructs.

use abi_stable::{
    StableAbi, declare_root_module_statics,
    library::RootModule,
    package_version_strings, sabi_trait,
    sabi_types::VersionStrings,
    std_types::{RBox, ROption, RResult, RStr, RString, RVec},
};

use crate::{
    FileIndexed, FileOpened, HostContext, HttpRequest, HttpResponse, MiddlewareSpec, PluginError,
    ProjectSnapshot, ReplySinkBox, RequestHead, RequestRecord, RouteSpec, SearchExecuted,
};

/// A plugin's name and its own version (not the interface version).
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    pub name: RString,
    pub version: RString,
}

impl PluginInfo {
    pub fn new(name: &str, version: &str) -> Self {
        Self { name: RString::from(name), version: RString::from(version) }
    }
}

/// The plugin object as the host sees it. Plugin authors implement the safe
/// [`Plugin`](crate::Plugin) trait instead; the adapter implements this one
/// and catches panics at every method.
///
/// New methods go at the end (see the crate docs).
#[sabi_trait]
pub trait PluginObject: Send + Sync {
    fn info(&self) -> PluginInfo;

    /// Path prefixes and methods served by [`handle_request`](Self::handle_request).
    fn routes(&self) -> RVec<RouteSpec>;

    /// Which requests [`before_request`](Self::before_request) and
    /// [`after_request`](Self::after_request) see.
    fn middleware(&self) -> MiddlewareSpec;

    /// Handles a request on one of the plugin's routes. Must return at once;
    /// the answer goes through `reply`, from any thread, later.
    fn handle_request(&self, request: HttpRequest, reply: ReplySinkBox);

    /// Called before routing for requests under `before_prefixes`; returning
    /// a response answers the request with it (for example a 401).
    fn before_request(&self, head: &RequestHead<'_>) -> ROption<HttpResponse>;

    /// Called once a request has been answered (when `after_all` is set).
    fn after_request(&self, record: &RequestRecord<'_>);

    fn on_search_executed(&self, event: &SearchExecuted<'_>);

    fn on_file_indexed(&self, event: &FileIndexed<'_>);

    fn on_file_opened(&self, event: &FileOpened<'_>);

    fn on_project_snapshot(&self, event: &ProjectSnapshot<'_>);

    /// The host is stopping: flush everything. Called once; no hook is
    /// called after it.
    #[sabi(last_prefix_field)]
    fn shutdown(&self) -> RResult<(), PluginError>;
}

/// An owned plugin object.
pub type PluginBox = PluginObject_TO<'static, RBox<()>>;

/// The root module every plugin library exports (through
/// [`export_plugin!`](crate::export_plugin)).
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModuleRef)))]
#[sabi(missing_field(panic))]
pub struct PluginModule {
    /// Name and version, without constructing the plugin (so a disabled
    /// plugin runs none of its code beyond this).
    pub info: extern "C" fn() -> PluginInfo,

    /// Constructs the plugin from host services and its config section as
    /// TOML text.
    #[sabi(last_prefix_field)]
    pub new: extern "C" fn(HostContext, RStr<'_>) -> RResult<PluginBox, PluginError>,
}

impl RootModule for PluginModuleRef {
    declare_root_module_statics! {PluginModuleRef}
    const BASE_NAME: &'static str = "context_plugin";
    const NAME: &'static str = "context_plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}
