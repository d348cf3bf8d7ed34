//! The bounded hand-off between whoever learns a message is ready (the WebSocket reader, the
//! catch-up sweep) and the blocking sender threads.
//!
//! Invariants: at most `capacity` ids wait here, so memory does not grow with a backlog; a
//! producer facing a full queue waits (async or blocking), nothing is dropped; an id already
//! waiting is not queued twice (events and sweeps often name the same message), which saves a
//! claim request. Closing the queue wakes every producer and consumer.
//!
//! An id is marked "waiting" from the moment a producer starts pushing it until a sender pops it.
//! The mark is held by a `Reservation` that removes it again if the push does not complete: a
//! push future dropped while it waits for room (the Realtime reader's socket died meanwhile), or
//! a closed queue. So every id handed towards the queue either reaches a sender or can be handed
//! again; a mark never outlives the attempt that made it.
//!
//! In scaled mode a batch claim hands the rows it claimed beyond its own to other sender threads
//! through a second kind of item, [`ClaimedWork`]: a row already `sending` under a lease, held in
//! [`crate::delivery::in_flight`]. Claimed work is taken before any id (its lease is running), is
//! never refused or dropped by a full or closed queue, and outlives [`WorkQueue::close`]: pops go
//! on returning it until none is left, so the senders release each row with a fenced write
//! (nothing is waiting there in the default mode).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::delivery::in_flight::IdGuard;
use crate::delivery::lease::Lease;
use crate::message::{ClaimedMessage, MessageId};
use crate::sync::Locked;

/// Why an id was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum PushError {
    /// The queue was closed (shutdown): stop producing.
    Closed,
}

/// A row a batch claim took for another sender thread: already `sending` under `lease`, and
/// held here (`held`) from the claim on, so a hand-over at shutdown finds it even while it waits.
pub struct ClaimedWork {
    /// The claimed row.
    pub message: ClaimedMessage,
    /// The claim's lease (its stamp fences every write).
    pub lease: Lease,
    /// This instance's hold on the id.
    pub held: IdGuard,
    /// When this instance learned the message was ready.
    pub queued_at: Instant,
}

impl std::fmt::Debug for ClaimedWork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimedWork")
            .field("id", &self.message.id)
            .field("stamp", &self.lease.stamp())
            .finish_non_exhaustive()
    }
}

/// A cloneable handle on the queue.
#[derive(Clone)]
pub struct WorkQueue {
    /// Ids with the time they were queued (the start of the send-latency measurement).
    tx: smol::channel::Sender<(MessageId, Instant)>,
    rx: smol::channel::Receiver<(MessageId, Instant)>,
    /// Ids currently waiting in the channel (not those being processed).
    waiting: Arc<Mutex<HashSet<MessageId>>>,
    /// Claimed rows waiting for a sender: unbounded (a batch takes no more rows than there are
    /// idle senders) and never closed, so a claimed row is never refused.
    claimed_tx: smol::channel::Sender<ClaimedWork>,
    claimed_rx: smol::channel::Receiver<ClaimedWork>,
    /// Wake-ups a sender thread queued again while the channel was full: taken before the
    /// channel's ids. At most one per batch claim in progress, so small.
    again: Arc<Mutex<VecDeque<MessageId>>>,
    /// Wake-ups a batch claim answered already (rows it claimed besides the woken one), until
    /// when the mark holds.
    answered: Arc<Mutex<HashMap<MessageId, Instant>>>,
}

/// How long a batch claim's answer to a waiting wake-up is remembered (it is popped long before).
const ANSWERED_FOR: Duration = Duration::from_secs(60);
/// At most this many answered wake-ups are remembered; beyond it the expired are forgotten, and
/// then all (an answer forgotten costs one claim request that finds nothing, never a message).
const ANSWERED_CAP: usize = 10_000;

/// Why an id was not queued without waiting.
#[derive(Debug, PartialEq, Eq)]
pub enum TryPushError {
    /// No room now.
    Full,
    /// The queue was closed (shutdown).
    Closed,
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
        let (claimed_tx, claimed_rx) = smol::channel::unbounded();
        WorkQueue {
            tx,
            rx,
            waiting: Arc::default(),
            claimed_tx,
            claimed_rx,
            answered: Arc::default(),
            again: Arc::default(),
        }
    }

    /// Queue `id` again from a sender thread, never waiting and never dropping it: when the
    /// channel has no room it waits in a side list that pops take first.
    pub fn push_again(&self, id: MessageId) {
        match self.try_push(id.clone()) {
            Ok(_) | Err(TryPushError::Closed) => {}
            Err(TryPushError::Full) => {
                let mut again = self.again.locked();
                if !again.contains(&id) {
                    again.push_back(id);
                }
            }
        }
    }

    /// A batch claim took row `id`: its wake-up, if one is waiting, needs no claim. (A wake-up
    /// not waiting is either in a sender's hands already, or still to come: it then costs one
    /// claim that finds nothing, never a message.)
    pub fn answer(&self, id: &MessageId) {
        if !self.waiting.locked().contains(id) {
            return;
        }
        let now = Instant::now();
        let mut answered = self.answered.locked();
        if answered.len() >= ANSWERED_CAP {
            answered.retain(|_, until| *until > now);
            if answered.len() >= ANSWERED_CAP {
                answered.clear();
            }
        }
        answered.insert(id.clone(), now + ANSWERED_FOR);
    }

    /// A second wake-up for `id` came while one waits: the row entered the queue again (it was
    /// given back), so the waiting wake-up stands for the new entry and is no longer answered.
    fn unanswer(&self, id: &MessageId) {
        self.answered.locked().remove(id);
    }

    /// Whether the wake-up for `id` was answered by a batch claim (the mark is used up).
    pub fn was_answered(&self, id: &MessageId) -> bool {
        let until = self.answered.locked().remove(id);
        until.is_some_and(|until| until > Instant::now())
    }

    /// Mark `id` as waiting; `None` when it already is (another push holds the mark, or the id
    /// sits in the channel).
    fn reserve(&self, id: &MessageId) -> Option<Reservation<'_>> {
        let fresh = self.waiting.locked().insert(id.clone());
        if !fresh {
            self.unanswer(id);
        }
        fresh.then(|| Reservation {
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

    /// Queue `id` if there is room now, never waiting (for a sender thread, which must not block
    /// on the queue it feeds from).
    pub fn try_push(&self, id: MessageId) -> Result<Pushed, TryPushError> {
        let Some(reservation) = self.reserve(&id) else {
            return Ok(Pushed::AlreadyWaiting);
        };
        match self.tx.try_send((id, Instant::now())) {
            Ok(()) => {
                reservation.keep();
                Ok(Pushed::Queued)
            }
            Err(smol::channel::TrySendError::Full(_)) => Err(TryPushError::Full),
            Err(smol::channel::TrySendError::Closed(_)) => Err(TryPushError::Closed),
        }
    }

    /// Hand a claimed row to the next free sender thread, ahead of every id. Never waits and
    /// never refuses, even after [`WorkQueue::close`].
    pub fn push_claimed(&self, work: ClaimedWork) {
        // The claimed channel is unbounded and never closed while `self` holds its receiver.
        if let Err(refused) = self.claimed_tx.try_send(work) {
            unreachable!("the claimed channel refused {:?}", refused.into_inner());
        }
    }

    /// Take a claimed row if one waits, never waiting (for a sender thread's last pass at
    /// shutdown).
    pub fn take_claimed(&self) -> Option<ClaimedWork> {
        self.claimed_rx.try_recv().ok()
    }

    /// Take up to `max` waiting ids without waiting (wake-ups a batch claim answered already).
    pub fn take_waiting(&self, max: usize) -> Vec<MessageId> {
        let mut taken = Vec::new();
        while taken.len() < max {
            let Ok((id, _)) = self.rx.try_recv() else {
                break;
            };
            self.unreserve(&id);
            taken.push(id);
        }
        taken
    }

    /// The next piece of work without waiting: a claimed row first, then an id.
    fn try_pop(&self) -> Option<Popped> {
        if let Ok(work) = self.claimed_rx.try_recv() {
            return Some(Popped::Claimed(work));
        }
        if let Some(id) = self.again.locked().pop_front() {
            return Some(Popped::Id(id, Instant::now()));
        }
        let (id, at) = self.rx.try_recv().ok()?;
        self.unreserve(&id);
        Some(Popped::Id(id, at))
    }

    /// Wait for the next piece of work (a claimed row first), at most `wait` (`None`: as long as
    /// it takes).
    fn wait_pop(&self, wait: Option<Duration>) -> Popped {
        use futures_lite::future::or;
        let next = smol::block_on(or(
            // Polled first: a claimed row wins over an id that arrives at the same time.
            async { self.claimed_rx.recv().await.ok().map(Popped::Claimed) },
            or(
                async {
                    Some(match self.rx.recv().await {
                        Ok((id, at)) => {
                            self.unreserve(&id);
                            Popped::Id(id, at)
                        }
                        Err(_) => Popped::Closed,
                    })
                },
                async {
                    match wait {
                        Some(wait) => smol::Timer::after(wait).await,
                        None => smol::Timer::never().await,
                    };
                    None
                },
            ),
        ));
        next.unwrap_or(Popped::Idle)
    }

    /// Take the next piece of work, blocking: a claimed row, else an id and when it was queued;
    /// [`Popped::Closed`] once the queue is closed and no claimed row waits (waiting ids are
    /// abandoned: their rows are still `queued_for_send` and the next sweep, here or elsewhere,
    /// finds them). Never [`Popped::Idle`].
    pub fn pop_blocking(&self) -> Popped {
        if let Ok(work) = self.claimed_rx.try_recv() {
            return Popped::Claimed(work);
        }
        if self.rx.is_closed() {
            return Popped::Closed;
        }
        if let Some(popped) = self.try_pop() {
            return popped;
        }
        self.wait_pop(None)
    }

    /// Like [`WorkQueue::pop_blocking`], but gives up after `wait` with [`Popped::Idle`].
    pub fn pop_timeout(&self, wait: Duration) -> Popped {
        if let Ok(work) = self.claimed_rx.try_recv() {
            return Popped::Claimed(work);
        }
        if self.rx.is_closed() && self.rx.is_empty() {
            return Popped::Closed;
        }
        // Busy: take what is there without arming a timer.
        if let Some(popped) = self.try_pop() {
            return popped;
        }
        self.wait_pop(Some(wait))
    }

    /// Stop the queue: pushes fail, pops return [`Popped::Closed`] once no claimed row waits.
    /// Claimed rows stay until a sender takes them.
    pub fn close(&self) {
        self.tx.close();
    }

    /// How many ids and claimed rows are waiting.
    pub fn len(&self) -> usize {
        self.tx.len() + self.claimed_tx.len()
    }

    /// How many ids are waiting (claimed rows aside).
    pub fn waiting_ids(&self) -> usize {
        self.tx.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.tx.is_empty() && self.claimed_tx.is_empty()
    }

    /// Whether there is no room for another id (producers wait).
    pub fn is_full(&self) -> bool {
        self.tx.is_full()
    }
}

/// What a pop got.
#[derive(Debug)]
pub enum Popped {
    /// A row a batch claim took for this thread.
    Claimed(ClaimedWork),
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
    use crate::delivery::in_flight::InFlight;
    use futures_lite::future;
    use std::time::SystemTime;

    fn id(n: u32) -> MessageId {
        MessageId::parse(&format!("00000000-0000-4000-8000-{n:012}")).unwrap()
    }

    /// The id popped, `None` for anything else.
    fn popped_id(popped: Popped) -> Option<MessageId> {
        match popped {
            Popped::Id(id, _) => Some(id),
            _ => None,
        }
    }

    /// A claimed row `n`, held in `in_flight`.
    fn claimed(in_flight: &InFlight, n: u32) -> ClaimedWork {
        let lease = Lease::start(Duration::from_secs(30), Instant::now(), SystemTime::now());
        ClaimedWork {
            message: ClaimedMessage {
                id: id(n),
                body: "hello".into(),
                phone_number: Some("+15551234567".into()),
                previous_sid: None,
            },
            held: in_flight.hold(&id(n), lease.stamp()).unwrap(),
            lease,
            queued_at: Instant::now(),
        }
    }

    fn popped_claim(popped: Popped) -> Option<MessageId> {
        match popped {
            Popped::Claimed(work) => Some(work.message.id),
            _ => None,
        }
    }

    #[test]
    fn claimed_rows_are_taken_before_ids() {
        let (q, f) = (WorkQueue::new(4), InFlight::default());
        q.push_blocking(id(1)).unwrap();
        q.push_claimed(claimed(&f, 10));
        q.push_claimed(claimed(&f, 11));
        assert_eq!((q.len(), q.waiting_ids()), (3, 1));
        let Popped::Claimed(first) = q.pop_blocking() else {
            panic!("a claimed row first");
        };
        assert_eq!(first.message.id, id(10));
        assert_eq!(popped_claim(q.pop_timeout(Duration::ZERO)), Some(id(11)));
        assert!(f.contains(&id(10)), "the hold travels with the row");
        assert!(!f.contains(&id(11)), "and goes with it");
        assert_eq!(popped_id(q.pop_blocking()), Some(id(1)));
        assert!(matches!(q.pop_timeout(Duration::ZERO), Popped::Idle));
        drop(first);
        assert!(!f.contains(&id(10)));
        // A sender waiting for work wakes for a claimed row.
        let waiter = {
            let q = q.clone();
            std::thread::spawn(move || popped_claim(q.pop_blocking()))
        };
        std::thread::sleep(Duration::from_millis(20));
        q.push_claimed(claimed(&f, 12));
        assert_eq!(waiter.join().unwrap(), Some(id(12)));
    }

    #[test]
    fn closing_keeps_claimed_rows_for_their_release() {
        let (q, f) = (WorkQueue::new(1), InFlight::default());
        q.push_blocking(id(1)).unwrap();
        q.push_claimed(claimed(&f, 10));
        q.close();
        // A full or closed queue never refuses a claimed row.
        q.push_claimed(claimed(&f, 11));
        q.push_claimed(claimed(&f, 12));
        assert_eq!(q.len(), 4);
        assert_eq!(popped_claim(q.pop_blocking()), Some(id(10)));
        assert_eq!(popped_claim(q.pop_timeout(Duration::ZERO)), Some(id(11)));
        assert_eq!(q.take_claimed().map(|w| w.message.id), Some(id(12)));
        assert!(q.take_claimed().is_none());
        assert!(
            matches!(q.pop_blocking(), Popped::Closed),
            "ids are abandoned"
        );
    }

    #[test]
    fn waiting_ids_can_be_taken_and_given_back_without_waiting() {
        let q = WorkQueue::new(2);
        q.push_blocking(id(1)).unwrap();
        q.push_blocking(id(2)).unwrap();
        assert_eq!(q.try_push(id(3)), Err(TryPushError::Full));
        assert_eq!(q.try_push(id(1)), Ok(Pushed::AlreadyWaiting));
        assert_eq!(q.take_waiting(1), vec![id(1)]);
        assert_eq!(
            q.try_push(id(1)),
            Ok(Pushed::Queued),
            "its mark went with it"
        );
        assert_eq!(q.take_waiting(5), vec![id(2), id(1)]);
        assert!(q.take_waiting(5).is_empty());
        q.close();
        assert_eq!(q.try_push(id(3)), Err(TryPushError::Closed));
        assert_eq!(q.try_push(id(3)), Err(TryPushError::Closed), "un-reserved");
    }

    #[test]
    fn a_batch_answers_only_waiting_wake_ups_and_a_new_entry_unanswers() {
        let q = WorkQueue::new(8);
        q.answer(&id(1));
        assert!(!q.was_answered(&id(1)), "not waiting: nothing to answer");
        assert_eq!(q.try_push(id(2)), Ok(Pushed::Queued));
        q.answer(&id(2));
        assert!(q.was_answered(&id(2)));
        assert!(!q.was_answered(&id(2)), "an answer is used once");
        assert_eq!(q.try_push(id(3)), Ok(Pushed::Queued));
        q.answer(&id(3));
        assert_eq!(
            q.try_push(id(3)),
            Ok(Pushed::AlreadyWaiting),
            "the row entered the queue again while its wake-up waited"
        );
        assert!(
            !q.was_answered(&id(3)),
            "the waiting wake-up stands for the new entry"
        );
    }

    #[test]
    fn a_wake_up_queued_again_on_a_full_queue_is_kept_and_taken_first() {
        let q = WorkQueue::new(1);
        assert_eq!(q.try_push(id(1)), Ok(Pushed::Queued));
        q.push_again(id(2));
        q.push_again(id(2));
        assert_eq!(
            popped_id(q.pop_blocking()),
            Some(id(2)),
            "kept, once, and first"
        );
        assert_eq!(popped_id(q.pop_blocking()), Some(id(1)));
        q.push_again(id(3));
        assert_eq!(
            popped_id(q.pop_blocking()),
            Some(id(3)),
            "room: queued as usual"
        );
    }

    #[test]
    fn dedups_waiting_ids_but_not_popped_ones() {
        let q = WorkQueue::new(4);
        assert_eq!(q.push_blocking(id(1)), Ok(Pushed::Queued));
        assert_eq!(q.push_blocking(id(1)), Ok(Pushed::AlreadyWaiting));
        assert_eq!(q.len(), 1);
        assert_eq!(popped_id(q.pop_blocking()), Some(id(1)));
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
        assert!(q.is_full());
        let mut push = std::pin::pin!(q.push(id(3)));
        assert!(
            future::block_on(future::poll_once(push.as_mut())).is_none(),
            "the third push must wait for room"
        );
        assert_eq!(popped_id(q.pop_blocking()), Some(id(1)));
        assert_eq!(future::block_on(push), Ok(Pushed::Queued));
        // The blocking producer the same way: it waits until a sender takes an id.
        let producer = {
            let q = q.clone();
            std::thread::spawn(move || q.push_blocking(id(4)))
        };
        assert_eq!(popped_id(q.pop_blocking()), Some(id(2)));
        assert_eq!(producer.join().unwrap(), Ok(Pushed::Queued));
        assert_eq!(popped_id(q.pop_blocking()), Some(id(3)));
        assert_eq!(popped_id(q.pop_blocking()), Some(id(4)));
    }

    #[test]
    fn an_abandoned_push_gives_the_id_back() {
        let q = WorkQueue::new(1);
        q.push_blocking(id(1)).unwrap();
        // The queue is full: this push waits; dropping it (a dead socket's reader) abandons it.
        {
            let mut push = std::pin::pin!(q.push(id(2)));
            assert!(future::block_on(future::poll_once(push.as_mut())).is_none());
        }
        assert_eq!(popped_id(q.pop_blocking()), Some(id(1)));
        assert_eq!(
            q.push_blocking(id(2)),
            Ok(Pushed::Queued),
            "a later sweep or event can hand id 2 again"
        );
        assert_eq!(popped_id(q.pop_blocking()), Some(id(2)));
    }

    #[test]
    fn close_wakes_everyone() {
        let q = WorkQueue::new(1);
        q.push_blocking(id(1)).unwrap();
        let mut waiting = std::pin::pin!(q.push(id(5)));
        assert!(future::block_on(future::poll_once(waiting.as_mut())).is_none());
        let producer = {
            let q = q.clone();
            std::thread::spawn(move || q.push_blocking(id(2)))
        };
        q.close();
        assert_eq!(future::block_on(waiting), Err(PushError::Closed));
        // Whether the blocking producer was waiting already or pushes after the close.
        assert_eq!(producer.join().unwrap(), Err(PushError::Closed));
        assert_eq!(popped_id(q.pop_blocking()), None);
        assert_eq!(smol::block_on(q.push(id(3))), Err(PushError::Closed));
        for n in [2, 5] {
            assert_eq!(
                q.push_blocking(id(n)),
                Err(PushError::Closed),
                "id {n} was un-reserved"
            );
        }
    }
}
