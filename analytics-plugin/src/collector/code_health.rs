//! Per-project file tables behind the code-health gauges: which indexed
//! files searches return or users open (hot spots) and which nothing ever
//! reaches (dead code). Kept in memory since the plugin started, bounded by
//! `max_tracked_files`; the stored history answers the same questions over
//! any window through the API.

use std::hash::{BuildHasher, Hasher};

use rustc_hash::{FxBuildHasher, FxHashMap};

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
    /// A file is known by its path's 64-bit hash (fixed seed, so the same
    /// path is the same file all along).
    hasher: FxBuildHasher,
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

    /// The file's entry in the project's table, made if there is room.
    /// One probe per call: this runs for every path of every result.
    fn stat<'a>(
        files: &'a mut FxHashMap<u64, FileStat>,
        tracked: &mut usize,
        max_tracked: usize,
        hasher: &FxBuildHasher,
        path: &str,
    ) -> Option<&'a mut FileStat> {
        let mut h = hasher.build_hasher();
        h.write(path.as_bytes());
        match files.entry(h.finish()) {
            std::collections::hash_map::Entry::Occupied(stat) => Some(stat.into_mut()),
            std::collections::hash_map::Entry::Vacant(slot) => {
                if *tracked >= max_tracked {
                    return None;
                }
                *tracked += 1;
                Some(slot.insert(FileStat::default()))
            }
        }
    }

    /// The project's table, made on first use.
    fn files<'a>(
        projects: &'a mut FxHashMap<String, ProjectFiles>,
        project: &str,
    ) -> &'a mut FxHashMap<u64, FileStat> {
        if !projects.contains_key(project) {
            projects.insert(project.to_owned(), ProjectFiles::default());
        }
        &mut projects.get_mut(project).expect("inserted above").files
    }

    pub fn indexed(&mut self, project: &str, path: &str, ok: bool) -> Tracked {
        let files = Self::files(&mut self.projects, project);
        match Self::stat(files, &mut self.tracked, self.max_tracked, &self.hasher, path) {
            Some(stat) => {
                stat.indexed = ok;
                Tracked::Yes
            }
            None => Tracked::TableFull,
        }
    }

    /// Searches returned these files of one project, or a user opened one.
    /// Returns how many of them the full table could not take.
    pub fn accessed<'p>(&mut self, project: &str, paths: impl IntoIterator<Item = &'p str>) -> u64 {
        let files = Self::files(&mut self.projects, project);
        let mut full = 0;
        for path in paths {
            match Self::stat(files, &mut self.tracked, self.max_tracked, &self.hasher, path) {
                Some(stat) => stat.accesses = stat.accesses.saturating_add(1),
                None => full += 1,
            }
        }
        full
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
        for _ in 0..19 {
            health.accessed("p", ["f0.rs"]);
        }
        health.accessed("p", ["f0.rs", "f1.rs"]);
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
        assert_eq!(health.accessed("p", ["a", "c", "b", "d"]), 2, "c and d are left out");
        assert_eq!(health.summaries()[0].hot_spots, 0);
        assert_eq!(health.summaries()[0].dead_files, 0, "a and b were accessed");
    }
}
