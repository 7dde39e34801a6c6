//! Where a logical request's key comes from: the request itself, a key
//! kept on disk for a named logical request ([`KeyStore`]), or a fresh
//! UUID.

use idemstore::{Begin, Config, Fingerprint, Key, KeyState, Response, Store, Tenant};
use std::path::Path;
use std::time::Duration;

/// Which UUID a fresh key is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum KeyKind {
    /// Random (RFC 9562 version 4; the default).
    #[default]
    V4,
    /// Time-ordered (version 7): sorts by creation, handy in server logs.
    V7,
}

impl KeyKind {
    /// A fresh key.
    pub fn fresh(self) -> String {
        match self {
            KeyKind::V4 => uuid::Uuid::new_v4(),
            KeyKind::V7 => uuid::Uuid::now_v7(),
        }
        .to_string()
    }
}

/// The name of a logical request (a request extension:
/// `client.post(url).with_extension(LogicalRequest::new("order-42"))`):
/// with a [`KeyStore`], its key is kept on disk until the request ends, so
/// a client that restarts and sends it again resumes the same key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogicalRequest(pub String);

impl LogicalRequest {
    /// Names a logical request (unique among the client's own).
    pub fn new(name: impl Into<String>) -> LogicalRequest {
        LogicalRequest(name.into())
    }
}

/// The keys of named logical requests still in progress, on the embedded
/// store (one record per name, fsynced before the first attempt is sent):
/// a restart finds the key of every request that had not ended.
#[derive(Clone, Debug)]
pub struct KeyStore {
    store: Store,
}

/// The one tenant of a key store's records.
const TENANT: &[u8] = b"idemstore-client keys";

impl KeyStore {
    /// Opens (or creates) the key store in `dir`; a key is kept at most
    /// `keep` (the server's retention is a good bound: past it the server
    /// has forgotten the key anyway).
    ///
    /// # Errors
    ///
    /// As [`Store::open`]: the directory cannot be used, or another process
    /// has it open.
    pub fn open(dir: impl AsRef<Path>, keep: Duration) -> idemstore::Result<KeyStore> {
        let bucket = (keep / 24).clamp(Duration::from_secs(1), Duration::from_secs(3600));
        let config = Config::default()
            .retention(keep)
            .bucket_width(bucket)
            .lease(Duration::from_secs(1).min(keep / 2));
        Ok(KeyStore {
            store: Store::open(dir, config)?,
        })
    }

    /// The key of logical request `name`: the one kept, or a new one of
    /// `kind`, kept (durably) before this returns.
    ///
    /// # Errors
    ///
    /// The store's: the key could not be kept (the request must then not
    /// be sent: a restart would not find its key).
    pub fn key_for(&self, name: &str, kind: KeyKind) -> idemstore::Result<String> {
        let fp = Fingerprint::of(name.as_bytes());
        loop {
            match self.store.begin(Tenant::new(TENANT), Key::new(name), fp)? {
                Begin::Reserved(r) => {
                    let key = kind.fresh();
                    r.complete(Response::new(200, key.clone()))?;
                    return Ok(key);
                }
                Begin::Replay(s) => {
                    return Ok(String::from_utf8_lossy(&s.response.body).into_owned());
                }
                // Another task of this client is making it: a moment.
                Begin::InFlight(_) => std::thread::sleep(Duration::from_millis(1)),
                Begin::Mismatch(_) | Begin::Expired(_) => {
                    return Err(idemstore::Error::DigestCollision);
                }
            }
        }
    }

    /// The key kept for `name`, if any.
    ///
    /// # Errors
    ///
    /// The store's.
    pub fn kept(&self, name: &str) -> idemstore::Result<Option<String>> {
        Ok(match self.store.get(Tenant::new(TENANT), Key::new(name))? {
            Some(KeyState::Completed(s)) => {
                Some(String::from_utf8_lossy(&s.response.body).into_owned())
            }
            _ => None,
        })
    }

    /// Forgets `name`'s key: its request ended (answered, or refused for
    /// good); the next request of that name gets a new key.
    ///
    /// # Errors
    ///
    /// The store's.
    pub fn forget(&self, name: &str) -> idemstore::Result<()> {
        self.store
            .purge(idemstore::TenantDigest::of(TENANT), Key::new(name))
            .map(|_| ())
    }

    /// Closes the store (every kept key is durable already).
    ///
    /// # Errors
    ///
    /// The store's.
    pub fn close(self) -> idemstore::Result<()> {
        self.store.close()
    }
}
