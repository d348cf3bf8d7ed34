//! Which partitions this instance serves in scaled mode (`docs/scaled-mode.md`), shared by the
//! sender threads (what a batch claim asks for), the sweeper and the orphan checker (whether this
//! instance is the one sweeper), and the Realtime side (which sets the membership it learns from
//! Presence).
//!
//! Invariants:
//! - a row's partition is computed exactly as the database does, `get_byte(uuid_send(id), 15) %
//!   P` (the UUID's last byte), so a wake-up, a claim and a sweep agree on it;
//! - without a known membership (the default mode, or scaled mode before Presence has synced or
//!   after it was lost) an instance behaves as in the default mode: it owns every partition and is
//!   a sweeper, so no row waits for a membership that may never come.

use std::sync::{Arc, Mutex};

use crate::message::MessageId;
use crate::sync::Locked;

/// The partition of row `id` among `partitions` (`0 … partitions−1`): the UUID's last byte
/// modulo the count, as the database's `sms_sender_partition(id)`. Zero partitions count as one.
pub fn partition_of(id: &MessageId, partitions: u16) -> u16 {
    let text = id.as_str();
    // A `MessageId` is canonical lower-case hex: the last two characters are the last byte.
    let last = u8::from_str_radix(&text[text.len() - 2..], 16).unwrap_or(0);
    u16::from(last) % partitions.max(1)
}

/// What this instance knows of its share.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Share {
    /// No scaled mode: everything, and the sweeper.
    Default,
    /// Scaled mode without a known membership: every partition, and a sweeper.
    Fallback,
    /// Scaled mode with a membership from Presence.
    Members {
        /// The partitions assigned to this instance, sorted, each once.
        mine: Vec<u16>,
        /// Whether this instance is the first member (the one that sweeps).
        sweeper: bool,
    },
}

#[derive(Debug)]
struct State {
    /// The partition count (1 in the default mode).
    partitions: u16,
    share: Share,
}

/// The shared, cheap-to-clone view of this instance's partitions.
#[derive(Clone, Debug)]
pub struct Ownership(Arc<Mutex<State>>);

impl Ownership {
    fn new(partitions: u16, share: Share) -> Ownership {
        Ownership(Arc::new(Mutex::new(State {
            partitions: partitions.max(1),
            share,
        })))
    }

    /// No scaled mode: owns everything, is the sweeper, [`Ownership::is_scaled`] is false.
    pub fn default_mode() -> Ownership {
        Ownership::new(1, Share::Default)
    }

    /// Scaled mode with `partitions` partitions, membership not known yet: every partition, and a
    /// sweeper.
    pub fn scaled(partitions: u16) -> Ownership {
        Ownership::new(partitions, Share::Fallback)
    }

    /// The membership Presence gives: this instance's partitions and whether it sweeps.
    /// Partitions out of range are ignored. Ignored in the default mode.
    pub fn set_members(&self, mine: Vec<u16>, sweeper: bool) {
        let mut state = self.0.locked();
        if state.share == Share::Default {
            return;
        }
        let partitions = state.partitions;
        let mut mine: Vec<u16> = mine.into_iter().filter(|p| *p < partitions).collect();
        mine.sort_unstable();
        mine.dedup();
        state.share = Share::Members { mine, sweeper };
    }

    /// The membership is lost or unknown: every partition, and a sweeper, until it is known again.
    /// Ignored in the default mode.
    pub fn forget_members(&self) {
        let mut state = self.0.locked();
        if state.share != Share::Default {
            state.share = Share::Fallback;
        }
    }

    /// Whether scaled mode is on.
    pub fn is_scaled(&self) -> bool {
        self.0.locked().share != Share::Default
    }

    /// The partition count (1 in the default mode).
    pub fn partitions(&self) -> u16 {
        self.0.locked().partitions
    }

    /// The partitions a batch claim asks for: this instance's, or all of them without a
    /// membership.
    pub fn to_claim(&self) -> Vec<u16> {
        let state = self.0.locked();
        match &state.share {
            Share::Members { mine, .. } => mine.clone(),
            Share::Default | Share::Fallback => (0..state.partitions).collect(),
        }
    }

    /// Whether row `id` is in a partition this instance claims (always, in the default mode).
    pub fn owns(&self, id: &MessageId) -> bool {
        let state = self.0.locked();
        match &state.share {
            Share::Members { mine, .. } => mine
                .binary_search(&partition_of(id, state.partitions))
                .is_ok(),
            Share::Default | Share::Fallback => true,
        }
    }

    /// Whether this instance runs the periodic sweep and the orphan check: in the default mode,
    /// without a membership, and as the first member.
    pub fn is_sweeper(&self) -> bool {
        match &self.0.locked().share {
            Share::Members { sweeper, .. } => *sweeper,
            Share::Default | Share::Fallback => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(last: &str) -> MessageId {
        MessageId::parse(&format!("00000000-0000-4000-8000-0000000000{last}")).unwrap()
    }

    #[test]
    fn the_partition_is_the_last_byte_modulo_the_count() {
        // get_byte(uuid_send(id), 15): the 16th byte, i.e. the last two hex digits.
        assert_eq!(partition_of(&id("00"), 16), 0);
        assert_eq!(partition_of(&id("0f"), 16), 15);
        assert_eq!(partition_of(&id("10"), 16), 0);
        assert_eq!(partition_of(&id("ff"), 16), 15);
        assert_eq!(partition_of(&id("ff"), 7), 255 % 7);
        assert_eq!(
            partition_of(&id("FE"), 256),
            254,
            "upper case reads the same"
        );
        assert_eq!(partition_of(&id("ab"), 1), 0);
        assert_eq!(
            partition_of(&id("ab"), 0),
            0,
            "zero partitions count as one"
        );
        // The byte before the last does not matter.
        let other = MessageId::parse("ffffffff-ffff-4fff-bfff-ffffffffff05").unwrap();
        assert_eq!(partition_of(&other, 4), 1);
    }

    #[test]
    fn the_default_mode_owns_everything_and_sweeps() {
        let o = Ownership::default_mode();
        assert!(!o.is_scaled());
        assert!(o.is_sweeper());
        assert!(o.owns(&id("07")));
        assert_eq!(o.partitions(), 1);
        assert_eq!(o.to_claim(), vec![0]);
        o.set_members(vec![], false);
        assert!(
            !o.is_scaled() && o.is_sweeper() && o.owns(&id("07")),
            "unchanged"
        );
    }

    #[test]
    fn scaled_mode_falls_back_to_everything_without_a_membership() {
        let o = Ownership::scaled(4);
        assert!(o.is_scaled());
        assert_eq!(o.partitions(), 4);
        assert_eq!(o.to_claim(), vec![0, 1, 2, 3]);
        assert!(o.is_sweeper());
        assert!((0..=255).all(|b| o.owns(&id(&format!("{b:02x}")))));
    }

    #[test]
    fn a_membership_narrows_the_share_until_it_is_forgotten() {
        let o = Ownership::scaled(4);
        let seen_by_others = o.clone();
        o.set_members(vec![3, 1, 3, 9], false);
        assert_eq!(
            seen_by_others.to_claim(),
            vec![1, 3],
            "sorted, once each, in range"
        );
        assert!(!seen_by_others.is_sweeper());
        assert!(o.owns(&id("01")) && o.owns(&id("07")) && o.owns(&id("fd")));
        assert!(!o.owns(&id("00")) && !o.owns(&id("02")) && !o.owns(&id("fe")));
        o.set_members(vec![0], true);
        assert!(o.is_sweeper());
        assert_eq!(o.to_claim(), vec![0]);
        o.set_members(vec![], false);
        assert!(
            o.to_claim().is_empty() && !o.owns(&id("00")),
            "a member may own nothing"
        );
        o.forget_members();
        assert_eq!(o.to_claim(), vec![0, 1, 2, 3]);
        assert!(o.is_sweeper() && o.owns(&id("02")) && o.is_scaled());
    }
}
