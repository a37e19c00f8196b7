//! A scripted [`ChatHandler`] for adapters' end-to-end tests (feature
//! `testing`): it answers like the pipeline would, without a model, so an
//! adapter's rendering is tested against a local fake of its platform.

use std::sync::Mutex;
use std::time::Duration;

use crate::{ChatEvent, ChatHandler, ChatRequest, Command, EventSink, HandlerFuture};

/// The pieces of the reply to `stream`.
pub const STREAMED: [&str; 6] = ["Hello", ", this", " reply", " arrives", " in", " pieces."];

/// How fast the scripted replies come.
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    /// Between the pieces of the reply to `stream`.
    pub stream: Duration,
    /// Between 700-character pieces of the reply to `long`.
    pub long: Duration,
    /// Before an echo (long enough for a typing indicator to show).
    pub echo: Duration,
}

/// Echoes text (`echo: …`), streams `stream` slowly in [`STREAMED`] pieces
/// and `long` as the given long reply, answers an empty message with a
/// notice text, acknowledges commands, goes quiet on feedback. Records
/// every request.
pub struct Scripted {
    pacing: Pacing,
    long: String,
    requests: Mutex<Vec<ChatRequest>>,
    replies: Mutex<u32>,
}

impl Scripted {
    pub fn new(pacing: Pacing, long_reply: String) -> Self {
        Self {
            pacing,
            long: long_reply,
            requests: Mutex::new(Vec::new()),
            replies: Mutex::new(0),
        }
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<ChatRequest> {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn next_id(&self) -> String {
        let mut n = self.replies.lock().unwrap_or_else(|p| p.into_inner());
        *n += 1;
        format!("r{n}")
    }
}

impl ChatHandler for Scripted {
    fn handle(&self, request: ChatRequest, events: EventSink) -> HandlerFuture<'_> {
        Box::pin(async move {
            self.requests
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(request.clone());
            let send = |e| {
                let _ = events.send(e);
            };
            match request {
                ChatRequest::Message(m) => {
                    let id = self.next_id();
                    send(ChatEvent::Typing);
                    let text = match m.text.as_str() {
                        "stream" => {
                            for piece in STREAMED {
                                send(ChatEvent::ReplyChunk {
                                    delta: piece.into(),
                                });
                                tokio::time::sleep(self.pacing.stream).await;
                            }
                            STREAMED.concat()
                        }
                        "long" => {
                            let chars: Vec<char> = self.long.chars().collect();
                            for piece in chars.chunks(700) {
                                send(ChatEvent::ReplyChunk {
                                    delta: piece.iter().collect(),
                                });
                                tokio::time::sleep(self.pacing.long).await;
                            }
                            self.long.clone()
                        }
                        "" => "I can only read text.".to_string(),
                        other => {
                            tokio::time::sleep(self.pacing.echo).await;
                            format!("echo: {other}")
                        }
                    };
                    send(ChatEvent::Reply {
                        text,
                        message_id: id.clone(),
                    });
                    send(ChatEvent::FeedbackRequest { message_id: id });
                }
                ChatRequest::Command { command, .. } => match command {
                    Command::Human => send(ChatEvent::Handoff {
                        notice: "A human will take over.".into(),
                    }),
                    other => send(ChatEvent::Reply {
                        text: format!("command {other:?}"),
                        message_id: self.next_id(),
                    }),
                },
                ChatRequest::Feedback(_) => {}
            }
        })
    }
}
