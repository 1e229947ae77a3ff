//! Databases for the suites that run against SQLite, PostgreSQL and
//! TimescaleDB. PostgreSQL and TimescaleDB are the real servers that
//! `scripts/test-all.sh` starts; their URLs come from
//! `CONTEXT_TEST_POSTGRES_URL` and `CONTEXT_TEST_TIMESCALE_URL`. A missing
//! URL fails the test: a suite that silently skips its databases would
//! prove nothing.

use std::{sync::Arc, time::Duration};

use context_analytics::storage::{
    self, Backend, InsertMethod, RetentionConfig, Storage, StorageConfig, TimescaleMode,
};

pub fn database_url(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run the tests through scripts/test-all.sh, which starts the databases")
    })
}

/// A fresh, prepared database for one test of `suite`: a new SQLite file, or
/// a new database on the PostgreSQL server. The TimescaleDB test server has
/// one database, so its tests share it and empty the `reset` tables first.
pub async fn fresh(backend: Backend, suite: &str, name: &str, reset: &[&str]) -> Arc<dyn Storage> {
    let mut config = StorageConfig::default();
    let dir = std::env::temp_dir().join(format!("{suite}-suite-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    match backend {
        Backend::Sqlite => {
            let path = dir.join(format!("{name}.db"));
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
            config.url = format!("sqlite://{}", path.display());
        }
        Backend::Postgres => {
            let base = database_url("CONTEXT_TEST_POSTGRES_URL");
            let admin = storage::open(
                &StorageConfig { url: base.clone(), ..Default::default() },
                &RetentionConfig::default(),
                &dir,
            )
            .unwrap();
            let _ = admin.query_strings(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
            admin.query_strings(&format!("CREATE DATABASE {name}")).await.unwrap();
            admin.close().await;
            let (server, _) = base.rsplit_once('/').unwrap();
            config.url = format!("{server}/{name}");
            config.timescaledb = TimescaleMode::Off;
        }
        Backend::Timescaledb => {
            config.url = database_url("CONTEXT_TEST_TIMESCALE_URL");
            config.timescaledb = TimescaleMode::On;
            config.max_connections = 1;
            config.insert_method = InsertMethod::Unnest;
        }
    }
    // The TimescaleDB test server takes one connection: right after the
    // previous test closed its own, a new one can be refused for a moment.
    let mut last_error = String::new();
    for _ in 0..50 {
        let store = storage::open(&config, &RetentionConfig::default(), &dir).unwrap();
        let prepared = async {
            store.prepare().await?;
            if backend == Backend::Timescaledb {
                for table in reset {
                    store.query_strings(&format!("DELETE FROM {table} RETURNING 1")).await?;
                }
            }
            Ok::<_, storage::StorageError>(())
        };
        match prepared.await {
            Ok(()) => {
                assert_eq!(store.backend(), backend);
                return store;
            }
            Err(e) => {
                last_error = e.to_string();
                store.close().await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    panic!("{backend:?}: the database did not take a connection: {last_error}");
}
