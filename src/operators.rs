//! Operator accounts: the people who take over handed-off conversations in
//! the console. Passwords are hashed with argon2id; a new or reset account
//! gets a random one-time password, shown once, that must be changed at the
//! first login. Failed logins count up to a lockout, so a password cannot
//! be guessed online. Account changes go to the audit log.

use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use chrono::Utc;
use rand::Rng;

use crate::store::{AuditEvent, ConversationStore, OperatorRow, new_id, now_ms};

/// Failed logins in a row that lock an account.
pub const MAX_FAILED_LOGINS: u32 = 5;
/// How long a locked account stays locked.
pub const LOCKOUT: Duration = Duration::from_secs(15 * 60);
/// Characters of a one-time password (base62: about 119 bits).
const ONE_TIME_CHARS: usize = 20;
/// Shortest password an operator may choose.
pub const MIN_PASSWORD_CHARS: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error("an operator named {0:?} already exists")]
    Exists(String),
    #[error("no operator named {0:?}")]
    NoSuchOperator(String),
    #[error("operator name {0:?}: use 1-64 letters, digits, '.', '_' or '-'")]
    BadName(String),
    #[error("the password must have at least {MIN_PASSWORD_CHARS} characters")]
    WeakPassword,
    /// Wrong name or password (which one is not said).
    #[error("wrong name or password")]
    BadCredentials,
    #[error(
        "the account is locked after {MAX_FAILED_LOGINS} failed logins; try again later or ask for a password reset"
    )]
    Locked,
    #[error("password hashing failed: {0}")]
    Hash(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// A logged-in operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    pub id: String,
    pub name: String,
    /// Logged in with a one-time password: must choose a new one first.
    pub must_change: bool,
}

fn check_name(name: &str) -> Result<()> {
    let ok = (1..=64).contains(&name.chars().count())
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::BadName(name.to_string()))
    }
}

fn one_time_password() -> String {
    rand::rng()
        .sample_iter(&rand::distr::Alphanumeric)
        .take(ONE_TIME_CHARS)
        .map(char::from)
        .collect()
}

/// The argon2id hash (PHC string) of `password`. Slow on purpose: call it
/// off the async runtime's worker threads.
pub fn hash_password(password: &str) -> Result<String> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
        .map_err(|e| Error::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Hash(e.to_string()))
}

/// Whether `password` matches the PHC string `hash`.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

async fn hash_blocking(password: String) -> Result<String> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| Error::Hash(e.to_string()))?
}

async fn audit(store: &dyn ConversationStore, actor: &str, action: &str, name: &str) -> Result<()> {
    store
        .write_audit(&AuditEvent::new(
            actor,
            action,
            serde_json::json!({ "operator": name }),
        ))
        .await?;
    Ok(())
}

/// Creates an account; returns it with its one-time password (shown once,
/// stored only hashed).
pub async fn add(
    store: &dyn ConversationStore,
    name: &str,
    actor: &str,
) -> Result<(OperatorRow, String)> {
    check_name(name)?;
    let password = one_time_password();
    let now = now_ms();
    let row = OperatorRow {
        id: new_id(),
        name: name.to_string(),
        password_hash: hash_blocking(password.clone()).await?,
        must_change: true,
        created_at: now,
        password_set_at: now,
        failed_logins: 0,
        locked_until: None,
    };
    if !store.insert_operator(&row).await? {
        return Err(Error::Exists(name.to_string()));
    }
    audit(store, actor, "operator added", name).await?;
    Ok((row, password))
}

async fn find(store: &dyn ConversationStore, name: &str) -> Result<Option<OperatorRow>> {
    Ok(store.operators(Some(name)).await?.into_iter().next())
}

/// A new one-time password for `name`; unlocks the account.
pub async fn reset_password(
    store: &dyn ConversationStore,
    name: &str,
    actor: &str,
) -> Result<String> {
    let mut row = find(store, name)
        .await?
        .ok_or_else(|| Error::NoSuchOperator(name.to_string()))?;
    let password = one_time_password();
    row.password_hash = hash_blocking(password.clone()).await?;
    row.must_change = true;
    row.password_set_at = now_ms();
    row.failed_logins = 0;
    row.locked_until = None;
    if !store.update_operator(&row).await? {
        return Err(Error::NoSuchOperator(name.to_string()));
    }
    audit(store, actor, "operator password reset", name).await?;
    Ok(password)
}

pub async fn remove(store: &dyn ConversationStore, name: &str, actor: &str) -> Result<()> {
    if !store.delete_operator(name).await? {
        return Err(Error::NoSuchOperator(name.to_string()));
    }
    audit(store, actor, "operator removed", name).await
}

/// Checks a login. Wrong credentials count towards the lockout; a locked
/// account is refused even with the right password until the lock ends.
/// An unknown name costs the same hashing work as a known one, so timing
/// does not tell which names exist.
pub async fn login(store: &dyn ConversationStore, name: &str, password: &str) -> Result<Operator> {
    let Some(mut row) = find(store, name).await? else {
        let _ = hash_blocking(password.to_string()).await;
        return Err(Error::BadCredentials);
    };
    let now = Utc::now();
    if row.locked_until.is_some_and(|t| t > now) {
        return Err(Error::Locked);
    }
    let (given, hash) = (password.to_string(), row.password_hash.clone());
    let ok = tokio::task::spawn_blocking(move || verify_password(&given, &hash))
        .await
        .map_err(|e| Error::Hash(e.to_string()))?;
    if ok {
        if row.failed_logins > 0 || row.locked_until.is_some() {
            row.failed_logins = 0;
            row.locked_until = None;
            store.update_operator(&row).await?;
        }
        return Ok(Operator {
            id: row.id,
            name: row.name,
            must_change: row.must_change,
        });
    }
    row.failed_logins = row.failed_logins.saturating_add(1);
    let locks = row.failed_logins >= MAX_FAILED_LOGINS;
    if locks {
        row.failed_logins = 0;
        row.locked_until = Some(now + LOCKOUT);
    }
    store.update_operator(&row).await?;
    if locks {
        audit(store, "login", "operator locked out", name).await?;
        return Err(Error::Locked);
    }
    Err(Error::BadCredentials)
}

/// Sets the password an operator chose (after logging in with the old one).
pub async fn change_password(
    store: &dyn ConversationStore,
    operator: &Operator,
    new_password: &str,
) -> Result<()> {
    if new_password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(Error::WeakPassword);
    }
    let mut row = find(store, &operator.name)
        .await?
        .filter(|r| r.id == operator.id)
        .ok_or_else(|| Error::NoSuchOperator(operator.name.clone()))?;
    row.password_hash = hash_blocking(new_password.to_string()).await?;
    row.must_change = false;
    row.password_set_at = now_ms();
    store.update_operator(&row).await?;
    audit(
        store,
        &operator.name,
        "operator password changed",
        &operator.name,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_hash_is_argon2id_salted_and_verifies() {
        let a = hash_password("correct horse battery").unwrap();
        let b = hash_password("correct horse battery").unwrap();
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert_ne!(a, b, "a fresh salt each time");
        assert!(!a.contains("correct horse"));
        assert!(verify_password("correct horse battery", &a));
        assert!(!verify_password("correct horse batterY", &a));
        assert!(!verify_password("x", "not a hash"));
        let otp = one_time_password();
        assert_eq!(otp.len(), ONE_TIME_CHARS);
        assert!(otp.chars().all(|c| c.is_ascii_alphanumeric()));
        assert!(check_name("ann.lee-2").is_ok());
        assert!(check_name("").is_err() && check_name("a b").is_err());
    }
}
