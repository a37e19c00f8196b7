//! Pseudonymous user keys: HMAC-SHA256 of the platform and the platform's
//! user id under a secret from the environment. The same user keeps the
//! same key across conversations, but the raw id cannot be recovered, and
//! without the secret a key cannot even be checked against a guessed id.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::{Error, Result};

/// The environment variable holding the HMAC secret.
pub const USER_KEY_SECRET_ENV: &str = "CHATFORGE_USER_KEY_SECRET";

/// The file beside the spill folder holding the secret `serve` generated
/// when the environment variable is not set.
pub const USER_KEY_SECRET_FILE: &str = "user-key.secret";

/// Shorter secrets are refused: a key must not be brute-forceable.
const MIN_SECRET_BYTES: usize = 16;

/// A keyed hash of a platform user id (64 hex digits).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserKey(String);

impl UserKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Wraps a key read back from the database.
    pub(crate) fn from_stored(s: String) -> Self {
        Self(s)
    }
}

impl std::fmt::Display for UserKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Turns platform user ids into [`UserKey`]s.
#[derive(Clone)]
pub struct UserKeyHasher {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for UserKeyHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UserKeyHasher(<secret>)")
    }
}

impl UserKeyHasher {
    /// A hasher keyed with `secret` (at least 16 bytes).
    pub fn new(secret: &[u8]) -> Result<Self> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(Error::Secret(format!(
                "the secret is {} bytes; at least {MIN_SECRET_BYTES} are needed",
                secret.len()
            )));
        }
        let mac = Hmac::<Sha256>::new_from_slice(secret)
            .map_err(|_| Error::Secret("the secret cannot key HMAC-SHA256".into()))?;
        Ok(Self { mac })
    }

    /// Reads the secret from `CHATFORGE_USER_KEY_SECRET`.
    pub fn from_env() -> Result<Self> {
        match std::env::var(USER_KEY_SECRET_ENV) {
            Ok(s) if !s.is_empty() => Self::new(s.as_bytes()),
            Ok(_) | Err(std::env::VarError::NotPresent) => Err(Error::Secret(
                "not set; set it to a long random string (e.g. `openssl rand -hex 32`) and keep it: \
                 changing it gives every user a new key"
                    .into(),
            )),
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(Error::Secret("the value is not valid UTF-8".into()))
            }
        }
    }

    /// The secret `serve` uses: `CHATFORGE_USER_KEY_SECRET`, else the file
    /// `spill_dir/user-key.secret`. With `create`, a missing file is
    /// created with a random secret (so keys stay stable across restarts
    /// without configuration); without it (tools that look records up), a
    /// missing secret is an error.
    pub fn for_spill_dir(spill_dir: &std::path::Path, create: bool) -> Result<Self> {
        if std::env::var_os(USER_KEY_SECRET_ENV).is_some_and(|v| !v.is_empty()) {
            return Self::from_env();
        }
        let path = spill_dir.join(USER_KEY_SECRET_FILE);
        let io = |e: std::io::Error| Error::Secret(format!("{}: {e}", path.display()));
        match std::fs::read(&path) {
            Ok(s) => Self::new(&s),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                std::fs::create_dir_all(spill_dir).map_err(io)?;
                let hex = hex::encode(rand::random::<[u8; 32]>());
                // Synced before use: a torn write would silently re-key
                // every user after the next start.
                crate::fsio::write_private_atomic(&path, hex.as_bytes())?;
                tracing::warn!(
                    "{USER_KEY_SECRET_ENV} is not set; user keys use a secret generated in {} \
                     (keep that file)",
                    path.display()
                );
                Self::new(hex.as_bytes())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::Secret(format!(
                "not set, and there is no {} (serve's generated secret); set the variable to \
                 the secret serve uses, or name the spill folder serve uses",
                path.display()
            ))),
            Err(e) => Err(io(e)),
        }
    }

    /// A hasher with a random secret, for benchmarks and tests whose keys
    /// need not be stable.
    pub fn ephemeral() -> Self {
        let secret: [u8; 32] = rand::random();
        Self {
            mac: Hmac::<Sha256>::new_from_slice(&secret).expect("HMAC takes keys of any length"),
        }
    }

    /// A check value of the secret, stored so that tools can tell a wrong
    /// secret from a user without records. The 0xFF byte never occurs in
    /// UTF-8, so no platform and user id hash to it.
    pub fn check(&self) -> String {
        let mut mac = self.mac.clone();
        mac.update(b"\xffchatforge user-key check");
        hex::encode(mac.finalize().into_bytes())
    }

    /// The key of `user_id` on `platform`. The platform is part of the hash,
    /// so equal ids on two platforms give unrelated keys.
    pub fn key(&self, platform: &str, user_id: &str) -> UserKey {
        let mut mac = self.mac.clone();
        mac.update(platform.as_bytes());
        mac.update(&[0]);
        mac.update(user_id.as_bytes());
        UserKey(hex::encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_keys_are_stable_keyed_and_opaque() {
        let a = UserKeyHasher::new(b"0123456789abcdef-secret").unwrap();
        let b = UserKeyHasher::new(b"another-secret-0123456789").unwrap();
        let k = a.key("discord", "123456789");
        assert_eq!(k, a.key("discord", "123456789"));
        assert_eq!(k.as_str().len(), 64);
        assert!(!k.as_str().contains("123456789"));
        assert_ne!(k, b.key("discord", "123456789"));
        assert_ne!(k, a.key("telegram", "123456789"));
        // The NUL separator keeps ("ab","c") and ("a","bc") apart.
        assert_ne!(a.key("ab", "c"), a.key("a", "bc"));
        assert_eq!(a.check(), a.check());
        assert_ne!(a.check(), b.check());
    }

    #[test]
    fn test_short_secret_refused_without_echo() {
        let err = UserKeyHasher::new(b"hunter2").unwrap_err().to_string();
        assert!(err.contains("at least 16"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let dbg = format!("{:?}", UserKeyHasher::new(b"0123456789abcdef").unwrap());
        assert!(!dbg.contains("0123"), "{dbg}");
    }
}
