//! # idemstore-tests
//!
//! The end-to-end suites, in one crate that depends on every other, so that
//! each backend crate keeps its unit tests and one suite covers every
//! backend (see `tests/`):
//!
//! - `conformance.rs`: the contract, one generic suite run against the
//!   embedded engine and Redis;
//! - `once.rs`: "runs once" as a real server process over TCP (the
//!   `once_probe` binary) under client timeouts, panics, a full tmpfs and
//!   a paused Redis;
//! - `crash.rs`: real `kill -9`s of a child completing keys;
//! - `replicas.rs`: several replicas on one Redis, Redis restarted;
//! - `disk_full.rs`: a real full disk under the layer.
//!
//! This library holds what those suites share: servers they start and stop
//! themselves, and a real small file system.

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
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

/// A redis-server of a test's own on a free loopback port, with an
/// append-only file (`appendfsync always`) so a restart keeps what it
/// acknowledged; stopped on drop. The test command installs `redis-server`.
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one and waits until it accepts connections.
    ///
    /// # Panics
    ///
    /// If `redis-server` cannot be run or does not start within 10 s.
    pub fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("no free loopback port: {e}"));
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("no temporary directory: {e}"));
        let mut r = RedisServer {
            port,
            dir,
            child: None,
        };
        r.up();
        r
    }

    /// Starts (or restarts) the server on the same port and data.
    ///
    /// # Panics
    ///
    /// As [`RedisServer::start`].
    pub fn up(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .args(["--enable-debug-command", "local"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("redis-server must be installed (scripts/test.sh does it): {e}")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops it cleanly (SIGTERM), keeping its data for [`RedisServer::up`].
    pub fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            self.signal("-CONT");
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }

    /// Sends a signal (`-STOP` pauses it, `-CONT` resumes it).
    pub fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let ok = Command::new("kill")
                .args([sig, &c.id().to_string()])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "kill {sig} redis-server");
        }
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A tmpfs of a given size mounted on a scratch directory (root only),
/// unmounted on drop: a real file system that fills up.
pub struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts one of `size` (e.g. `"4m"`), or says why it cannot.
    ///
    /// # Errors
    ///
    /// When `mount` cannot be run or refuses (not root): the test then says
    /// it skipped.
    pub fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(Tmpfs {
            path: dir.path().to_path_buf(),
            _dir: dir,
        })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes a filler file until the file system is full; returns its path.
    ///
    /// # Panics
    ///
    /// If the filler cannot be created.
    pub fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.path.join("filler");
        let mut f = std::fs::File::create(&path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        let chunk = vec![0xEEu8; 4096];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}
