//! Whose request a job is: the caller an `Idempotency-Key` belongs to.
//!
//! An idempotency key is the caller's, as payment APIs scope keys to an account: a
//! repeat finds the job only when it comes from the same caller, and another caller's
//! key is invisible to it (no job, and no `422` that would tell the key exists). By
//! default the caller is the request's credentials, the `Authorization` and `Cookie`
//! fields (RFC 9110 §11.6.2, RFC 6265 §5.4); an embedder with its own notion of a
//! caller (a tenant, a verified token's subject) supplies [`CallerIdentity::new`].
//!
//! The store never holds the caller: the key it keeps is an HMAC-SHA256, under a random
//! key kept in the store, of the caller and the client's key together.

use base64::Engine;
use hmac::{KeyInit, Mac};
use std::fmt;
use std::sync::Arc;

/// A function from a request head (as received: request line and header fields) to
/// the caller's identity, as bytes. Two requests are the same caller's when it gives
/// the same bytes.
type IdentityFn = dyn Fn(&[u8]) -> Vec<u8> + Send + Sync;

/// How the job service tells callers apart, to scope their idempotency keys
/// ([`JobsConfig::caller`](super::JobsConfig::caller)).
#[derive(Clone)]
pub struct CallerIdentity {
    identify: Arc<IdentityFn>,
    name: &'static str,
}

impl CallerIdentity {
    /// The caller is what `identify` returns for a request head. It runs on the job
    /// service's thread for each submit that carries an `Idempotency-Key`; what it
    /// returns is never stored or logged (only a keyed digest of it is).
    ///
    /// ```
    /// use prime_server::jobs::{CallerIdentity, JobsConfig};
    /// // Callers are tenants, named by a field a trusted proxy in front sets.
    /// let mut config = JobsConfig::new("jobs.sqlite");
    /// config.caller = CallerIdentity::new(|head: &[u8]| {
    ///     prime_server::http::field_text(head, "x-tenant")
    ///         .unwrap_or_default()
    ///         .as_bytes()
    ///         .to_vec()
    /// });
    /// ```
    pub fn new(identify: impl Fn(&[u8]) -> Vec<u8> + Send + Sync + 'static) -> Self {
        CallerIdentity {
            identify: Arc::new(identify),
            name: "custom",
        }
    }

    /// The default: the caller is the request's credentials, every `Authorization` and
    /// `Cookie` field value in order. Requests without either are one caller.
    pub fn credentials() -> Self {
        CallerIdentity {
            identify: Arc::new(credentials_of),
            name: "credentials",
        }
    }

    /// The caller of the request whose head is `head`.
    pub fn of(&self, head: &[u8]) -> Vec<u8> {
        (self.identify)(head)
    }
}

impl Default for CallerIdentity {
    fn default() -> Self {
        Self::credentials()
    }
}

impl fmt::Debug for CallerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CallerIdentity({})", self.name)
    }
}

/// Every `Authorization` and `Cookie` value, each with its length, so no two
/// different sets of values give the same bytes.
fn credentials_of(head: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (tag, name) in [(b'A', "authorization"), (b'C', "cookie")] {
        for value in crate::http::field_values(head, name) {
            out.push(tag);
            out.extend_from_slice(&(value.len() as u64).to_le_bytes());
            out.extend_from_slice(value);
        }
    }
    out
}

/// The key the store keeps for a caller's `Idempotency-Key`: HMAC-SHA256 under the
/// store's `secret` of the caller and the key (each with its length), URL-safe base64.
pub(crate) fn scoped_key(secret: &[u8], caller: &[u8], key: &str) -> String {
    let mut mac = match hmac::Hmac::<sha2::Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        // HMAC takes a key of any length.
        Err(_) => unreachable!("HMAC-SHA256 refused a key"),
    };
    mac.update(&(caller.len() as u64).to_le_bytes());
    mac.update(caller);
    mac.update(&(key.len() as u64).to_le_bytes());
    mac.update(key.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_scope_a_key_and_never_appear_in_it() {
        let alice =
            CallerIdentity::default().of(b"GET / HTTP/1.1\r\nAuthorization: Bearer alice\r\n\r\n");
        let bob = CallerIdentity::default().of(b"GET / HTTP/1.1\r\nCookie: s=bob\r\n\r\n");
        let nobody = CallerIdentity::default().of(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        let a = scoped_key(b"secret", &alice, "k1");
        assert_ne!(a, scoped_key(b"secret", &bob, "k1"));
        assert_ne!(a, scoped_key(b"secret", &nobody, "k1"));
        assert_ne!(a, scoped_key(b"other secret", &alice, "k1"));
        assert_eq!(a, scoped_key(b"secret", &alice, "k1"));
        assert!(!a.contains("alice"));
    }
}
