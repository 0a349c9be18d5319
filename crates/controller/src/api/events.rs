//! `GET /v1/events/stream`: the controller's events as server-sent events.
//!
//! The stream subscribes to live events *before* reading the recorded ones,
//! sends the recorded ones after the starting point page by page, then the
//! live ones, skipping every event whose sequence number is not above the
//! last one sent: no gap and no duplicate at the switch-over. A lagged
//! subscription ends the stream with `event: lagged` (the client reconnects
//! with `Last-Event-ID`); so does the server's shutdown, with no event, so
//! that graceful shutdown never waits on an open stream. Not here: routing,
//! authentication.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::response::sse::Event;
use futures_util::Stream;
use tokio::sync::{broadcast, watch};

use crate::view::{ApiError, ControllerApi, EventView};

/// Recorded events read per call while catching up.
pub const HISTORY_PAGE: usize = 500;

/// Where a stream starts and what it shows.
pub struct Follow {
    pub api: Arc<dyn ControllerApi>,
    pub group: Option<String>,
    /// Send events with `seq > after`.
    pub after: i64,
    pub shutdown: watch::Receiver<bool>,
}

struct State {
    api: Arc<dyn ControllerApi>,
    group: Option<String>,
    last_sent: i64,
    live: broadcast::Receiver<EventView>,
    backlog: VecDeque<EventView>,
    history_done: bool,
    shutdown: watch::Receiver<bool>,
    finished: bool,
}

/// The stream of SSE events for `follow`. Subscribes at once.
pub fn stream(follow: Follow) -> impl Stream<Item = Result<Event, Infallible>> + Send {
    let state = State {
        live: follow.api.subscribe(),
        api: follow.api,
        group: follow.group,
        last_sent: follow.after,
        backlog: VecDeque::new(),
        history_done: false,
        shutdown: follow.shutdown,
        finished: false,
    };
    futures_util::stream::unfold(state, |mut state| async move {
        let event = state.next().await?;
        Some((Ok(event), state))
    })
}

impl State {
    async fn next(&mut self) -> Option<Event> {
        loop {
            if self.finished || *self.shutdown.borrow() {
                return None;
            }
            if let Some(event) = self.backlog.pop_front() {
                if event.seq > self.last_sent {
                    self.last_sent = event.seq;
                    return Some(sse_event(&event));
                }
                continue;
            }
            if !self.history_done {
                match self.read_history().await {
                    Ok(page) => {
                        self.history_done = page.len() < HISTORY_PAGE;
                        self.backlog.extend(page);
                        continue;
                    }
                    Err(e) => {
                        self.finished = true;
                        tracing::error!(error = %e, "reading recorded events for a stream");
                        return Some(
                            Event::default()
                                .event("error")
                                .data(error_json("reading recorded events failed")),
                        );
                    }
                }
            }
            let received = tokio::select! {
                biased;
                () = shutdown_signalled(&mut self.shutdown) => return None,
                received = self.live.recv() => received,
            };
            match received {
                Ok(event) => {
                    let wanted = self.group.as_deref().is_none_or(|g| g == event.group);
                    if wanted && event.seq > self.last_sent {
                        self.last_sent = event.seq;
                        return Some(sse_event(&event));
                    }
                }
                Err(broadcast::error::RecvError::Lagged(skipped)) => {
                    self.finished = true;
                    let data = serde_json::json!({
                        "skipped": skipped,
                        "last_seq": self.last_sent,
                    });
                    return Some(Event::default().event("lagged").data(data.to_string()));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    async fn read_history(&self) -> Result<Vec<EventView>, ApiError> {
        let api = Arc::clone(&self.api);
        let group = self.group.clone();
        let after = self.last_sent;
        tokio::task::spawn_blocking(move || api.events_after(after, HISTORY_PAGE, group.as_deref()))
            .await
            .map_err(|e| ApiError::Internal(format!("events_after did not finish: {e}")))?
    }
}

/// Resolves once shutdown is signalled; never if the sender is gone without
/// signalling (a router built without [`super::serve`]).
pub async fn shutdown_signalled(shutdown: &mut watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        if shutdown.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

fn sse_event(event: &EventView) -> Event {
    // SSE field values cannot hold line breaks (axum panics on them); kinds
    // are identifiers, so this only guards against a malformed one.
    let kind: String = event
        .kind
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    let data = serde_json::to_string(event)
        .unwrap_or_else(|e| error_json(&format!("event {} could not be encoded: {e}", event.seq)));
    Event::default()
        .id(event.seq.to_string())
        .event(kind)
        .data(data)
}

fn error_json(message: &str) -> String {
    serde_json::json!({ "error": message }).to_string()
}
