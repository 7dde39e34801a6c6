-- idemstore-postgres schema, version 1: one row per idempotency key.
--
-- key_digest is the 128-bit index digest of (tenant digest, key), as the
-- embedded engine and the Redis backend compute it; tenant holds the tenant's
-- blake3 digest (never the tenant itself) and key the key as sent, and every
-- read compares both, so one tenant is never served another's response.
CREATE TABLE idemstore_records (
    key_digest   bytea       NOT NULL PRIMARY KEY,
    tenant       bytea       NOT NULL,
    key          bytea       NOT NULL,
    -- 'p' reserved, 'c' completed, 'a' aborted (free).
    state        "char"      NOT NULL,
    -- The fencing token: +1 at every reservation of the key.
    token        bigint      NOT NULL,
    -- The holder's random nonce: fences a stale holder even if the row was
    -- deleted and tokens restarted.
    nonce        bigint      NOT NULL,
    fingerprint  bytea       NOT NULL,
    started_at   timestamptz NOT NULL,
    lease_end    timestamptz NOT NULL,
    completed_at timestamptz,
    -- The completed record in the engine's codec (idemstore::codec).
    record       bytea,
    -- After this the row means nothing and the sweeper deletes it.
    expires_at   timestamptz NOT NULL
) WITH (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.02);

-- The sweeper's scan: rows past their expiry, oldest first.
CREATE INDEX idemstore_records_expires_at ON idemstore_records (expires_at);

-- A timestamp as milliseconds since the epoch (what the backend reads).
CREATE FUNCTION idemstore_ms(t timestamptz) RETURNS int8
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT floor(extract(epoch FROM t) * 1000)::int8 $$;
