//! Talking to a server process: its "listening on" line, one HTTP/1
//! exchange on a fresh connection, and the reply as a client saw it.

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Reads the `listening on http://ADDR` line a server process prints on
/// stdout when it is ready; returns the address and the rest of stdout
/// (kept open, so the server never writes into a closed pipe).
///
/// # Panics
///
/// If the child has no piped stdout or its first line is something else.
pub fn listening_addr(child: &mut Child) -> (SocketAddr, BufReader<ChildStdout>) {
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout piped"));
    let mut line = String::new();
    let _ = stdout.read_line(&mut line);
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    (addr, stdout)
}

/// A server process a test started, with what it printed.
pub(crate) struct Started {
    /// The process.
    pub(crate) child: Child,
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    /// The rest of its stdout, kept open so it never writes into a closed
    /// pipe.
    pub(crate) stdout: BufReader<ChildStdout>,
    /// Everything it wrote to stderr so far (also echoed, each line after
    /// `[label]`).
    pub(crate) stderr: Arc<Mutex<String>>,
}

/// Spawns `cmd` with stdout and stderr piped, echoes and keeps its stderr,
/// and waits for its `listening on` line.
///
/// # Panics
///
/// If it cannot be spawned or says something else first.
pub(crate) fn start_server(cmd: &mut Command, label: &'static str) -> Started {
    #![allow(clippy::unwrap_used)]
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {label}: {e}"));
    let stderr = Arc::new(Mutex::new(String::new()));
    let pipe = child.stderr.take().unwrap();
    let sink = stderr.clone();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(BufReader::new(pipe)) {
            let Ok(line) = line else { break };
            eprintln!("[{label}] {line}");
            let mut all = sink.lock().unwrap();
            all.push_str(&line);
            all.push('\n');
        }
    });
    let (addr, stdout) = listening_addr(&mut child);
    Started {
        child,
        addr,
        stdout,
        stderr,
    }
}

/// Waits for `child` to exit, at most `within`; its status.
///
/// # Panics
///
/// If it is still running then.
pub(crate) fn wait_exit(child: &mut Child, within: Duration, label: &str) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().ok().flatten() {
            return status;
        }
        assert!(
            start.elapsed() < within,
            "{label} still running {within:?} after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A whole HTTP response, as a client saw it.
pub struct Reply {
    /// Its status.
    pub status: StatusCode,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its whole body.
    pub body: Bytes,
}

impl Reply {
    /// Whether it is a replay of a stored response.
    pub fn replayed(&self) -> bool {
        self.headers
            .get("idempotent-replayed")
            .is_some_and(|v| v == "true")
    }

    /// The body as JSON.
    ///
    /// # Panics
    ///
    /// If it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// A problem+json body's `type`, or empty.
    pub fn problem(&self) -> String {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v["type"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

/// [`send`], with a failed connection or exchange (a server killed
/// mid-request) as an error instead of a panic.
///
/// # Errors
///
/// What failed, and where.
pub async fn try_send(addr: SocketAddr, req: Request<Full<Bytes>>) -> Result<Reply, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake with {addr}: {e}"))?;
    tokio::spawn(conn);
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request to {addr}: {e}"))?;
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("response body from {addr}: {e}"))?
        .to_bytes();
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// Sends `req` on a fresh HTTP/1 connection to `addr` and reads the whole
/// answer.
///
/// # Panics
///
/// If the connection or the exchange fails.
pub async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> Reply {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap_or_else(|e| panic!("handshake with {addr}: {e}"));
    tokio::spawn(conn);
    let resp = sender
        .send_request(req)
        .await
        .unwrap_or_else(|e| panic!("request to {addr}: {e}"));
    let (parts, body) = resp.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body
            .collect()
            .await
            .unwrap_or_else(|e| panic!("response body from {addr}: {e}"))
            .to_bytes(),
    }
}
