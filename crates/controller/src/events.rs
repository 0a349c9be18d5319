//! The controller's event log: every action it takes and every health or
//! scaling change, with its reason, written to the state database (under
//! the controller's lease) and sent to live subscribers (the API's
//! server-sent event stream) in the same order, with the same sequence
//! numbers.
//!
//! This module records and reads; it decides nothing.

use std::sync::Arc;

use endstate_clock::SharedClock;
use endstate_exec::Session;
use endstate_state::{NewEvent, StoredEvent};
use serde_json::Value;
use tokio::sync::{broadcast, Mutex};

use crate::view::EventView;

/// How many live events a slow subscriber may fall behind before it is
/// told it lagged (it then resumes from the log by sequence number).
const SUBSCRIBER_BUFFER: usize = 4_096;

/// Writes events to the state and fans them out.
pub struct EventLog {
    session: Arc<Session>,
    clock: SharedClock,
    live: broadcast::Sender<EventView>,
    /// Held across the write and the send, so subscribers see sequence
    /// numbers in increasing order.
    order: Mutex<()>,
}

/// One event to record.
#[derive(Debug, Clone)]
pub struct Record {
    pub group: String,
    pub kind: &'static str,
    pub subject: String,
    pub reason: String,
    pub data: Value,
}

impl Record {
    pub fn new(
        group: impl Into<String>,
        kind: &'static str,
        subject: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            group: group.into(),
            kind,
            subject: subject.into(),
            reason: reason.into(),
            data: Value::Null,
        }
    }

    pub fn with(mut self, data: Value) -> Self {
        self.data = data;
        self
    }
}

/// RFC 3339 (UTC, milliseconds) of a time since the Unix epoch.
pub fn rfc3339_ms(at_ms: i64) -> String {
    let nanos = i128::from(at_ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| at_ms.to_string())
}

pub fn view(event: StoredEvent) -> EventView {
    EventView {
        seq: event.seq,
        at: rfc3339_ms(event.at_ms),
        group: event.group,
        kind: event.kind,
        subject: event.subject,
        reason: event.reason,
        data: event.data,
    }
}

impl EventLog {
    pub fn new(session: Arc<Session>, clock: SharedClock) -> Self {
        let (live, _) = broadcast::channel(SUBSCRIBER_BUFFER);
        Self {
            session,
            clock,
            live,
            order: Mutex::new(()),
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<EventView> {
        self.live.subscribe()
    }

    /// Records `records` in order, then sends them live. A failure to write
    /// (the lease lost, the disk full) is logged; the controller stops
    /// acting on a lost lease elsewhere.
    pub async fn record(&self, records: Vec<Record>) {
        if records.is_empty() {
            return;
        }
        // The time is taken under the lock too: times never go backwards
        // as sequence numbers grow.
        let _order = self.order.lock().await;
        let at_ms = i64::try_from(self.clock.now().as_millis()).unwrap_or(i64::MAX);
        let new: Vec<NewEvent> = records
            .into_iter()
            .map(|r| NewEvent {
                at_ms,
                group: r.group,
                kind: r.kind.to_string(),
                subject: r.subject,
                reason: r.reason,
                data: r.data,
            })
            .collect();
        let seqs = match self.session.append_events(new.clone()).await {
            Ok(seqs) => seqs,
            Err(error) => {
                // Not recorded, so not sent: subscribers resume from the
                // log by sequence number and would never see them there.
                tracing::error!(%error, "recording events failed");
                for event in &new {
                    tracing::warn!(group = %event.group, kind = %event.kind, subject = %event.subject, "not recorded: {}", event.reason);
                }
                return;
            }
        };
        for (event, seq) in new.into_iter().zip(seqs) {
            tracing::info!(group = %event.group, kind = %event.kind, subject = %event.subject, "{}", event.reason);
            // No subscriber is not an error.
            let _ = self.live.send(view(StoredEvent {
                seq,
                at_ms: event.at_ms,
                group: event.group,
                kind: event.kind,
                subject: event.subject,
                reason: event.reason,
                data: event.data,
            }));
        }
    }

    /// One event.
    pub async fn one(&self, record: Record) {
        self.record(vec![record]).await;
    }
}
