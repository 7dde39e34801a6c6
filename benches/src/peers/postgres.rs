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

/// PostgreSQL as a competent user would build an idempotency store on it
/// directly (no idemstore crate): `synchronous_commit = on` (the
/// default), `connections` pooled connections, a row per (tenant, key);
/// reserve with `INSERT .. ON CONFLICT DO NOTHING` (one row inserted:
/// reserved), complete with a fenced `UPDATE`; each its own transaction.
/// Cycles/s of `callers` tasks on `rt`.
pub fn sql(
    rt: &tokio::runtime::Runtime,
    server: &PostgresServer,
    connections: u32,
    callers: usize,
    secs: f64,
) -> f64 {
    let pool = rt
        .block_on(
            sqlx::postgres::PgPoolOptions::new()
                .max_connections(connections)
                .connect(server.url()),
        )
        .expect("connect to PostgreSQL");
    let table = format!("idem_sql_{}", std::process::id());
    rt.block_on(
        sqlx::query(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                 tenant BYTEA NOT NULL, key BYTEA NOT NULL, fingerprint BYTEA NOT NULL,
                 token BIGINT NOT NULL, state SMALLINT NOT NULL, response BYTEA,
                 expires_at TIMESTAMPTZ NOT NULL, PRIMARY KEY (tenant, key))"
        ))
        .execute(&pool),
    )
    .expect("create table");
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let reserve = format!(
        "INSERT INTO {table} (tenant, key, fingerprint, token, state, expires_at)
         VALUES ($1, $2, $3, $4, 0, now() + interval '1 day') ON CONFLICT DO NOTHING"
    );
    let complete = format!(
        "UPDATE {table} SET state = 1, response = $1
         WHERE tenant = $2 AND key = $3 AND token = $4 AND state = 0"
    );
    let body = vec![0x5au8; super::BODY];
    rt.block_on(super::tasks(callers, secs, move |t, i| {
        let (pool, reserve, complete, body) = (
            pool.clone(),
            reserve.clone(),
            complete.clone(),
            body.clone(),
        );
        async move {
            let key = format!("k-{run}-{t}-{i}").into_bytes();
            let token = i64::try_from(t).unwrap_or(0) << 40 | i64::try_from(i).unwrap_or(0);
            let r = sqlx::query(&reserve)
                .bind(b"tenant".as_slice())
                .bind(&key)
                .bind([7u8; 32].as_slice())
                .bind(token)
                .execute(&pool)
                .await
                .expect("reserve");
            assert_eq!(r.rows_affected(), 1, "fresh keys are always reserved");
            let r = sqlx::query(&complete)
                .bind(&body)
                .bind(b"tenant".as_slice())
                .bind(&key)
                .bind(token)
                .execute(&pool)
                .await
                .expect("complete");
            assert_eq!(r.rows_affected(), 1, "the holder completes");
        }
    }))
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
