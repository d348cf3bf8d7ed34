//! Scaled mode's channels on one socket, decided without I/O: the members channel (Presence)
//! and the partition channels (Broadcast from the database), docs/scaled-mode.md.
//!
//! [`Scaled`] reads each decoded frame and each tick and answers with [`Act`]s: frames to send,
//! ids to hand over, the assignment to tell, the subscription to announce, the link to give up.
//!
//! Invariants:
//! - partitions are joined before any are left, so during a change of owners a partition is served
//!   by the old owner, the new one, or both (claims skip locked rows; every write is fenced), never
//!   by nobody;
//! - the subscription is announced (which asks for a catch-up) once every wanted partition channel
//!   is joined, and again whenever partitions were gained, since Realtime never replays a broadcast
//!   sent while nobody listened;
//! - without Presence (the members channel refused, the track refused, or no `presence_state` in
//!   time) the instance falls back to serving every partition and sweeping, like the default mode;
//! - only frames for a channel we hold under its current join ref count.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use serde_json::json;

use super::frame::{self, ServerFrame};
use super::membership::{assign, Assignment, Members};
use super::Refs;
use crate::message::MessageId;
use crate::redact;

/// The members channel.
pub(super) const MEMBERS_TOPIC: &str = "realtime:sms-sender:members";

/// The Broadcast event the database trigger sends for a row entering `queued_for_send`.
const QUEUED_EVENT: &str = "queued";

/// The channel of partition `k` (its Broadcast topic, `sms-sender:p<k>`, as a channel topic).
pub(super) fn partition_topic(k: u16) -> String {
    format!("realtime:sms-sender:p{k}")
}

/// The partition a channel topic names, if it is one of ours.
fn partition_of_topic(topic: &str) -> Option<u16> {
    topic.strip_prefix("realtime:sms-sender:p")?.parse().ok()
}

/// A channel we joined or are joining.
#[derive(Debug)]
struct Chan {
    join_ref: String,
    joined: bool,
    /// When an unanswered join gives up.
    deadline: Option<Instant>,
}

impl Chan {
    fn joining(join_ref: String, now: Instant, timeout: Duration) -> Chan {
        Chan {
            join_ref,
            joined: false,
            deadline: Some(now + timeout),
        }
    }
}

/// What the session does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Act {
    /// Send this frame.
    Send(String),
    /// Every wanted channel is joined (first time, or partitions were gained): catch up.
    Subscribed,
    /// The partitions this instance serves now (`None`: no membership, serve everything).
    Assign(Option<Assignment>),
    /// A row entered `queued_for_send` in one of our partitions.
    Enqueue(MessageId),
    /// A broadcast whose id could not be read: a catch-up is the only way to find the row.
    Unnamed,
    /// Reconnect.
    Lost(String),
    /// Reconnect, but the server refused us for a reason a retry soon would meet again.
    Refused(String),
}

/// How this instance identifies itself and times its joins.
#[derive(Debug, Clone)]
pub(super) struct Setup {
    /// This instance's Presence key.
    pub(super) me: String,
    /// P, from the database.
    pub(super) partitions: u16,
    /// `access_token` for joins (legacy JWT keys only).
    pub(super) token: Option<String>,
    /// Limit for a join reply, and for the first `presence_state` after the members join.
    pub(super) join_timeout: Duration,
    /// Join the partition channels without taking part in the membership (`check`): nobody
    /// gives partitions over to an instance that only looks.
    pub(super) observe_only: bool,
}

/// The scaled mode's channels on one socket.
#[derive(Debug)]
pub(super) struct Scaled {
    setup: Setup,
    members_chan: Option<Chan>,
    /// The ref of our track push, until it is answered.
    track_ref: Option<String>,
    members: Members,
    /// When the first `presence_state` is due (after the members join).
    presence_due: Option<Instant>,
    /// Presence is unavailable: serve every partition.
    fallback: bool,
    chans: BTreeMap<u16, Chan>,
    /// Partitions a catch-up was asked for since they were joined.
    caught_up: BTreeSet<u16>,
    told: Option<Option<Assignment>>,
    subscribed: bool,
}

impl Scaled {
    pub(super) fn new(setup: Setup) -> Scaled {
        Scaled {
            setup,
            members_chan: None,
            track_ref: None,
            members: Members::default(),
            presence_due: None,
            fallback: false,
            chans: BTreeMap::new(),
            caught_up: BTreeSet::new(),
            told: None,
            subscribed: false,
        }
    }

    /// Whether every wanted channel has been joined on this socket at least once.
    pub(super) fn subscribed(&self) -> bool {
        self.subscribed
    }

    /// The first frames: join the members channel.
    pub(super) fn start(&mut self, refs: &mut Refs, now: Instant) -> Vec<Act> {
        if self.setup.observe_only {
            self.fallback = true;
            return self.reconcile(refs, now);
        }
        let join_ref = refs.next();
        let join = frame::join_broadcast(
            MEMBERS_TOPIC,
            &join_ref,
            self.setup.token.as_deref(),
            Some(&self.setup.me),
        );
        self.members_chan = Some(Chan::joining(join_ref, now, self.setup.join_timeout));
        vec![Act::Send(join)]
    }

    /// The earliest moment a tick has something to decide.
    pub(super) fn deadline(&self) -> Option<Instant> {
        let joins = self
            .members_chan
            .iter()
            .chain(self.chans.values())
            .filter_map(|c| c.deadline);
        joins.chain(self.presence_due).min()
    }

    /// A tick at `now`: give up on joins past their deadline, and on Presence without a state.
    pub(super) fn tick(&mut self, refs: &mut Refs, now: Instant) -> Vec<Act> {
        let late = |c: &Chan| c.deadline.is_some_and(|d| now >= d);
        if self.members_chan.as_ref().is_some_and(late) || self.chans.values().any(late) {
            return vec![Act::Lost("no reply to a join within the time limit".into())];
        }
        if self.presence_due.is_some_and(|d| now >= d) {
            self.fall_back("no presence state within the time limit");
            return self.reconcile(refs, now);
        }
        Vec::new()
    }

    /// The frames that leave every channel (shutdown).
    pub(super) fn leave_all(&self, refs: &mut Refs) -> Vec<String> {
        let members = self
            .members_chan
            .iter()
            .map(|c| (MEMBERS_TOPIC.to_string(), c));
        let parts = self.chans.iter().map(|(k, c)| (partition_topic(*k), c));
        members
            .chain(parts)
            .map(|(topic, c)| frame::leave(&topic, &refs.next(), &c.join_ref))
            .collect()
    }

    /// Read one frame.
    pub(super) fn on_frame(
        &mut self,
        frame: ServerFrame,
        refs: &mut Refs,
        now: Instant,
    ) -> Vec<Act> {
        match frame {
            ServerFrame::Reply {
                topic,
                reference,
                status,
                response,
            } => self.on_reply(&topic, reference.as_deref(), &status, &response, refs, now),
            ServerFrame::PresenceState { topic, metas } if topic == MEMBERS_TOPIC => {
                self.members.replace(metas);
                self.presence_due = None;
                self.reconcile(refs, now)
            }
            ServerFrame::PresenceDiff {
                topic,
                joins,
                leaves,
            } if topic == MEMBERS_TOPIC => {
                self.members.diff(joins, leaves);
                self.reconcile(refs, now)
            }
            ServerFrame::Broadcast { topic, event, id } => self.on_broadcast(&topic, &event, id),
            ServerFrame::Close { topic, reference } | ServerFrame::Error { topic, reference } => {
                self.on_close(&topic, reference.as_deref(), refs, now)
            }
            _ => Vec::new(),
        }
    }

    fn on_reply(
        &mut self,
        topic: &str,
        reference: Option<&str>,
        status: &str,
        response: &serde_json::Value,
        refs: &mut Refs,
        now: Instant,
    ) -> Vec<Act> {
        let reason = || {
            redact::scrub(
                &response["reason"]
                    .as_str()
                    .map_or_else(|| response.to_string(), String::from),
            )
        };
        if topic == MEMBERS_TOPIC {
            if reference.is_some() && reference == self.track_ref.as_deref() {
                self.track_ref = None;
                if status != "ok" {
                    self.fall_back(&format!("presence track refused: {}", reason()));
                    return self.reconcile(refs, now);
                }
                return Vec::new();
            }
            let Some(chan) = self
                .members_chan
                .as_mut()
                .filter(|c| Some(c.join_ref.as_str()) == reference)
            else {
                return Vec::new();
            };
            if status != "ok" {
                self.members_chan = None;
                self.fall_back(&format!("members channel refused: {}", reason()));
                return self.reconcile(refs, now);
            }
            chan.joined = true;
            chan.deadline = None;
            let join_ref = chan.join_ref.clone();
            let track_ref = refs.next();
            let meta = json!({"partitions": self.setup.partitions});
            self.track_ref = Some(track_ref.clone());
            self.presence_due = Some(now + self.setup.join_timeout);
            debug!(
                "realtime members channel joined; tracking as {}",
                self.setup.me
            );
            return vec![Act::Send(frame::track(
                MEMBERS_TOPIC,
                &track_ref,
                &join_ref,
                &meta,
            ))];
        }
        let Some(k) = partition_of_topic(topic) else {
            return Vec::new();
        };
        let Some(chan) = self
            .chans
            .get_mut(&k)
            .filter(|c| Some(c.join_ref.as_str()) == reference)
        else {
            return Vec::new();
        };
        if status != "ok" {
            return vec![Act::Refused(format!(
                "join of {topic} refused: {}",
                reason()
            ))];
        }
        chan.joined = true;
        chan.deadline = None;
        self.reconcile(refs, now)
    }

    fn on_broadcast(&mut self, topic: &str, event: &str, id: Option<String>) -> Vec<Act> {
        let ours = partition_of_topic(topic).is_some_and(|k| self.chans.contains_key(&k));
        if !ours || event != QUEUED_EVENT {
            return Vec::new();
        }
        match id.as_deref().and_then(MessageId::parse) {
            Some(id) => vec![Act::Enqueue(id)],
            None => vec![Act::Unnamed],
        }
    }

    fn on_close(
        &mut self,
        topic: &str,
        reference: Option<&str>,
        refs: &mut Refs,
        now: Instant,
    ) -> Vec<Act> {
        let ours = |c: &Chan| reference.is_none_or(|r| r == c.join_ref);
        if topic == MEMBERS_TOPIC {
            // Presence gone (the server closed the channel, e.g. its presence rate limit): the
            // partitions still come by Broadcast, so serve them all rather than reconnect.
            if self.members_chan.as_ref().is_some_and(ours) {
                self.members_chan = None;
                self.track_ref = None;
                self.fall_back("the server closed the members channel");
                return self.reconcile(refs, now);
            }
            return Vec::new();
        }
        match partition_of_topic(topic).and_then(|k| self.chans.get(&k)) {
            Some(c) if ours(c) => vec![Act::Lost(format!("the server closed our channel {topic}"))],
            _ => Vec::new(),
        }
    }

    fn fall_back(&mut self, why: &str) {
        if !self.fallback {
            warn!("realtime scaled mode without membership ({why}); serving every partition");
        }
        self.fallback = true;
        self.presence_due = None;
    }

    /// The partitions to serve now; `None` while the membership is not known yet.
    fn wanted(&self) -> Option<(Vec<u16>, Option<Assignment>)> {
        if self.fallback {
            return Some(((0..self.setup.partitions).collect(), None));
        }
        if !self.members.synced() {
            return None;
        }
        let keys = self.members.keys_with(&self.setup.me);
        let a = assign(&keys, &self.setup.me, self.setup.partitions);
        Some((a.mine.clone(), Some(a)))
    }

    /// Join what is wanted and not held; once all of it is joined, leave what is not wanted,
    /// tell the assignment if it changed, and announce the subscription if partitions were gained.
    fn reconcile(&mut self, refs: &mut Refs, now: Instant) -> Vec<Act> {
        let Some((wanted, assignment)) = self.wanted() else {
            return Vec::new();
        };
        let mut acts = Vec::new();
        for k in &wanted {
            if !self.chans.contains_key(k) {
                let join_ref = refs.next();
                let topic = partition_topic(*k);
                acts.push(Act::Send(frame::join_broadcast(
                    &topic,
                    &join_ref,
                    self.setup.token.as_deref(),
                    None,
                )));
                self.chans
                    .insert(*k, Chan::joining(join_ref, now, self.setup.join_timeout));
            }
        }
        if !wanted.iter().all(|k| self.chans[k].joined) {
            return acts;
        }
        let unwanted: Vec<u16> = self
            .chans
            .keys()
            .copied()
            .filter(|k| !wanted.contains(k))
            .collect();
        for k in unwanted {
            if let Some(c) = self.chans.remove(&k) {
                acts.push(Act::Send(frame::leave(
                    &partition_topic(k),
                    &refs.next(),
                    &c.join_ref,
                )));
            }
            self.caught_up.remove(&k);
        }
        if self.told.as_ref() != Some(&assignment) {
            if let Some(a) = &assignment {
                info!(
                    "realtime scaled mode: {} member(s); serving partitions {:?}{}",
                    a.members,
                    a.mine,
                    if a.sweeper { " and sweeping" } else { "" }
                );
            }
            acts.push(Act::Assign(assignment.clone()));
            self.told = Some(assignment);
        }
        let gained = wanted.iter().any(|k| !self.caught_up.contains(k));
        if gained || !self.subscribed {
            self.caught_up.extend(wanted.iter().copied());
            self.subscribed = true;
            acts.push(Act::Subscribed);
        }
        acts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn setup(me: &str, partitions: u16) -> Setup {
        Setup {
            me: me.into(),
            partitions,
            token: None,
            join_timeout: Duration::from_secs(15),
            observe_only: false,
        }
    }

    fn sent(acts: &[Act]) -> Vec<Value> {
        acts.iter()
            .filter_map(|a| match a {
                Act::Send(f) => Some(serde_json::from_str(f).unwrap()),
                _ => None,
            })
            .collect()
    }

    fn reply(topic: &str, reference: &str, status: &str) -> ServerFrame {
        ServerFrame::Reply {
            topic: topic.into(),
            reference: Some(reference.into()),
            status: status.into(),
            response: json!({}),
        }
    }

    /// Join the members channel and receive the state `metas`; returns the acts of the state.
    fn joined(s: &mut Scaled, refs: &mut Refs, t0: Instant, metas: &[(&str, &str)]) -> Vec<Act> {
        let join = sent(&s.start(refs, t0));
        let join_ref = join[0]["ref"].as_str().unwrap().to_string();
        assert_eq!(
            join[0]["payload"]["config"]["presence"]["key"],
            s.setup.me.as_str()
        );
        assert_eq!(join[0]["payload"]["config"]["private"], true);
        let track = sent(&s.on_frame(reply(MEMBERS_TOPIC, &join_ref, "ok"), refs, t0));
        assert_eq!(track[0]["event"], "presence");
        assert_eq!(track[0]["payload"]["event"], "track");
        let metas = metas
            .iter()
            .map(|(k, r)| (k.to_string(), r.to_string()))
            .collect();
        s.on_frame(
            ServerFrame::PresenceState {
                topic: MEMBERS_TOPIC.into(),
                metas,
            },
            refs,
            t0,
        )
    }

    fn join_refs(acts: &[Act]) -> Vec<(String, String)> {
        sent(acts)
            .iter()
            .filter(|f| f["event"] == "phx_join")
            .map(|f| {
                (
                    f["topic"].as_str().unwrap().to_string(),
                    f["ref"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn joins_its_partitions_then_tells_and_catches_up_once_all_are_joined() {
        let (mut s, mut refs, t0) = (Scaled::new(setup("b", 4)), Refs::default(), Instant::now());
        let acts = joined(&mut s, &mut refs, t0, &[("a", "1")]);
        let joins = join_refs(&acts);
        assert_eq!(
            joins.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(),
            ["realtime:sms-sender:p1", "realtime:sms-sender:p3"],
            "b is the second of two members"
        );
        assert!(
            !acts.contains(&Act::Subscribed),
            "not before the joins are answered"
        );
        let first = s.on_frame(reply(&joins[0].0, &joins[0].1, "ok"), &mut refs, t0);
        assert!(first.is_empty());
        let last = s.on_frame(reply(&joins[1].0, &joins[1].1, "ok"), &mut refs, t0);
        assert_eq!(
            last,
            [
                Act::Assign(Some(Assignment {
                    mine: vec![1, 3],
                    sweeper: false,
                    members: 2
                })),
                Act::Subscribed
            ]
        );
        assert!(s.subscribed());
    }

    #[test]
    fn a_member_leaving_gives_its_partitions_over_joining_before_leaving() {
        let (mut s, mut refs, t0) = (Scaled::new(setup("b", 4)), Refs::default(), Instant::now());
        let acts = joined(&mut s, &mut refs, t0, &[("a", "1"), ("b", "2")]);
        for (topic, r) in join_refs(&acts) {
            s.on_frame(reply(&topic, &r, "ok"), &mut refs, t0);
        }
        let diff = ServerFrame::PresenceDiff {
            topic: MEMBERS_TOPIC.into(),
            joins: vec![],
            leaves: vec![("a".into(), "1".into())],
        };
        let acts = s.on_frame(diff, &mut refs, t0);
        let joins = join_refs(&acts);
        assert_eq!(joins.len(), 2, "p0 and p2 are b's now");
        assert!(!sent(&acts).iter().any(|f| f["event"] == "phx_leave"));
        let mut last = Vec::new();
        for (topic, r) in joins {
            last = s.on_frame(reply(&topic, &r, "ok"), &mut refs, t0);
        }
        assert!(
            last.contains(&Act::Subscribed),
            "gained partitions are caught up"
        );
        assert!(last.contains(&Act::Assign(Some(Assignment {
            mine: vec![0, 1, 2, 3],
            sweeper: true,
            members: 1
        }))));
        let c = ServerFrame::PresenceDiff {
            topic: MEMBERS_TOPIC.into(),
            joins: vec![("a".into(), "7".into())],
            leaves: vec![],
        };
        let back = sent(&s.on_frame(c, &mut refs, t0));
        let leaves: Vec<&str> = back
            .iter()
            .filter(|f| f["event"] == "phx_leave")
            .map(|f| f["topic"].as_str().unwrap())
            .collect();
        assert_eq!(
            leaves,
            ["realtime:sms-sender:p0", "realtime:sms-sender:p2"],
            "a is back: its partitions are left (already joined ones need no new join)"
        );
    }

    #[test]
    fn broadcasts_are_taken_only_from_held_partitions() {
        let (mut s, mut refs, t0) = (Scaled::new(setup("a", 2)), Refs::default(), Instant::now());
        let acts = joined(&mut s, &mut refs, t0, &[]);
        for (topic, r) in join_refs(&acts) {
            s.on_frame(reply(&topic, &r, "ok"), &mut refs, t0);
        }
        let id = "00000000-0000-4000-8000-000000000001";
        let b = |topic: &str, event: &str, id: Option<&str>| ServerFrame::Broadcast {
            topic: topic.into(),
            event: event.into(),
            id: id.map(String::from),
        };
        assert_eq!(
            s.on_frame(
                b("realtime:sms-sender:p1", "queued", Some(id)),
                &mut refs,
                t0
            ),
            [Act::Enqueue(MessageId::parse(id).unwrap())]
        );
        assert_eq!(
            s.on_frame(
                b("realtime:sms-sender:p1", "queued", Some("x")),
                &mut refs,
                t0
            ),
            [Act::Unnamed]
        );
        assert!(s
            .on_frame(
                b("realtime:sms-sender:p9", "queued", Some(id)),
                &mut refs,
                t0
            )
            .is_empty());
        assert!(s
            .on_frame(
                b("realtime:sms-sender:p1", "other", Some(id)),
                &mut refs,
                t0
            )
            .is_empty());
    }

    #[test]
    fn without_presence_every_partition_is_served() {
        let (mut s, mut refs, t0) = (Scaled::new(setup("a", 3)), Refs::default(), Instant::now());
        let join = sent(&s.start(&mut refs, t0));
        let join_ref = join[0]["ref"].as_str().unwrap();
        s.on_frame(reply(MEMBERS_TOPIC, join_ref, "ok"), &mut refs, t0);
        assert!(s.tick(&mut refs, t0 + Duration::from_secs(1)).is_empty());
        let acts = s.tick(&mut refs, t0 + Duration::from_secs(15));
        assert_eq!(
            join_refs(&acts).len(),
            3,
            "no presence state in time: every partition"
        );
        let mut refused = Scaled::new(setup("a", 3));
        let join = sent(&refused.start(&mut refs, t0));
        let acts = refused.on_frame(
            reply(MEMBERS_TOPIC, join[0]["ref"].as_str().unwrap(), "error"),
            &mut refs,
            t0,
        );
        let joins = join_refs(&acts);
        assert_eq!(joins.len(), 3, "members channel refused: every partition");
        let mut last = Vec::new();
        for (topic, r) in joins {
            last = refused.on_frame(reply(&topic, &r, "ok"), &mut refs, t0);
        }
        assert_eq!(last, [Act::Assign(None), Act::Subscribed]);
    }

    #[test]
    fn a_members_channel_closed_by_the_server_falls_back_to_every_partition() {
        let (mut s, mut refs, t0) = (Scaled::new(setup("b", 2)), Refs::default(), Instant::now());
        let acts = joined(&mut s, &mut refs, t0, &[("a", "1")]);
        for (topic, r) in join_refs(&acts) {
            s.on_frame(reply(&topic, &r, "ok"), &mut refs, t0);
        }
        let close = ServerFrame::Close {
            topic: MEMBERS_TOPIC.into(),
            reference: None,
        };
        let acts = s.on_frame(close, &mut refs, t0);
        assert!(!acts.iter().any(|a| matches!(a, Act::Lost(_))), "{acts:?}");
        let joins = join_refs(&acts);
        assert_eq!(joins.len(), 1, "p0 joined too: {acts:?}");
        let last = s.on_frame(reply(&joins[0].0, &joins[0].1, "ok"), &mut refs, t0);
        assert!(last.contains(&Act::Assign(None)) && last.contains(&Act::Subscribed));
    }

    #[test]
    fn unanswered_joins_and_closed_channels_lose_the_link_refusals_are_decisive() {
        let (mut s, mut refs, t0) = (Scaled::new(setup("a", 2)), Refs::default(), Instant::now());
        s.start(&mut refs, t0);
        assert!(matches!(
            s.tick(&mut refs, t0 + Duration::from_secs(16)).as_slice(),
            [Act::Lost(_)]
        ));
        let mut s = Scaled::new(setup("a", 2));
        let acts = joined(&mut s, &mut refs, t0, &[]);
        let joins = join_refs(&acts);
        let refused = s.on_frame(reply(&joins[0].0, &joins[0].1, "error"), &mut refs, t0);
        assert!(matches!(refused.as_slice(), [Act::Refused(_)]));
        let close = ServerFrame::Close {
            topic: joins[1].0.clone(),
            reference: Some(joins[1].1.clone()),
        };
        assert!(matches!(
            s.on_frame(close, &mut refs, t0).as_slice(),
            [Act::Lost(_)]
        ));
        let stale = ServerFrame::Close {
            topic: joins[1].0.clone(),
            reference: Some("999".into()),
        };
        assert!(
            s.on_frame(stale, &mut refs, t0).is_empty(),
            "a stale close changes nothing"
        );
    }
}
