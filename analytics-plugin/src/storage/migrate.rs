//! Versioned migrations from the SQL files under `sql/`, embedded at build
//! time and applied on load. Each backend's list is ordered by version; the
//! `schema_migrations` table records what was applied with a checksum, so a
//! second run applies nothing and an edited, already-applied file is an
//! error. On PostgreSQL the run holds an advisory lock, so two instances
//! starting at once apply each migration once.

/// One migration file.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

macro_rules! migration {
    ($version:literal, $name:literal, $path:literal) => {
        Migration { version: $version, name: $name, sql: include_str!(concat!("../../../sql/", $path)) }
    };
}

pub const SQLITE: &[Migration] = &[
    migration!(1, "events", "sqlite/0001_events.sql"),
    migration!(2, "rollups", "sqlite/0002_rollups.sql"),
    migration!(3, "histograms", "sqlite/0003_histograms.sql"),
    migration!(4, "alerting", "sqlite/0004_alerting.sql"),
    migration!(5, "usage rollups", "sqlite/0005_usage_rollups.sql"),
    migration!(6, "result paths", "sqlite/0006_result_paths.sql"),
];

pub const POSTGRES: &[Migration] = &[
    migration!(1, "events", "postgres/0001_events.sql"),
    migration!(2, "rollups", "postgres/0002_rollups.sql"),
    migration!(3, "histograms", "postgres/0003_histograms.sql"),
    migration!(4, "alerting", "postgres/0004_alerting.sql"),
    migration!(5, "usage rollups", "postgres/0005_usage_rollups.sql"),
];

/// TimescaleDB shares the raw tables with PostgreSQL; its rollups are
/// continuous aggregates, except the usage rollups (plain tables the plugin
/// maintains, as on PostgreSQL).
pub const TIMESCALE: &[Migration] = &[
    migration!(1, "events", "postgres/0001_events.sql"),
    migration!(2, "timescale", "timescale/0002_timescale.sql"),
    migration!(4, "alerting", "postgres/0004_alerting.sql"),
    migration!(5, "usage rollups", "postgres/0005_usage_rollups.sql"),
    migration!(6, "aggregate refreshes pending", "timescale/0006_cagg_refresh.sql"),
];

/// Key of the PostgreSQL advisory lock held while migrating.
pub const MIGRATION_LOCK: i64 = 0x636f_6e74_6578_7401;

impl Migration {
    pub fn checksum(&self) -> String {
        format!("{:08x}", crc32fast::hash(self.sql.as_bytes()))
    }

    /// The statements of the file, one by one (TimescaleDB refuses to create
    /// continuous aggregates inside a multi-statement string). The files hold
    /// no semicolon inside literals or bodies.
    pub fn statements(&self) -> impl Iterator<Item = &'static str> {
        self.sql.split(";\n").map(str::trim).filter(|s| {
            s.lines().any(|l| {
                let l = l.trim();
                !l.is_empty() && !l.starts_with("--")
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_increasing_and_files_split_into_statements() {
        for list in [SQLITE, POSTGRES, TIMESCALE] {
            assert!(list.windows(2).all(|w| w[0].version < w[1].version));
            for m in list {
                let statements: Vec<_> = m.statements().collect();
                assert!(!statements.is_empty(), "{}", m.name);
                assert!(statements.iter().all(|s| !s.ends_with(';')), "{}", m.name);
            }
        }
        let caggs = TIMESCALE[1].statements().filter(|s| s.contains("timescaledb.continuous")).count();
        assert_eq!(caggs, 10, "hourly and daily aggregates of five rollups");
    }
}
