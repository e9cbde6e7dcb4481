//! `bangerd`: the per-user daemon. Wiring only: load the config, take the
//! single-instance lock, open the services, serve the API on the Unix
//! socket until told to stop. Every decision lives in `banger-core`; the
//! route table is `api.rs`, built on the declarations of banger-api.

mod api;
mod exec;
mod log;
mod openapi;
mod reply;
mod routes;
mod state;
mod stream;
mod upload;

use std::fs::File;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use banger_core::{Config, Services, Tools};
use clap::Parser;
use tokio::net::UnixListener;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

#[derive(Parser, Debug)]
#[command(
    name = "bangerd",
    version,
    about = "The banger daemon (started by `banger` on demand)"
)]
struct Args {}

fn main() -> std::process::ExitCode {
    let _args = Args::parse();
    let config = Config::load();
    // Started by the CLI, stderr is bangerd.log: write it ourselves,
    // bounded (log.rs); otherwise stderr (a unit's journal).
    let rotating = config.as_ref().ok().and_then(|c| {
        let path = banger_core::Layout::new(c.data_dir.clone()).daemon_log();
        log::RotatingLog::adopt_stderr(&path, c.logs.max_bytes())
    });
    let writer = match rotating {
        Some(log) => BoxMakeWriter::new(log),
        None => BoxMakeWriter::new(std::io::stderr),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            // hickory logs every DNS query at info: a guest asking in a
            // loop would fill the log, which nothing rotates. banger's own
            // query line is at debug (BANGER_LOG=banger_dns=debug).
            tracing_subscriber::EnvFilter::try_from_env("BANGER_LOG")
                .unwrap_or_else(|_| "info,hickory_server=warn".into()),
        )
        .with_writer(writer)
        .with_ansi(false)
        .init();
    match config.map_err(anyhow::Error::from).and_then(run) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bangerd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// How long a starting daemon waits for a dying one to let go of the lock.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// One daemon per data dir: an flock on `bangerd.lock` in the data dir
/// (not the runtime dir, which differs between a cron job and a login
/// shell), released by the kernel however the daemon dies, so a stale
/// lock never blocks a restart. It then holds our pid and socket, for a
/// CLI whose runtime dir names another socket.
fn take_lock(layout: &banger_core::Layout) -> Result<File> {
    use std::io::{Read, Seek, Write};
    let path = layout.lock_file();
    let mut lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // A daemon that was just killed holds the lock until the kernel has
    // torn it down; give it a moment rather than failing the restart.
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    while lock.try_lock().is_err() {
        if std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
            continue;
        }
        let mut holder = String::new();
        let _ = lock.read_to_string(&mut holder);
        let holder = holder.split_whitespace().collect::<Vec<_>>().join(" on ");
        bail!(
            "another bangerd (pid {}) serves {}",
            if holder.is_empty() {
                "unknown"
            } else {
                &holder
            },
            layout.data_dir.display(),
        );
    }
    lock.set_len(0)?;
    lock.rewind()?;
    writeln!(lock, "{} {}", std::process::id(), layout.socket().display())?;
    Ok(lock)
}

fn run(config: Config) -> Result<()> {
    let layout = banger_core::Layout::new(config.data_dir.clone());
    layout.ensure()?;
    let lock = take_lock(&layout)?;

    let services =
        Services::open(config, Tools::beside_current_exe()).map_err(|e| anyhow::anyhow!(e))?;

    let socket = layout.socket();
    // The lock proves no live daemon owns the socket; whatever is there is a
    // leftover of a killed one.
    match std::fs::remove_file(&socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("cannot remove stale {}", socket.display()));
        }
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        // Host networking first: reconcile re-adopts taps and DNS records.
        let network = services.start_network().await;
        tracing::info!(network = %network, "host networking");
        // Before answering anyone: re-adopt VMs that survived the previous
        // daemon, clean up after those that did not.
        match services.reconcile().await {
            Ok(notes) => notes.iter().for_each(|n| tracing::info!("{n}")),
            Err(e) => tracing::warn!(error = %e, "reconcile failed"),
        }
        tracing::info!(vmm = %services.vmm_choice(), "vmm selected");
        let listener = UnixListener::bind(&socket)
            .with_context(|| format!("cannot listen on {}", socket.display()))?;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot restrict {}", socket.display()))?;
        tracing::info!(socket = %socket.display(), pid = std::process::id(), "bangerd listening");
        let services = Arc::new(services);
        // Idle suspend: watch the suspended VMs, and start the monitor.
        services.start_idle().await;
        let state = state::State::new(services.clone(), socket.clone());
        let stop = state.stop_signal();
        let app = api::router(state);
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                        .expect("install SIGTERM handler");
                tokio::select! {
                    _ = stop.notified() => {}
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
                tracing::info!("shutting down");
            })
            .await
            .context("serving the API")?;
        // Background work (a boot template being made) ends with us.
        services.shutdown().await;
        let _ = std::fs::remove_file(&socket);
        Ok::<_, anyhow::Error>(())
    })?;
    // Dropping the runtime waits for blocking operations in flight, so a
    // stop never cuts a create or an import in half.
    drop(runtime);
    drop(lock);
    Ok(())
}
