//! A small but real code-search engine. It indexes the files of each
//! project into memory through an index queue (incrementally: a reindex
//! reads only what changed), answers literal and regex searches through
//! three cache layers, and reports every step to the plugins through hooks
//! with what really happened.
//!
//! Cache layers, per project: L1 answers by exact query text, L2 answers by
//! normalized query (literal search ignores case), L3 per-term posting lists
//! (a literal query whose terms all have one is answered from them without a
//! scan). L1/L2 answers hold for one index generation; L3 lists are
//! repaired from the index's change log after files change.

mod cache;
mod index;
mod queue;
mod search;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use abi_stable::std_types::{ROption, RSlice, RStr};
use parking_lot::{Mutex, RwLock};
use plugin_api::{
    CacheOutcome, FileIndexed, FileOpened, IndexOutcome, ProjectSnapshot, QueryKind, SearchExecuted,
    SearchStatus,
};

pub use index::terms;
pub use queue::Requested;

use crate::{config::HostConfig, plugins::SharedPlugins};
use cache::{AnswerCache, AnswerLayer, CachedAnswer, PostingCache, Postings};
use index::{FileRead, ProjectIndex};
use queue::{IndexQueue, Job, RunReport};
use search::{Deadline, Failure};

/// How many result paths a search reports to plugins and returns.
pub const TOP_RESULTS: usize = 10;

pub fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

/// What the engine takes from the host's config.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub timeout: Duration,
    pub max_file_bytes: u64,
    pub l1_entries: usize,
    pub l2_entries: usize,
    pub l3_bytes: usize,
}

impl EngineConfig {
    pub fn from_host(config: &HostConfig) -> Self {
        Self {
            timeout: Duration::from_millis(config.server.search_timeout_ms),
            max_file_bytes: config.index.max_file_bytes,
            l1_entries: config.search.l1_entries,
            l2_entries: config.search.l2_entries,
            l3_bytes: usize::try_from(config.search.l3_bytes).unwrap_or(usize::MAX),
        }
    }
}

pub struct Project {
    pub name: String,
    pub root: PathBuf,
    index: RwLock<ProjectIndex>,
    /// The index's generation, readable without the index lock: L1 and L2
    /// answers are checked against it.
    generation: AtomicU64,
    answers: Mutex<AnswerCache>,
    postings: Mutex<PostingCache>,
    /// Set when the first index run of the project finished.
    ready: AtomicBool,
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
    Failed(Box<SearchOutcome>, String),
}

/// A project as `GET /api/v1/projects` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProjectStats {
    pub name: String,
    /// The first index run finished.
    pub ready: bool,
    /// A run (scan or files) is under way.
    pub indexing: bool,
    /// Files queued for indexing and not yet started.
    pub queued: u64,
    pub total_files: u64,
    pub indexed_files: u64,
    pub generation: u64,
    /// What snapshots report as `vector_store_bytes`.
    pub store_bytes: u64,
    pub cache: CacheStats,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct CacheStats {
    pub l1_entries: usize,
    pub l2_entries: usize,
    pub l3_terms: usize,
    /// What snapshots report as `embedding_cache_bytes`.
    pub bytes: u64,
}

pub struct Engine {
    projects: BTreeMap<String, Arc<Project>>,
    plugins: SharedPlugins,
    instance_id: String,
    search_seq: AtomicU64,
    config: EngineConfig,
    queue: IndexQueue,
    /// Held while a snapshot is read and sent: the periodic snapshots and
    /// the one at the end of an index run must not overtake each other
    /// (a stale one sent last would stand until the next).
    snapshots: Mutex<()>,
}

impl Engine {
    pub fn new(
        projects: &[crate::config::ProjectConfig],
        plugins: SharedPlugins,
        instance_id: String,
        config: EngineConfig,
    ) -> Self {
        let projects = projects
            .iter()
            .map(|p| {
                let project = Project {
                    name: p.name.clone(),
                    root: p.path.clone(),
                    index: RwLock::new(ProjectIndex::default()),
                    generation: AtomicU64::new(0),
                    answers: Mutex::new(AnswerCache::new(config.l1_entries, config.l2_entries)),
                    postings: Mutex::new(PostingCache::new(usize::MAX, config.l3_bytes)),
                    ready: AtomicBool::new(false),
                };
                (p.name.clone(), Arc::new(project))
            })
            .collect();
        Self {
            projects,
            plugins,
            instance_id,
            search_seq: AtomicU64::new(0),
            config,
            queue: IndexQueue::default(),
            snapshots: Mutex::new(()),
        }
    }

    pub fn project_names(&self) -> Vec<String> {
        self.projects.keys().cloned().collect()
    }

    pub fn has_project(&self, name: &str) -> bool {
        self.projects.contains_key(name)
    }

    /// Whether every project finished its first index run.
    pub fn ready(&self) -> bool {
        self.projects.values().all(|p| p.ready.load(Ordering::Acquire))
    }

    /// Queues a reindex of the project (`None`: no such project).
    pub fn request_reindex(&self, name: &str) -> Option<Requested> {
        Some(self.queue.request(self.projects.get(name)?))
    }

    /// An indexer thread's loop: works through the index queue until
    /// [`Engine::stop_indexer`].
    pub fn run_indexer(&self) {
        while let Some((job, depth)) = self.queue.next() {
            match job {
                Job::Scan(project) => {
                    if let Err(e) = std::fs::read_dir(&project.root) {
                        tracing::warn!(
                            "project '{}': cannot read its folder '{}': {e}",
                            project.name,
                            project.root.display()
                        );
                    }
                    let plan = project.index.read().plan(&project.root);
                    let removed = plan.removed.len() as u64;
                    if removed > 0 {
                        let mut index = project.index.write();
                        for path in &plan.removed {
                            index.remove(path);
                        }
                        project.generation.store(index.generation(), Ordering::Release);
                    }
                    if let Some(report) = self.queue.scanned(&project, plan.jobs, removed) {
                        self.finish_run(&project, report);
                    }
                }
                Job::File(project, file) => {
                    let started = Instant::now();
                    let (read, bytes) = index::read_indexable(&file, self.config.max_file_bytes);
                    let (outcome, code) = match &read {
                        FileRead::Text { .. } => (IndexOutcome::Indexed, ""),
                        FileRead::Left { outcome, code } => (*outcome, *code),
                    };
                    let report = {
                        let mut index = project.index.write();
                        let report = index.apply(&file, read);
                        project.generation.store(index.generation(), Ordering::Release);
                        report
                    };
                    if report {
                        let file_type = file.file_type();
                        self.plugins.file_indexed(&FileIndexed {
                            project: RStr::from(project.name.as_str()),
                            path: RStr::from(&*file.path),
                            file_type: RStr::from(file_type.as_str()),
                            bytes,
                            duration_ns: started.elapsed().as_nanos() as u64,
                            outcome,
                            error_code: RStr::from(code),
                            queue_depth: depth,
                            timestamp_us: now_us(),
                        });
                    }
                    if let Some(run) = self.queue.file_done(&project, report) {
                        self.finish_run(&project, run);
                    }
                }
            }
        }
    }

    /// Makes every indexer thread return (queued files are dropped).
    pub fn stop_indexer(&self) {
        self.queue.close();
    }

    fn finish_run(&self, project: &Project, run: RunReport) {
        project.ready.store(true, Ordering::Release);
        self.snapshot(project);
        let total = project.index.read().total_files();
        tracing::info!(
            "indexed project '{}': {total} files ({} changed, {} removed, {} read) in {:.1} ms",
            project.name,
            run.changed,
            run.removed,
            run.read,
            run.elapsed.as_secs_f64() * 1e3
        );
    }

    /// Sends a snapshot of every project to plugins.
    pub fn snapshot_all(&self) {
        for project in self.projects.values() {
            self.snapshot(project);
        }
    }

    /// In this stand-in, `vector_store_bytes` is the in-memory index store
    /// (file text, lowercased text, paths, the term dictionary), the store a
    /// semantic-search server keeps its vectors in; `embedding_cache_bytes`
    /// is the project's query caches (L1/L2 answers and L3 posting lists),
    /// the memory such a server spends on cached embeddings.
    fn snapshot(&self, project: &Project) {
        let _in_order = self.snapshots.lock();
        let cache_bytes = Self::cache_bytes(project);
        let (total_files, indexed_files, store_bytes, duplication) = {
            let index = project.index.read();
            (index.total_files(), index.indexed_files(), index.store_bytes(), index.duplication_ratio())
        };
        self.plugins.project_snapshot(&ProjectSnapshot {
            project: RStr::from(project.name.as_str()),
            total_files,
            indexed_files,
            vector_store_bytes: store_bytes,
            embedding_cache_bytes: cache_bytes,
            duplication_ratio: duplication.map_or(ROption::RNone, ROption::RSome),
            timestamp_us: now_us(),
        });
    }

    fn cache_bytes(project: &Project) -> u64 {
        (project.answers.lock().bytes() + project.postings.lock().bytes()) as u64
    }

    pub fn stats(&self) -> Vec<ProjectStats> {
        self.projects
            .values()
            .map(|project| {
                let (l1_entries, l2_entries) = project.answers.lock().entries();
                let l3_terms = project.postings.lock().len();
                let bytes = Self::cache_bytes(project);
                let index = project.index.read();
                ProjectStats {
                    name: project.name.clone(),
                    ready: project.ready.load(Ordering::Acquire),
                    indexing: self.queue.running(&project.name),
                    queued: self.queue.depth(&project.name),
                    total_files: index.total_files(),
                    indexed_files: index.indexed_files(),
                    generation: index.generation(),
                    store_bytes: index.store_bytes(),
                    cache: CacheStats { l1_entries, l2_entries, l3_terms, bytes },
                }
            })
            .collect()
    }

    /// The `limit` terms found in most files of the project.
    pub fn top_terms(&self, name: &str, limit: usize) -> Option<Vec<(String, u32)>> {
        let project = self.projects.get(name)?;
        let index = project.index.read();
        Some(index.top_terms(limit).into_iter().map(|(t, n)| (t.to_owned(), n)).collect())
    }

    fn checked(&self, project: &str, query: &str, kind: QueryKind) -> Result<&Arc<Project>, SearchError> {
        let found =
            self.projects.get(project).ok_or_else(|| SearchError::UnknownProject(project.to_owned()))?;
        if query.is_empty() {
            return Err(SearchError::BadRequest("query 'q' must not be empty".to_owned()));
        }
        if kind == QueryKind::Semantic {
            return Err(SearchError::BadRequest(
                "kind 'semantic' is not supported by this host (expected literal or regex)".to_owned(),
            ));
        }
        Ok(found)
    }

    /// Answers from L1 or L2 when they can, without blocking on the index:
    /// cheap enough for an async worker. `None`: run [`Engine::search`].
    pub fn search_cached(
        &self,
        project: &str,
        user: &str,
        query: &str,
        kind: QueryKind,
        started: Instant,
    ) -> Option<Result<SearchOutcome, SearchError>> {
        let found = match self.checked(project, query, kind) {
            Ok(found) => found,
            Err(e) => return Some(Err(e)),
        };
        let answer = Self::cached(found, query, kind)?;
        Some(self.report(project, user, query, kind, started, Ok(answer)))
    }

    /// Runs one search through the cache layers and reports it to plugins.
    /// `started` is when the request arrived: latency includes any wait.
    pub fn search(
        &self,
        project: &str,
        user: &str,
        query: &str,
        kind: QueryKind,
        started: Instant,
    ) -> Result<SearchOutcome, SearchError> {
        let found = self.checked(project, query, kind)?;
        let answer = match Self::cached(found, query, kind) {
            Some(answer) => Ok(answer),
            None => self.compute(found, query, kind, started),
        };
        self.report(project, user, query, kind, started, answer)
    }

    fn cached(project: &Project, query: &str, kind: QueryKind) -> Option<(CacheOutcome, Arc<CachedAnswer>)> {
        let generation = project.generation.load(Ordering::Acquire);
        let (layer, answer) = project.answers.lock().lookup(kind, query, generation)?;
        let layer = match layer {
            AnswerLayer::L1 => CacheOutcome::L1,
            AnswerLayer::L2 => CacheOutcome::L2,
        };
        Some((layer, answer))
    }

    /// L3 or a full scan; the answer then goes into L1 and L2.
    fn compute(
        &self,
        project: &Project,
        query: &str,
        kind: QueryKind,
        started: Instant,
    ) -> Result<(CacheOutcome, Arc<CachedAnswer>), Failure> {
        let deadline = Deadline::new(started, self.config.timeout);
        let regex = match kind {
            QueryKind::Regex => Some(search::compile_regex(query)?),
            _ => None,
        };
        let index = project.index.read();
        let (layer, hits) = match &regex {
            Some(regex) => (CacheOutcome::Miss, search::scan_regex(&index, regex, &deadline)?),
            None => {
                let needle = query.to_lowercase();
                let terms = search::needle_terms(&needle);
                let lists = if terms.is_empty() { None } else { Self::postings(project, &index, &terms) };
                match lists {
                    Some(lists) => {
                        (CacheOutcome::L3, search::from_postings(&index, &needle, &terms, &lists, &deadline)?)
                    }
                    None => {
                        let scan = search::scan_literal(&index, &needle, &terms, &deadline)?;
                        let mut cache = project.postings.lock();
                        for (term, entries) in terms.iter().zip(scan.postings) {
                            let postings = Postings { generation: index.generation(), entries };
                            let bytes = postings.bytes(term);
                            cache.insert(term, Arc::new(postings), bytes);
                        }
                        (CacheOutcome::Miss, scan.hits)
                    }
                }
            }
        };
        let (total, hits) = search::rank(&index, hits);
        let answer = Arc::new(CachedAnswer { generation: index.generation(), total, hits });
        drop(index);
        project.answers.lock().store(kind, query, answer.clone());
        Ok((layer, answer))
    }

    /// L3: the posting list of every term, repaired up to the index's
    /// generation; `None` when any is missing or cannot be repaired.
    fn postings(project: &Project, index: &ProjectIndex, terms: &[&str]) -> Option<Vec<Arc<Postings>>> {
        let mut cache = project.postings.lock();
        let mut lists = Vec::with_capacity(terms.len());
        for term in terms {
            let entry = cache.get(term)?;
            if entry.generation == index.generation() {
                lists.push(entry.clone());
                continue;
            }
            if !search::repair(Arc::make_mut(entry), term, index) {
                cache.remove(term);
                return None;
            }
            let bytes = entry.bytes(term);
            lists.push(entry.clone());
            cache.resize(term, bytes);
        }
        Some(lists)
    }

    fn report(
        &self,
        project: &str,
        user: &str,
        query: &str,
        kind: QueryKind,
        started: Instant,
        result: Result<(CacheOutcome, Arc<CachedAnswer>), Failure>,
    ) -> Result<SearchOutcome, SearchError> {
        let latency = started.elapsed();
        let search_id =
            format!("{}-{}", self.instance_id, self.search_seq.fetch_add(1, Ordering::Relaxed) + 1);
        let (cache, answer, failure) = match result {
            Ok((cache, answer)) => (cache, Some(answer), None),
            Err(failure) => (CacheOutcome::Miss, None, Some(failure)),
        };
        let hits: &[SearchHit] = answer.as_ref().map_or(&[], |a| &a.hits);
        let total = answer.as_ref().map_or(0, |a| a.total);
        let status = failure.as_ref().map_or(SearchStatus::Ok, |f| f.status);
        let top: Vec<RStr<'_>> = hits.iter().map(|h| RStr::from(h.path.as_str())).collect();
        self.plugins.search_executed(&SearchExecuted {
            search_id: RStr::from(search_id.as_str()),
            project: RStr::from(project),
            user: RStr::from(user),
            query: RStr::from(query),
            kind,
            cache,
            status,
            error_code: RStr::from(failure.as_ref().map_or("", |f| f.code)),
            latency_ns: latency.as_nanos() as u64,
            result_count: total,
            top_results: RSlice::from_slice(&top),
            timestamp_us: now_us(),
        });
        let outcome = SearchOutcome {
            search_id,
            project: project.to_owned(),
            query: query.to_owned(),
            kind: kind.as_str(),
            cache: cache.as_str(),
            status: status.as_str(),
            latency_ms: latency.as_secs_f64() * 1e3,
            total,
            results: hits.to_vec(),
        };
        match failure {
            None => Ok(outcome),
            Some(failure) => Err(SearchError::Failed(Box::new(outcome), failure.message)),
        }
    }

    /// Records that `user` opened `path` from the results of `search_id`;
    /// the file must be indexed. Returns its size.
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
            let file = index.file_by_path(path).ok_or_else(|| {
                SearchError::BadRequest(format!("file '{path}' is not indexed in project '{project_name}'"))
            })?;
            file.text.len() as u64
        };
        self.plugins.file_opened(&FileOpened {
            project: RStr::from(project_name),
            user: RStr::from(user),
            path: RStr::from(path),
            rank,
            search_id: RStr::from(search_id),
            timestamp_us: now_us(),
        });
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::{config::ProjectConfig, plugins::PluginSet};

    struct Fixture {
        engine: Arc<Engine>,
        indexer: Option<std::thread::JoinHandle<()>>,
        dir: PathBuf,
    }

    impl Fixture {
        fn new(label: &str, files: &[(&str, &str)], timeout: Duration) -> Self {
            let dir = std::env::temp_dir().join(format!("context-engine-{label}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            for (path, text) in files {
                write(&dir, path, text);
            }
            let config = EngineConfig {
                timeout,
                max_file_bytes: 1024,
                l1_entries: 8,
                l2_entries: 8,
                l3_bytes: 1 << 20,
            };
            let projects = [ProjectConfig { name: "p".into(), path: dir.clone() }];
            let engine = Arc::new(Engine::new(&projects, Arc::new(PluginSet::default()), "t".into(), config));
            let indexer = {
                let engine = engine.clone();
                std::thread::spawn(move || engine.run_indexer())
            };
            let fixture = Self { engine, indexer: Some(indexer), dir };
            fixture.reindex();
            fixture
        }

        fn reindex(&self) {
            assert_eq!(self.engine.request_reindex("p"), Some(Requested::Queued));
            while self.engine.queue.running("p") {
                std::thread::sleep(Duration::from_millis(2));
            }
        }

        fn search(&self, query: &str, kind: QueryKind) -> (String, u64, Vec<String>) {
            match self.engine.search("p", "u", query, kind, Instant::now()) {
                Ok(o) => (o.cache.to_owned(), o.total, o.results.into_iter().map(|h| h.path).collect()),
                Err(SearchError::Failed(o, _)) => (format!("{}:{}", o.status, o.cache), 0, Vec::new()),
                Err(e) => panic!("{e:?}"),
            }
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            self.engine.stop_indexer();
            let _ = self.indexer.take().map(|t| t.join());
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn write(dir: &Path, path: &str, text: &str) {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn each_cache_layer_answers_what_it_can() {
        let f = Fixture::new(
            "layers",
            &[
                ("a.rs", "fn needle() {}\nlet needle_two = 1;\n"),
                ("b.rs", "nothing\n"),
                ("c.md", "A Needle.\n"),
            ],
            Duration::from_secs(5),
        );
        let lit = QueryKind::Literal;
        assert_eq!(f.search("needle", lit), ("miss".into(), 2, vec!["a.rs".into(), "c.md".into()]));
        assert_eq!(f.search("needle", lit).0, "l1");
        assert_eq!(f.search("NEEDLE", lit).0, "l2", "literal search ignores case");
        assert_eq!(f.search("needle(", lit), ("l3".into(), 1, vec!["a.rs".into()]), "from needle's list");
        assert_eq!(f.search("needle_[a-z]+", QueryKind::Regex).1, 1);
        assert_eq!(f.search("needle_[a-z]+", QueryKind::Regex).0, "l1");
        assert_eq!(f.search("(", QueryKind::Regex).0, "error:miss");

        // A changed file: L1/L2 answers are stale, L3's list is repaired.
        write(&f.dir, "b.rs", "needle needle needle\n");
        std::fs::remove_file(f.dir.join("c.md")).unwrap();
        f.reindex();
        assert_eq!(f.search("needle", lit), ("l3".into(), 2, vec!["b.rs".into(), "a.rs".into()]));
        assert_eq!(f.search("needle", lit).0, "l1");
        let stats = &f.engine.stats()[0];
        assert_eq!((stats.total_files, stats.indexed_files, stats.cache.l3_terms), (2, 2, 1));

        // Nothing changed: the answers stay valid.
        let generation = stats.generation;
        f.reindex();
        assert_eq!(f.engine.stats()[0].generation, generation);
        assert_eq!(f.search("NEEDLE", lit).0, "l2", "its L1 answer predates the change");
    }

    #[test]
    fn a_scan_past_the_deadline_times_out() {
        let f = Fixture::new("deadline", &[("a.rs", "fn a() {}\n")], Duration::ZERO);
        assert_eq!(f.search("fn", QueryKind::Literal).0, "timeout:miss");
    }

    #[test]
    fn files_left_out_say_why() {
        let f = Fixture::new(
            "left",
            &[("ok.rs", "fn ok() {}\n"), ("big.txt", &"x".repeat(2000)), ("bin.dat", "a\0b")],
            Duration::from_secs(5),
        );
        std::fs::write(f.dir.join("latin1.txt"), b"caf\xe9\n").unwrap();
        std::os::unix::fs::symlink(f.dir.join("missing"), f.dir.join("dangling.rs")).unwrap();
        f.reindex();
        let stats = &f.engine.stats()[0];
        assert_eq!((stats.total_files, stats.indexed_files), (5, 1));
        let index = f.engine.projects["p"].index.read();
        let codes: BTreeMap<&str, &str> = index
            .seen
            .iter()
            .filter_map(|(p, s)| match s.state {
                index::SeenState::Left { code } => Some((&**p, code)),
                _ => None,
            })
            .collect();
        let expected: BTreeMap<&str, &str> = [
            ("big.txt", "too_large"),
            ("bin.dat", "binary"),
            ("dangling.rs", "unreadable"),
            ("latin1.txt", "invalid_utf8"),
        ]
        .into();
        assert_eq!(codes, expected);
    }
}
