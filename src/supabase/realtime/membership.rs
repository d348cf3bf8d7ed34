//! Who serves which partition in scaled mode: the members Presence shows on the members channel,
//! and the partitions that gives this instance (docs/scaled-mode.md).
//!
//! Presence reports metas, not members: one key may carry several metas for a while (an instance
//! that reconnected is tracked again from its new socket before the server notices its old one
//! is gone), so membership is kept as the set of (key, `phx_ref`) pairs and a key is a member
//! while it has at least one. Diffs that arrive before the first state are kept and applied after
//! it, as realtime-js does.
//!
//! Invariants: the assignment is a pure function of the sorted member keys (every instance that
//! sees the same members computes the same owners, so each partition has exactly one owner once
//! the views agree); this instance always counts itself as a member, so it never assigns its own
//! partitions away while its track is on its way.

use std::collections::BTreeSet;

/// One Presence meta: the member's key and the meta's `phx_ref`.
pub type Meta = (String, String);

/// The members channel's Presence, as this instance has seen it.
#[derive(Debug, Default, Clone)]
pub struct Members {
    metas: BTreeSet<Meta>,
    /// Whether a `presence_state` came (diffs before it wait in `early`).
    synced: bool,
    early: Vec<(Vec<Meta>, Vec<Meta>)>,
}

impl Members {
    /// A `presence_state`: everyone now, then the diffs that came before it.
    pub fn replace(&mut self, metas: Vec<Meta>) {
        self.metas = metas.into_iter().collect();
        self.synced = true;
        for (joins, leaves) in std::mem::take(&mut self.early) {
            self.apply(joins, leaves);
        }
    }

    /// A `presence_diff`.
    pub fn diff(&mut self, joins: Vec<Meta>, leaves: Vec<Meta>) {
        if self.synced {
            self.apply(joins, leaves);
        } else {
            self.early.push((joins, leaves));
        }
    }

    fn apply(&mut self, joins: Vec<Meta>, leaves: Vec<Meta>) {
        for meta in leaves {
            self.metas.remove(&meta);
        }
        self.metas.extend(joins);
    }

    /// Whether a `presence_state` came.
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// The member keys, sorted, with `me` among them.
    pub fn keys_with<'a>(&'a self, me: &'a str) -> BTreeSet<&'a str> {
        let mut keys: BTreeSet<&str> = self.metas.iter().map(|(k, _)| k.as_str()).collect();
        keys.insert(me);
        keys
    }
}

/// What the members give this instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The partitions this instance serves, ascending.
    pub mine: Vec<u16>,
    /// Whether this instance runs the periodic sweep and the orphan check (the first member).
    pub sweeper: bool,
    /// How many members there are (with this instance).
    pub members: usize,
}

/// Partition `k` belongs to the `k mod N`-th of the `N` sorted member keys; the first member is
/// the sweeper.
pub fn assign(keys: &BTreeSet<&str>, me: &str, partitions: u16) -> Assignment {
    let position = keys.iter().position(|k| *k == me);
    let n = keys.len().max(1);
    let mine = match position {
        Some(i) => (0..partitions)
            .filter(|k| usize::from(*k) % n == i)
            .collect(),
        None => Vec::new(),
    };
    Assignment {
        mine,
        sweeper: position == Some(0),
        members: keys.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(key: &str, r: &str) -> Meta {
        (key.to_string(), r.to_string())
    }

    #[test]
    fn partitions_are_dealt_over_the_sorted_members_and_each_has_one_owner() {
        let keys: BTreeSet<&str> = ["c", "a", "b"].into_iter().collect();
        let all: Vec<Assignment> = ["a", "b", "c"]
            .iter()
            .map(|me| assign(&keys, me, 8))
            .collect();
        assert_eq!(all[0].mine, [0, 3, 6]);
        assert_eq!(all[1].mine, [1, 4, 7]);
        assert_eq!(all[2].mine, [2, 5]);
        assert!(all[0].sweeper && !all[1].sweeper && !all[2].sweeper);
        let mut owned: Vec<u16> = all.iter().flat_map(|a| a.mine.clone()).collect();
        owned.sort_unstable();
        assert_eq!(
            owned,
            (0..8).collect::<Vec<_>>(),
            "every partition exactly once"
        );
        let alone: BTreeSet<&str> = ["z"].into_iter().collect();
        assert_eq!(assign(&alone, "z", 4).mine, [0, 1, 2, 3]);
    }

    #[test]
    fn a_key_stays_a_member_while_any_of_its_metas_is_left() {
        let mut m = Members::default();
        m.replace(vec![meta("a", "1"), meta("b", "2")]);
        m.diff(vec![meta("a", "3")], vec![]); // a reconnected: tracked again
        m.diff(vec![], vec![meta("a", "1")]); // its old socket noticed gone
        assert_eq!(m.keys_with("b"), ["a", "b"].into_iter().collect());
        m.diff(vec![], vec![meta("a", "3")]);
        assert_eq!(m.keys_with("b"), ["b"].into_iter().collect());
    }

    #[test]
    fn diffs_before_the_state_apply_after_it_and_i_always_count() {
        let mut m = Members::default();
        m.diff(vec![meta("c", "9")], vec![]);
        assert!(!m.synced());
        assert_eq!(m.keys_with("me"), ["me"].into_iter().collect());
        m.replace(vec![meta("a", "1")]);
        assert!(m.synced());
        assert_eq!(m.keys_with("me"), ["a", "c", "me"].into_iter().collect());
    }
}
