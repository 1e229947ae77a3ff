//! `context-host serve`: wires config, plugins, engine and server together
//! and shuts them down in the order plugins rely on.

use std::{sync::Arc, time::Duration};

use anyhow::Context;

use crate::{
    config::HostConfig,
    engine::{Engine, EngineConfig},
    plugins::{HostIdentity, PluginSet},
    server::{AppState, app},
};

pub fn serve(config: HostConfig) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.server.data_dir)
        .with_context(|| format!("cannot create data dir '{}'", config.server.data_dir.display()))?;
    let instance_id = config.instance_id();
    let identity = HostIdentity {
        host_name: "context-host".to_owned(),
        host_version: env!("CARGO_PKG_VERSION").to_owned(),
        instance_id: instance_id.clone(),
        data_dir: config.server.data_dir.clone(),
    };
    let plugins = Arc::new(PluginSet::load(&config.plugins, &identity));
    let engine = Arc::new(Engine::new(
        &config.projects,
        plugins.clone(),
        instance_id,
        EngineConfig::from_host(&config),
    ));

    // Indexer threads: every project once at start, then reindex requests.
    let mut indexers = Vec::new();
    for i in 0..config.index.workers {
        let engine = engine.clone();
        indexers.push(
            std::thread::Builder::new().name(format!("indexer-{i}")).spawn(move || engine.run_indexer())?,
        );
    }
    for name in engine.project_names() {
        engine.request_reindex(&name);
    }

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (stop_tx, stopping) = tokio::sync::watch::channel(false);
    let state = AppState { engine: engine.clone(), plugins: plugins.clone(), stopping };
    let snapshot_every = Duration::from_secs(config.server.snapshot_interval_secs.max(1));
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.server.listen))?;
        let address = listener.local_addr()?;
        tracing::info!("context-host listening on http://{address}");
        for plugin in plugins.plugins() {
            for route in &plugin.routes {
                tracing::info!("  http://{address}{} ({})", route.prefix, plugin.info.name);
            }
        }
        let snapshots = {
            let engine = engine.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(snapshot_every);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let engine = engine.clone();
                    let _ = tokio::task::spawn_blocking(move || engine.snapshot_all()).await;
                }
            })
        };
        let stop = async move {
            stop_signal().await;
            let _ = stop_tx.send(true); // ends plugin event streams
        };
        axum::serve(listener, app(state)).with_graceful_shutdown(stop).await?;
        snapshots.abort();
        anyhow::Ok(())
    })?;
    // Hooks must not run during or after plugin shutdown: the server has
    // stopped; stop the indexer threads (a file in progress is finished).
    drop(runtime);
    engine.stop_indexer();
    for indexer in indexers {
        let _ = indexer.join();
    }
    plugins.shutdown();
    drop(engine);
    match Arc::try_unwrap(plugins) {
        Ok(plugins) => drop(plugins),
        Err(_) => tracing::warn!("plugins still referenced at exit"),
    }
    tracing::info!("context-host stopped");
    Ok(())
}

async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("stop signal received: draining requests, then shutting plugins down");
}
