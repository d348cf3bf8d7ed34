//! What this instance holds right now: the ids it has claimed (so its own orphan recovery leaves
//! them be) and the (recipient, text) pairs being sent (so two messages that Twilio's list could
//! not tell apart are never in flight at once here, and reconciliation never adopts a sibling's
//! SMS). Across instances the same pair can still be in flight twice; the README says what that
//! leaves possible.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::delivery::reconcile::normalise;
use crate::message::MessageId;
use crate::shutdown::Shutdown;
use crate::sync::Locked;

#[derive(Default)]
struct Held {
    ids: HashSet<MessageId>,
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
        self.lock().ids.contains(id)
    }

    /// Mark `id` as held until the guard drops.
    pub fn hold(&self, id: &MessageId) -> IdGuard {
        self.lock().ids.insert(id.clone());
        IdGuard(self.clone(), id.clone())
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
        let t = Instant::now();
        assert!(f
            .lock_conversation("+15551234567", "hi", t + Duration::from_millis(150), &s)
            .is_none());
        let f2 = f.clone();
        let h = std::thread::spawn(move || {
            f2.lock_conversation(
                "+15551234567",
                "hi",
                Instant::now() + Duration::from_secs(5),
                &Shutdown::new(),
            )
            .is_some()
        });
        std::thread::sleep(Duration::from_millis(50));
        drop(a);
        assert!(h.join().unwrap());
    }
}
