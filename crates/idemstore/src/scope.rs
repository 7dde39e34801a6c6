//! Who a key belongs to, and how it is found in the index.
//!
//! Invariants:
//! - the raw tenant bytes (an API key, an account id) never leave this module:
//!   only their blake3 digest is kept in memory records and on disk;
//! - the index key is derived from an unambiguous, length-prefixed encoding of
//!   (tenant digest, idempotency key), so `("ab", "c")` and `("a", "bc")` can
//!   never share an encoding;
//! - the index key is only a locator: every read compares the full tenant
//!   digest and key stored in the record before serving it.

use std::fmt;
use std::sync::OnceLock;

/// Context string for blake3's key derivation of tenant digests.
const TENANT_CONTEXT: &str = "idemstore 2026-11 tenant digest v1";
/// Context string for blake3's key derivation of index keys.
const INDEX_CONTEXT: &str = "idemstore 2026-11 index key v1";

/// The blake3 digest of a tenant's opaque identity.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TenantDigest(pub [u8; 32]);

static TENANT_HASHER: OnceLock<blake3::Hasher> = OnceLock::new();
static INDEX_HASHER: OnceLock<blake3::Hasher> = OnceLock::new();

/// A derive-key hasher for `context`. Deriving the context key hashes the
/// context string; it is done once and the ready hasher cloned, which is the
/// same hash for a fraction of the work.
fn keyed(cell: &OnceLock<blake3::Hasher>, context: &str) -> blake3::Hasher {
    cell.get_or_init(|| blake3::Hasher::new_derive_key(context))
        .clone()
}

impl TenantDigest {
    /// Digests the raw tenant identity (API key, account id, ...).
    pub fn of(tenant: &[u8]) -> Self {
        let mut h = keyed(&TENANT_HASHER, TENANT_CONTEXT);
        h.update(tenant);
        TenantDigest(*h.finalize().as_bytes())
    }
}

impl fmt::Debug for TenantDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantDigest({})", hex8(&self.0))
    }
}

/// A digest of the request that used a key, chosen by the caller (the HTTP
/// layer digests method, path, body and chosen headers). Two requests with the
/// same key and different fingerprints are a mismatch, never a replay.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// blake3 of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Fingerprint(*blake3::hash(bytes).as_bytes())
    }

    /// blake3 of several parts, each length-prefixed so that part boundaries
    /// matter (`["ab", "c"]` differs from `["a", "bc"]`).
    pub fn of_parts<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut h = blake3::Hasher::new();
        for p in parts {
            h.update(&(p.len() as u64).to_le_bytes());
            h.update(p);
        }
        Fingerprint(*h.finalize().as_bytes())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", hex8(&self.0))
    }
}

/// The 128-bit locator of a (tenant, key) pair in the in-memory index.
///
/// Stored as two `u64` rather than a `u128` so that an index slot is 8-byte
/// aligned (a `u128` would pad every slot to 16-byte alignment).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct IndexKey {
    /// High 64 bits; selects the index shard.
    pub hi: u64,
    /// Low 64 bits; used as the hash inside a shard.
    pub lo: u64,
}

impl std::hash::Hash for IndexKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // The key is already a uniform digest: one word is enough.
        state.write_u64(self.lo);
    }
}

/// The function that derives index keys. Replaceable (see
/// [`Config::index_hash`](crate::Config::index_hash)) only so that tests can
/// force collisions; production code uses [`default_index_hash`].
pub type IndexHashFn = fn(&TenantDigest, &[u8]) -> IndexKey;

/// blake3 (derive-key mode) over `u64 len(tenant digest) || tenant digest ||
/// u64 len(key) || key`, truncated to 128 bits.
pub fn default_index_hash(tenant: &TenantDigest, key: &[u8]) -> IndexKey {
    let mut h = keyed(&INDEX_HASHER, INDEX_CONTEXT);
    h.update(&(tenant.0.len() as u64).to_le_bytes());
    h.update(&tenant.0);
    h.update(&(key.len() as u64).to_le_bytes());
    h.update(key);
    let out = h.finalize();
    let b = out.as_bytes();
    IndexKey {
        hi: u64::from_le_bytes(b[0..8].try_into().unwrap_or_default()),
        lo: u64::from_le_bytes(b[8..16].try_into().unwrap_or_default()),
    }
}

/// First eight bytes in hex, for debug output that must not leak a digest
/// in full.
pub(crate) fn hex8(b: &[u8]) -> String {
    b.iter().take(8).map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_digest_is_not_the_raw_tenant_and_is_stable() {
        let d = TenantDigest::of(b"sk_live_123");
        assert_eq!(d, TenantDigest::of(b"sk_live_123"));
        assert_ne!(d, TenantDigest::of(b"sk_live_124"));
        assert!(!d.0.windows(11).any(|w| w == b"sk_live_123"));
    }

    #[test]
    fn index_key_encoding_is_unambiguous() {
        // Without length prefixes these two would hash the same bytes.
        let t = TenantDigest([7; 32]);
        assert_ne!(default_index_hash(&t, b"ab"), default_index_hash(&t, b"a"));
        let t2 = TenantDigest([8; 32]);
        assert_ne!(default_index_hash(&t, b"k"), default_index_hash(&t2, b"k"));
    }

    #[test]
    fn fingerprint_parts_are_delimited() {
        assert_ne!(
            Fingerprint::of_parts([&b"ab"[..], b"c"]),
            Fingerprint::of_parts([&b"a"[..], b"bc"])
        );
        assert_eq!(
            Fingerprint::of_parts([&b"a"[..], b"bc"]),
            Fingerprint::of_parts([&b"a"[..], b"bc"])
        );
    }
}
