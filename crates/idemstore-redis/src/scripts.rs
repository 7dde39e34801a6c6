//! The Lua scripts, one atomic step each on the server that holds the key,
//! and how they are run: `EVALSHA` (falling back to `EVAL`, which also loads
//! the script, on a node that does not know it yet), followed on the same
//! connection by `WAIT` when replicas must acknowledge.
//!
//! Every time a script stores or judges (lease end, start, completion,
//! expiry) is the server's `TIME`, read inside the script: the callers'
//! clocks never enter a record.

use crate::config::WaitReplicas;
use crate::conn::Conn;
use redis::{Cmd, ErrorKind, RedisResult, ServerErrorKind, Value};

/// A script's source and its SHA-1.
pub(crate) struct Lua {
    code: &'static str,
    hash: String,
}

impl Lua {
    fn new(code: &'static str) -> Lua {
        Lua {
            code,
            hash: redis::Script::new(code).get_hash().to_owned(),
        }
    }
}

/// The four scripts.
pub(crate) struct Scripts {
    pub(crate) begin: Lua,
    pub(crate) complete: Lua,
    pub(crate) abort: Lua,
    pub(crate) renew: Lua,
}

impl Scripts {
    pub(crate) fn new() -> Scripts {
        Scripts {
            begin: Lua::new(BEGIN),
            complete: Lua::new(COMPLETE),
            abort: Lua::new(ABORT),
            renew: Lua::new(RENEW),
        }
    }
}

/// The tombstone key beside hash `key`: in the same cluster slot (the hash
/// tag is `key`'s own).
fn tombstone_of(key: &str) -> String {
    format!("{key}:expired")
}

/// Runs `lua` on `key` (KEYS[1]; KEYS[2] is its tombstone key) with the
/// arguments `args` adds. With `wait`, a
/// `WAIT` follows in the same pipeline, so it counts the replicas that hold
/// this script's writes; its answer is returned beside the script's.
pub(crate) async fn run(
    conn: &mut Conn,
    lua: &Lua,
    key: &str,
    args: &(dyn Fn(&mut Cmd) + Sync),
    wait: Option<WaitReplicas>,
) -> RedisResult<(Value, Option<u32>)> {
    let pipeline = |verb: &str, body: &str| {
        let mut cmd = redis::cmd(verb);
        cmd.arg(body).arg(2).arg(key).arg(tombstone_of(key));
        args(&mut cmd);
        let mut p = redis::pipe();
        p.add_command(cmd);
        if let Some(w) = wait {
            p.cmd("WAIT")
                .arg(w.replicas)
                .arg(crate::ms(w.timeout).max(1));
        }
        p
    };
    let replies: Vec<Value> = match pipeline("EVALSHA", &lua.hash).query_async(conn).await {
        Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
            pipeline("EVAL", lua.code).query_async(conn).await?
        }
        r => r?,
    };
    let mut replies = replies.into_iter();
    let value = replies.next().unwrap_or(Value::Nil);
    let acked = match (wait, replies.next()) {
        (Some(_), Some(v)) => Some(redis::from_redis_value::<u32>(v)?),
        _ => None,
    };
    Ok((value, acked))
}

/// Reserves, replays or refuses. KEYS[1] the hash, KEYS[2] its tombstone;
/// ARGV: tenant digest, key, fingerprint, lease ms, retention ms, nonce,
/// `1` when a replay must be confirmed on replicas (it then re-writes the
/// state, so the `WAIT` after it covers the record it returns), and the
/// grace of `refuse_expired_keys_for` in ms (0: off).
///
/// With a grace, a key that is neither reserved nor completed is refused
/// while its tombstone lives (the completion wrote it, holding the expiry;
/// Redis expires it at the grace's end).
///
/// A begin whose reply was lost and is sent again finds its own nonce and
/// gets its reservation back instead of a 409 against itself.
///
/// Every branch that answers for a write made earlier (a replay, our own
/// reservation found again, a completion found stored) writes again: `WAIT`
/// counts the replicas that reached its own connection's last write, so
/// without a write here a `WAIT` on another connection would confirm at
/// once, whatever the replicas hold.
const BEGIN: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local h = redis.call('HMGET', KEYS[1], 's', 'g', 'fp', 'le', 'td', 'k', 'r', 'st', 'n', 'ca', 'ex')
local s = h[1]
if (s == 'p' or s == 'c') and (h[5] ~= ARGV[1] or h[6] ~= ARGV[2]) then
  return {'collision'}
end
if s == 'c' then
  if h[3] == ARGV[3] then
    if ARGV[7] == '1' then redis.call('HSET', KEYS[1], 's', 'c') end
    return {'replay', h[7], h[10] or '', h[11] or ''}
  end
  return {'mismatch', h[7]}
end
if s == 'p' and now < tonumber(h[4]) then
  if h[9] == ARGV[6] then
    -- Our own begin, sent again: write again, so a WAIT after this (on
    -- whatever connection) covers the first write too.
    redis.call('HSET', KEYS[1], 's', 'p')
    return {'reserved', h[2], h[8], h[4]}
  end
  local same = '0'
  if h[3] == ARGV[3] then same = '1' end
  return {'inflight', tostring(tonumber(h[4]) - now), same, tostring(now - tonumber(h[8] or now))}
end
if tonumber(ARGV[8]) > 0 then
  local ex = redis.call('GET', KEYS[2])
  if ex and now < tonumber(ex) + tonumber(ARGV[8]) then return {'expired', ex} end
end
local g = redis.call('HINCRBY', KEYS[1], 'g', 1)
local le = now + tonumber(ARGV[4])
redis.call('HSET', KEYS[1], 's', 'p', 'n', ARGV[6], 'fp', ARGV[3], 'le', le, 'st', now, 'td', ARGV[1], 'k', ARGV[2])
redis.call('HDEL', KEYS[1], 'r', 'ca', 'ex')
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[5]) + tonumber(ARGV[4]))
return {'reserved', tostring(g), tostring(now), tostring(le)}
";

/// Stores the record. ARGV: generation, nonce, record, retention ms, grace
/// ms (0: no tombstone).
///
/// The holder proves itself with the generation *and* the random nonce
/// chosen at begin: if the hash ever disappears (expiry of a long-stalled
/// holder, eviction, a failover) and generations restart, a stale holder's
/// generation may repeat, but its nonce will not. Completing twice is
/// success: a call whose reply was lost (a timeout) is sent again, and must
/// not read as fenced. `ca` and `ex`, the completion and expiry times, are
/// the server's; the hash expires at `ex` exactly.
const COMPLETE: &str = r"
local h = redis.call('HMGET', KEYS[1], 's', 'g', 'n')
if h[1] == 'c' and h[2] == ARGV[1] and h[3] == ARGV[2] then
  -- Stored before, by this holder: write again, so a WAIT after this covers
  -- the first write too (a WAIT only counts its own connection's writes).
  redis.call('HSET', KEYS[1], 's', 'c')
  return 1
end
if h[1] ~= 'p' or h[2] ~= ARGV[1] or h[3] ~= ARGV[2] then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ex = now + tonumber(ARGV[4])
redis.call('HSET', KEYS[1], 's', 'c', 'r', ARGV[3], 'ca', now, 'ex', ex)
redis.call('PEXPIREAT', KEYS[1], ex)
if tonumber(ARGV[5]) > 0 then
  redis.call('SET', KEYS[2], ex, 'PX', tonumber(ARGV[4]) + tonumber(ARGV[5]))
end
return 1
";

/// Frees the key. ARGV: generation, nonce, lease ms.
///
/// An aborted key keeps only what fencing needs (state, generation,
/// nonce), for one lease: a failed request does not hold memory for the
/// retention. Once the hash is gone a stale holder is still fenced by its
/// nonce. Aborting twice is success.
const ABORT: &str = r"
local h = redis.call('HMGET', KEYS[1], 's', 'g', 'n')
if h[1] == 'a' and h[2] == ARGV[1] and h[3] == ARGV[2] then return 1 end
if h[1] ~= 'p' or h[2] ~= ARGV[1] or h[3] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 's', 'a')
redis.call('HDEL', KEYS[1], 'fp', 'td', 'k', 'r', 'le', 'st')
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
";

/// Extends the lease. ARGV: generation, nonce, lease ms, retention ms.
const RENEW: &str = r"
local h = redis.call('HMGET', KEYS[1], 's', 'g', 'n')
if h[1] ~= 'p' or h[2] ~= ARGV[1] or h[3] ~= ARGV[2] then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'le', now + tonumber(ARGV[3]))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]) + tonumber(ARGV[3]))
return 1
";
