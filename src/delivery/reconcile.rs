//! "Did Twilio create this message?" — the one place that reads Twilio's message list to decide,
//! after an ambiguous create (timeout, cut connection, 5xx) or for an orphaned claim.
//!
//! Twilio offers no idempotency key and no client reference on a Message, so the list is the only
//! evidence, and it is less friendly than its docs (docs/twilio.md §3.3):
//! - `date_sent` stays null while a message is `queued`/`accepted` (seconds to hours), so no
//!   `DateSent` filter is used: messages to the recipient are listed newest first (with our `From`,
//!   or compared on `messaging_service_sid`) and `date_created` is filtered here, stopping once a
//!   page reaches messages older than the window;
//! - the stored body may differ from what we sent: trial accounts prefix it, Smart Encoding swaps
//!   look-alike characters, redaction empties it. [`compare_body`] treats a prefixed or normalised
//!   equal body as ours and a redacted/empty one as a *candidate*, never as a miss;
//! - a new message may not be listable at once, so one "not found" is no proof. The caller only
//!   concludes "not created" from a look that **started** at least the settle window
//!   (`RECONCILE_SETTLE_MS`) after the ambiguous attempt ended ([`Look::NotFound`] vs
//!   [`Look::NotYet`]);
//! - a candidate that another row already records is not ours, nor one whose `sent` write waits
//!   in memory here ([`crate::delivery::unrecorded`]); one that another *unrecorded* row might own
//!   is kept out by the sender, which never holds two rows with the same recipient and text at
//!   once on one instance (see [`crate::delivery::in_flight`]);
//! - the SID a previous attempt recorded (a row the app requeued after `failed`) is never proof:
//!   that SMS belongs to the earlier attempt, and the requeue asks for a new one.
//!
//! Anything that prevents an answer (Twilio errors including 4xx, a list too long to read, the
//! owner check failing, several indistinguishable redacted candidates) is [`Look::Unknown`]: the
//! message is neither re-sent nor failed; it stays `sending` until the question can be answered.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use crate::delivery::unrecorded::Unrecorded;
use crate::message::MessageId;
use crate::supabase::rest::Rest;
use crate::twilio::client::{ListError, Listed, Listing, Twilio};

/// The prefix Twilio puts before every body sent from a trial account.
pub const TRIAL_PREFIX: &str = "Sent from your Twilio trial account - ";

/// Allowance for our clock and Twilio's disagreeing when filtering on `date_created`.
pub const CLOCK_SLACK: Duration = Duration::from_secs(15);

/// How a listed body compares with ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyMatch {
    /// The same text (exactly, or after the trial prefix / character normalisation).
    Same,
    /// Empty or absent (redaction, `ContentRetention=discard`): cannot tell, so a candidate.
    Redacted,
    /// Another text: not ours.
    Different,
}

/// Compare the body Twilio lists with the one we sent.
pub fn compare_body(listed: Option<&str>, ours: &str) -> BodyMatch {
    let Some(listed) = listed.filter(|b| !b.trim().is_empty()) else {
        return BodyMatch::Redacted;
    };
    if listed == ours {
        return BodyMatch::Same;
    }
    let listed = listed.strip_prefix(TRIAL_PREFIX).unwrap_or(listed);
    if listed == ours || normalise(listed) == normalise(ours) {
        BodyMatch::Same
    } else {
        BodyMatch::Different
    }
}

/// The text with the substitutions Smart Encoding and carriers make undone: look-alike quotes,
/// dashes and spaces mapped to ASCII, line endings unified, outer whitespace dropped.
pub fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.trim().replace("\r\n", "\n").chars() {
        match c {
            '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}' | '\u{2032}' | '\u{00B4}' => {
                out.push('\'')
            }
            '\u{201C}' | '\u{201D}' | '\u{201E}' | '\u{201F}' | '\u{2033}' | '\u{00AB}'
            | '\u{00BB}' => out.push('"'),
            '\u{2010}'..='\u{2015}' | '\u{2212}' => out.push('-'),
            '\u{00A0}' | '\u{2000}'..='\u{200A}' | '\u{202F}' | '\u{205F}' | '\u{3000}' => {
                out.push(' ')
            }
            '\u{2026}' => out.push_str("..."),
            '\u{200B}' | '\u{FEFF}' => {}
            c => out.push(c),
        }
    }
    out
}

/// A message Twilio holds that is ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Its SID.
    pub sid: String,
    /// When Twilio created it.
    pub created: SystemTime,
    /// Whether our row already records it (an earlier write applied).
    pub recorded: bool,
}

/// The answer of one look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Look {
    /// Twilio has it.
    Found(Found),
    /// Twilio has none, and the look started late enough to trust that.
    NotFound,
    /// Twilio lists none yet, but the settle window had not passed: ask again later.
    NotYet,
    /// The question cannot be answered now (the reason, for the log).
    Unknown(String),
}

/// Whether the settle window had passed when a look started, so that "none" is conclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The look started at least the settle window after the ambiguous attempt ended.
    Passed,
    /// Too early: a message not listed yet may still appear.
    Open,
}

/// What a look needs to know about the message.
pub struct Question<'a> {
    /// The row.
    pub id: &'a MessageId,
    /// The recipient (E.164).
    pub to: &'a str,
    /// The text we sent.
    pub body: &'a str,
    /// The earliest `date_created` that can be ours (already including [`CLOCK_SLACK`]).
    pub since: SystemTime,
    /// Whether a "none" answer from this look is conclusive.
    pub window: Window,
    /// The SID a previous attempt recorded on the row: never this attempt's message.
    pub previous_sid: Option<&'a str>,
    /// Sends of this instance whose `sent` write waits: their SIDs belong to their rows.
    pub unrecorded: &'a Unrecorded,
}

/// Who records a listed SID, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// A send of this instance whose `sent` write for that row waits in memory.
    WaitingHere(MessageId),
    /// The row that records it.
    Row(MessageId),
    /// No row records it.
    Nobody,
    /// The owner could not be read (why).
    Unreadable(String),
}

/// The next step of a look: the answer, or the owner of a candidate SID to read first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step<'l> {
    /// The answer.
    Answer(Look),
    /// Read who records this SID, then decide again.
    NeedOwner(&'l str),
}

/// Ask Twilio (and our table, for ownership) whether the message of `q` was created.
/// `may_start` is asked before every list page (the lease).
pub fn look(twilio: &Twilio, rest: &Rest, q: &Question<'_>, may_start: &dyn Fn() -> bool) -> Look {
    let listing = twilio.list_outbound(q.to, q.since, may_start);
    let mut owners: HashMap<String, Owner> = HashMap::new();
    loop {
        match decide(&listing, &owners, q) {
            Step::Answer(look) => return look,
            Step::NeedOwner(sid) => {
                let owner = match q.unrecorded.owner_of(sid) {
                    Some(row) => Owner::WaitingHere(row),
                    None => match rest.sid_owner(sid) {
                        Ok(Some(row)) => Owner::Row(row),
                        Ok(None) => Owner::Nobody,
                        Err(e) => Owner::Unreadable(e.to_string()),
                    },
                };
                owners.insert(sid.to_string(), owner);
            }
        }
    }
}

/// The decision of a look, from what was read: Twilio's list (or why it could not be read),
/// the owners of the candidates read so far, and the question. Candidates are tried oldest
/// first (if several attempts got through, the first is the one to keep), exact bodies before
/// redacted ones; an owner is asked for only when the decision depends on it, so a found
/// message costs no more reads than needed.
pub fn decide<'l>(
    listing: &'l Result<Listing, ListError>,
    owners: &HashMap<String, Owner>,
    q: &Question<'_>,
) -> Step<'l> {
    let listing = match listing {
        Ok(listing) => listing,
        Err(ListError::NoTime) => {
            return Step::Answer(Look::Unknown("no time left in the lease to ask".into()))
        }
        Err(ListError::Twilio(e)) => {
            return Step::Answer(Look::Unknown(format!("Twilio's message list failed: {e}")))
        }
    };
    let found = |m: &Listed, recorded| {
        Step::Answer(Look::Found(Found {
            sid: m.sid.clone(),
            created: m.created,
            recorded,
        }))
    };
    let mut unowned_redacted = Vec::new();
    for (m, exact) in candidates(listing, q) {
        let Some(owner) = owners.get(&m.sid) else {
            return Step::NeedOwner(&m.sid);
        };
        match owner {
            Owner::Unreadable(e) => {
                return Step::Answer(Look::Unknown(format!(
                    "cannot check who records {}: {e}",
                    m.sid
                )))
            }
            Owner::WaitingHere(row) if row == q.id => return found(m, false),
            Owner::Row(row) if row == q.id => return found(m, true),
            Owner::WaitingHere(_) | Owner::Row(_) => continue, // another row's message
            Owner::Nobody if exact == BodyMatch::Same => return found(m, false),
            Owner::Nobody => unowned_redacted.push(m),
        }
    }
    Step::Answer(match unowned_redacted.as_slice() {
        [only] => return found(only, false),
        [] if !listing.complete => Look::Unknown("the list is longer than the pages read".into()),
        [] if q.window == Window::Passed => Look::NotFound,
        [] => Look::NotYet,
        more => Look::Unknown(format!(
            "{} unrecorded messages with redacted bodies to this number; cannot tell which \
             (if any) is this one",
            more.len()
        )),
    })
}

/// The listed messages that may be ours, in the order they are tried: same bodies oldest
/// first, then redacted ones oldest first; never the SID a previous attempt recorded (that SMS
/// belongs to the earlier attempt).
fn candidates<'l>(listing: &'l Listing, q: &Question<'_>) -> Vec<(&'l Listed, BodyMatch)> {
    let mut out: Vec<(&Listed, BodyMatch)> = listing
        .messages
        .iter()
        .filter(|m| q.previous_sid != Some(m.sid.as_str()))
        .map(|m| (m, compare_body(m.body.as_deref(), q.body)))
        .filter(|(_, matched)| *matched != BodyMatch::Different)
        .collect();
    out.sort_by_key(|(m, matched)| (*matched != BodyMatch::Same, m.created));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_compare_as_twilio_stores_them() {
        assert_eq!(compare_body(Some("hi there"), "hi there"), BodyMatch::Same);
        assert_eq!(
            compare_body(Some(&format!("{TRIAL_PREFIX}hi there")), "hi there"),
            BodyMatch::Same
        );
        assert_eq!(
            compare_body(
                Some("It\u{2019}s \u{201C}ok\u{201D} \u{2014} yes\u{2026}"),
                "It's \"ok\" - yes..."
            ),
            BodyMatch::Same
        );
        assert_eq!(compare_body(Some("hi\r\n"), "hi\n"), BodyMatch::Same);
        assert_eq!(compare_body(Some(""), "hi"), BodyMatch::Redacted);
        assert_eq!(compare_body(None, "hi"), BodyMatch::Redacted);
        assert_eq!(compare_body(Some("hi #2"), "hi #1"), BodyMatch::Different);
        assert_eq!(
            compare_body(Some(&format!("{TRIAL_PREFIX}other")), "hi"),
            BodyMatch::Different
        );
    }
    use std::sync::Arc;
    use std::time::UNIX_EPOCH;

    use crate::ops::metrics::Metrics;
    use crate::twilio::client::SendError;

    fn id(n: u32) -> MessageId {
        MessageId::parse(&format!("00000000-0000-4000-8000-{n:012}")).unwrap()
    }

    fn listed(sid: &str, body: Option<&str>, second: u64) -> Listed {
        Listed {
            sid: sid.into(),
            body: body.map(String::from),
            created: UNIX_EPOCH + Duration::from_secs(second),
        }
    }

    fn complete(messages: Vec<Listed>) -> Result<Listing, ListError> {
        Ok(Listing {
            messages,
            complete: true,
        })
    }

    fn found(sid: &str, second: u64, recorded: bool) -> Look {
        Look::Found(Found {
            sid: sid.into(),
            created: UNIX_EPOCH + Duration::from_secs(second),
            recorded,
        })
    }

    /// Runs `decide` to its answer, reading owners from `owners` (a SID not named there has
    /// no owner); returns the answer and the SIDs whose owner was asked for, in order.
    fn run(
        listing: &Result<Listing, ListError>,
        owners: &[(&str, Owner)],
        window: Window,
        previous_sid: Option<&str>,
    ) -> (Look, Vec<String>) {
        let unrecorded = Unrecorded::new(Arc::new(Metrics::default()));
        let me = id(1);
        let q = Question {
            id: &me,
            to: "+15551234567",
            body: "hello",
            since: UNIX_EPOCH,
            window,
            previous_sid,
            unrecorded: &unrecorded,
        };
        let mut read = HashMap::new();
        let mut asked = Vec::new();
        loop {
            match decide(listing, &read, &q) {
                Step::Answer(look) => return (look, asked),
                Step::NeedOwner(sid) => {
                    asked.push(sid.to_string());
                    let owner = owners
                        .iter()
                        .find(|(s, _)| *s == sid)
                        .map_or(Owner::Nobody, |(_, o)| o.clone());
                    read.insert(sid.to_string(), owner);
                }
            }
        }
    }

    /// What a case is about, the list as read, the owners, the window, the previous SID, and
    /// the expected answer.
    type Case = (
        &'static str,
        Result<Listing, ListError>,
        Vec<(&'static str, Owner)>,
        Window,
        Option<&'static str>,
        Look,
    );

    fn unknown(look: &Look, says: &str) -> bool {
        matches!(look, Look::Unknown(why) if why.contains(says))
    }

    #[test]
    fn every_verdict_from_what_was_read() {
        for (what, listing, owners, window, previous, expected) in verdict_cases() {
            assert_eq!(
                run(&listing, &owners, window, previous).0,
                expected,
                "{what}"
            );
        }
    }

    fn hello(sid: &str, second: u64) -> Listed {
        listed(sid, Some("hello"), second)
    }

    fn redacted(sid: &str, second: u64) -> Listed {
        listed(sid, None, second)
    }

    fn other(sid: &str, second: u64) -> Listed {
        listed(sid, Some("other text"), second)
    }

    /// One case per verdict a look can reach from a readable list.
    fn verdict_cases() -> Vec<Case> {
        let mut cases = found_cases();
        cases.extend(other_cases());
        cases
    }

    /// The cases where the look finds the message.
    fn found_cases() -> Vec<Case> {
        use Window::{Open, Passed};
        vec![
            (
                "an exact body nobody records is ours",
                complete(vec![hello("SM1", 10)]),
                vec![],
                Passed,
                None,
                found("SM1", 10, false),
            ),
            (
                "our row already records it (an earlier write applied)",
                complete(vec![hello("SM1", 10)]),
                vec![("SM1", Owner::Row(id(1)))],
                Passed,
                None,
                found("SM1", 10, true),
            ),
            (
                "its sent write waits here: ours, not recorded",
                complete(vec![hello("SM1", 10)]),
                vec![("SM1", Owner::WaitingHere(id(1)))],
                Open,
                None,
                found("SM1", 10, false),
            ),
            (
                "the oldest of two exact bodies is kept",
                complete(vec![hello("SM2", 20), hello("SM1", 10)]),
                vec![],
                Passed,
                None,
                found("SM1", 10, false),
            ),
            (
                "another row's message is passed over",
                complete(vec![hello("SM1", 10), hello("SM2", 20)]),
                vec![("SM1", Owner::Row(id(2)))],
                Passed,
                None,
                found("SM2", 20, false),
            ),
            (
                "another row's unrecorded send here is passed over",
                complete(vec![hello("SM1", 10)]),
                vec![("SM1", Owner::WaitingHere(id(2)))],
                Passed,
                None,
                Look::NotFound,
            ),
        ]
    }

    /// The cases where it is not found, or not yet.
    fn other_cases() -> Vec<Case> {
        use Window::{Open, Passed};
        vec![
            (
                "the previous attempt's SID is never this claim's",
                complete(vec![hello("SM0", 5)]),
                vec![],
                Passed,
                Some("SM0"),
                Look::NotFound,
            ),
            (
                "one redacted candidate nobody records is ours",
                complete(vec![redacted("SM1", 10), other("SM9", 11)]),
                vec![],
                Passed,
                None,
                found("SM1", 10, false),
            ),
            (
                "a trial prefix is still the same body",
                complete(vec![listed(
                    "SM1",
                    Some(&format!("{TRIAL_PREFIX}hello")),
                    10,
                )]),
                vec![],
                Passed,
                None,
                found("SM1", 10, false),
            ),
            (
                "other texts only, settle window passed: not created",
                complete(vec![other("SM9", 11)]),
                vec![],
                Passed,
                None,
                Look::NotFound,
            ),
            (
                "nothing listed while the window is open: ask again later",
                complete(vec![]),
                vec![],
                Open,
                None,
                Look::NotYet,
            ),
        ]
    }

    #[test]
    fn what_prevents_an_answer_is_unknown_never_a_miss() {
        let twilio_down = Err(ListError::Twilio(SendError::NoResponse("timed out".into())));
        assert!(unknown(
            &run(&twilio_down, &[], Window::Passed, None).0,
            "list failed"
        ));
        assert!(unknown(
            &run(&Err(ListError::NoTime), &[], Window::Passed, None).0,
            "no time left"
        ));
        let cut = Ok(Listing {
            messages: vec![listed("SM9", Some("other"), 1)],
            complete: false,
        });
        assert!(unknown(
            &run(&cut, &[], Window::Passed, None).0,
            "longer than the pages"
        ));
        let two = complete(vec![listed("SM1", None, 1), listed("SM2", Some(" "), 2)]);
        assert!(unknown(
            &run(&two, &[], Window::Passed, None).0,
            "2 unrecorded messages"
        ));
        let hidden = complete(vec![listed("SM1", Some("hello"), 1)]);
        let owners = [("SM1", Owner::Unreadable("503".into()))];
        assert!(unknown(
            &run(&hidden, &owners, Window::Passed, None).0,
            "cannot check who records SM1"
        ));
    }

    #[test]
    fn owners_are_read_only_while_the_answer_depends_on_them() {
        let listing = complete(vec![
            listed("SM3", None, 5),
            listed("SM2", Some("hello"), 20),
            listed("SM1", Some("hello"), 10),
            listed("SM4", Some("other"), 1),
        ]);
        let (look, asked) = run(&listing, &[], Window::Passed, None);
        assert_eq!(look, found("SM1", 10, false));
        assert_eq!(
            asked,
            ["SM1"],
            "the oldest exact body first; nothing after the answer"
        );
        let owners = [("SM1", Owner::Row(id(7))), ("SM2", Owner::Row(id(8)))];
        let (look, asked) = run(&listing, &owners, Window::Passed, None);
        assert_eq!(
            look,
            found("SM3", 5, false),
            "then the one redacted candidate"
        );
        assert_eq!(asked, ["SM1", "SM2", "SM3"], "never the different body");
    }
}
