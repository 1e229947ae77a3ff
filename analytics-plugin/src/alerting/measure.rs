//! The measures rules watch, computed at each evaluation: search, index and
//! usage measures from the raw events in the database (so they cover every
//! instance sharing it, and are fresh: rollups lag by their maintenance
//! interval), process measures (CPU, memory) from this process. Search and
//! index windows up to an hour come from per-second aggregates the leader
//! keeps between evaluations ([`Recent`]): each evaluation reads only the
//! seconds written since the last one.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    time::Instant,
};

use parking_lot::Mutex;

use super::{
    anomaly::{self, AnomalyConfig, Point, Verdict},
    config::{Measure, RuleConfig},
};
use crate::{
    api::sql::Sql,
    storage::{Storage, StorageError, Value, latency},
};

/// One value of a rule's measure: for one project, or for the whole server
/// (`project: None`).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub project: Option<String>,
    /// None when the window holds nothing to compute it from.
    pub value: Option<f64>,
    /// Searches or files the value was computed from (for `min_samples`).
    pub samples: u64,
    /// Set for `anomalous` rules: the detector's verdict.
    pub verdict: Option<Verdict>,
}

#[derive(Debug, Default, Clone)]
struct SearchAgg {
    total: u64,
    hits: u64,
    errors: u64,
    histogram: BTreeMap<i16, u64>,
}

/// An aggregate of events that two of can be merged into one.
trait Agg: Default {
    fn add(&mut self, other: &Self);
}

impl Agg for SearchAgg {
    fn add(&mut self, other: &SearchAgg) {
        self.total += other.total;
        self.hits += other.hits;
        self.errors += other.errors;
        for (b, n) in &other.histogram {
            *self.histogram.entry(*b).or_default() += n;
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct IndexAgg {
    total: u64,
    errors: u64,
    max_queue: i64,
}

impl Agg for IndexAgg {
    fn add(&mut self, other: &IndexAgg) {
        self.total += other.total;
        self.errors += other.errors;
        self.max_queue = self.max_queue.max(other.max_queue);
    }
}

/// How one table's events become per-project aggregates.
struct Source<A: 'static> {
    table: &'static str,
    /// Selected after `project` (and the second, when read by seconds).
    columns: &'static str,
    /// Grouped by after `project`.
    group: &'static str,
    /// One result row's columns after `project`, as an aggregate.
    parse: fn(&[Value]) -> A,
    /// Its part of [`Recent`].
    part: fn(&mut Recent) -> &mut Incremental<A>,
}

fn search_row(r: &[Value]) -> SearchAgg {
    let n = r[3].as_i64().max(0) as u64;
    SearchAgg {
        total: n,
        hits: if r[0].as_str() != Some("miss") { n } else { 0 },
        errors: if r[1].as_str() != Some("ok") { n } else { 0 },
        histogram: BTreeMap::from([(r[2].as_i64() as i16, n)]),
    }
}

fn index_row(r: &[Value]) -> IndexAgg {
    IndexAgg {
        total: r[0].as_i64().max(0) as u64,
        errors: r[1].as_i64().max(0) as u64,
        max_queue: r[2].as_i64(),
    }
}

const SEARCHES: Source<SearchAgg> = Source {
    table: "search_events",
    columns: "cache, status, latency_bucket, CAST(count(*) AS BIGINT)",
    group: ", cache, status, latency_bucket",
    parse: search_row,
    part: |r| &mut r.search,
};

const INDEXED: Source<IndexAgg> = Source {
    table: "index_events",
    columns: "CAST(count(*) AS BIGINT), CAST(sum(CASE WHEN outcome <> 'indexed' THEN 1 ELSE 0 END) AS BIGINT), \
              CAST(max(queue_depth) AS BIGINT)",
    group: "",
    parse: index_row,
    part: |r| &mut r.index,
};

/// What one evaluation has already read, by window.
#[derive(Default)]
pub struct Tick {
    search: HashMap<i64, BTreeMap<String, SearchAgg>>,
    index: HashMap<i64, BTreeMap<String, IndexAgg>>,
}

/// Windows up to this long are served from [`Recent`]; longer ones (custom
/// rules) are read from the database at each evaluation.
const INCREMENTAL_SECS: i64 = 3600;

/// Seconds re-read at each evaluation before the last one read, for events
/// written late (another server's flush, a slow write). Events written
/// later than that (a spool replayed after an outage) are not seen by
/// windows under an hour.
const OVERLAP_SECS: i64 = 10;

/// Per-second aggregates of one table's events, per project, for the
/// seconds [`span.0`, `span.1`): each evaluation reads only the seconds
/// since the last one (and the overlap), not its whole window again — at
/// 10,000 searches/s a 5-minute window is 3 million rows.
#[derive(Debug)]
struct Buckets<A> {
    seconds: BTreeMap<i64, BTreeMap<String, A>>,
    span: Option<(i64, i64)>,
}

impl<A> Default for Buckets<A> {
    fn default() -> Self {
        Buckets { seconds: BTreeMap::new(), span: None }
    }
}

impl<A> Buckets<A> {
    /// The second to read from so that [`from`, `now`] is held.
    fn plan(&mut self, from: i64) -> i64 {
        match self.span {
            Some((start, end)) if start <= from && end >= from => (end - OVERLAP_SECS).max(start),
            _ => {
                self.seconds.clear();
                self.span = None;
                from
            }
        }
    }

    /// Replaces every second from `read_from` with what was read, and drops
    /// seconds older than the longest incremental window.
    fn store(&mut self, read_from: i64, now: i64, read: BTreeMap<i64, BTreeMap<String, A>>) {
        self.seconds.retain(|s, _| *s < read_from);
        self.seconds.extend(read);
        self.seconds.retain(|s, _| *s >= now - INCREMENTAL_SECS);
        let start = self.span.map_or(read_from, |(s, _)| s.min(read_from)).max(now - INCREMENTAL_SECS);
        self.span = Some((start, now + 1));
    }
}

/// The incremental aggregates kept between evaluations: this server's own
/// events of this boot, fed by the pipeline as it handles them (never read
/// back from the database), and what other servers (and earlier boots of
/// this one) wrote, read from the database — not at all while nobody else
/// writes.
#[derive(Default)]
pub struct Recent {
    search: Incremental<SearchAgg>,
    index: Incremental<IndexAgg>,
    /// (instance id, boot id) of the events fed in process; None: nothing
    /// is fed, everything is read from the database.
    me: Option<(String, i64)>,
}

/// One table's incremental aggregates: what was read from the database,
/// and this boot's own events, by second.
struct Incremental<A> {
    read: Buckets<A>,
    own: BTreeMap<i64, BTreeMap<String, A>>,
}

impl<A> Default for Incremental<A> {
    fn default() -> Self {
        Incremental { read: Buckets::default(), own: BTreeMap::new() }
    }
}

impl Recent {
    pub fn fed_by(instance_id: &str, boot_id: i64) -> Self {
        Recent { me: Some((instance_id.to_owned(), boot_id)), ..Default::default() }
    }

    /// One search of this server, as the pipeline handles it.
    pub fn record_search(
        &mut self,
        time_us: i64,
        project: &str,
        hit: bool,
        error: bool,
        latency_bucket: i16,
    ) {
        let agg = own_entry(&mut self.search.own, time_us, project);
        agg.total += 1;
        agg.hits += u64::from(hit);
        agg.errors += u64::from(error);
        *agg.histogram.entry(latency_bucket).or_default() += 1;
    }

    /// One indexed (or failed) file of this server.
    pub fn record_index(&mut self, time_us: i64, project: &str, failed: bool, queue_depth: i64) {
        let agg = own_entry(&mut self.index.own, time_us, project);
        agg.total += 1;
        agg.errors += u64::from(failed);
        agg.max_queue = agg.max_queue.max(queue_depth);
    }
}

/// The aggregate of `project` in the second of `time_us`, dropping seconds
/// older than the longest incremental window (and a minute).
fn own_entry<'m, A: Default>(
    own: &'m mut BTreeMap<i64, BTreeMap<String, A>>,
    time_us: i64,
    project: &str,
) -> &'m mut A {
    let second = time_us.div_euclid(1_000_000);
    while own.first_key_value().is_some_and(|(s, _)| *s < second - INCREMENTAL_SECS - 60) {
        own.pop_first();
    }
    let per_project = own.entry(second).or_default();
    if !per_project.contains_key(project) {
        per_project.insert(project.to_owned(), A::default());
    }
    per_project.get_mut(project).expect("inserted above")
}

/// Process CPU seconds, sampled at each evaluation, for windowed rates.
#[derive(Default)]
pub struct ProcessSampler {
    cpu: Mutex<VecDeque<(Instant, f64)>>,
}

impl ProcessSampler {
    /// Records the process's CPU time now; keeps a day of samples at most.
    pub fn sample(&self) {
        if let Some(cpu) = process_cpu_seconds() {
            let mut q = self.cpu.lock();
            q.push_back((Instant::now(), cpu));
            while q.len() > 10_000 || q.front().is_some_and(|(t, _)| t.elapsed().as_secs() > 86_400) {
                q.pop_front();
            }
        }
    }

    /// CPU seconds per second over (at most) the window, from the oldest
    /// sample inside it to the newest.
    fn cpu_rate(&self, window_secs: f64) -> Option<f64> {
        let q = self.cpu.lock();
        let (t1, c1) = *q.back()?;
        let (t0, c0) = *q.iter().find(|(t, _)| t1.duration_since(*t).as_secs_f64() <= window_secs + 0.001)?;
        let dt = t1.duration_since(t0).as_secs_f64();
        (dt > 0.0).then(|| (c1 - c0).max(0.0) / dt)
    }
}

/// utime + stime of this process, in seconds (Linux: /proc/self/stat,
/// fields 14 and 15, in clock ticks of 1/100 s).
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces: count after its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Resident memory of this process in bytes (/proc/self/status VmRSS).
fn resident_memory_bytes() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024.0)
}

pub struct Measurer<'a> {
    pub store: &'a dyn Storage,
    pub recent: &'a Mutex<Recent>,
    pub sql: Sql,
    pub process: &'a ProcessSampler,
    pub anomaly: &'a AnomalyConfig,
    pub now_us: i64,
}

const HOUR_US: i64 = 3_600_000_000;

impl Measurer<'_> {
    fn window(&self, rule: &RuleConfig) -> (i64, i64) {
        (self.now_us - rule.window.as_us(), self.now_us)
    }

    fn filter(&self, col: &str) -> String {
        format!("{col} >= {} AND {col} < {}", self.sql.time(1), self.sql.time(2))
    }

    async fn rows(&self, sql: &str, from: i64, to: i64) -> Result<Vec<Vec<Value>>, StorageError> {
        self.store.query(sql, &[Value::Int(from), Value::Int(to)]).await
    }

    /// The rule's measure, per project when the rule says so, else one
    /// sample for the whole server.
    pub async fn measure(&self, tick: &mut Tick, rule: &RuleConfig) -> Result<Vec<Sample>, StorageError> {
        let (from, to) = self.window(rule);
        let window_secs = rule.window.0.as_secs_f64();
        let sample = |project: Option<String>, value: Option<f64>, samples: u64| Sample {
            project,
            value,
            samples,
            verdict: None,
        };
        match rule.measure {
            Measure::Cpu => Ok(vec![sample(None, self.process.cpu_rate(window_secs), 1)]),
            Measure::ResidentMemory => Ok(vec![sample(None, resident_memory_bytes(), 1)]),
            Measure::SearchLatency
            | Measure::CacheHitRate
            | Measure::SearchErrorRate
            | Measure::RequestRate => {
                let per_project = self.search(tick, from, to).await?;
                let mut groups: Vec<(Option<String>, SearchAgg)> = if rule.per_project {
                    per_project.iter().map(|(p, a)| (Some(p.clone()), a.clone())).collect()
                } else {
                    let mut all = SearchAgg::default();
                    per_project.values().for_each(|a| all.add(a));
                    vec![(None, all)]
                };
                let mut out = Vec::new();
                for (project, agg) in groups.drain(..) {
                    let ratio = |part: u64| (agg.total > 0).then(|| part as f64 / agg.total as f64);
                    let value = match rule.measure {
                        Measure::SearchLatency => {
                            let pairs: Vec<(i16, u64)> =
                                agg.histogram.iter().map(|(b, n)| (*b, *n)).collect();
                            latency::quantile_ms(&pairs, rule.percentile() / 100.0)
                        }
                        Measure::CacheHitRate => ratio(agg.hits),
                        Measure::SearchErrorRate => ratio(agg.errors),
                        _ => Some(agg.total as f64 / window_secs),
                    };
                    let mut s = sample(project, value, agg.total);
                    if rule.op == super::config::Op::Anomalous {
                        // In searches per 5 minutes (the detector's unit),
                        // against the same hours of previous weeks (the
                        // hourly rollup keeps five weeks; minute rollups
                        // and raw events do not).
                        let per_5m = agg.total as f64 * 300.0 / window_secs;
                        let current = Point { ts: self.now_us / 1_000_000, value: per_5m };
                        let history = self.hourly_rates(s.project.as_deref()).await?;
                        s.verdict = Some(anomaly::check(self.anomaly, &history, current, 3600));
                    }
                    out.push(s);
                }
                Ok(out)
            }
            Measure::IndexErrorRate | Measure::IndexQueueDepth => {
                let per_project = self.index(tick, from, to).await?;
                let groups: Vec<(Option<String>, IndexAgg)> = if rule.per_project {
                    per_project.iter().map(|(p, a)| (Some(p.clone()), *a)).collect()
                } else {
                    let mut all = IndexAgg::default();
                    per_project.values().for_each(|a| all.add(a));
                    vec![(None, all)]
                };
                Ok(groups
                    .into_iter()
                    .map(|(project, a)| {
                        let value = if rule.measure == Measure::IndexErrorRate {
                            (a.total > 0).then(|| a.errors as f64 / a.total as f64)
                        } else {
                            (a.total > 0).then_some(a.max_queue as f64)
                        };
                        sample(project, value, a.total)
                    })
                    .collect())
            }
            Measure::ActiveUsers => {
                let f = self.filter("time");
                let rows = if rule.per_project {
                    self.rows(
                        &format!(
                            "SELECT project, CAST(count(DISTINCT user_id) AS BIGINT) FROM search_events WHERE {f} GROUP BY project"
                        ),
                        from,
                        to,
                    )
                    .await?
                } else {
                    self.rows(
                        &format!("SELECT NULL, CAST(count(DISTINCT user_id) AS BIGINT) FROM search_events WHERE {f}"),
                        from,
                        to,
                    )
                    .await?
                };
                Ok(rows
                    .iter()
                    .map(|r| {
                        let n = r[1].as_i64().max(0) as u64;
                        sample(r[0].as_str().map(str::to_owned), Some(n as f64), n)
                    })
                    .collect())
            }
            Measure::IndexCoverage => {
                let f = self.filter("time");
                let rows = self
                    .rows(
                        &format!(
                            "SELECT p.project, CAST(max(p.total_files) AS BIGINT), CAST(max(p.indexed_files) AS BIGINT) \
                             FROM project_snapshots p JOIN (SELECT project, max(time) AS t FROM project_snapshots \
                             WHERE {f} GROUP BY project) l ON l.project = p.project AND l.t = p.time GROUP BY p.project"
                        ),
                        from,
                        to,
                    )
                    .await?;
                let per: Vec<(String, u64, u64)> = rows
                    .iter()
                    .map(|r| {
                        (
                            r[0].as_str().unwrap_or("").to_owned(),
                            r[1].as_i64().max(0) as u64,
                            r[2].as_i64().max(0) as u64,
                        )
                    })
                    .collect();
                Ok(coverage_like(rule.per_project, per))
            }
            Measure::DeadCodeRatio => {
                let f = self.filter("time");
                let sf = self.filter("s.time");
                let reached = format!(
                    "SELECT s.project AS project, {} AS path FROM search_events s, {} WHERE {sf} \
                     UNION SELECT project, path FROM open_events WHERE {f}",
                    self.sql.result_path_col(),
                    self.sql.result_paths(),
                );
                let rows = self
                    .rows(
                        &format!(
                            "SELECT i.project, CAST(count(*) AS BIGINT), \
                             CAST(sum(CASE WHEN a.path IS NULL THEN 1 ELSE 0 END) AS BIGINT) FROM \
                             (SELECT DISTINCT project, path FROM index_events WHERE {f} AND outcome = 'indexed') i \
                             LEFT JOIN ({reached}) a ON a.project = i.project AND a.path = i.path GROUP BY i.project"
                        ),
                        from,
                        to,
                    )
                    .await?;
                let per: Vec<(String, u64, u64)> = rows
                    .iter()
                    .map(|r| {
                        (
                            r[0].as_str().unwrap_or("").to_owned(),
                            r[1].as_i64().max(0) as u64,
                            r[2].as_i64().max(0) as u64,
                        )
                    })
                    .collect();
                Ok(coverage_like(rule.per_project, per))
            }
        }
    }

    /// Search aggregates per project over [from, to), once per window and
    /// evaluation.
    async fn search<'t>(
        &self,
        tick: &'t mut Tick,
        from: i64,
        to: i64,
    ) -> Result<&'t BTreeMap<String, SearchAgg>, StorageError> {
        if !tick.search.contains_key(&(to - from)) {
            let map = self.aggregate(&SEARCHES, from, to).await?;
            tick.search.insert(to - from, map);
        }
        Ok(&tick.search[&(to - from)])
    }

    /// Index aggregates per project over [from, to), like [`Self::search`].
    async fn index<'t>(
        &self,
        tick: &'t mut Tick,
        from: i64,
        to: i64,
    ) -> Result<&'t BTreeMap<String, IndexAgg>, StorageError> {
        if !tick.index.contains_key(&(to - from)) {
            let map = self.aggregate(&INDEXED, from, to).await?;
            tick.index.insert(to - from, map);
        }
        Ok(&tick.index[&(to - from)])
    }

    /// Per-project aggregates of a table over [from, to): for windows up to
    /// an hour from the per-second aggregates of [`Recent`] (whole seconds:
    /// the window starts at the first second starting in it), reading only
    /// the seconds not held yet; longer windows straight from the table.
    async fn aggregate<A: Agg>(
        &self,
        src: &Source<A>,
        from: i64,
        to: i64,
    ) -> Result<BTreeMap<String, A>, StorageError> {
        let (table, columns, group) = (src.table, src.columns, src.group);
        let mut map: BTreeMap<String, A> = BTreeMap::new();
        if to - from > INCREMENTAL_SECS * 1_000_000 {
            let rows = self
                .rows(
                    &format!(
                        "SELECT project, {columns} FROM {table} WHERE {} GROUP BY project{group}",
                        self.filter("time")
                    ),
                    from,
                    to,
                )
                .await?;
            for r in rows {
                map.entry(r[0].as_str().unwrap_or("").to_owned()).or_default().add(&(src.parse)(&r[1..]));
            }
            return Ok(map);
        }
        let (first, now) = (from.div_euclid(1_000_000) + i64::from(from % 1_000_000 != 0), to / 1_000_000);
        let (read_from, me) = {
            let mut recent = self.recent.lock();
            let me = recent.me.clone();
            ((src.part)(&mut recent).read.plan(first), me)
        };
        let rows = match self.others(read_from, &me).await? {
            None => Vec::new(),
            Some((not_me, binds)) => {
                self.store
                    .query(
                        &format!(
                            "SELECT {}, project, {columns} FROM {table} WHERE time >= {}{not_me} \
                             GROUP BY 1, project{group}",
                            self.sql.bucket("time", 1_000_000),
                            self.sql.time(1)
                        ),
                        &binds,
                    )
                    .await?
            }
        };
        let mut read: BTreeMap<i64, BTreeMap<String, A>> = BTreeMap::new();
        for r in rows {
            read.entry(r[0].as_i64() / 1_000_000)
                .or_default()
                .entry(r[1].as_str().unwrap_or("").to_owned())
                .or_default()
                .add(&(src.parse)(&r[2..]));
        }
        let mut recent = self.recent.lock();
        let part = (src.part)(&mut recent);
        part.read.store(read_from, now, read);
        for per_project in
            part.read.seconds.range(first..=now).chain(part.own.range(first..=now)).map(|(_, p)| p)
        {
            for (project, agg) in per_project {
                map.entry(project.clone()).or_default().add(agg);
            }
        }
        Ok(map)
    }

    /// Whether events of other writers (other servers, earlier boots of
    /// this one) may be in the database from second `read_from` on, and if
    /// so the condition excluding this boot's own events (fed in process)
    /// with its binds; None when nobody else wrote since then.
    async fn others(
        &self,
        read_from: i64,
        me: &Option<(String, i64)>,
    ) -> Result<Option<(String, Vec<Value>)>, StorageError> {
        let since = Value::Int(read_from * 1_000_000);
        let Some((instance, boot)) = me else {
            return Ok(Some((String::new(), vec![since])));
        };
        let me_binds = [Value::Text(instance.clone()), Value::Int(*boot)];
        let writers = self
            .store
            .query(
                &format!(
                    "SELECT CAST(count(*) AS BIGINT) FROM ingest_progress WHERE updated_at >= {} \
                     AND NOT (instance_id = {} AND boot_id = {})",
                    self.sql.time(1),
                    self.sql.p(2),
                    self.sql.p(3)
                ),
                &[since.clone(), me_binds[0].clone(), me_binds[1].clone()],
            )
            .await?;
        if writers.first().is_none_or(|r| r[0].as_i64() == 0) {
            return Ok(None);
        }
        let not_me = format!(" AND NOT (instance_id = {} AND boot_id = {})", self.sql.p(2), self.sql.p(3));
        Ok(Some((not_me, vec![since, me_binds[0].clone(), me_binds[1].clone()])))
    }

    /// Searches per 5 minutes of every complete hour of the last five weeks
    /// (the hourly rollup's count / 12), oldest first; hours without a row
    /// are gaps.
    async fn hourly_rates(&self, project: Option<&str>) -> Result<Vec<Point>, StorageError> {
        let hour_start = (self.now_us / HOUR_US) * HOUR_US;
        let from = hour_start - 35 * 24 * HOUR_US;
        let mut binds = vec![Value::Int(from), Value::Int(hour_start)];
        let mut f = self.filter("bucket");
        if let Some(p) = project {
            f.push_str(&format!(" AND project = {}", self.sql.p(3)));
            binds.push(Value::Text(p.to_owned()));
        }
        let rows = self
            .store
            .query(
                &format!(
                    "SELECT {} AS b, CAST(sum(searches) AS BIGINT) FROM search_rollup_1h WHERE {f} GROUP BY 1 ORDER BY 1",
                    self.sql.us("bucket")
                ),
                &binds,
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| Point { ts: r[0].as_i64() / 1_000_000, value: r[1].as_i64() as f64 / 12.0 })
            .collect())
    }
}

/// (project, whole, part) → part/whole per project or over all projects.
fn coverage_like(per_project: bool, per: Vec<(String, u64, u64)>) -> Vec<Sample> {
    let s = |project, whole: u64, part: u64| Sample {
        project,
        value: (whole > 0).then(|| part as f64 / whole as f64),
        samples: whole,
        verdict: None,
    };
    if per_project {
        per.into_iter().map(|(p, whole, part)| s(Some(p), whole, part)).collect()
    } else {
        let (whole, part) = per.iter().fold((0, 0), |(w, p), (_, whole, part)| (w + whole, p + part));
        vec![s(None, whole, part)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_measures_read_this_process() {
        let cpu = process_cpu_seconds().unwrap();
        assert!(cpu >= 0.0);
        let rss = resident_memory_bytes().unwrap();
        assert!(rss > 1e6, "{rss}");
        let sampler = ProcessSampler::default();
        sampler.sample();
        // Burn some CPU so the rate is measurably above zero.
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed().as_millis() < 200 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        sampler.sample();
        let rate = sampler.cpu_rate(60.0).unwrap();
        assert!(rate > 0.2 && rate < 2.5, "{rate}");
    }

    #[test]
    fn recent_seconds_are_read_once_plus_the_overlap() {
        let mut b: Buckets<u32> = Buckets::default();
        let one = |s: i64| BTreeMap::from([(s, BTreeMap::from([("p".to_owned(), 1u32)]))]);
        // First evaluation: the whole window.
        assert_eq!(b.plan(1_000), 1_000);
        b.store(1_000, 1_300, one(1_100));
        assert_eq!(b.span, Some((1_000, 1_301)));
        // Next ones: only what is new, and the overlap for late writes.
        assert_eq!(b.plan(1_015), 1_291);
        let mut read = one(1_295);
        read.extend(one(1_310));
        b.store(1_291, 1_315, read);
        assert_eq!(b.seconds.keys().copied().collect::<Vec<_>>(), [1_100, 1_295, 1_310]);
        assert_eq!(b.span, Some((1_000, 1_316)));
        // A longer window than held: read it all again.
        assert_eq!(b.plan(900), 900);
        assert!(b.seconds.is_empty() && b.span.is_none());
        // Seconds older than the longest incremental window are dropped.
        b.store(900, 900 + INCREMENTAL_SECS + 50, one(920));
        assert!(b.seconds.is_empty());
        assert_eq!(b.span, Some((950, 900 + INCREMENTAL_SECS + 51)));
        // After standing by (a follower), the gap is read again from the window's start.
        assert_eq!(b.plan(900 + INCREMENTAL_SECS * 3), 900 + INCREMENTAL_SECS * 3);
    }

    #[test]
    fn coverage_sums_parts_and_wholes_across_projects() {
        let per = vec![("a".to_owned(), 10, 5), ("b".to_owned(), 30, 30)];
        let all = coverage_like(false, per.clone());
        assert_eq!(all[0].value, Some(35.0 / 40.0));
        assert_eq!(all[0].samples, 40);
        let each = coverage_like(true, per);
        assert_eq!(each[0].value, Some(0.5));
        assert_eq!(each[1].project.as_deref(), Some("b"));
        assert_eq!(coverage_like(false, vec![])[0].value, None);
    }
}
