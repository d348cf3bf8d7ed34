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

use std::time::{Duration, SystemTime};

use crate::delivery::unrecorded::Unrecorded;
use crate::message::MessageId;
use crate::supabase::rest::Rest;
use crate::twilio::client::{ListError, Listed, Twilio};

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
    /// Whether a "none" answer from this look is conclusive (the settle window has passed).
    pub settled: bool,
    /// The SID a previous attempt recorded on the row: never this attempt's message.
    pub previous_sid: Option<&'a str>,
    /// Sends of this instance whose `sent` write waits: their SIDs belong to their rows.
    pub unrecorded: &'a Unrecorded,
}

/// Ask Twilio (and our table, for ownership) whether the message of `q` was created.
/// `may_start` is asked before every list page (the lease).
pub fn look(twilio: &Twilio, rest: &Rest, q: &Question<'_>, may_start: &dyn Fn() -> bool) -> Look {
    let listing = match twilio.list_outbound(q.to, q.since, may_start) {
        Ok(l) => l,
        Err(ListError::NoTime) => return Look::Unknown("no time left in the lease to ask".into()),
        Err(ListError::Twilio(e)) => {
            return Look::Unknown(format!("Twilio's message list failed: {e}"))
        }
    };
    let mut same: Vec<&Listed> = Vec::new();
    let mut redacted: Vec<&Listed> = Vec::new();
    for m in &listing.messages {
        match compare_body(m.body.as_deref(), q.body) {
            BodyMatch::Same => same.push(m),
            BodyMatch::Redacted => redacted.push(m),
            BodyMatch::Different => {}
        }
    }
    // Oldest first: if several attempts got through, the first is the one to keep.
    same.sort_by_key(|m| m.created);
    redacted.sort_by_key(|m| m.created);
    let mut unowned_redacted = Vec::new();
    for (m, exact) in same
        .iter()
        .map(|m| (m, true))
        .chain(redacted.iter().map(|m| (m, false)))
    {
        if q.previous_sid == Some(m.sid.as_str()) {
            continue; // the earlier attempt's SMS
        }
        let waiting_here = q.unrecorded.owner_of(&m.sid);
        let owner = match &waiting_here {
            Some(here) => Ok(Some(here.clone())),
            None => rest.sid_owner(&m.sid),
        };
        match owner {
            Err(e) => return Look::Unknown(format!("cannot check who records {}: {e}", m.sid)),
            Ok(Some(owner)) if &owner == q.id => {
                return Look::Found(Found {
                    sid: m.sid.clone(),
                    created: m.created,
                    recorded: waiting_here.is_none(),
                })
            }
            Ok(Some(_)) => continue, // another row's message
            Ok(None) if exact => {
                return Look::Found(Found {
                    sid: m.sid.clone(),
                    created: m.created,
                    recorded: false,
                })
            }
            Ok(None) => unowned_redacted.push(*m),
        }
    }
    match unowned_redacted.as_slice() {
        [only] => {
            return Look::Found(Found {
                sid: only.sid.clone(),
                created: only.created,
                recorded: false,
            })
        }
        [] => {}
        more => {
            return Look::Unknown(format!(
                "{} unrecorded messages with redacted bodies to this number; cannot tell which \
                 (if any) is this one",
                more.len()
            ))
        }
    }
    if !listing.complete {
        return Look::Unknown("the list is longer than the pages read".into());
    }
    if q.settled {
        Look::NotFound
    } else {
        Look::NotYet
    }
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
}
