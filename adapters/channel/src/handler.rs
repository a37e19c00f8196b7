//! The [`ChatHandler`] trait and the event queue between handler and adapter.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::{ChatEvent, ChatRequest};

/// The future [`ChatHandler::handle`] returns. Boxed so that the trait stays
/// object-safe: the pipeline hands adapters an `Arc<dyn ChatHandler>`.
pub type HandlerFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Answers chat requests. Implemented by chatforge's pipeline (and by
/// scripted fakes in adapter tests).
///
/// `handle` pushes events into `events` as they happen and returns when the
/// request is done; dropping the sink ends the adapter's [`EventStream`].
/// Failures are reported to the user as [`ChatEvent::Error`] and logged by
/// the handler, so there is no error to return. If the sink reports
/// [`SinkClosed`], the adapter is gone and the handler may stop early.
pub trait ChatHandler: Send + Sync {
    fn handle(&self, request: ChatRequest, events: EventSink) -> HandlerFuture<'_>;
}

impl<T: ChatHandler + ?Sized> ChatHandler for Arc<T> {
    fn handle(&self, request: ChatRequest, events: EventSink) -> HandlerFuture<'_> {
        (**self).handle(request, events)
    }
}

/// The adapter stopped reading this request's events (it shut down or the
/// request was abandoned).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the adapter no longer reads this conversation's events")]
pub struct SinkClosed;

/// Where a handler sends the events of one request.
#[derive(Debug, Clone)]
pub struct EventSink {
    tx: mpsc::UnboundedSender<ChatEvent>,
}

impl EventSink {
    /// Queues `event` for the adapter; never waits.
    pub fn send(&self, event: ChatEvent) -> Result<(), SinkClosed> {
        self.tx.send(event).map_err(|_| SinkClosed)
    }

    /// Whether the adapter has stopped reading.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// The adapter's end: the events of one request, in order.
#[derive(Debug)]
pub struct EventStream {
    rx: mpsc::UnboundedReceiver<ChatEvent>,
}

impl EventStream {
    /// The next event; `None` once the handler finished (dropped every sink)
    /// and all events were read.
    pub async fn next(&mut self) -> Option<ChatEvent> {
        self.rx.recv().await
    }

    /// The next event if one is already queued, without waiting.
    pub fn try_next(&mut self) -> Option<ChatEvent> {
        self.rx.try_recv().ok()
    }
}

/// A connected sink and stream for one request.
pub fn event_channel() -> (EventSink, EventStream) {
    let (tx, rx) = mpsc::unbounded_channel();
    (EventSink { tx }, EventStream { rx })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{IncomingMessage, Platform};

    struct Echo;

    impl ChatHandler for Echo {
        fn handle(&self, request: ChatRequest, events: EventSink) -> HandlerFuture<'_> {
            Box::pin(async move {
                let ChatRequest::Message(m) = request else {
                    return;
                };
                let _ = events.send(ChatEvent::Typing);
                for word in m.text.split_inclusive(' ') {
                    let _ = events.send(ChatEvent::ReplyChunk {
                        delta: word.to_string(),
                    });
                }
                let _ = events.send(ChatEvent::Reply {
                    text: m.text,
                    message_id: "r1".into(),
                });
            })
        }
    }

    #[tokio::test]
    async fn test_events_arrive_in_order_and_stream_ends() {
        let handler: Arc<dyn ChatHandler> = Arc::new(Echo);
        let (sink, mut stream) = event_channel();
        let request = ChatRequest::Message(IncomingMessage {
            platform: Platform::Terminal,
            conversation_key: "c".into(),
            user_key: "u".into(),
            text: "hello there world".into(),
            reply_to: None,
            is_direct: true,
        });
        handler.handle(request, sink).await;
        let mut events = Vec::new();
        while let Some(e) = stream.next().await {
            events.push(e);
        }
        assert_eq!(events.len(), 5);
        assert_eq!(events[0], ChatEvent::Typing);
        let streamed: String = events.iter().filter_map(ChatEvent::delta).collect();
        assert_eq!(streamed, "hello there world");
        assert!(matches!(&events[4], ChatEvent::Reply { message_id, .. } if message_id == "r1"));
    }

    #[test]
    fn test_send_after_stream_dropped_is_closed() {
        let (sink, stream) = event_channel();
        assert!(!sink.is_closed());
        drop(stream);
        assert!(sink.is_closed());
        assert_eq!(sink.send(ChatEvent::Typing), Err(SinkClosed));
    }
}
