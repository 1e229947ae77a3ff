//! Running one search over a project's index: a literal query (a
//! case-insensitive substring) from cached posting lists or by a full scan
//! that builds them; a regex by a full scan. Every scan keeps to a deadline.

use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, Instant},
};

use plugin_api::SearchStatus;
use regex::Regex;

use super::{
    SearchHit, TOP_RESULTS,
    cache::Postings,
    index::{ProjectIndex, terms},
};

/// Why a search ran and failed.
#[derive(Debug)]
pub struct Failure {
    pub status: SearchStatus,
    pub code: &'static str,
    pub message: String,
}

pub struct Deadline {
    started: Instant,
    limit: Duration,
}

impl Deadline {
    pub fn new(started: Instant, limit: Duration) -> Self {
        Self { started, limit }
    }

    fn check(&self) -> Result<(), Failure> {
        if self.started.elapsed() > self.limit {
            return Err(Failure {
                status: SearchStatus::Timeout,
                code: "deadline_exceeded",
                message: format!("search exceeded {} ms", self.limit.as_millis()),
            });
        }
        Ok(())
    }
}

pub fn compile_regex(query: &str) -> Result<Regex, Failure> {
    regex::RegexBuilder::new(query).size_limit(1 << 20).build().map_err(|e| {
        let first = e.to_string().lines().last().unwrap_or("").trim().to_owned();
        Failure {
            status: SearchStatus::Error,
            code: "invalid_regex",
            message: format!("invalid regex '{query}': {first}"),
        }
    })
}

/// The dictionary terms inside a lowercased needle, each once. A file that
/// contains the needle contains every one of them, so the intersection of
/// their posting lists holds every file the needle can match.
pub fn needle_terms(needle: &str) -> Vec<&str> {
    let mut seen = HashSet::new();
    terms(needle).filter(|t| seen.insert(*t)).collect()
}

fn count(haystack: &str, needle: &str) -> u32 {
    haystack.matches(needle).count().min(u32::MAX as usize) as u32
}

/// A full scan's answer and the posting list of every term it counted.
pub struct LiteralScan {
    pub hits: Vec<(u32, u32)>,
    pub postings: Vec<Vec<(u32, u32)>>,
}

/// Counts the needle (and each of its terms) in every file.
pub fn scan_literal(
    index: &ProjectIndex,
    needle: &str,
    terms: &[&str],
    deadline: &Deadline,
) -> Result<LiteralScan, Failure> {
    let single = terms.len() == 1 && terms[0] == needle;
    let mut postings: Vec<Vec<(u32, u32)>> = vec![Vec::new(); terms.len()];
    let mut hits = Vec::new();
    for (id, file) in index.files() {
        deadline.check()?;
        let mut all = true;
        for (list, term) in postings.iter_mut().zip(terms) {
            match count(&file.lower, term) {
                0 => all = false,
                n => list.push((id, n)),
            }
        }
        if !all {
            continue;
        }
        let n = if single { postings[0].last().map_or(0, |e| e.1) } else { count(&file.lower, needle) };
        if n > 0 {
            hits.push((id, n));
        }
    }
    Ok(LiteralScan { hits, postings })
}

/// Answers a literal needle from its terms' posting lists: a single-term
/// needle is its list; otherwise only files in every list are searched.
pub fn from_postings(
    index: &ProjectIndex,
    needle: &str,
    terms: &[&str],
    lists: &[Arc<Postings>],
    deadline: &Deadline,
) -> Result<Vec<(u32, u32)>, Failure> {
    if terms.len() == 1 && terms[0] == needle {
        return Ok(lists[0].entries.clone());
    }
    let Some(shortest) = lists.iter().min_by_key(|l| l.entries.len()) else { return Ok(Vec::new()) };
    let mut hits = Vec::new();
    for &(id, _) in &shortest.entries {
        if !lists.iter().all(|l| l.contains(id)) {
            continue;
        }
        deadline.check()?;
        if let Some(file) = index.file(id) {
            let n = count(&file.lower, needle);
            if n > 0 {
                hits.push((id, n));
            }
        }
    }
    Ok(hits)
}

/// Brings a cached posting list up to the index's generation by recounting
/// the term in the files changed since. False when the change log no longer
/// reaches back to the list's generation (it must be rebuilt).
pub fn repair(postings: &mut Postings, term: &str, index: &ProjectIndex) -> bool {
    let Some(changed) = index.changed_since(postings.generation) else { return false };
    let mut done = HashSet::new();
    for id in changed {
        if done.insert(id) {
            postings.set(id, index.file(id).map_or(0, |f| count(&f.lower, term)));
        }
    }
    postings.generation = index.generation();
    true
}

pub fn scan_regex(
    index: &ProjectIndex,
    regex: &Regex,
    deadline: &Deadline,
) -> Result<Vec<(u32, u32)>, Failure> {
    let mut hits = Vec::new();
    for (id, file) in index.files() {
        deadline.check()?;
        let n = regex.find_iter(&file.text).count().min(u32::MAX as usize) as u32;
        if n > 0 {
            hits.push((id, n));
        }
    }
    Ok(hits)
}

/// The number of files matched and the best [`TOP_RESULTS`]: most matches
/// first, then by path.
pub fn rank(index: &ProjectIndex, mut hits: Vec<(u32, u32)>) -> (u64, Vec<SearchHit>) {
    let total = hits.len() as u64;
    let path = |id: u32| index.file(id).map_or("", |f| &*f.path);
    let order = |a: &(u32, u32), b: &(u32, u32)| b.1.cmp(&a.1).then_with(|| path(a.0).cmp(path(b.0)));
    if hits.len() > TOP_RESULTS {
        hits.select_nth_unstable_by(TOP_RESULTS - 1, order);
        hits.truncate(TOP_RESULTS);
    }
    hits.sort_unstable_by(order);
    let top = hits.into_iter().map(|(id, n)| SearchHit { path: path(id).to_owned(), matches: u64::from(n) });
    (total, top.collect())
}
