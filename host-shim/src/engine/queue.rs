//! The index queue. A reindex request becomes a scan of the project folder;
//! the scan queues the files that are new or changed; indexer threads work
//! through them. The depth reported to plugins is real: a project's files
//! queued and not yet started.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use parking_lot::{Condvar, Mutex};

use super::{Project, index::FileJob};

pub enum Job {
    Scan(Arc<Project>),
    File(Arc<Project>, FileJob),
}

/// What a reindex request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    /// A run of the project starts with a scan.
    Queued,
    /// A run is under way; another scan follows it.
    Rescheduled,
    /// The indexer is stopping.
    Closed,
}

impl Requested {
    pub fn as_str(self) -> &'static str {
        match self {
            Requested::Queued => "queued",
            Requested::Rescheduled => "rescan_after_current_run",
            Requested::Closed => "stopping",
        }
    }
}

/// One run of a project, from its scan to its last file.
struct Run {
    scanning: bool,
    pending: u64,
    in_flight: u64,
    /// Another request came during this run: scan again when it ends.
    rescan: bool,
    started: Instant,
    read: u64,
    changed: u64,
    removed: u64,
}

impl Run {
    fn new() -> Self {
        Self {
            scanning: true,
            pending: 0,
            in_flight: 0,
            rescan: false,
            started: Instant::now(),
            read: 0,
            changed: 0,
            removed: 0,
        }
    }
}

/// A finished run, for the log.
#[derive(Debug)]
pub struct RunReport {
    /// Files read (new, changed, or too recently modified to trust mtime).
    pub read: u64,
    /// Files reported to plugins: content or failure changed.
    pub changed: u64,
    pub removed: u64,
    pub elapsed: Duration,
}

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    runs: HashMap<String, Run>,
    closed: bool,
}

#[derive(Default)]
pub struct IndexQueue {
    state: Mutex<State>,
    wake: Condvar,
}

impl IndexQueue {
    pub fn request(&self, project: &Arc<Project>) -> Requested {
        let mut state = self.state.lock();
        if state.closed {
            return Requested::Closed;
        }
        if let Some(run) = state.runs.get_mut(&project.name) {
            run.rescan = true;
            return Requested::Rescheduled;
        }
        state.runs.insert(project.name.clone(), Run::new());
        state.jobs.push_back(Job::Scan(project.clone()));
        self.wake.notify_one();
        Requested::Queued
    }

    /// The next job and, for a file, how many files of its project are
    /// still waiting after it. Blocks; `None` once the queue is closed.
    pub fn next(&self) -> Option<(Job, u64)> {
        let mut state = self.state.lock();
        loop {
            if state.closed {
                return None;
            }
            if let Some(job) = state.jobs.pop_front() {
                let depth = match &job {
                    Job::Scan(_) => 0,
                    Job::File(project, _) => {
                        let run = state.runs.get_mut(&project.name).expect("a queued file belongs to a run");
                        run.pending -= 1;
                        run.in_flight += 1;
                        run.pending
                    }
                };
                return Some((job, depth));
            }
            self.wake.wait(&mut state);
        }
    }

    /// The scan of `project` ended: queues its files. Returns the run's
    /// report when there was nothing to read.
    pub fn scanned(&self, project: &Arc<Project>, files: Vec<FileJob>, removed: u64) -> Option<RunReport> {
        let mut state = self.state.lock();
        let count = files.len() as u64;
        state.jobs.extend(files.into_iter().map(|f| Job::File(project.clone(), f)));
        let run = state.runs.get_mut(&project.name)?;
        run.scanning = false;
        run.pending += count;
        run.removed = removed;
        if count > 0 {
            self.wake.notify_all();
        }
        self.finish_if_done(&mut state, project)
    }

    /// A file of `project` was processed (and reported to plugins or not).
    pub fn file_done(&self, project: &Arc<Project>, reported: bool) -> Option<RunReport> {
        let mut state = self.state.lock();
        let run = state.runs.get_mut(&project.name)?;
        run.in_flight -= 1;
        run.read += 1;
        run.changed += u64::from(reported);
        self.finish_if_done(&mut state, project)
    }

    fn finish_if_done(&self, state: &mut State, project: &Arc<Project>) -> Option<RunReport> {
        let run = state.runs.get(&project.name)?;
        if run.scanning || run.pending > 0 || run.in_flight > 0 {
            return None;
        }
        let run = state.runs.remove(&project.name)?;
        if run.rescan && !state.closed {
            state.runs.insert(project.name.clone(), Run::new());
            state.jobs.push_back(Job::Scan(project.clone()));
            self.wake.notify_one();
        }
        Some(RunReport {
            read: run.read,
            changed: run.changed,
            removed: run.removed,
            elapsed: run.started.elapsed(),
        })
    }

    /// Files of `project` queued and not yet started.
    pub fn depth(&self, project: &str) -> u64 {
        self.state.lock().runs.get(project).map_or(0, |r| r.pending)
    }

    /// Whether a run of `project` is under way.
    pub fn running(&self, project: &str) -> bool {
        self.state.lock().runs.contains_key(project)
    }

    /// Drops queued jobs and wakes every indexer thread to return.
    pub fn close(&self) {
        let mut state = self.state.lock();
        state.closed = true;
        state.jobs.clear();
        self.wake.notify_all();
    }
}
