//! [`PostgresBackend`]: the pool, the schema, and the sweeper that deletes
//! expired rows.

use crate::config::PostgresConfig;
use crate::sql;
use crate::unsettled::{self, Unsettled};
use idemstore::TenantDigest;
use idemstore::internals::default_index_hash;
use idemstore_http::BackendError;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The schema migrations, embedded at build time (`migrations/`).
pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The idempotency contract on PostgreSQL. Cheap to clone; every clone
/// shares one pool.
#[derive(Clone)]
pub struct PostgresBackend(pub(crate) Arc<Inner>);

pub(crate) struct Inner {
    pub(crate) pool: PgPool,
    pub(crate) config: PostgresConfig,
    /// Completions being retried in the background.
    pub(crate) deferred: AtomicUsize,
    /// Begins whose reply was lost, freed in the background.
    pub(crate) unsettled: Arc<Unsettled>,
    /// The sweeper and the task freeing `unsettled`.
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl std::fmt::Debug for PostgresBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresBackend")
            .field("config", &self.0.config)
            .finish_non_exhaustive()
    }
}

/// A database error as the layer's error: the store cannot be used.
pub(crate) fn unavailable(what: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Unavailable(format!("PostgreSQL: {what}: {e}"))
}

impl PostgresBackend {
    /// Connects to the database at `url` (`postgres://user:pass@host:port/db`;
    /// TLS with the `rustls` feature and `?sslmode=require`), creates or
    /// migrates the schema (unless [`PostgresConfig::migrate`] is off; then
    /// it checks the schema's version), and starts the sweeper. Fails, saying
    /// what to do, when the database cannot be reached in
    /// [`PostgresConfig::timeout`] or the schema is of a newer build.
    pub async fn connect(
        url: &str,
        config: PostgresConfig,
    ) -> Result<PostgresBackend, BackendError> {
        config.check()?;
        let mut options = PgConnectOptions::from_str(url)
            .map_err(|e| unavailable("the URL does not parse (postgres://user@host:port/db)", e))?;
        let cannot = |e: sqlx::Error| {
            unavailable(
                "cannot connect (check the URL, that the server runs and accepts this user)",
                e,
            )
        };
        if let Some(schema) = &config.schema {
            if config.migrate {
                // Checked by `config.check`: letters, digits and '_' only.
                let mut c =
                    tokio::time::timeout(config.timeout, PgConnection::connect_with(&options))
                        .await
                        .map_err(|_| cannot(sqlx::Error::PoolTimedOut))?
                        .map_err(cannot)?;
                // Processes starting together: `CREATE SCHEMA IF NOT EXISTS`
                // races with itself (a unique violation in the catalog), so
                // one at a time, under a transaction's advisory lock.
                let mut tx = c
                    .begin()
                    .await
                    .map_err(|e| unavailable("creating the schema", e))?;
                for q in [
                    "SELECT pg_advisory_xact_lock(7461636565)".to_owned(),
                    format!("CREATE SCHEMA IF NOT EXISTS {schema}"),
                ] {
                    sqlx::query(&q)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| unavailable("creating the schema", e))?;
                }
                tx.commit()
                    .await
                    .map_err(|e| unavailable("creating the schema", e))?;
                let _ = c.close().await;
            }
            options = options.options([("search_path", schema.as_str())]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.timeout)
            .connect_with(options)
            .await
            .map_err(cannot)?;
        if config.migrate {
            MIGRATOR
                .run(&pool)
                .await
                .map_err(|e| unavailable("creating or migrating the schema", e))?;
        } else {
            check_schema(&pool).await?;
        }
        let sweeper = tokio::spawn(sweep_forever(
            pool.clone(),
            config.sweep_interval,
            config.sweep_batch,
        ));
        let unsettled = Arc::new(Unsettled::default());
        let freer = tokio::spawn(unsettled::free_forever(
            pool.clone(),
            unsettled.clone(),
            config.timeout,
        ));
        Ok(PostgresBackend(Arc::new(Inner {
            pool,
            config,
            deferred: AtomicUsize::new(0),
            unsettled,
            tasks: vec![sweeper, freer],
        })))
    }

    /// The pool, for a handler's own transactions (the payment row and the
    /// stored response in one, [`PostgresLease::complete_in`](crate::PostgresLease::complete_in)).
    pub fn pool(&self) -> &PgPool {
        &self.0.pool
    }

    /// The configuration.
    pub fn config(&self) -> &PostgresConfig {
        &self.0.config
    }

    /// Completions the database did not take that are being retried in the
    /// background.
    pub fn deferred_completions(&self) -> usize {
        self.0.deferred.load(Ordering::Acquire)
    }

    /// Deletes every expired row now, in batches; returns how many. The
    /// sweeper does this every [`PostgresConfig::sweep_interval`].
    pub async fn sweep(&self) -> Result<u64, BackendError> {
        sweep_all(&self.0.pool, self.0.config.sweep_batch).await
    }

    /// The row key of (`tenant`, `key`): the engine's 128-bit index digest.
    pub(crate) fn key_digest(tenant: &TenantDigest, key: &[u8]) -> Vec<u8> {
        let ik = default_index_hash(tenant, key);
        let mut d = Vec::with_capacity(16);
        d.extend_from_slice(&ik.hi.to_be_bytes());
        d.extend_from_slice(&ik.lo.to_be_bytes());
        d
    }
}

/// Fails unless every migration this build knows has been applied and none
/// it does not know.
async fn check_schema(pool: &PgPool) -> Result<(), BackendError> {
    let applied: Vec<(i64,)> =
        sqlx::query_as("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(pool)
            .await
            .map_err(|e| {
                unavailable(
                    "reading the schema version (migrate the schema, or connect with migrate on)",
                    e,
                )
            })?;
    let known: Vec<i64> = MIGRATOR.iter().map(|m| m.version).collect();
    let applied: Vec<i64> = applied.into_iter().map(|(v,)| v).collect();
    if applied != known {
        return Err(unavailable(
            "schema version",
            format!(
                "the database has migrations {applied:?}, this build needs exactly {known:?}; \
                 run a build that migrates (PostgresConfig::migrate) or the matching build"
            ),
        ));
    }
    Ok(())
}

async fn sweep_all(pool: &PgPool, batch: u32) -> Result<u64, BackendError> {
    let mut total = 0;
    loop {
        let n = sqlx::query(sql::SWEEP)
            .bind(i64::from(batch))
            .execute(pool)
            .await
            .map_err(|e| unavailable("deleting expired rows", e))?
            .rows_affected();
        total += n;
        if n < u64::from(batch) {
            return Ok(total);
        }
    }
}

async fn sweep_forever(pool: PgPool, every: Duration, batch: u32) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Err(e) = sweep_all(&pool, batch).await {
            tracing::warn!(error = %e, "deleting expired idempotency rows failed; retried at the next sweep");
        }
    }
}
