//! Redis 7 on loopback (a server of our own, started when `redis-server` is
//! installed), two ways: plain Redis as the issue describes the peer
//! ([`setnx`]: `SET NX PX` to reserve, a script to complete with fencing,
//! one multiplexed connection), and through this project's Redis backend
//! ([`backend`]: one Lua script per operation).

use super::{BODY, tasks};
use idemstore::{Fingerprint, Response};
use idemstore::{Key, Tenant};
use idemstore_http::{Backend, Lease, Outcome};
use std::time::Duration;

/// A redis-server of our own on a free loopback port.
pub struct RedisServer {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts `redis-server` with an append-only file fsynced per
    /// `appendfsync` (`always`, `everysec`); `None` when it is not installed
    /// or does not answer within 4 s.
    pub fn start(appendfsync: &str) -> Option<RedisServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let dir = tempfile::tempdir_in(".").ok()?;
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "yes", "--appendfsync", appendfsync])
            .arg("--dir")
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .ok()?;
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(RedisServer {
                    child,
                    port,
                    _dir: dir,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The server's URL, for a client.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Numbers the Redis runs, so that each uses keys of its own.
static RUN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// W1 through this project's Redis backend (a Lua script per step).
pub fn backend(server: &RedisServer, callers: usize, secs: f64) -> f64 {
    // The connections live on the runtime that made them.
    let rt = crate::runtime();
    let backend = rt
        .block_on(idemstore_redis::RedisBackend::connect(
            &server.url(),
            idemstore_redis::RedisConfig::default(),
        ))
        .expect("connect");
    cycles(&rt, &backend, callers, secs)
}

/// W1 through a shared backend (a Redis node or cluster, PostgreSQL)
/// connected on `rt`, the runtime its connections live on.
pub fn cycles<B: Backend + Clone>(
    rt: &tokio::runtime::Runtime,
    backend: &B,
    callers: usize,
    secs: f64,
) -> f64 {
    // Fresh keys in every call (the server lives for the whole report).
    let run = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let backend = backend.clone();
    rt.block_on(async {
        tasks(callers, secs, move |t, n| {
            let backend = backend.clone();
            async move {
                let key = format!("r{run}-t{t}-{n}");
                match backend
                    .begin(
                        Tenant::new(b"bench"),
                        Key::new(key.as_bytes()),
                        Fingerprint::of(b"r"),
                    )
                    .await
                {
                    Ok(Outcome::Reserved(l)) => l
                        .complete(Response::new(201, vec![b'x'; BODY]))
                        .await
                        .expect("complete"),
                    Ok(_) => panic!("a fresh key was not reserved"),
                    Err(e) => panic!("begin of a fresh key: {e}"),
                }
            }
        })
        .await
    })
}

/// Completes a reservation made with `SET NX PX`, fenced: only while the key
/// still holds this reservation's token.
const SETNX_COMPLETE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
";

/// W1 on plain Redis, as a user would build it without this project: `SET key
/// token NX PX lease` to reserve, a script to complete with fencing (the
/// response replaces the token only if the token is still there), one
/// multiplexed async connection shared by `callers` tasks.
pub fn setnx(server: &RedisServer, callers: usize, secs: f64) -> f64 {
    let run = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    crate::runtime().block_on(async {
        let url = server.url();
        let conn = ::redis::Client::open(url)
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        let complete = ::redis::Script::new(SETNX_COMPLETE);
        tasks(callers, secs, move |t, n| {
            let (mut conn, complete) = (conn.clone(), complete.clone());
            async move {
                let key = format!("setnx-r{run}-t{t}-{n}");
                let token = format!("pending:{t}:{n}");
                let reserved: Option<String> = ::redis::cmd("SET")
                    .arg(&key)
                    .arg(&token)
                    .arg("NX")
                    .arg("PX")
                    .arg(60_000)
                    .query_async(&mut conn)
                    .await
                    .expect("SET NX");
                assert!(reserved.is_some(), "fresh key");
                let done: i64 = complete
                    .key(&key)
                    .arg(&token)
                    .arg(&[b'x'; BODY][..])
                    .arg(86_400_000)
                    .invoke_async(&mut conn)
                    .await
                    .expect("complete");
                assert_eq!(done, 1, "fenced out of a fresh key");
            }
        })
        .await
    })
}
