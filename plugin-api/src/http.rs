//! HTTP routes and middleware a plugin registers on load, and the reply sink
//! through which it answers without blocking a host worker.

use abi_stable::{
    StableAbi, sabi_trait,
    std_types::{RBox, RSlice, RStr, RString, RVec},
};

/// One HTTP header (owned).
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: RString,
    pub value: RString,
}

impl Header {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self { name: RString::from(name.into()), value: RString::from(value.into()) }
    }
}

/// One HTTP header (borrowed from the host).
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct HeaderRef<'a> {
    pub name: RStr<'a>,
    pub value: RStr<'a>,
}

/// A path prefix the plugin serves, and the methods it accepts there
/// (empty: every method). The host forwards every request whose path equals
/// the prefix or continues it after a `/`.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub prefix: RString,
    pub methods: RVec<RString>,
}

impl RouteSpec {
    pub fn new(prefix: &str, methods: &[&str]) -> Self {
        Self { prefix: RString::from(prefix), methods: methods.iter().map(|m| RString::from(*m)).collect() }
    }
}

/// Which requests the plugin's middleware wants to see.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Default, PartialEq, Eq)]
pub struct MiddlewareSpec {
    /// Path prefixes whose requests go through
    /// [`PluginObject::before_request`](crate::PluginObject) first (for
    /// example to answer 401); empty: none.
    pub before_prefixes: RVec<RString>,
    /// Whether every request the host serves, its own and every plugin's,
    /// is reported to `after_request` once answered.
    pub after_all: bool,
}

/// A request forwarded to a plugin route (owned: the plugin answers later,
/// from its own threads).
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct HttpRequest {
    pub method: RString,
    /// The path, without the query string.
    pub path: RString,
    /// The raw query string without `?`, or empty.
    pub query: RString,
    pub headers: RVec<Header>,
    pub body: RVec<u8>,
}

/// The head of a request, borrowed, as middleware sees it before routing.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    pub method: RStr<'a>,
    pub path: RStr<'a>,
    pub query: RStr<'a>,
    pub headers: RSlice<'a, HeaderRef<'a>>,
}

impl<'a> RequestHead<'a> {
    /// The first header of that name (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers
            .as_slice()
            .iter()
            .find(|h| h.name.as_str().eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }
}

/// A complete response.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: RVec<Header>,
    pub body: RVec<u8>,
}

impl HttpResponse {
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            headers: RVec::from(vec![Header::new("content-type", content_type)]),
            body: RVec::from(body.into()),
        }
    }
}

/// What the host reports after answering a request.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct RequestRecord<'a> {
    pub method: RStr<'a>,
    /// The matched route template (`/api/v1/projects/{name}/reindex`), never
    /// the raw path, so it is a bounded label; `unmatched` for 404s.
    pub route: RStr<'a>,
    pub status: u16,
    pub duration_ns: u64,
    pub request_bytes: u64,
    pub response_bytes: u64,
}

/// Where a plugin sends its answer to a forwarded request. The host holds
/// the other end; dropping the sink without answering gives the client a
/// 500, so a panicking handler never leaves a request hanging.
///
/// Either call [`respond`](ReplySink::respond) once, or
/// [`start_stream`](ReplySink::start_stream), then
/// [`send_chunk`](ReplySink::send_chunk) any number of times, then
/// [`finish`](ReplySink::finish).
#[sabi_trait]
pub trait ReplySink: Send {
    /// Sends a complete response. Later calls are ignored.
    fn respond(&mut self, response: HttpResponse);

    /// Sends the status and headers of a streamed response. Returns false if
    /// the client is gone or a response was already sent.
    fn start_stream(&mut self, status: u16, headers: RVec<Header>) -> bool;

    /// Sends one body chunk of a streamed response. **Blocks** while the
    /// client is slower than the producer (bounded buffering keeps memory
    /// constant), so call it from a thread that may block, never from an
    /// async task. Returns false once the client is gone: stop producing.
    fn send_chunk(&mut self, chunk: RVec<u8>) -> bool;

    /// Ends a streamed response.
    #[sabi(last_prefix_field)]
    fn finish(&mut self);
}

/// The owned, sendable reply sink a plugin receives.
pub type ReplySinkBox = ReplySink_TO<'static, RBox<()>>;
