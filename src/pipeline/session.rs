//! Conversations in memory: the turns the model sees, the conversation's
//! state and the last reply, per platform conversation; plus an index from
//! reply ids to conversations for feedback that arrives later. Both are
//! capped, so a long-running `serve` holds bounded memory.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chatforge_channel::Platform;

use super::config::Profile;
use crate::store::Handoff;
use crate::text::Message;

/// Open handoffs listed at most; with more, every new session asks the
/// store about its own chat.
const HANDOFFS_LISTED: u32 = 100_000;

/// The chats that may wait for or be with a human in the store, so that a
/// new session reads its chat's handoff only for those: a query per new
/// session took a few milliseconds at the tail under load (the store's
/// thread waits for a core the model holds). A chat handed to a human in
/// this process keeps its session (one with humans is never evicted), so
/// only the handoffs an earlier process left open need reading back; they
/// are listed once, at the first new session. While they cannot be listed
/// (a store error), every new session asks.
#[derive(Default)]
pub struct OpenHandoffs {
    listed: tokio::sync::OnceCell<Option<HashSet<(String, String)>>>,
}

impl OpenHandoffs {
    /// Whether `store` may hold an open handoff for the chat.
    pub async fn may_hold(
        &self,
        store: &dyn crate::store::ConversationStore,
        platform: &str,
        channel: &str,
    ) -> bool {
        let listed = self
            .listed
            .get_or_try_init(|| async {
                let queue = store.handoff_queue(HANDOFFS_LISTED).await?;
                Ok::<_, crate::store::Error>((queue.len() < HANDOFFS_LISTED as usize).then(|| {
                    queue
                        .into_iter()
                        .map(|c| (c.record.platform, c.record.channel))
                        .collect()
                }))
            })
            .await;
        match listed {
            Ok(Some(chats)) => chats.contains(&(platform.to_string(), channel.to_string())),
            Ok(None) => true,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the chats waiting for a human; asking the store per chat");
                true
            }
        }
    }
}

/// Who answers a conversation. Every change is persisted
/// ([`State::stored`]) so operators and later replicas see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// The bot answers.
    Active,
    /// The user asked for a human (`/human`); the bot stays quiet and the
    /// user's messages are logged for the operator.
    HandoffRequested,
    /// An operator took the conversation.
    WithOperator { operator: String },
}

/// Why a state changed, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// `/human`.
    AskHuman,
    /// An operator claimed the conversation.
    Claim,
    /// `/bot`, or an operator resolved the conversation.
    BackToBot,
}

impl State {
    /// The state after `t`, or `None` when `t` does not apply (asking for a
    /// human twice, claiming a conversation nobody handed off).
    pub fn after(&self, t: Transition, operator: Option<&str>) -> Option<State> {
        match (self, t) {
            (State::Active, Transition::AskHuman) => Some(State::HandoffRequested),
            (State::HandoffRequested, Transition::Claim) => Some(State::WithOperator {
                operator: operator.unwrap_or_default().to_string(),
            }),
            (State::HandoffRequested | State::WithOperator { .. }, Transition::BackToBot) => {
                Some(State::Active)
            }
            _ => None,
        }
    }

    /// Whether the bot answers messages.
    pub fn bot_answers(&self) -> bool {
        matches!(self, State::Active)
    }

    /// The store's handoff column for this state (after `previous`).
    pub fn stored(&self) -> Handoff {
        match self {
            State::Active => Handoff::Resolved,
            State::HandoffRequested => Handoff::Requested,
            State::WithOperator { .. } => Handoff::Active,
        }
    }
}

pub struct Session {
    /// The store's conversation id; `None` until the first message.
    pub conversation_id: Option<String>,
    pub turns: Vec<Message>,
    pub last_active: Instant,
    pub state: State,
    /// Id of the bot's last reply, for `/feedback`.
    pub last_reply: Option<String>,
    /// The language of the user's last message (`en`, `zh`).
    pub lang: &'static str,
    pub profile: Profile,
    /// The store was asked whether this chat waits for a human (once per
    /// session: the answer matters after a restart).
    pub restored: bool,
}

impl Session {
    fn new(profile: Profile) -> Self {
        Self {
            conversation_id: None,
            turns: Vec::new(),
            last_active: Instant::now(),
            state: State::Active,
            last_reply: None,
            lang: "en",
            profile,
            restored: false,
        }
    }

    /// Forgets the turns and the conversation id; returns the id that ended.
    pub fn end(&mut self) -> Option<String> {
        self.turns.clear();
        self.last_reply = None;
        self.state = State::Active;
        self.conversation_id.take()
    }

    /// Whether the conversation waits for, or is with, a human: such a
    /// conversation never ends for being idle.
    pub fn with_humans(&self) -> bool {
        !matches!(self.state, State::Active)
    }
}

type Key = (Platform, String);
pub type SessionRef = Arc<tokio::sync::Mutex<Session>>;

pub struct Sessions {
    map: Mutex<HashMap<Key, SessionRef>>,
    cap: usize,
}

impl Sessions {
    pub fn new(cap: usize) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            cap: cap.max(1),
        }
    }

    /// The session of a conversation, created with `profile` if new. Locking
    /// it serialises the conversation's requests. Returns the conversation
    /// ids ended to stay under the cap.
    pub fn get(
        &self,
        platform: Platform,
        conversation: &str,
        profile: impl FnOnce() -> Profile,
    ) -> (SessionRef, Vec<String>) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let key = (platform, conversation.to_string());
        if let Some(s) = map.get(&key) {
            return (Arc::clone(s), Vec::new());
        }
        let ended = if map.len() >= self.cap {
            evict(&mut map, map_len_over(self.cap))
        } else {
            Vec::new()
        };
        let s = Arc::new(tokio::sync::Mutex::new(Session::new(profile())));
        map.insert(key, Arc::clone(&s));
        (s, ended)
    }

    /// The session of a conversation, if one is held (none is created).
    pub fn peek(&self, platform: Platform, conversation: &str) -> Option<SessionRef> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&(platform, conversation.to_string())).cloned()
    }

    /// Drops sessions idle for `idle` that nobody is using and that do not
    /// wait for a human; returns the conversation ids that ended.
    pub fn sweep(&self, idle: Duration) -> Vec<String> {
        let mut ended = Vec::new();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, s| match s.try_lock() {
            Ok(mut s) if s.last_active.elapsed() >= idle && !s.with_humans() => {
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

/// How many to evict to make room for one more: a tenth of the cap, so
/// eviction's scan is amortised over many new sessions.
fn map_len_over(cap: usize) -> usize {
    (cap / 10).max(1)
}

/// Ends the `n` least recently active sessions that nobody is using and
/// that do not wait for a human.
fn evict(map: &mut HashMap<Key, SessionRef>, n: usize) -> Vec<String> {
    let mut idle: Vec<(Instant, Key)> = map
        .iter()
        .filter_map(|(k, s)| {
            let s = s.try_lock().ok()?;
            (!s.with_humans()).then(|| (s.last_active, k.clone()))
        })
        .collect();
    idle.sort_by_key(|(at, _)| *at);
    let mut ended = Vec::new();
    for (_, key) in idle.into_iter().take(n) {
        if let Some(s) = map.remove(&key)
            && let Ok(mut s) = s.try_lock()
        {
            ended.extend(s.end());
        }
    }
    ended
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

    #[test]
    fn test_state_transitions() {
        let s = State::Active;
        assert_eq!(s.after(Transition::Claim, Some("ann")), None);
        assert_eq!(s.after(Transition::BackToBot, None), None);
        let h = s.after(Transition::AskHuman, None).unwrap();
        assert_eq!(h, State::HandoffRequested);
        assert!(!h.bot_answers());
        assert_eq!(h.after(Transition::AskHuman, None), None);
        let w = h.after(Transition::Claim, Some("ann")).unwrap();
        assert_eq!(
            w,
            State::WithOperator {
                operator: "ann".into()
            }
        );
        assert_eq!(w.stored(), Handoff::Active);
        let back = w.after(Transition::BackToBot, None).unwrap();
        assert!(back.bot_answers());
        assert_eq!(back.stored(), Handoff::Resolved);
    }

    #[tokio::test]
    async fn test_sweep_ends_idle_sessions_but_not_handoffs() {
        let sessions = Sessions::new(100);
        let get = |k: &str| sessions.get(Platform::Telegram, k, Profile::default).0;
        let a = get("1");
        a.lock().await.conversation_id = Some("conv-a".into());
        let b = get("2");
        b.lock().await.conversation_id = Some("conv-b".into());
        let c = get("3");
        {
            let mut c = c.lock().await;
            c.conversation_id = Some("conv-c".into());
            c.state = State::HandoffRequested;
        }
        let long_ago = Instant::now() - Duration::from_secs(120);
        a.lock().await.last_active = long_ago;
        c.lock().await.last_active = long_ago;
        let held = b.lock().await;
        let ended = sessions.sweep(Duration::from_secs(60));
        drop(held);
        // A customer waiting for a human is not silently given back.
        assert_eq!(ended, vec!["conv-a".to_string()]);
        assert_eq!(sessions.count(), 2);
        assert_eq!(c.lock().await.state, State::HandoffRequested);
    }

    #[tokio::test]
    async fn test_cap_evicts_the_longest_idle() {
        let sessions = Sessions::new(10);
        for i in 0..10 {
            let (s, ended) = sessions.get(Platform::Web, &i.to_string(), Profile::default);
            assert!(ended.is_empty());
            let mut s = s.lock().await;
            s.conversation_id = Some(format!("c{i}"));
            s.last_active = Instant::now() - Duration::from_secs(100 - i);
            if i == 0 {
                s.state = State::HandoffRequested;
            }
        }
        let (_, ended) = sessions.get(Platform::Web, "new", Profile::default);
        // c0 is older but waits for a human; c1 is the longest idle.
        assert_eq!(ended, vec!["c1".to_string()]);
        assert_eq!(sessions.count(), 10);
    }
}
