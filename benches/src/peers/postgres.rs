//! PostgreSQL on loopback (a throwaway server of our own, started with
//! `scripts/postgres.sh` when PostgreSQL is installed), through this
//! project's backend (`idemstore-postgres`: one `INSERT .. ON CONFLICT` to
//! reserve, one fenced `UPDATE` to complete, `synchronous_commit = on`).

use std::path::PathBuf;
use std::process::Command;

/// A PostgreSQL server of our own, stopped when dropped.
pub struct PostgresServer {
    dir: tempfile::TempDir,
    url: String,
}

fn script() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/postgres.sh"
    ))
}

impl PostgresServer {
    /// Starts one; `None` (saying why on stderr) when PostgreSQL is not
    /// installed or does not start.
    pub fn start() -> Option<PostgresServer> {
        let dir = tempfile::tempdir().ok()?;
        let out = Command::new("bash")
            .arg(script())
            .arg("start")
            .arg(dir.path().join("pg"))
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "PostgreSQL did not start: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(PostgresServer {
            url: String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            dir,
        })
    }

    /// The database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The backend on it, connected on `rt` with `connections` pooled
    /// connections, in a schema of its own named `schema`.
    pub fn backend(
        &self,
        rt: &tokio::runtime::Runtime,
        connections: u32,
        schema: &str,
    ) -> idemstore_postgres::PostgresBackend {
        let config = idemstore_postgres::PostgresConfig::default()
            .max_connections(connections)
            .schema(schema);
        rt.block_on(idemstore_postgres::PostgresBackend::connect(
            &self.url, config,
        ))
        .expect("connect to PostgreSQL")
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(self.dir.path().join("pg"))
            .output();
    }
}
