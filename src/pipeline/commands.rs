//! The commands (`/start`, `/help`, `/reset`, `/human`, `/bot`,
//! `/feedback`) and ratings from feedback buttons.

use chatforge_channel::{Command, EventSink, Feedback, IncomingMessage};

use super::session::Transition;
use super::texts::TextKey;
use super::{Pipeline, deliver};

impl Pipeline {
    pub(super) async fn on_command(&self, m: IncomingMessage, command: Command, sink: EventSink) {
        if !matches!(command, Command::Feedback { .. }) && !self.admit(&m, &sink) {
            return;
        }
        let session = self.session_of(m.platform, &m.conversation_key);
        let mut s = session.lock().await;
        self.restore_session(&mut s, &m).await;
        let lang = s.lang;
        let text = |key| self.text(lang, key);
        match command {
            Command::Start => deliver::plain(&sink, text(TextKey::Greeting)),
            Command::Help => deliver::plain(&sink, text(TextKey::Help)),
            Command::Invalid { usage, .. } => deliver::notice(
                &sink,
                &self.texts.fill(lang, TextKey::Usage, &[("usage", &usage)]),
            ),
            Command::Unknown { name } => deliver::notice(
                &sink,
                &self
                    .texts
                    .fill(lang, TextKey::UnknownCommand, &[("name", &name)]),
            ),
            Command::Reset => {
                if let Some(old) = s.end() {
                    self.record.end(&old);
                }
                deliver::plain(&sink, text(TextKey::ResetDone));
            }
            Command::Feedback { rating, comment } => match s.last_reply.clone() {
                Some(id) => {
                    let f = Feedback {
                        platform: m.platform,
                        conversation_key: m.conversation_key.clone(),
                        user_key: m.user_key.clone(),
                        message_id: id,
                        rating,
                        comment,
                    };
                    if self.record_feedback(&f).await {
                        deliver::plain(&sink, text(TextKey::FeedbackThanks));
                    }
                }
                None => deliver::notice(&sink, text(TextKey::NothingToRate)),
            },
            Command::Human => {
                let conversation = self.open_conversation(&mut s, &m);
                if let Some(next) = s.state.after(Transition::AskHuman, None) {
                    s.state = next;
                    self.record.handoff(&conversation, s.state.stored());
                    metrics::counter!(crate::http::metrics::HANDOFFS, "platform" => super::platform_name(m.platform)).increment(1);
                    tracing::info!(%conversation, "conversation handed to a human operator");
                    self.feed
                        .announce(super::ConsoleEventKind::Handoff, &conversation);
                }
                let now = chrono::Utc::now();
                match &self.agent_hours {
                    Some(h) if !h.on_duty(now) => {
                        let back = h.back_at(now);
                        let away = self
                            .texts
                            .fill(lang, TextKey::HandoffAway, &[("back", &back)]);
                        deliver::handoff(&sink, &away);
                    }
                    _ => deliver::handoff(&sink, text(TextKey::HandoffRequested)),
                }
            }
            Command::Bot => match s.state.after(Transition::BackToBot, None) {
                Some(next) => {
                    s.state = next;
                    if let Some(conversation) = &s.conversation_id {
                        self.record.handoff(conversation, s.state.stored());
                        self.feed
                            .announce(super::ConsoleEventKind::Resolved, conversation);
                    }
                    deliver::handoff(&sink, text(TextKey::HandoffEnded));
                }
                None => deliver::plain(&sink, text(TextKey::BotHere)),
            },
        }
    }

    /// Stores a rating; `false` (and logged) when the reply is unknown.
    pub(super) async fn record_feedback(&self, f: &Feedback) -> bool {
        let known = self
            .replies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&f.message_id)
            .map(str::to_string);
        // Another replica may have sent the reply.
        let conversation = match (known, &self.store) {
            (Some(c), _) => Some(c),
            (None, Some(store)) if self.shared.contains(&f.platform) => store
                .message_conversation(&f.message_id)
                .await
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "cannot look up the rated reply");
                    None
                }),
            (None, _) => None,
        };
        let Some(conversation) = conversation else {
            tracing::info!(message = %f.message_id, "feedback on a reply this server does not know; ignored");
            return false;
        };
        self.record.feedback(&conversation, f);
        let rating = match f.rating {
            chatforge_channel::Rating::Good => "good",
            chatforge_channel::Rating::Bad => "bad",
        };
        metrics::counter!(crate::http::metrics::FEEDBACK, "platform" => super::platform_name(f.platform), "rating" => rating).increment(1);
        true
    }
}
