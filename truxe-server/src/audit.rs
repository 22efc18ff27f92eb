//! Audit events written off the request path: a bounded queue drained by one background writer
//! that stores them in batches, one transaction per batch.
//!
//! Only events that need not be atomic with a change go through here (an issued machine token);
//! an admin change records its event inside its own transaction with `store::audit::record`.
//! Nothing is dropped: when the queue is full or closed, the caller writes the event itself.

use std::time::Duration;

use diesel::prelude::*;
use tokio::sync::{Mutex, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::store::audit::{self, AuditEvent};
use crate::store::{self, AnyConnection, Pool, StoreError};

/// Events waiting for the writer at most; beyond it callers write synchronously.
pub const QUEUE_CAPACITY: usize = 10_000;
/// Rows per transaction at most.
pub const MAX_BATCH: usize = 500;
/// How long a graceful shutdown waits for the queue to be written.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

/// A retried batch waits this long at first, doubling up to [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(100);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

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

impl AuditLog {
    /// Starts the writer; must be called inside the tokio runtime.
    pub fn start(pool: Pool) -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let (held, hold_watch) = watch::channel(false);
        let writer = tokio::spawn(write_queue(pool.clone(), receiver, hold_watch));
        Self { sender, pool, writer: Mutex::new(Some(writer)), held }
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

    /// Waits until every event queued before this call is in the database (tests, shutdown).
    pub async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.sender.send(Message::Flush(done)).await.is_ok() {
            // An error means the writer ended, and it ends only after writing its queue.
            let _ = written.await;
        }
    }

    /// Stops the queue (later events are written by their callers) and waits, at most `wait`,
    /// for the writer to store what was queued.
    pub async fn close(&self, wait: Duration) {
        let Some(writer) = self.writer.lock().await.take() else { return };
        // Closing overrides a hold: what is queued is written now.
        self.held.send_replace(false);
        let closed = async {
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

/// The writer: takes what is queued (up to [`MAX_BATCH`]), writes it in one transaction,
/// retrying while the database refuses, and answers flushes once the events before them are in.
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

fn write_batch(conn: &mut AnyConnection, batch: &[(AuditEvent, i64)]) -> Result<(), StoreError> {
    // Every statement is an INSERT, so on SQLite the transaction takes the write lock with its
    // first statement (waiting on `busy_timeout`) and never has to upgrade a read lock.
    conn.transaction(|conn| batch.iter().try_for_each(|(event, occurred_at)| audit::record(conn, event, *occurred_at)))
}
