//! Events the host reports to plugins through hooks.
//!
//! All strings are borrowed from the host for the duration of the call: the
//! host allocates nothing per hook call, and a plugin that keeps data copies
//! it. Times are Unix microseconds (when the event completed, by the host's
//! clock) and durations are nanoseconds.
//!
//! The layouts here are frozen for the interface's major version; see the
//! crate docs before changing anything.

use abi_stable::{
    StableAbi,
    std_types::{ROption, RSlice, RStr},
};

/// How the query text is interpreted.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueryKind {
    Literal,
    Regex,
    Semantic,
}

impl QueryKind {
    pub const ALL: [QueryKind; 3] = [QueryKind::Literal, QueryKind::Regex, QueryKind::Semantic];

    pub fn as_str(self) -> &'static str {
        match self {
            QueryKind::Literal => "literal",
            QueryKind::Regex => "regex",
            QueryKind::Semantic => "semantic",
        }
    }
}

/// Which cache layer answered a search. A hit at L2 implies L1 was consulted
/// and missed; `Miss` means every layer missed and the search ran in full.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheOutcome {
    L1,
    L2,
    L3,
    Miss,
}

impl CacheOutcome {
    pub const ALL: [CacheOutcome; 4] =
        [CacheOutcome::L1, CacheOutcome::L2, CacheOutcome::L3, CacheOutcome::Miss];

    pub fn as_str(self) -> &'static str {
        match self {
            CacheOutcome::L1 => "l1",
            CacheOutcome::L2 => "l2",
            CacheOutcome::L3 => "l3",
            CacheOutcome::Miss => "miss",
        }
    }
}

/// How a search ended.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SearchStatus {
    Ok,
    Error,
    Timeout,
}

impl SearchStatus {
    pub const ALL: [SearchStatus; 3] = [SearchStatus::Ok, SearchStatus::Error, SearchStatus::Timeout];

    pub fn as_str(self) -> &'static str {
        match self {
            SearchStatus::Ok => "ok",
            SearchStatus::Error => "error",
            SearchStatus::Timeout => "timeout",
        }
    }
}

/// How indexing one file ended.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IndexOutcome {
    /// The file's content is now searchable.
    Indexed,
    /// Deliberately not indexed (binary, too large, excluded); `error_code`
    /// says why.
    Skipped,
    /// Indexing failed (unreadable, parse error); `error_code` says why.
    Failed,
}

impl IndexOutcome {
    pub const ALL: [IndexOutcome; 3] = [IndexOutcome::Indexed, IndexOutcome::Skipped, IndexOutcome::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            IndexOutcome::Indexed => "indexed",
            IndexOutcome::Skipped => "skipped",
            IndexOutcome::Failed => "failed",
        }
    }
}

/// A search finished (successfully or not).
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct SearchExecuted<'a> {
    /// Host-unique id of this search; [`FileOpened::search_id`] refers to it.
    pub search_id: RStr<'a>,
    pub project: RStr<'a>,
    /// The user as the host knows them (a plugin may hash it before storing).
    pub user: RStr<'a>,
    pub query: RStr<'a>,
    pub kind: QueryKind,
    pub cache: CacheOutcome,
    pub status: SearchStatus,
    /// A short machine-readable code when `status` is not `Ok`, else empty.
    pub error_code: RStr<'a>,
    pub latency_ns: u64,
    pub result_count: u64,
    /// Paths of the first results, best first (the host decides how many).
    pub top_results: RSlice<'a, RStr<'a>>,
    pub timestamp_us: i64,
}

/// One file went through the indexer.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct FileIndexed<'a> {
    pub project: RStr<'a>,
    pub path: RStr<'a>,
    /// Lowercase extension without the dot (`rs`, `py`), or `none`.
    pub file_type: RStr<'a>,
    pub bytes: u64,
    pub duration_ns: u64,
    pub outcome: IndexOutcome,
    /// Why a file was skipped or failed (`binary`, `too_large`,
    /// `unreadable`), else empty.
    pub error_code: RStr<'a>,
    /// Files still waiting in the index queue after this one.
    pub queue_depth: u64,
    pub timestamp_us: i64,
}

/// A user opened a file from a search's results.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct FileOpened<'a> {
    pub project: RStr<'a>,
    pub user: RStr<'a>,
    pub path: RStr<'a>,
    /// 1-based position of the file in the results it was opened from.
    pub rank: u32,
    /// The [`SearchExecuted::search_id`] of those results; empty if unknown.
    pub search_id: RStr<'a>,
    pub timestamp_us: i64,
}

/// Periodic state of a project as the host sees it.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct ProjectSnapshot<'a> {
    pub project: RStr<'a>,
    pub total_files: u64,
    pub indexed_files: u64,
    pub vector_store_bytes: u64,
    pub embedding_cache_bytes: u64,
    /// Share of duplicated code in 0..=1, when the host computes it.
    pub duplication_ratio: ROption<f64>,
    pub timestamp_us: i64,
}
