//! Data protection on the stored logs: retention (deleting conversations
//! idle past a limit), erasure of one person's records, and subject access.
//! Finding a person's records takes the same user-key secret `serve` uses;
//! the store keeps a check value of that secret (recorded by `serve` at
//! start-up), so a wrong secret is an error instead of "0 records". Every
//! purge and erasure leaves an audit event with counts, never whose data.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{
    ConversationStore, Error, FeedbackRecord, ModerationRecord, Result, StoredConversation,
    UserKey, UserKeyHasher, new_id, now_ms,
};

/// Conversations deleted per transaction: large enough to be quick, small
/// enough that the writer's inserts never wait long behind a purge.
const BATCH: u32 = 500;

/// The `store_settings` row holding the user-key check.
const KEY_CHECK: &str = "user_key_check";

/// Rows deleted (or, in a dry run, that would be).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Deleted {
    pub conversations: u64,
    pub messages: u64,
    pub feedback: u64,
    pub moderation_events: u64,
    /// Webhook updates kept from the person's chat (erasure only).
    pub kept_updates: u64,
}

impl Deleted {
    pub fn add(&mut self, other: Deleted) {
        self.conversations += other.conversations;
        self.messages += other.messages;
        self.feedback += other.feedback;
        self.moderation_events += other.moderation_events;
        self.kept_updates += other.kept_updates;
    }
}

impl std::fmt::Display for Deleted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} conversations, {} messages, {} feedback, {} moderation events",
            self.conversations, self.messages, self.feedback, self.moderation_events
        )?;
        if self.kept_updates > 0 {
            write!(f, ", {} kept updates", self.kept_updates)?;
        }
        Ok(())
    }
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEvent {
    pub id: String,
    pub created_at: DateTime<Utc>,
    /// An operator's id, or the command that acted (`logs forget`, `serve`).
    pub actor: String,
    pub action: String,
    pub conversation_id: Option<String>,
    pub detail: Option<serde_json::Value>,
}

impl AuditEvent {
    pub fn new(actor: &str, action: &str, detail: serde_json::Value) -> Self {
        Self {
            id: new_id(),
            created_at: now_ms(),
            actor: actor.to_string(),
            action: action.to_string(),
            conversation_id: None,
            detail: Some(detail),
        }
    }
}

/// How a user-key secret compares with the one the store's keys were made
/// with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyCheck {
    /// It is the same secret.
    Matches,
    /// The store had no check; this secret's is now recorded.
    Recorded,
}

/// Compares `hasher`'s secret with the store's record of it. With `record`
/// (what `serve` does), a store without a record takes this secret's;
/// without it (erasure, subject access), a missing record is an error.
pub async fn verify_user_key(
    store: &dyn ConversationStore,
    hasher: &UserKeyHasher,
    record: bool,
) -> Result<KeyCheck> {
    let mine = hasher.check();
    let stored = match store.setting(KEY_CHECK).await? {
        Some(v) => v,
        None if record => {
            store.set_setting_once(KEY_CHECK, &mine).await?;
            // Another replica may have recorded its own at the same moment.
            match store.setting(KEY_CHECK).await? {
                Some(v) if v == mine => return Ok(KeyCheck::Recorded),
                Some(v) => v,
                None => {
                    return Err(Error::Database {
                        backend: store.backend().name(),
                        reason: "the user-key check was not recorded".into(),
                    });
                }
            }
        }
        None => {
            return Err(Error::Secret(
                "this database holds no check of the secret its user keys were made with, so \
                 a wrong secret could not be told from a user without records; start \
                 `chatforge serve` once with the same secret (it records the check)"
                    .into(),
            ));
        }
    };
    if stored == mine {
        Ok(KeyCheck::Matches)
    } else {
        Err(Error::Secret(
            "this is not the secret the database's user keys were made with: the same users \
             would get new keys, and their earlier records could not be found. Use the \
             original secret (or the user-key.secret file beside the spill folder it came \
             from). To start over with new keys on purpose, delete the check: DELETE FROM \
             store_settings WHERE name = 'user_key_check'"
                .into(),
        ))
    }
}

/// Deletes conversations idle since before `before`, with their messages,
/// feedback and moderation events, in batches; `dry_run` only counts.
/// A real purge leaves an audit event, also when it deleted nothing.
pub async fn purge(
    store: &dyn ConversationStore,
    before: DateTime<Utc>,
    dry_run: bool,
    actor: &str,
) -> Result<Deleted> {
    let mut total = Deleted::default();
    let mut after: Option<String> = None;
    loop {
        let ids = store
            .idle_conversations(before, after.as_deref(), BATCH)
            .await?;
        let Some(last) = ids.last().cloned() else {
            break;
        };
        total.add(store.delete_conversations(&ids, None, dry_run).await?);
        after = Some(last);
    }
    if !dry_run {
        store
            .write_audit(&AuditEvent::new(
                actor,
                "purge",
                serde_json::json!({ "before": before, "deleted": total }),
            ))
            .await?;
    }
    Ok(total)
}

/// Deletes everything stored about one platform user (their conversations
/// with all their rows, and feedback they gave elsewhere), after checking
/// that `hasher` holds the secret the store's keys were made with. The
/// audit event records the counts, never the user.
pub async fn forget(
    store: &dyn ConversationStore,
    hasher: &UserKeyHasher,
    platform: &str,
    user_id: &str,
    dry_run: bool,
    actor: &str,
) -> Result<Deleted> {
    verify_user_key(store, hasher, false).await?;
    let key = hasher.key(platform, user_id);
    let ids = store.user_conversations(platform, &key).await?;
    let mut deleted = store
        .delete_conversations(&ids, Some(&key), dry_run)
        .await?;
    // The person's private chat with the bot has their id: what the
    // webhook inbox kept from it goes too (an answered update keeps only
    // its ids, a day).
    if matches!(store.schema_version().await?, Some(v) if v >= super::INBOX_SCHEMA) {
        deleted.kept_updates = store
            .forget_chat_updates(platform, user_id, dry_run)
            .await?;
    }
    if !dry_run {
        store
            .write_audit(&AuditEvent::new(
                actor,
                "erasure",
                serde_json::json!({ "platform": platform, "deleted": deleted }),
            ))
            .await?;
    }
    Ok(deleted)
}

/// One conversation of a person, with everything stored about it.
#[derive(Debug, Clone)]
pub struct SubjectConversation {
    pub conversation: StoredConversation,
    pub feedback: Vec<FeedbackRecord>,
    pub moderation: Vec<ModerationRecord>,
}

/// Everything stored about one platform user, oldest conversation first,
/// after the same key check as [`forget`].
pub async fn subject_records(
    store: &dyn ConversationStore,
    hasher: &UserKeyHasher,
    platform: &str,
    user_id: &str,
) -> Result<(UserKey, Vec<SubjectConversation>)> {
    verify_user_key(store, hasher, false).await?;
    let key = hasher.key(platform, user_id);
    let mut out = Vec::new();
    for id in store.user_conversations(platform, &key).await? {
        // Deleted meanwhile (a purge): nothing to show.
        let Some(conversation) = store.conversation(&id).await? else {
            continue;
        };
        out.push(SubjectConversation {
            conversation,
            feedback: store.feedback(&id).await?,
            moderation: store.moderation_events(&id).await?,
        });
    }
    Ok((key, out))
}
