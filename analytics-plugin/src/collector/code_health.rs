//! Per-project file tables behind the code-health gauges: which indexed
//! files searches return or users open (hot spots) and which nothing ever
//! reaches (dead code). Kept in memory since the plugin started, bounded by
//! `max_tracked_files`; the stored history answers the same questions over
//! any window through the API.

use std::hash::{BuildHasher, Hasher};

use rustc_hash::FxHashMap;

#[derive(Default, Clone, Copy)]
struct FileStat {
    indexed: bool,
    accesses: u32,
}

#[derive(Default)]
struct ProjectFiles {
    files: FxHashMap<u64, FileStat>,
}

/// Gauges of one project, computed by [`CodeHealth::summaries`].
#[derive(Debug, Clone, PartialEq)]
pub struct CodeHealthSummary {
    pub project: String,
    pub indexed_files: u64,
    pub dead_files: u64,
    pub dead_ratio: f64,
    pub hot_spots: u64,
}

pub struct CodeHealth {
    projects: FxHashMap<String, ProjectFiles>,
    tracked: usize,
    max_tracked: usize,
    hot_spot_factor: f64,
    hasher: std::hash::BuildHasherDefault<std::collections::hash_map::DefaultHasher>,
}

/// What happened when a file was recorded.
#[derive(Debug, PartialEq, Eq)]
pub enum Tracked {
    Yes,
    /// The table is full; the file is not tracked.
    TableFull,
}

impl CodeHealth {
    pub fn new(max_tracked: usize, hot_spot_factor: f64) -> Self {
        Self {
            projects: FxHashMap::default(),
            tracked: 0,
            max_tracked,
            hot_spot_factor,
            hasher: Default::default(),
        }
    }

    fn stat(&mut self, project: &str, path: &str) -> Option<&mut FileStat> {
        let mut hasher = self.hasher.build_hasher();
        hasher.write(path.as_bytes());
        let key = hasher.finish();
        if !self.projects.contains_key(project) {
            self.projects.insert(project.to_owned(), ProjectFiles::default());
        }
        let files = &mut self.projects.get_mut(project)?.files;
        // One probe per call: this runs for every path of every result.
        match files.entry(key) {
            std::collections::hash_map::Entry::Occupied(stat) => Some(stat.into_mut()),
            std::collections::hash_map::Entry::Vacant(slot) => {
                if self.tracked >= self.max_tracked {
                    return None;
                }
                self.tracked += 1;
                Some(slot.insert(FileStat::default()))
            }
        }
    }

    pub fn indexed(&mut self, project: &str, path: &str, ok: bool) -> Tracked {
        match self.stat(project, path) {
            Some(stat) => {
                stat.indexed = ok;
                Tracked::Yes
            }
            None => Tracked::TableFull,
        }
    }

    /// A search returned the file or a user opened it.
    pub fn accessed(&mut self, project: &str, path: &str) -> Tracked {
        match self.stat(project, path) {
            Some(stat) => {
                stat.accesses = stat.accesses.saturating_add(1);
                Tracked::Yes
            }
            None => Tracked::TableFull,
        }
    }

    pub fn summaries(&self) -> Vec<CodeHealthSummary> {
        let mut out: Vec<_> = self
            .projects
            .iter()
            .map(|(project, table)| {
                let indexed: Vec<&FileStat> = table.files.values().filter(|s| s.indexed).collect();
                let indexed_files = indexed.len() as u64;
                let dead_files = indexed.iter().filter(|s| s.accesses == 0).count() as u64;
                let total_accesses: u64 = indexed.iter().map(|s| u64::from(s.accesses)).sum();
                let hot_spots = if indexed_files == 0 || total_accesses == 0 {
                    0
                } else {
                    let threshold = self.hot_spot_factor * total_accesses as f64 / indexed_files as f64;
                    indexed.iter().filter(|s| f64::from(s.accesses) > threshold).count() as u64
                };
                CodeHealthSummary {
                    project: project.clone(),
                    indexed_files,
                    dead_files,
                    dead_ratio: if indexed_files == 0 {
                        0.0
                    } else {
                        dead_files as f64 / indexed_files as f64
                    },
                    hot_spots,
                }
            })
            .collect();
        out.sort_by(|a, b| a.project.cmp(&b.project));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_files_and_hot_spots_follow_accesses() {
        let mut health = CodeHealth::new(100, 3.0);
        for i in 0..10 {
            health.indexed("p", &format!("f{i}.rs"), true);
        }
        for _ in 0..20 {
            health.accessed("p", "f0.rs");
        }
        health.accessed("p", "f1.rs");
        // average 21/10 = 2.1 accesses; hot spots above 6.3: only f0.
        let summary = &health.summaries()[0];
        assert_eq!(summary.indexed_files, 10);
        assert_eq!(summary.dead_files, 8);
        assert!((summary.dead_ratio - 0.8).abs() < 1e-12);
        assert_eq!(summary.hot_spots, 1);
    }

    #[test]
    fn a_full_table_tracks_nothing_more() {
        let mut health = CodeHealth::new(2, 3.0);
        assert_eq!(health.indexed("p", "a", true), Tracked::Yes);
        assert_eq!(health.indexed("p", "b", true), Tracked::Yes);
        assert_eq!(health.indexed("p", "c", true), Tracked::TableFull);
        assert_eq!(health.accessed("p", "a"), Tracked::Yes);
    }
}
