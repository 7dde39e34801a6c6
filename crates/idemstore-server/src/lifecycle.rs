//! A server's life after its backend is open: serve until SIGTERM or
//! Ctrl-C, drain the connections, wait for the work of reserved keys (a
//! handler whose client left still runs to its end and is stored), then
//! close the store. Every step is bounded by the shutdown timeout.

use crate::flags::Opened;
use crate::serve::{Limits, Stopped, serve, shutdown_signal};
use axum::Router;
use idemstore_http::InFlightWork;
use std::sync::{Arc, OnceLock};
use tokio::net::TcpListener;

/// Prints `listening on http://ADDR` on stdout, serves `app` on `listener`
/// within `limits` until a signal, then stops as the module docs say
/// (waiting for the work of every layer in `work`), printing `NAME:
/// stopped …` on stderr.
///
/// # Errors
///
/// The listener's address cannot be read, or the store's last writes fail
/// when it closes.
pub async fn run(
    name: &str,
    listener: TcpListener,
    app: Router,
    limits: &Limits,
    work: Vec<InFlightWork>,
    backend: &Opened,
) -> Result<(), Box<dyn std::error::Error>> {
    let stop = shutdown_signal();
    println!("listening on http://{}", listener.local_addr()?);
    let signalled = Arc::new(OnceLock::new());
    let signal = {
        let signalled = signalled.clone();
        async move {
            stop.await;
            let _ = signalled.set(tokio::time::Instant::now());
        }
    };
    let stopped = serve(listener, app, limits, signal).await;
    // Every connection is closed; the work of reserved keys runs in tasks of
    // its own. Wait for it within the same shutdown timeout, then close the
    // store.
    let deadline = signalled
        .get()
        .map_or_else(tokio::time::Instant::now, |t| *t)
        + limits.shutdown_timeout;
    let settled = async {
        for w in &work {
            w.idle().await;
        }
        backend.settled().await;
    };
    if tokio::time::timeout_at(deadline, settled).await.is_err() {
        eprintln!(
            "{name}: {} request(s) still running at the shutdown timeout; their keys stay \
             reserved until their leases end",
            work.iter().map(InFlightWork::count).sum::<usize>()
        );
    }
    backend.close()?;
    match stopped {
        Stopped::Drained => eprintln!("{name}: stopped cleanly"),
        Stopped::Cut(n) => eprintln!(
            "{name}: stopped; {n} connection(s) still open after the {} shutdown timeout were dropped",
            humantime::format_duration(limits.shutdown_timeout)
        ),
    }
    Ok(())
}

/// The process's exit code for how [`run`] (or the start before it) ended:
/// success, or failure after printing `NAME: why` on stderr.
pub fn exit_code(
    name: &str,
    ended: Result<(), Box<dyn std::error::Error>>,
) -> std::process::ExitCode {
    match ended {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
