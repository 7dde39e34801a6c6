//! The statements, one round trip each. Every time they store or judge is
//! the database's: `now()` for a statement of its own (the statement's
//! start), `clock_timestamp()` where the statement may run inside a caller's
//! transaction (whose `now()` is when that transaction began). Times come
//! back as milliseconds since the epoch.

/// Reserves, or says why not. `$1` key digest, `$2` tenant digest, `$3`
/// key, `$4` nonce, `$5` fingerprint, `$6` lease ms, `$7` retention ms.
///
/// One `INSERT .. ON CONFLICT DO UPDATE`: a new key is inserted; an
/// existing row is taken over when it is free (aborted, expired, or a
/// reservation whose lease ended), its token incremented. Otherwise the
/// second half returns the row as it is. A row committed by another
/// session after this statement's snapshot is seen by neither half (no
/// row comes back); the caller runs the statement again.
pub(crate) const BEGIN: &str = r#"
WITH reserved AS (
    INSERT INTO idemstore_records AS r
        (key_digest, tenant, key, state, token, nonce, fingerprint,
         started_at, lease_end, completed_at, record, expires_at)
    VALUES ($1, $2, $3, 'p', 1, $4, $5, now(),
            now() + make_interval(secs => $6::float8 / 1000), NULL, NULL,
            now() + make_interval(secs => ($6 + $7)::float8 / 1000))
    ON CONFLICT (key_digest) DO UPDATE SET
        tenant = EXCLUDED.tenant, key = EXCLUDED.key, state = 'p',
        token = r.token + 1, nonce = EXCLUDED.nonce,
        fingerprint = EXCLUDED.fingerprint, started_at = EXCLUDED.started_at,
        lease_end = EXCLUDED.lease_end, completed_at = NULL, record = NULL,
        expires_at = EXCLUDED.expires_at
    WHERE r.state = 'a' OR r.expires_at <= now()
       OR (r.state = 'p' AND r.lease_end <= now())
    RETURNING token, started_at, lease_end
)
SELECT 'r'::"char" AS state, token, idemstore_ms(started_at) AS started_at,
       idemstore_ms(lease_end) AS lease_end, NULL::bytea AS tenant, NULL::bytea AS key,
       NULL::bytea AS fingerprint, NULL::bytea AS record,
       NULL::int8 AS completed_at, NULL::int8 AS expires_at, idemstore_ms(now()) AS now
  FROM reserved
UNION ALL
SELECT state, token, idemstore_ms(started_at), idemstore_ms(lease_end), tenant, key, fingerprint,
       record, idemstore_ms(completed_at), idemstore_ms(expires_at), idemstore_ms(now())
  FROM idemstore_records
 WHERE key_digest = $1 AND NOT EXISTS (SELECT 1 FROM reserved)
"#;

/// Stores the record, fenced by token and nonce; 1 when stored (now, or
/// before by this holder: a call whose reply was lost is sent again), 0
/// when the key is no longer this holder's. `$1` key digest, `$2` token,
/// `$3` nonce, `$4` record, `$5` retention ms.
pub(crate) const COMPLETE: &str = r#"
WITH done AS (
    UPDATE idemstore_records
       SET state = 'c', record = $4, completed_at = clock_timestamp(),
           expires_at = clock_timestamp() + make_interval(secs => $5::float8 / 1000)
     WHERE key_digest = $1 AND token = $2 AND nonce = $3 AND state = 'p'
    RETURNING 1
)
SELECT (SELECT count(*) FROM done)
     + (SELECT count(*) FROM idemstore_records
         WHERE key_digest = $1 AND token = $2 AND nonce = $3 AND state = 'c')
"#;

/// Frees the key (1), fenced by token and nonce; aborting twice is
/// success. The row keeps only what fencing needs, for one lease. `$1` key
/// digest, `$2` token, `$3` nonce, `$4` lease ms.
pub(crate) const ABORT: &str = r#"
WITH done AS (
    UPDATE idemstore_records
       SET state = 'a', record = NULL, completed_at = NULL,
           expires_at = clock_timestamp() + make_interval(secs => $4::float8 / 1000)
     WHERE key_digest = $1 AND token = $2 AND nonce = $3 AND state = 'p'
    RETURNING 1
)
SELECT (SELECT count(*) FROM done)
     + (SELECT count(*) FROM idemstore_records
         WHERE key_digest = $1 AND token = $2 AND nonce = $3 AND state = 'a')
"#;

/// Frees the reservations failed `begin`s made, if they made any, each
/// known by its key digest and nonce alone (the reply was lost); returns
/// those freed. `$1` key digests, `$2` their nonces.
pub(crate) const ABORT_BY_NONCES: &str = r#"
UPDATE idemstore_records AS r SET state = 'a', record = NULL
  FROM unnest($1::bytea[], $2::int8[]) AS u(key_digest, nonce)
 WHERE r.key_digest = u.key_digest AND r.nonce = u.nonce AND r.state = 'p'
RETURNING r.key_digest, r.nonce
"#;

/// Extends the lease (1), fenced. `$1` key digest, `$2` token, `$3` nonce,
/// `$4` lease ms, `$5` retention ms.
pub(crate) const RENEW: &str = r#"
UPDATE idemstore_records
   SET lease_end = clock_timestamp() + make_interval(secs => $4::float8 / 1000),
       expires_at = greatest(expires_at,
           clock_timestamp() + make_interval(secs => ($4 + $5)::float8 / 1000))
 WHERE key_digest = $1 AND token = $2 AND nonce = $3 AND state = 'p'
"#;

/// Deletes up to `$1` expired rows, skipping rows another session holds.
pub(crate) const SWEEP: &str = r#"
DELETE FROM idemstore_records
 WHERE key_digest IN (
    SELECT key_digest FROM idemstore_records
     WHERE expires_at < now()
     ORDER BY expires_at
     LIMIT $1
       FOR UPDATE SKIP LOCKED)
"#;
