//! The bounded hand-off between whoever learns a message is ready (the WebSocket reader, the
//! catch-up sweep) and the blocking sender threads.
//!
//! Invariants: at most `capacity` ids wait here, so memory does not grow with a backlog; a
//! producer facing a full queue waits (async or blocking), nothing is dropped; an id already
//! waiting is not queued twice (events and sweeps often name the same message), which saves a
//! claim request. Closing the queue wakes every producer and consumer.
//!
//! An id is marked "waiting" from the moment a producer starts pushing it until a sender pops it.
//! The mark is held by a [`Reservation`] that removes it again if the push does not complete: a
//! push future dropped while it waits for room (the Realtime reader's socket died meanwhile), or
//! a closed queue. So every id handed towards the queue either reaches a sender or can be handed
//! again; a mark never outlives the attempt that made it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::message::MessageId;
use crate::sync::Locked;

/// Why an id was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum PushError {
    /// The queue was closed (shutdown): stop producing.
    Closed,
}

/// A cloneable handle on the queue.
#[derive(Clone)]
pub struct WorkQueue {
    /// Ids with the time they were queued (the start of the send-latency measurement).
    tx: smol::channel::Sender<(MessageId, Instant)>,
    rx: smol::channel::Receiver<(MessageId, Instant)>,
    /// Ids currently waiting in the channel (not those being processed).
    waiting: Arc<Mutex<HashSet<MessageId>>>,
}

/// What a push did.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    /// The id is now waiting for a sender thread.
    Queued,
    /// The id was already waiting; nothing to do.
    AlreadyWaiting,
}

impl WorkQueue {
    /// A queue holding at most `capacity` ids.
    pub fn new(capacity: usize) -> WorkQueue {
        let (tx, rx) = smol::channel::bounded(capacity.max(1));
        WorkQueue {
            tx,
            rx,
            waiting: Arc::default(),
        }
    }

    /// Mark `id` as waiting; `None` when it already is (another push holds the mark, or the id
    /// sits in the channel).
    fn reserve(&self, id: &MessageId) -> Option<Reservation<'_>> {
        self.waiting
            .locked()
            .insert(id.clone())
            .then(|| Reservation {
                queue: self,
                id: Some(id.clone()),
            })
    }

    fn unreserve(&self, id: &MessageId) {
        self.waiting.locked().remove(id);
    }

    /// Queue `id`, waiting (asynchronously) while the queue is full.
    /// Dropping the returned future before it completes gives the id's mark back.
    pub async fn push(&self, id: MessageId) -> Result<Pushed, PushError> {
        let Some(reservation) = self.reserve(&id) else {
            return Ok(Pushed::AlreadyWaiting);
        };
        match self.tx.send((id, Instant::now())).await {
            Ok(()) => {
                reservation.keep();
                Ok(Pushed::Queued)
            }
            Err(_) => Err(PushError::Closed),
        }
    }

    /// Queue `id`, blocking the thread while the queue is full.
    pub fn push_blocking(&self, id: MessageId) -> Result<Pushed, PushError> {
        let Some(reservation) = self.reserve(&id) else {
            return Ok(Pushed::AlreadyWaiting);
        };
        match self.tx.send_blocking((id, Instant::now())) {
            Ok(()) => {
                reservation.keep();
                Ok(Pushed::Queued)
            }
            Err(_) => Err(PushError::Closed),
        }
    }

    /// Take the next id and when it was queued, blocking; `None` once the queue is closed
    /// (waiting ids are abandoned: their rows are still `queued_for_send` and the next sweep,
    /// here or elsewhere, finds them).
    pub fn pop_blocking(&self) -> Option<(MessageId, Instant)> {
        if self.rx.is_closed() {
            return None;
        }
        let (id, at) = self.rx.recv_blocking().ok()?;
        self.unreserve(&id);
        Some((id, at))
    }

    /// Like [`WorkQueue::pop_blocking`], but gives up after `wait` with [`Popped::Idle`].
    pub fn pop_timeout(&self, wait: Duration) -> Popped {
        if self.rx.is_closed() && self.rx.is_empty() {
            return Popped::Closed;
        }
        // Busy: take what is there without arming a timer.
        if let Ok((id, at)) = self.rx.try_recv() {
            self.unreserve(&id);
            return Popped::Id(id, at);
        }
        let next = smol::block_on(futures_lite::future::or(
            async { Some(self.rx.recv().await) },
            async {
                smol::Timer::after(wait).await;
                None
            },
        ));
        match next {
            Some(Ok((id, at))) => {
                self.unreserve(&id);
                Popped::Id(id, at)
            }
            Some(Err(_)) => Popped::Closed,
            None => Popped::Idle,
        }
    }

    /// Stop the queue: pushes fail, pops return `None`.
    pub fn close(&self) {
        self.tx.close();
    }

    /// How many ids are waiting.
    pub fn len(&self) -> usize {
        self.tx.len()
    }

    /// Whether no id is waiting.
    pub fn is_empty(&self) -> bool {
        self.tx.is_empty()
    }

    /// Whether there is no room for another id (producers wait).
    pub fn is_full(&self) -> bool {
        self.tx.is_full()
    }
}

/// What [`WorkQueue::pop_timeout`] got.
#[derive(Debug)]
pub enum Popped {
    /// An id, and when it was queued.
    Id(MessageId, Instant),
    /// Nothing came within the wait.
    Idle,
    /// The queue is closed and empty.
    Closed,
}

/// The "waiting" mark of one id while its push is under way. Dropped without [`keep`], it
/// removes the mark, so an abandoned push leaves the id free to be handed again.
///
/// [`keep`]: Reservation::keep
struct Reservation<'a> {
    queue: &'a WorkQueue,
    /// `None` once kept.
    id: Option<MessageId>,
}

impl Reservation<'_> {
    /// The id is in the channel: the mark stays until a sender pops it.
    fn keep(mut self) {
        self.id = None;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.queue.unreserve(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn id(n: u32) -> MessageId {
        MessageId::parse(&format!("00000000-0000-4000-8000-{n:012}")).unwrap()
    }

    #[test]
    fn dedups_waiting_ids_but_not_popped_ones() {
        let q = WorkQueue::new(4);
        assert_eq!(q.push_blocking(id(1)), Ok(Pushed::Queued));
        assert_eq!(q.push_blocking(id(1)), Ok(Pushed::AlreadyWaiting));
        assert_eq!(q.len(), 1);
        assert_eq!(q.pop_blocking().map(|(id, _)| id), Some(id(1)));
        assert_eq!(
            q.push_blocking(id(1)),
            Ok(Pushed::Queued),
            "popped ids may come again"
        );
    }

    #[test]
    fn a_full_queue_makes_producers_wait_not_drop() {
        let q = WorkQueue::new(2);
        q.push_blocking(id(1)).unwrap();
        q.push_blocking(id(2)).unwrap();
        let producer = {
            let q = q.clone();
            std::thread::spawn(move || q.push_blocking(id(3)))
        };
        std::thread::sleep(Duration::from_millis(100));
        assert!(!producer.is_finished(), "the third push must wait for room");
        assert_eq!(q.pop_blocking().map(|(id, _)| id), Some(id(1)));
        assert_eq!(producer.join().unwrap(), Ok(Pushed::Queued));
        assert_eq!(q.pop_blocking().map(|(id, _)| id), Some(id(2)));
        assert_eq!(q.pop_blocking().map(|(id, _)| id), Some(id(3)));
    }

    #[test]
    fn an_abandoned_push_gives_the_id_back() {
        use futures_lite::future;
        let q = WorkQueue::new(1);
        q.push_blocking(id(1)).unwrap();
        // The queue is full: this push waits; dropping it (a dead socket's reader) abandons it.
        {
            let mut push = std::pin::pin!(q.push(id(2)));
            assert!(future::block_on(future::poll_once(push.as_mut())).is_none());
        }
        assert_eq!(q.pop_blocking().map(|(id, _)| id), Some(id(1)));
        assert_eq!(
            q.push_blocking(id(2)),
            Ok(Pushed::Queued),
            "a later sweep or event can hand id 2 again"
        );
        assert_eq!(q.pop_blocking().map(|(id, _)| id), Some(id(2)));
    }

    #[test]
    fn close_wakes_everyone() {
        let q = WorkQueue::new(1);
        q.push_blocking(id(1)).unwrap();
        let producer = {
            let q = q.clone();
            std::thread::spawn(move || q.push_blocking(id(2)))
        };
        std::thread::sleep(Duration::from_millis(50));
        q.close();
        assert_eq!(producer.join().unwrap(), Err(PushError::Closed));
        assert_eq!(q.pop_blocking().map(|(id, _)| id), None);
        assert_eq!(smol::block_on(q.push(id(3))), Err(PushError::Closed));
        assert_eq!(
            q.push_blocking(id(2)),
            Err(PushError::Closed),
            "id 2 was un-reserved"
        );
    }
}
