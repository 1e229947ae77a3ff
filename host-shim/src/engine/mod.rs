//! A small but real code-search engine: it indexes the files under each
//! project path into memory and answers literal and regex searches over
//! their text, reporting every step to the plugins through hooks.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    hash::{Hash, Hasher},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use abi_stable::std_types::{ROption, RSlice, RStr};
use parking_lot::{Mutex, RwLock};
use plugin_api::{
    CacheOutcome, FileIndexed, FileOpened, IndexOutcome, ProjectSnapshot, QueryKind, SearchExecuted,
    SearchStatus,
};
use regex::RegexBuilder;

use crate::plugins::SharedPlugins;

/// Files larger than this are skipped with `too_large`.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// How many result paths a search reports to plugins and returns.
pub const TOP_RESULTS: usize = 10;
/// Entries kept in the L1 cache of exact queries before it is cleared.
const L1_CAPACITY: usize = 1024;
/// Folders never indexed.
const IGNORED_DIRS: &[&str] = &[".git", "target", "node_modules", ".hg", ".svn"];

pub fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

struct IndexedFile {
    /// Path relative to the project root, `/`-separated.
    path: String,
    /// Lowercased text, for case-insensitive literal search.
    lower: String,
    text: String,
}

#[derive(Default)]
struct ProjectIndex {
    files: Vec<IndexedFile>,
    total_files: u64,
    index_bytes: u64,
    duplication_ratio: Option<f64>,
}

pub struct Project {
    pub name: String,
    pub root: PathBuf,
    index: RwLock<ProjectIndex>,
    /// Serializes (re)indexing runs of this project.
    indexing: Mutex<()>,
}

/// One search answer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SearchHit {
    pub path: String,
    pub matches: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SearchOutcome {
    pub search_id: String,
    pub project: String,
    pub query: String,
    pub kind: &'static str,
    pub cache: &'static str,
    pub status: &'static str,
    pub latency_ms: f64,
    pub total: u64,
    pub results: Vec<SearchHit>,
}

#[derive(Debug)]
pub enum SearchError {
    UnknownProject(String),
    BadRequest(String),
    /// The search ran and failed; it was reported to plugins.
    Failed(SearchOutcome, String),
}

type CacheKey = (String, QueryKind, String);

pub struct Engine {
    projects: BTreeMap<String, Arc<Project>>,
    plugins: SharedPlugins,
    instance_id: String,
    search_seq: AtomicU64,
    timeout: Duration,
    /// L1: exact (project, kind, query) → results. Cleared when full or when
    /// the project is reindexed.
    l1: Mutex<HashMap<CacheKey, Arc<(u64, Vec<SearchHit>)>>>,
}

impl Engine {
    pub fn new(
        projects: &[crate::config::ProjectConfig],
        plugins: SharedPlugins,
        instance_id: String,
        timeout: Duration,
    ) -> Self {
        let projects = projects
            .iter()
            .map(|p| {
                let project = Project {
                    name: p.name.clone(),
                    root: p.path.clone(),
                    index: RwLock::new(ProjectIndex::default()),
                    indexing: Mutex::new(()),
                };
                (p.name.clone(), Arc::new(project))
            })
            .collect();
        Self {
            projects,
            plugins,
            instance_id,
            search_seq: AtomicU64::new(0),
            timeout,
            l1: Mutex::new(HashMap::new()),
        }
    }

    pub fn project_names(&self) -> Vec<String> {
        self.projects.keys().cloned().collect()
    }

    pub fn has_project(&self, name: &str) -> bool {
        self.projects.contains_key(name)
    }

    /// Indexes every file of the project, reporting each to plugins, then
    /// swaps the new index in and sends a snapshot. Returns files seen.
    pub fn index_project(&self, name: &str) -> Option<u64> {
        let project = self.projects.get(name)?;
        let _running = project.indexing.lock();
        let mut paths = Vec::new();
        collect_files(&project.root, &mut paths);
        paths.sort();
        let total = paths.len() as u64;
        let mut files = Vec::new();
        let mut content_hashes: HashMap<u64, u32> = HashMap::new();
        let mut index_bytes = 0u64;
        for (i, path) in paths.iter().enumerate() {
            let started = Instant::now();
            let relative =
                path.strip_prefix(&project.root).unwrap_or(path).to_string_lossy().replace('\\', "/");
            let file_type = path
                .extension()
                .map(|e| e.to_string_lossy().to_lowercase())
                .unwrap_or_else(|| "none".to_owned());
            let (outcome, code, bytes) = match read_indexable(path) {
                Ok(text) => {
                    let bytes = text.len() as u64;
                    index_bytes += bytes * 2;
                    let mut hasher = std::collections::hash_map::DefaultHasher::new();
                    text.hash(&mut hasher);
                    *content_hashes.entry(hasher.finish()).or_default() += 1;
                    files.push(IndexedFile { path: relative.clone(), lower: text.to_lowercase(), text });
                    (IndexOutcome::Indexed, "", bytes)
                }
                Err((outcome, code, bytes)) => (outcome, code, bytes),
            };
            let event = FileIndexed {
                project: RStr::from(name),
                path: RStr::from(relative.as_str()),
                file_type: RStr::from(file_type.as_str()),
                bytes,
                duration_ns: started.elapsed().as_nanos() as u64,
                outcome,
                error_code: RStr::from(code),
                queue_depth: total - i as u64 - 1,
                timestamp_us: now_us(),
            };
            self.plugins.file_indexed(&event);
        }
        let duplicates: u32 = content_hashes.values().filter(|&&n| n > 1).map(|n| n - 1).sum();
        let duplication_ratio = (!files.is_empty()).then(|| f64::from(duplicates) / files.len() as f64);
        *project.index.write() = ProjectIndex { files, total_files: total, index_bytes, duplication_ratio };
        self.l1.lock().retain(|(p, _, _), _| p != name);
        self.snapshot(project);
        Some(total)
    }

    /// Sends a snapshot of every project to plugins.
    pub fn snapshot_all(&self) {
        for project in self.projects.values() {
            self.snapshot(project);
        }
    }

    fn snapshot(&self, project: &Project) {
        let cache_bytes: u64 = self
            .l1
            .lock()
            .iter()
            .filter(|((p, _, _), _)| *p == project.name)
            .map(|(k, v)| (k.2.len() + v.1.iter().map(|h| h.path.len() + 16).sum::<usize>()) as u64)
            .sum();
        let index = project.index.read();
        let event = ProjectSnapshot {
            project: RStr::from(project.name.as_str()),
            total_files: index.total_files,
            indexed_files: index.files.len() as u64,
            vector_store_bytes: index.index_bytes,
            embedding_cache_bytes: cache_bytes,
            duplication_ratio: index.duplication_ratio.map_or(ROption::RNone, ROption::RSome),
            timestamp_us: now_us(),
        };
        self.plugins.project_snapshot(&event);
    }

    /// Runs one search and reports it to plugins.
    pub fn search(
        &self,
        project_name: &str,
        user: &str,
        query: &str,
        kind: QueryKind,
    ) -> Result<SearchOutcome, SearchError> {
        let project = self
            .projects
            .get(project_name)
            .ok_or_else(|| SearchError::UnknownProject(project_name.to_owned()))?;
        if query.is_empty() {
            return Err(SearchError::BadRequest("query 'q' must not be empty".to_owned()));
        }
        if kind == QueryKind::Semantic {
            return Err(SearchError::BadRequest(
                "kind 'semantic' is not supported by this host (expected literal or regex)".to_owned(),
            ));
        }
        let started = Instant::now();
        let search_id =
            format!("{}-{}", self.instance_id, self.search_seq.fetch_add(1, Ordering::Relaxed) + 1);
        let key = (project_name.to_owned(), kind, query.to_owned());
        let cached = self.l1.lock().get(&key).cloned();
        let (cache, status, error, total, hits) = match cached {
            Some(entry) => (CacheOutcome::L1, SearchStatus::Ok, None, entry.0, entry.1.clone()),
            None => match self.run(project, query, kind, started) {
                Ok((total, hits)) => {
                    let mut l1 = self.l1.lock();
                    if l1.len() >= L1_CAPACITY {
                        l1.clear();
                    }
                    l1.insert(key, Arc::new((total, hits.clone())));
                    (CacheOutcome::Miss, SearchStatus::Ok, None, total, hits)
                }
                Err((status, code, message)) => {
                    (CacheOutcome::Miss, status, Some((code, message)), 0, Vec::new())
                }
            },
        };
        let latency = started.elapsed();
        let top: Vec<RStr<'_>> = hits.iter().map(|h| RStr::from(h.path.as_str())).collect();
        let event = SearchExecuted {
            search_id: RStr::from(search_id.as_str()),
            project: RStr::from(project_name),
            user: RStr::from(user),
            query: RStr::from(query),
            kind,
            cache,
            status,
            error_code: RStr::from(error.as_ref().map_or("", |e| e.0)),
            latency_ns: latency.as_nanos() as u64,
            result_count: total,
            top_results: RSlice::from_slice(&top),
            timestamp_us: now_us(),
        };
        self.plugins.search_executed(&event);
        let outcome = SearchOutcome {
            search_id,
            project: project_name.to_owned(),
            query: query.to_owned(),
            kind: kind.as_str(),
            cache: cache.as_str(),
            status: status.as_str(),
            latency_ms: latency.as_secs_f64() * 1e3,
            total,
            results: hits,
        };
        match error {
            None => Ok(outcome),
            Some((_, message)) => Err(SearchError::Failed(outcome, message)),
        }
    }

    #[allow(clippy::type_complexity)]
    fn run(
        &self,
        project: &Project,
        query: &str,
        kind: QueryKind,
        started: Instant,
    ) -> Result<(u64, Vec<SearchHit>), (SearchStatus, &'static str, String)> {
        let regex = match kind {
            QueryKind::Regex => Some(RegexBuilder::new(query).size_limit(1 << 20).build().map_err(|e| {
                let first = e.to_string().lines().last().unwrap_or("").trim().to_owned();
                (SearchStatus::Error, "invalid_regex", format!("invalid regex '{query}': {first}"))
            })?),
            _ => None,
        };
        let needle = query.to_lowercase();
        let index = project.index.read();
        let mut hits = Vec::new();
        for file in &index.files {
            if started.elapsed() > self.timeout {
                return Err((
                    SearchStatus::Timeout,
                    "deadline_exceeded",
                    format!("search exceeded {} ms", self.timeout.as_millis()),
                ));
            }
            let matches = match &regex {
                Some(re) => re.find_iter(&file.text).count() as u64,
                None => file.lower.matches(needle.as_str()).count() as u64,
            };
            if matches > 0 {
                hits.push(SearchHit { path: file.path.clone(), matches });
            }
        }
        hits.sort_by(|a, b| b.matches.cmp(&a.matches).then_with(|| a.path.cmp(&b.path)));
        let total = hits.len() as u64;
        hits.truncate(TOP_RESULTS);
        Ok((total, hits))
    }

    /// Records that `user` opened `path`; the file must be indexed.
    pub fn open_file(
        &self,
        project_name: &str,
        user: &str,
        path: &str,
        rank: u32,
        search_id: &str,
    ) -> Result<u64, SearchError> {
        let project = self
            .projects
            .get(project_name)
            .ok_or_else(|| SearchError::UnknownProject(project_name.to_owned()))?;
        let bytes = {
            let index = project.index.read();
            let file = index.files.iter().find(|f| f.path == path).ok_or_else(|| {
                SearchError::BadRequest(format!("file '{path}' is not indexed in project '{project_name}'"))
            })?;
            file.text.len() as u64
        };
        let event = FileOpened {
            project: RStr::from(project_name),
            user: RStr::from(user),
            path: RStr::from(path),
            rank,
            search_id: RStr::from(search_id),
            timestamp_us: now_us(),
        };
        self.plugins.file_opened(&event);
        Ok(bytes)
    }
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut seen = HashSet::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else { continue };
        let name = entry.file_name();
        if kind.is_dir() {
            if !IGNORED_DIRS.iter().any(|d| name == *d) && seen.insert(path.clone()) {
                collect_files(&path, out);
            }
        } else if kind.is_file() {
            out.push(path);
        }
    }
}

/// Reads a file for indexing, or says why it is not indexed.
fn read_indexable(path: &Path) -> Result<String, (IndexOutcome, &'static str, u64)> {
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if size > MAX_FILE_BYTES {
        return Err((IndexOutcome::Skipped, "too_large", size));
    }
    let bytes = std::fs::read(path).map_err(|_| (IndexOutcome::Failed, "unreadable", size))?;
    if bytes.iter().take(8192).any(|&b| b == 0) {
        return Err((IndexOutcome::Skipped, "binary", size));
    }
    String::from_utf8(bytes).map_err(|_| (IndexOutcome::Failed, "invalid_utf8", size))
}
