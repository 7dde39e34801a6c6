//! The `payments` example as a child process of a test.

#![allow(clippy::unwrap_used)]

use crate::http::{start_server, wait_exit};
use std::ffi::OsStr;
use std::io::BufReader;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The example binary (the `payments` crate's), built for this test run.
///
/// # Panics
///
/// If it cannot be built.
pub fn payments_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| built_binary("payments", "payments"))
        .clone()
}

/// `idemctl` (the `idemstore-cli` crate's), built for this test run.
///
/// # Panics
///
/// If it cannot be built.
pub fn idemctl_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| built_binary("idemstore-cli", "idemctl"))
        .clone()
}

/// Builds binary `bin` of `package` in this test run's profile; its path.
///
/// `cargo test -p idemstore-http` does not build another package's binary:
/// without this build the tests would run whatever binary an earlier build
/// left behind, or none. Cargo sets `CARGO` for the tests it runs; the build
/// is a no-op when the binary is fresh.
pub(crate) fn built_binary(package: &str, bin: &str) -> PathBuf {
    // target/<profile dir>/deps/<test>-<hash> -> target/<profile dir>/<bin>
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let cargo = std::env::var_os("CARGO")
        .unwrap_or_else(|| panic!("CARGO is not set: run these tests through cargo"));
    let profile = match dir.file_name().and_then(OsStr::to_str) {
        Some("debug") => "dev",
        Some(other) => other,
        None => panic!("unexpected test binary path {}", exe.display()),
    };
    let status = Command::new(cargo)
        .args(["build", "--quiet", "-p", package, "--bin", bin])
        .args(["--profile", profile])
        .status()
        .unwrap();
    assert!(status.success(), "building {bin} failed");
    let path = dir.join(bin);
    assert!(
        path.exists(),
        "{} is missing after the build",
        path.display()
    );
    path
}

/// A `payments` process listening on a free loopback port, killed on drop.
pub struct Payments {
    /// The process.
    pub child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Kept open: the server may not lose its stdout.
    _stdout: BufReader<ChildStdout>,
    /// Everything the server wrote to stderr so far (also echoed).
    stderr: Arc<Mutex<String>>,
}

impl Payments {
    /// On the embedded store in `data`.
    ///
    /// # Panics
    ///
    /// If it cannot be started or does not say where it listens.
    pub fn start(data: &Path) -> Payments {
        Payments::start_with(data, &[])
    }

    /// On the embedded store in `data`, with more flags.
    pub fn start_with(data: &Path, flags: &[&str]) -> Payments {
        let mut args = vec!["--data".as_ref(), data.as_os_str()];
        args.extend(flags.iter().map(OsStr::new));
        Payments::spawn(&args)
    }

    /// A replica keeping its idempotency keys in Redis.
    pub fn start_redis(url: &str) -> Payments {
        Payments::spawn(&["--redis".as_ref(), url.as_ref()])
    }

    /// With these flags (besides `--listen 127.0.0.1:0`).
    ///
    /// # Panics
    ///
    /// As [`Payments::start`].
    pub fn spawn(args: &[&OsStr]) -> Payments {
        let mut cmd = Command::new(payments_binary());
        cmd.args(["--listen", "127.0.0.1:0"]).args(args);
        let s = start_server(&mut cmd, "payments");
        Payments {
            child: s.child,
            addr: s.addr,
            _stdout: s.stdout,
            stderr: s.stderr,
        }
    }

    /// On the Redis Cluster of `seeds`, each write held by `wait` replicas.
    ///
    /// # Panics
    ///
    /// As [`Payments::start`].
    pub fn start_cluster(seeds: &str, wait: u32) -> Payments {
        let wait = wait.to_string();
        Payments::spawn(&[
            "--redis-cluster".as_ref(),
            seeds.as_ref(),
            "--redis-wait".as_ref(),
            wait.as_ref(),
        ])
    }

    /// Sends SIGTERM.
    ///
    /// # Panics
    ///
    /// If `kill` cannot be run.
    pub fn terminate(&self) {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(ok.success());
    }

    /// Waits for the process to exit, at most `within`.
    ///
    /// # Panics
    ///
    /// If it is still running then.
    pub fn wait_for_exit(&mut self, within: Duration) -> ExitStatus {
        wait_exit(&mut self.child, within, "payments")
    }

    /// What the server printed on stderr, once its pipe is closed.
    ///
    /// # Panics
    ///
    /// If the reader thread panicked.
    pub fn stderr_at_exit(&self) -> String {
        // The reader thread sees EOF right after the exit; give it a moment.
        let start = Instant::now();
        loop {
            let all = self.stderr.lock().unwrap().clone();
            if all.contains("payments: stopped") || start.elapsed() > Duration::from_secs(5) {
                return all;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then wait for a clean exit.
    ///
    /// # Panics
    ///
    /// If it does not exit cleanly within 60 s.
    pub fn stop(mut self) {
        self.terminate();
        let status = self.wait_for_exit(Duration::from_secs(60));
        assert!(
            status.success(),
            "payments must exit cleanly on SIGTERM: {status}"
        );
    }
}

impl Drop for Payments {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
