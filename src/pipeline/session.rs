//! Conversations in memory: the turns the model sees, the handoff flag and
//! the last reply, per platform conversation; plus an index from reply ids
//! to conversations for feedback that arrives later.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chatforge_channel::Platform;

use super::config::Profile;
use crate::text::Message;

pub struct Session {
    /// The store's conversation id; `None` until the first message.
    pub conversation_id: Option<String>,
    pub turns: Vec<Message>,
    pub last_active: Instant,
    /// A human operator has the conversation; the bot stays quiet.
    pub handoff: bool,
    /// Id of the bot's last reply, for `/feedback`.
    pub last_reply: Option<String>,
    pub profile: Profile,
}

impl Session {
    fn new(profile: Profile) -> Self {
        Self {
            conversation_id: None,
            turns: Vec::new(),
            last_active: Instant::now(),
            handoff: false,
            last_reply: None,
            profile,
        }
    }

    /// Forgets the turns and the conversation id; returns the id that ended.
    pub fn end(&mut self) -> Option<String> {
        self.turns.clear();
        self.last_reply = None;
        self.handoff = false;
        self.conversation_id.take()
    }
}

type Key = (Platform, String);
pub type SessionRef = Arc<tokio::sync::Mutex<Session>>;

pub struct Sessions {
    map: Mutex<HashMap<Key, SessionRef>>,
}

impl Sessions {
    pub fn new() -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
        }
    }

    /// The session of a conversation, created with `profile` if new. Locking
    /// it serialises the conversation's requests.
    pub fn get(
        &self,
        platform: Platform,
        conversation: &str,
        profile: impl FnOnce() -> Profile,
    ) -> SessionRef {
        let mut map = match self.map.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        Arc::clone(
            map.entry((platform, conversation.to_string()))
                .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(Session::new(profile())))),
        )
    }

    /// Drops sessions idle for `idle` that nobody is using; returns the
    /// conversation ids that ended.
    pub fn sweep(&self, idle: Duration) -> Vec<String> {
        let mut ended = Vec::new();
        let mut map = match self.map.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        map.retain(|_, s| match s.try_lock() {
            Ok(mut s) if s.last_active.elapsed() >= idle => {
                ended.extend(s.end());
                false
            }
            _ => true,
        });
        ended
    }

    /// Sessions held in memory.
    pub fn count(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }
}

/// Reply id → conversation id for the most recent replies, so a rating on
/// an older reply still finds its conversation after the session ended.
pub struct ReplyIndex {
    cap: usize,
    map: HashMap<String, String>,
    order: VecDeque<String>,
}

impl ReplyIndex {
    pub fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub fn insert(&mut self, reply: String, conversation: String) {
        if self.map.insert(reply.clone(), conversation).is_none() {
            self.order.push_back(reply);
        }
        while self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }

    pub fn get(&self, reply: &str) -> Option<&str> {
        self.map.get(reply).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_reply_index_forgets_oldest() {
        let mut idx = ReplyIndex::new(2);
        idx.insert("a".into(), "c1".into());
        idx.insert("b".into(), "c1".into());
        idx.insert("c".into(), "c2".into());
        assert_eq!(idx.get("a"), None);
        assert_eq!(idx.get("c"), Some("c2"));
    }

    #[tokio::test]
    async fn test_sweep_ends_idle_sessions_only() {
        let sessions = Sessions::new();
        let a = sessions.get(Platform::Telegram, "1", Profile::default);
        a.lock().await.conversation_id = Some("conv-a".into());
        let b = sessions.get(Platform::Telegram, "2", Profile::default);
        b.lock().await.conversation_id = Some("conv-b".into());
        a.lock().await.last_active = Instant::now() - Duration::from_secs(120);
        let held = b.lock().await;
        let ended = sessions.sweep(Duration::from_secs(60));
        drop(held);
        assert_eq!(ended, vec!["conv-a".to_string()]);
        assert_eq!(sessions.count(), 1);
    }
}
