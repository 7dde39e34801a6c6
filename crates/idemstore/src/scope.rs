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

/// Whose key it is: the caller's identity (an API key, an account id), as
/// opaque bytes; only its digest is stored. A type of its own, so that the
/// tenant and the key of [`Store::begin`](crate::Store::begin) cannot be
/// swapped without it showing.
///
/// ```
/// use idemstore::{Key, Tenant};
/// let t = Tenant::new("acct_42");
/// let k = Key::new("order-7");
/// assert_eq!((t.as_bytes(), k.as_bytes()), (&b"acct_42"[..], &b"order-7"[..]));
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Tenant<'a>(&'a [u8]);

impl<'a> Tenant<'a> {
    /// The tenant identified by these bytes (a `&str`, `&[u8]`, `&String`…).
    pub fn new<T: AsRef<[u8]> + ?Sized>(id: &'a T) -> Self {
        Tenant(id.as_ref())
    }

    /// Its bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }
}

impl fmt::Debug for Tenant<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A tenant may be a credential: never printed.
        write!(f, "Tenant({} bytes)", self.0.len())
    }
}

/// The idempotency key a client sent, as bytes (see [`Tenant`] for why a
/// type of its own).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Key<'a>(&'a [u8]);

impl<'a> Key<'a> {
    /// The key made of these bytes.
    pub fn new<T: AsRef<[u8]> + ?Sized>(key: &'a T) -> Self {
        Key(key.as_ref())
    }

    /// Its bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }
}

impl fmt::Debug for Key<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({:?})", String::from_utf8_lossy(self.0))
    }
}

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

    /// The 64 lowercase hex digits of the digest (how `idemctl` prints it).
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// The digest written as 64 hex digits, as [`to_hex`](Self::to_hex)
    /// prints it; `None` for anything else.
    ///
    /// ```
    /// use idemstore::{Tenant, TenantDigest};
    /// let d = TenantDigest::from(Tenant::new("acct_1"));
    /// assert_eq!(TenantDigest::from_hex(&d.to_hex()), Some(d));
    /// assert_eq!(TenantDigest::from_hex("beef"), None);
    /// ```
    pub fn from_hex(s: &str) -> Option<Self> {
        let s = s.as_bytes();
        if s.len() != 64 {
            return None;
        }
        let digit = |c: u8| {
            char::from(c)
                .to_digit(16)
                .and_then(|d| u8::try_from(d).ok())
        };
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = digit(s[2 * i])? << 4 | digit(s[2 * i + 1])?;
        }
        Some(TenantDigest(out))
    }
}

impl From<Tenant<'_>> for TenantDigest {
    fn from(t: Tenant<'_>) -> Self {
        TenantDigest::of(t.as_bytes())
    }
}

/// Lowercase hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
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
    /// The 64 lowercase hex digits of the fingerprint.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

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
    index_input(tenant, key, |part| {
        h.update(part);
    });
    let out = h.finalize();
    let b = out.as_bytes();
    IndexKey {
        hi: u64::from_le_bytes(b[0..8].try_into().unwrap_or_default()),
        lo: u64::from_le_bytes(b[8..16].try_into().unwrap_or_default()),
    }
}

/// Feeds `sink` the bytes the index key is hashed over, in order: `u64 LE
/// len(tenant digest) || tenant digest || u64 LE len(key) || key`. Every
/// part is preceded by its length, so the bytes decode back to exactly one
/// (tenant digest, key) pair: no two pairs share an encoding.
fn index_input(tenant: &TenantDigest, key: &[u8], mut sink: impl FnMut(&[u8])) {
    sink(&(tenant.0.len() as u64).to_le_bytes());
    sink(&tenant.0);
    sink(&(key.len() as u64).to_le_bytes());
    sink(key);
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

    fn encoded(tenant: &TenantDigest, key: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        index_input(tenant, key, |p| out.extend_from_slice(p));
        out
    }

    /// Splits an encoding back into its parts: `None` unless it is exactly
    /// one length-prefixed tenant digest and one length-prefixed key.
    fn decode(mut b: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
        let mut part = || {
            let len = usize::try_from(u64::from_le_bytes(b.get(..8)?.try_into().ok()?)).ok()?;
            let end = len.checked_add(8)?;
            let p = b.get(8..end)?.to_vec();
            b = &b[end..];
            Some(p)
        };
        let (t, k) = (part()?, part()?);
        b.is_empty().then_some((t, k))
    }

    #[test]
    fn index_key_encoding_is_unambiguous() {
        let t = TenantDigest([7; 32]);
        // The exact bytes (FORMAT.md documents them; hint probes rely on them).
        let mut want = 32u64.to_le_bytes().to_vec();
        want.extend_from_slice(&[7; 32]);
        want.extend_from_slice(&2u64.to_le_bytes());
        want.extend_from_slice(b"ab");
        assert_eq!(encoded(&t, b"ab"), want);
        // Keys that are prefixes of one another, an empty key, a tenant that
        // differs only in the byte before the key, keys holding what looks
        // like a length prefix: each encoding decodes back to its own pair,
        // so no two pairs hash the same input.
        let mut t2 = [7; 32];
        t2[31] = b'a';
        let pairs: Vec<(TenantDigest, Vec<u8>)> = vec![
            (t, b"ab".to_vec()),
            (t, b"a".to_vec()),
            (t, b"".to_vec()),
            (TenantDigest(t2), b"b".to_vec()),
            (t, [&[7u8][..], &2u64.to_le_bytes()[..], b"ab"].concat()),
            (t, [&2u64.to_le_bytes()[..], b"ab"].concat()),
        ];
        let mut seen = std::collections::HashSet::new();
        for (tenant, key) in &pairs {
            let e = encoded(tenant, key);
            assert_eq!(decode(&e), Some((tenant.0.to_vec(), key.clone())));
            assert!(seen.insert(e), "two pairs share an encoding");
        }
        // The index key is blake3 (derive-key mode) over exactly these bytes.
        for (tenant, key) in &pairs {
            let d = blake3::derive_key(INDEX_CONTEXT, &encoded(tenant, key));
            let ik = default_index_hash(tenant, key);
            assert_eq!(ik.hi.to_le_bytes(), d[..8]);
            assert_eq!(ik.lo.to_le_bytes(), d[8..16]);
        }
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
