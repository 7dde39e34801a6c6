//! `idemproxy` as a child process of a test, and the upstream it fronts:
//! `tests/upstream/orders.py`, a small Python service that knows nothing of
//! idempotency keys and counts its side effects.

#![allow(clippy::unwrap_used)]

use crate::http::{Started, start_server, wait_exit};
use crate::listening_addr;
use crate::payments::built_binary;
use std::ffi::OsStr;
use std::io::BufReader;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `idemproxy`, built for this test run.
///
/// # Panics
///
/// If it cannot be built.
pub fn idemproxy_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| built_binary("idemproxy", "idemproxy"))
        .clone()
}

/// The Python upstream, killed on drop.
pub struct Orders {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    _stdout: BufReader<ChildStdout>,
}

fn orders_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("upstream/orders.py")
}

impl Orders {
    /// On a free port.
    ///
    /// # Panics
    ///
    /// If python3 cannot run it.
    pub fn start() -> Orders {
        Orders::start_on(0)
    }

    /// On `port` (0: a free one).
    ///
    /// # Panics
    ///
    /// If python3 cannot run it.
    pub fn start_on(port: u16) -> Orders {
        let mut child = Command::new("python3")
            .arg(orders_script())
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("python3 must be installed to run the upstream: {e}"));
        let (addr, stdout) = listening_addr(&mut child);
        Orders {
            child,
            addr,
            _stdout: stdout,
        }
    }

    /// The upstream URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Kills it (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Orders {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An `idemproxy` process, killed on drop.
pub struct Proxy {
    /// The process.
    pub child: Child,
    /// Where it listens for proxied traffic.
    pub addr: SocketAddr,
    /// Its admin port.
    pub admin: SocketAddr,
    _stdout: BufReader<ChildStdout>,
    stderr: Arc<Mutex<String>>,
}

impl Proxy {
    /// In front of `upstream`, with `flags` (a backend's among them), an
    /// admin port and `--listen 127.0.0.1:0`.
    ///
    /// # Panics
    ///
    /// If it does not start, or says nothing of its admin port.
    pub fn start(upstream: &str, flags: &[&OsStr]) -> Proxy {
        let mut cmd = Command::new(idemproxy_binary());
        cmd.args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .args(["--upstream", upstream])
            .args(flags);
        let Started {
            child,
            addr,
            stdout,
            stderr,
        } = start_server(&mut cmd, "idemproxy");
        let start = Instant::now();
        let admin = loop {
            let said = stderr.lock().unwrap().clone();
            if let Some(a) = said
                .lines()
                .find_map(|l| l.strip_prefix("idemproxy: admin on http://"))
            {
                break a.parse().unwrap();
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "idemproxy named no admin port: {said}"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        Proxy {
            child,
            addr,
            admin,
            _stdout: stdout,
            stderr,
        }
    }

    /// Everything it printed on stderr so far.
    ///
    /// # Panics
    ///
    /// If the reader thread panicked.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// SIGTERM, then waits (up to 60 s) for it to exit; its exit status.
    ///
    /// # Panics
    ///
    /// If it is still running then.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        wait_exit(&mut self.child, Duration::from_secs(60), "idemproxy")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
