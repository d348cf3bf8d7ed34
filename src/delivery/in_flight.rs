//! What this instance holds right now: the ids it has claimed with each claim's current stamp (so
//! its own orphan recovery leaves them be, and shutdown can hand over the ones still in flight),
//! and the (recipient, text) pairs being sent (so two messages that Twilio's list could not tell
//! apart are never in flight at once here, and reconciliation never adopts a sibling's SMS).
//!
//! Invariant: an id is held, and its pair too, for as long as its row is this instance's —
//! through a wait for Twilio's list after an ambiguous create — until the row is settled, given
//! back or handed over. Across instances the same pair can still be in flight twice; the README
//! says what that leaves possible.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::delivery::reconcile::normalise;
use crate::message::MessageId;
use crate::shutdown::Shutdown;
use crate::sync::Locked;

#[derive(Default)]
struct Held {
    /// Claimed ids and the stamp their row carries now (renewals update it).
    ids: HashMap<MessageId, String>,
    conversations: HashSet<(String, u64)>,
    /// Threads waiting for a pair: only then does a release notify (a `Condvar` notification
    /// is a system call even when nobody waits).
    waiting: usize,
}

/// Shared by the sender threads and the orphan checker; cheap to clone.
#[derive(Clone, Default)]
pub struct InFlight(Arc<(Mutex<Held>, Condvar)>);

impl InFlight {
    fn lock(&self) -> MutexGuard<'_, Held> {
        self.0 .0.locked()
    }

    /// Whether `id` is being processed here.
    pub fn contains(&self, id: &MessageId) -> bool {
        self.lock().ids.contains_key(id)
    }

    /// Mark `id`, about to be claimed under `stamp`, as held until the guard drops; `None` when
    /// another thread here holds it already (the same id queued again while it is processed).
    pub fn hold(&self, id: &MessageId, stamp: &str) -> Option<IdGuard> {
        let mut held = self.lock();
        if held.ids.contains_key(id) {
            return None;
        }
        held.ids.insert(id.clone(), stamp.to_string());
        Some(IdGuard(self.clone(), id.clone()))
    }

    /// Every claim held now, with its current stamp (for the hand-over at shutdown).
    pub fn claims(&self) -> Vec<(MessageId, String)> {
        self.lock()
            .ids
            .iter()
            .map(|(id, stamp)| (id.clone(), stamp.clone()))
            .collect()
    }

    /// The current stamp of held claim `id`.
    pub fn stamp_of(&self, id: &MessageId) -> Option<String> {
        self.lock().ids.get(id).cloned()
    }

    /// Take the (recipient, text) pair, waiting while another thread holds it, until `until` or
    /// shutdown (`None` then).
    pub fn lock_conversation(
        &self,
        to: &str,
        body: &str,
        until: Instant,
        shutdown: &Shutdown,
    ) -> Option<ConversationGuard> {
        let key = key(to, body);
        let mut held = self.lock();
        loop {
            if held.conversations.insert(key.clone()) {
                return Some(ConversationGuard(self.clone(), key));
            }
            let now = Instant::now();
            if now >= until || shutdown.is_triggered() {
                return None;
            }
            let wait = (until - now).min(Duration::from_millis(100));
            held.waiting += 1;
            held = self
                .0
                 .1
                .wait_timeout(held, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            held.waiting -= 1;
        }
    }

    /// Take the pair if it is free.
    pub fn try_lock_conversation(&self, to: &str, body: &str) -> Option<ConversationGuard> {
        let key = key(to, body);
        self.lock()
            .conversations
            .insert(key.clone())
            .then(|| ConversationGuard(self.clone(), key))
    }
}

fn key(to: &str, body: &str) -> (String, u64) {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    normalise(body).hash(&mut h);
    (to.to_string(), h.finish())
}

/// Releases an id on drop.
pub struct IdGuard(InFlight, MessageId);

impl IdGuard {
    /// The claim's stamp moved (a renewal applied).
    pub fn restamp(&self, stamp: &str) {
        if let Some(held) = self.0.lock().ids.get_mut(&self.1) {
            held.clear();
            held.push_str(stamp);
        }
    }
}

impl Drop for IdGuard {
    fn drop(&mut self) {
        self.0.lock().ids.remove(&self.1);
    }
}

/// Releases a (recipient, text) pair on drop and wakes waiters.
pub struct ConversationGuard(InFlight, (String, u64));

impl Drop for ConversationGuard {
    fn drop(&mut self) {
        let mut held = self.0.lock();
        held.conversations.remove(&self.1);
        let wake = held.waiting > 0;
        drop(held);
        if wake {
            self.0 .0 .1.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_claims_follow_their_stamp() {
        let f = InFlight::default();
        let id = MessageId::parse("00000000-0000-4000-8000-000000000001").unwrap();
        let guard = f.hold(&id, "2026-01-01T00:00:00.000001Z").unwrap();
        assert!(
            f.hold(&id, "2026-01-01T00:00:00.000003Z").is_none(),
            "one holder per id"
        );
        guard.restamp("2026-01-01T00:00:30.000002Z");
        assert_eq!(
            f.claims(),
            vec![(id.clone(), "2026-01-01T00:00:30.000002Z".to_string())]
        );
        assert!(f.contains(&id));
        drop(guard);
        assert!(f.claims().is_empty() && !f.contains(&id));
    }

    #[test]
    fn one_pair_at_a_time() {
        let f = InFlight::default();
        let s = Shutdown::new();
        let a = f.try_lock_conversation("+15551234567", "hi").unwrap();
        assert!(f.try_lock_conversation("+15551234567", "hi").is_none());
        assert!(
            f.try_lock_conversation("+15551234567", "hi ").is_none(),
            "normalised"
        );
        assert!(f.try_lock_conversation("+15551234568", "hi").is_some());
        // A deadline already past: the pair is held, so there is no wait.
        assert!(f
            .lock_conversation("+15551234567", "hi", Instant::now(), &s)
            .is_none());
        let f2 = f.clone();
        let h = std::thread::spawn(move || {
            f2.lock_conversation(
                "+15551234567",
                "hi",
                Instant::now() + Duration::from_secs(60),
                &Shutdown::new(),
            )
            .is_some()
        });
        // Until the other thread waits for the pair, not a fixed time.
        while f.lock().waiting == 0 {
            std::thread::yield_now();
        }
        drop(a);
        assert!(h.join().unwrap(), "a released pair wakes its waiter");
    }
}
