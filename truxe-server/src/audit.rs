//! Audit events written off the request path: a bounded queue drained by one background writer
//! that appends them to the chain in batches, one transaction (and one chain lock) per batch.
//!
//! What goes through here: the events of the token endpoint's hot path (issued and refreshed
//! tokens) and the ones an attacker can flood (failed client authentication, rate-limit
//! refusals, unusable sign-in links, refused authorization requests). Everything else (admin
//! changes, sign-ins, consents, revocations) is written inside the transaction of its change with
//! `store::audit::record`, so that it exists exactly when the change does.
//!
//! Nothing is dropped: when the queue is full the caller waits for room (async callers) or
//! writes the event itself (blocking callers), and a closed queue is written by the caller.
//! Floods are coalesced ([`Coalescer`]): the first event of a kind from one source in a minute is
//! written at once, the rest are counted and written as one summary entry when the minute ends.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::store::audit::{self, AuditEvent};
use crate::store::{self, AnyConnection, Pool, StoreError};

/// Events waiting for the writer at most; beyond it callers wait or write themselves.
pub const QUEUE_CAPACITY: usize = 10_000;
/// Rows per transaction at most.
pub const MAX_BATCH: usize = 500;
/// How long a graceful shutdown waits for the queue to be written.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);
/// Coalesced events of one kind and source are summarized per this window.
pub const COALESCE_WINDOW: Duration = Duration::from_secs(60);
/// Sources coalesced at once at most; events of further sources are written one by one.
pub const MAX_COALESCED_SOURCES: usize = 10_000;

/// A retried batch waits this long at first, doubling up to [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(100);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);
/// How often ended coalescing windows are looked for.
const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

// Events are the queue's traffic and stay unboxed (no allocation per token); flushes are rare.
#[allow(clippy::large_enum_variant)]
enum Message {
    Event {
        event: AuditEvent,
        occurred_at: i64,
    },
    /// Answered once everything queued before it is written.
    Flush(oneshot::Sender<()>),
    /// Stop taking events, write what is queued, then end.
    Close,
}

pub struct AuditLog {
    sender: mpsc::Sender<Message>,
    pool: Pool,
    writer: Mutex<Option<JoinHandle<()>>>,
    sweeper: JoinHandle<()>,
    coalescer: std::sync::Arc<Coalescer>,
    /// While true the writer holds its batches back ([`AuditLog::hold`]); closing releases it.
    held: watch::Sender<bool>,
}

/// Holds the writer back while it lives (see [`AuditLog::hold`]).
pub struct AuditHold<'a>(&'a watch::Sender<bool>);

impl Drop for AuditHold<'_> {
    fn drop(&mut self) {
        self.0.send_replace(false);
    }
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").field("queued", &(QUEUE_CAPACITY - self.sender.capacity())).finish()
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.sweeper.abort();
    }
}

impl AuditLog {
    /// Starts the writer; must be called inside the tokio runtime.
    pub fn start(pool: Pool) -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let (held, hold_watch) = watch::channel(false);
        let writer = tokio::spawn(write_queue(pool.clone(), receiver, hold_watch));
        let coalescer = std::sync::Arc::new(Coalescer::default());
        let sweeper = tokio::spawn(sweep(coalescer.clone(), sender.clone()));
        Self { sender, pool, writer: Mutex::new(Some(writer)), sweeper, coalescer, held }
    }

    /// Keeps queued events unwritten until the guard is dropped or the log is closed: lets a
    /// test prove that a graceful shutdown writes what is still queued.
    pub fn hold(&self) -> AuditHold<'_> {
        self.held.send_replace(true);
        AuditHold(&self.held)
    }

    /// Queues `event` (that happened at `occurred_at`, Unix seconds). When the queue is full or
    /// closed it is written here instead, which blocks: call this on a blocking thread.
    pub fn record(&self, event: AuditEvent, occurred_at: i64) -> Result<(), StoreError> {
        let message = Message::Event { event, occurred_at };
        match self.sender.try_send(message) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(message) | mpsc::error::TrySendError::Closed(message)) => {
                let Message::Event { event, occurred_at } = message else { return Ok(()) };
                tracing::debug!(action = %event.action, "audit queue full or closed: writing the event directly");
                audit::record(&mut *self.pool.get()?, &event, occurred_at)
            }
        }
    }

    /// [`AuditLog::record`] for async code: never blocks a worker thread. A full queue is waited
    /// for (back-pressure on whoever floods); a closed one is written on a blocking thread.
    pub async fn record_async(&self, event: AuditEvent, occurred_at: i64) -> Result<(), StoreError> {
        match self.sender.send(Message::Event { event, occurred_at }).await {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendError(message)) => {
                let Message::Event { event, occurred_at } = message else { return Ok(()) };
                store::run(&self.pool, move |conn| audit::record(conn, &event, occurred_at)).await
            }
        }
    }

    /// Records `event` unless one with the same `source` (e.g. `rate_limit|IP|route`) was
    /// recorded within the last [`COALESCE_WINDOW`]; those are counted and summarized when the
    /// window ends. Blocking, like [`AuditLog::record`].
    pub fn record_coalesced(&self, source: String, event: AuditEvent, occurred_at: i64) -> Result<(), StoreError> {
        // Closed: no sweeper would ever write the counts, so every event is written.
        if self.sender.is_closed() {
            return self.record(event, occurred_at);
        }
        for (event, at) in self.coalescer.admit(source, event, occurred_at, Instant::now()) {
            self.record(event, at)?;
        }
        Ok(())
    }

    /// [`AuditLog::record_coalesced`] for async code.
    pub async fn record_coalesced_async(
        &self,
        source: String,
        event: AuditEvent,
        occurred_at: i64,
    ) -> Result<(), StoreError> {
        if self.sender.is_closed() {
            return self.record_async(event, occurred_at).await;
        }
        for (event, at) in self.coalescer.admit(source, event, occurred_at, Instant::now()) {
            self.record_async(event, at).await?;
        }
        Ok(())
    }

    /// Waits until every event queued before this call is in the database (tests, shutdown).
    /// Counts of coalescing windows still open stay counted.
    pub async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.sender.send(Message::Flush(done)).await.is_ok() {
            // An error means the writer ended, and it ends only after writing its queue.
            let _ = written.await;
        }
    }

    /// Stops the queue (later events are written by their callers) and waits, at most `wait`,
    /// for the writer to store what was queued, the summaries of open coalescing windows too.
    pub async fn close(&self, wait: Duration) {
        let Some(writer) = self.writer.lock().await.take() else { return };
        self.sweeper.abort();
        // Closing overrides a hold: what is queued is written now.
        self.held.send_replace(false);
        let closed = async {
            for (event, occurred_at) in self.coalescer.drain() {
                let _ = self.sender.send(Message::Event { event, occurred_at }).await;
            }
            let _ = self.sender.send(Message::Close).await;
            let _ = writer.await;
        };
        if tokio::time::timeout(wait, closed).await.is_err() {
            tracing::error!(
                queued = QUEUE_CAPACITY - self.sender.capacity(),
                "the audit writer did not finish within {wait:?}; queued audit events are lost"
            );
        }
    }
}

/// Every [`SWEEP_INTERVAL`], queues the summaries of coalescing windows that ended.
async fn sweep(coalescer: std::sync::Arc<Coalescer>, sender: mpsc::Sender<Message>) {
    let mut interval = tokio::time::interval(SWEEP_INTERVAL);
    loop {
        interval.tick().await;
        for (event, occurred_at) in coalescer.ended(Instant::now()) {
            if sender.send(Message::Event { event, occurred_at }).await.is_err() {
                return;
            }
        }
    }
}

/// The writer: takes what is queued (up to [`MAX_BATCH`]), appends it in one transaction,
/// retrying while the database refuses, logs it once committed, and answers flushes once the
/// events before them are in.
async fn write_queue(pool: Pool, mut receiver: mpsc::Receiver<Message>, mut held: watch::Receiver<bool>) {
    let mut messages = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut messages, MAX_BATCH).await > 0 {
        // An error means the log was dropped: nothing holds the writer any more.
        let _ = held.wait_for(|held| !held).await;
        let mut batch = Vec::with_capacity(messages.len());
        let mut flushes = Vec::new();
        for message in messages.drain(..) {
            match message {
                Message::Event { event, occurred_at } => batch.push((event, occurred_at)),
                Message::Flush(done) => flushes.push(done),
                // Already queued messages are still received; `recv_many` returns 0 after them.
                Message::Close => receiver.close(),
            }
        }
        write_with_retries(&pool, batch).await;
        for done in flushes {
            let _ = done.send(());
        }
    }
}

async fn write_with_retries(pool: &Pool, batch: Vec<(AuditEvent, i64)>) {
    if batch.is_empty() {
        return;
    }
    let rows = batch.len();
    let batch = std::sync::Arc::new(batch);
    let mut delay = FIRST_RETRY_DELAY;
    loop {
        let attempt = batch.clone();
        match store::run(pool, move |conn| write_batch(conn, &attempt)).await {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(%error, rows, "writing audit events failed; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RETRY_DELAY);
            }
        }
    }
}

/// One batch: appended (and committed) together, then logged.
pub fn write_batch(conn: &mut AnyConnection, batch: &[(AuditEvent, i64)]) -> Result<(), StoreError> {
    for entry in audit::append(conn, batch)? {
        audit::log(&entry);
    }
    Ok(())
}

/// Counts repeats of flood-prone events per source (see [`AuditLog::record_coalesced`]).
#[derive(Debug, Default)]
pub struct Coalescer {
    windows: std::sync::Mutex<HashMap<String, Window>>,
}

#[derive(Debug)]
struct Window {
    ends: Instant,
    /// The event that opened the window: the summary repeats its fields.
    first: AuditEvent,
    first_at: i64,
    last_at: i64,
    repeated: u64,
}

impl Window {
    /// The summary entry of the events counted in the window, if any were.
    fn summary(self) -> Option<(AuditEvent, i64)> {
        if self.repeated == 0 {
            return None;
        }
        let mut event = self.first;
        // One entry stands for many requests: no single request id applies.
        event.request_id = None;
        let mut details = match event.details {
            serde_json::Value::Object(map) => map,
            serde_json::Value::Null => serde_json::Map::new(),
            other => serde_json::Map::from_iter([("details".to_string(), other)]),
        };
        details.insert(
            "coalesced".into(),
            serde_json::json!({
                "count": self.repeated,
                "first_at": self.first_at,
                "last_at": self.last_at,
                "window_secs": COALESCE_WINDOW.as_secs(),
            }),
        );
        event.details = serde_json::Value::Object(details);
        Some((event, self.last_at))
    }
}

impl Coalescer {
    /// The events to write now for `event` from `source`: itself when it opens a window (after
    /// the summary of the window it replaces), nothing when it is counted in an open one.
    pub fn admit(&self, source: String, event: AuditEvent, occurred_at: i64, clock: Instant) -> Vec<(AuditEvent, i64)> {
        let mut windows = self.windows.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(window) = windows.get_mut(&source)
            && window.ends > clock
        {
            window.repeated += 1;
            window.last_at = window.last_at.max(occurred_at);
            return Vec::new();
        }
        let mut out = Vec::with_capacity(2);
        if let Some(summary) = windows.remove(&source).and_then(Window::summary) {
            out.push(summary);
        }
        if windows.len() < MAX_COALESCED_SOURCES {
            windows.insert(
                source,
                Window {
                    ends: clock + COALESCE_WINDOW,
                    first: event.clone(),
                    first_at: occurred_at,
                    last_at: occurred_at,
                    repeated: 0,
                },
            );
        }
        out.push((event, occurred_at));
        out
    }

    /// Closes the windows that ended by `clock`; returns their summaries.
    pub fn ended(&self, clock: Instant) -> Vec<(AuditEvent, i64)> {
        let mut windows = self.windows.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let ended: Vec<String> = windows.iter().filter(|(_, w)| w.ends <= clock).map(|(k, _)| k.clone()).collect();
        ended.into_iter().filter_map(|source| windows.remove(&source)).filter_map(Window::summary).collect()
    }

    /// Closes every window (shutdown); returns their summaries.
    pub fn drain(&self) -> Vec<(AuditEvent, i64)> {
        let mut windows = self.windows.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        windows.drain().filter_map(|(_, window)| window.summary()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::audit::AuditAction;

    fn refusal(ip: &str) -> AuditEvent {
        AuditEvent::new(AuditAction::RateLimitExceeded, "anonymous")
            .details(serde_json::json!({ "route": "token" }))
            .failed()
            .from_request(&crate::model::request::RequestMeta::new(Some(ip.into()), Some("r1".into()), None))
    }

    #[test]
    fn the_first_event_of_a_window_is_written_and_the_rest_summarized() {
        let coalescer = Coalescer::default();
        let t0 = Instant::now();
        let first = coalescer.admit("a".into(), refusal("192.0.2.1"), 100, t0);
        assert_eq!(first, vec![(refusal("192.0.2.1"), 100)]);
        for i in 1..=4 {
            assert!(coalescer.admit("a".into(), refusal("192.0.2.1"), 100 + i, t0 + Duration::from_secs(1)).is_empty());
        }
        // Another source has its own window.
        assert_eq!(coalescer.admit("b".into(), refusal("192.0.2.2"), 101, t0).len(), 1);
        assert!(coalescer.ended(t0 + Duration::from_secs(59)).is_empty(), "still open");

        let summaries = coalescer.ended(t0 + COALESCE_WINDOW);
        assert_eq!(summaries.len(), 1, "only the window that counted repeats: {summaries:?}");
        let (summary, at) = &summaries[0];
        assert_eq!(*at, 104);
        assert_eq!(summary.request_id, None);
        assert_eq!(summary.ip.as_deref(), Some("192.0.2.1"));
        assert_eq!(summary.details["route"], "token");
        assert_eq!(summary.details["coalesced"]["count"], 4);
        assert_eq!(summary.details["coalesced"]["first_at"], 100);
        assert_eq!(summary.details["coalesced"]["last_at"], 104);
        assert!(coalescer.drain().is_empty(), "b counted nothing");
    }

    #[test]
    fn a_new_window_first_writes_the_summary_of_the_old_one() {
        let coalescer = Coalescer::default();
        let t0 = Instant::now();
        coalescer.admit("a".into(), refusal("192.0.2.1"), 100, t0);
        coalescer.admit("a".into(), refusal("192.0.2.1"), 101, t0);
        let next = coalescer.admit("a".into(), refusal("192.0.2.1"), 200, t0 + COALESCE_WINDOW);
        assert_eq!(next.len(), 2, "{next:?}");
        assert_eq!(next[0].0.details["coalesced"]["count"], 1);
        assert_eq!(next[1], (refusal("192.0.2.1"), 200));
        coalescer.admit("a".into(), refusal("192.0.2.1"), 201, t0 + COALESCE_WINDOW);
        let drained = coalescer.drain();
        assert_eq!(drained.len(), 1);
        assert_eq!(drained[0].0.details["coalesced"]["count"], 1);
    }

    #[test]
    fn beyond_the_source_limit_events_are_written_one_by_one() {
        let coalescer = Coalescer::default();
        let t0 = Instant::now();
        for i in 0..MAX_COALESCED_SOURCES {
            coalescer.admit(format!("s{i}"), refusal("192.0.2.1"), 1, t0);
        }
        for _ in 0..3 {
            assert_eq!(coalescer.admit("one more".into(), refusal("192.0.2.9"), 2, t0).len(), 1);
        }
    }
}
