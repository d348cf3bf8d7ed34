//! The one place that judges a failed create: what it says about the message, about Twilio and
//! about our account, and so what the sender does next.
//!
//! Rules (docs/twilio.md §4), applied in this order:
//! 1. 429, or Twilio's code 20429: the account's concurrency limit. Never processed, so always
//!    safe to try again, and not a failure of this message.
//! 2. 5xx, network failures and answers we cannot read are transient: another attempt after the
//!    backoff (or the server's `Retry-After`). Some of them may have created the message (the
//!    request was written, or Twilio failed while handling it), and some say Twilio is down.
//! 3. 401/403, and 404 on our own account path, mean our credentials or URL are wrong, which no
//!    message can fix: pause all sending instead of failing every message.
//! 4. Every other 4xx is permanent for that message, including codes we do not know (Twilio
//!    refines codes over time); 21611 (sender queue full) is the one 4xx that clears by waiting.

use std::time::Duration;

use crate::twilio::client::SendError;

/// The whole judgement of a failed create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judgement {
    /// The account's concurrency limit: never processed; wait (the server's delay, if any) and
    /// try again without counting the attempt.
    Throttled {
        /// The server's `Retry-After`, unclamped.
        retry_after: Option<Duration>,
    },
    /// This message cannot be sent: mark it `failed`.
    Permanent,
    /// Our account or configuration is refused: give the message back and pause all sending.
    AccountRefused,
    /// Worth another attempt.
    Transient(Transient),
}

/// What a transient failure says beyond "try again".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transient {
    /// The server's `Retry-After`, unclamped.
    pub after: Option<Duration>,
    /// Whether Twilio may have created the message anyway (settle before sending again).
    pub maybe_created: MaybeCreated,
    /// Whether the failure says Twilio itself is unavailable (counts towards the circuit).
    pub availability: Availability,
}

/// Whether a failed create may have created the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaybeCreated {
    /// Nothing was processed (refused connection, 429): sending again is safe.
    No,
    /// The request may have been processed: Twilio's list must answer before another create.
    Yes,
}

/// What a failure says about Twilio's availability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    /// Twilio looks down (5xx, connection failures, timeouts).
    OutageSignal,
    /// Twilio answered; the failure is about this request.
    Answered,
}

/// Judge a failed create, applying the rules in the module's order.
pub fn judge(error: &SendError) -> Judgement {
    if is_throttled(error) {
        let retry_after = match error {
            SendError::Rejected { retry_after, .. } => *retry_after,
            _ => None,
        };
        return Judgement::Throttled { retry_after };
    }
    match classify(error) {
        Verdict::Fail => Judgement::Permanent,
        Verdict::Pause => Judgement::AccountRefused,
        Verdict::Retry { after } => Judgement::Transient(Transient {
            after,
            maybe_created: if is_ambiguous(error) {
                MaybeCreated::Yes
            } else {
                MaybeCreated::No
            },
            availability: if is_outage_signal(error) {
                Availability::OutageSignal
            } else {
                Availability::Answered
            },
        }),
    }
}

/// What to do after a failed send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Try this message again after the backoff (or after `after`, when the server said so).
    Retry {
        /// The server's `Retry-After`, unclamped.
        after: Option<Duration>,
    },
    /// This message cannot be sent: mark it `failed`.
    Fail,
    /// Nothing can be sent until an operator fixes the account or configuration: give the
    /// message back and pause all sending.
    Pause,
}

/// Twilio codes that are about our account or configuration, not about one message.
const ACCOUNT_CODES: &[u32] = &[20003, 20404, 20005, 30002];

/// Classify a send failure (throttling aside).
fn classify(error: &SendError) -> Verdict {
    match error {
        SendError::NotSent(_) | SendError::NoResponse(_) => Verdict::Retry { after: None },
        // Twilio created the message but we could not read its SID: treat as ambiguous.
        SendError::Unreadable { .. } => Verdict::Retry { after: None },
        SendError::Rejected {
            status,
            code,
            retry_after,
            ..
        } => match (*status, *code) {
            (429, _) => Verdict::Retry {
                after: *retry_after,
            },
            (s, _) if s >= 500 => Verdict::Retry {
                after: *retry_after,
            },
            (_, Some(21611)) => Verdict::Retry {
                after: *retry_after,
            },
            (_, Some(c)) if ACCOUNT_CODES.contains(&c) => Verdict::Pause,
            (401 | 403, _) => Verdict::Pause,
            (404, None) => Verdict::Pause, // no Twilio body: TWILIO_API_URL points elsewhere
            _ => Verdict::Fail,
        },
    }
}

/// Whether Twilio may have created the message despite the failure: the request may have been
/// written (timeout, cut connection), Twilio failed while handling it (5xx), or it answered 2xx
/// in a way we could not read. 429 and connection failures are safe: nothing was processed.
fn is_ambiguous(error: &SendError) -> bool {
    match error {
        SendError::NotSent(_) => false,
        SendError::NoResponse(_) | SendError::Unreadable { .. } => true,
        SendError::Rejected { status, .. } => *status >= 500,
    }
}

/// Whether Twilio refused the request for the account's concurrency limit (429 / 20429): it was
/// never processed, so it is always safe to try again.
fn is_throttled(error: &SendError) -> bool {
    matches!(error, SendError::Rejected { status: 429, .. })
        || matches!(
            error,
            SendError::Rejected {
                code: Some(20429),
                ..
            }
        )
}

/// Whether the failure says something about Twilio's availability (outage signal), as opposed
/// to this one message or throttling.
fn is_outage_signal(error: &SendError) -> bool {
    match error {
        SendError::NotSent(_) | SendError::NoResponse(_) => true,
        SendError::Rejected { status, .. } => *status >= 500,
        SendError::Unreadable { .. } => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(status: u16, code: Option<u32>) -> SendError {
        SendError::Rejected {
            status,
            code,
            message: String::new(),
            retry_after: None,
        }
    }

    #[test]
    fn permanent_codes_fail_at_once() {
        for code in [
            21211, 21610, 21614, 21617, 21212, 21408, 21602, 21603, 21604, 21606, 21612, 99999,
        ] {
            assert_eq!(
                classify(&rejected(400, Some(code))),
                Verdict::Fail,
                "{code}"
            );
        }
        assert_eq!(classify(&rejected(400, None)), Verdict::Fail);
        assert_eq!(classify(&rejected(413, None)), Verdict::Fail);
    }

    #[test]
    fn account_problems_pause_instead_of_failing_messages() {
        assert_eq!(classify(&rejected(401, Some(20003))), Verdict::Pause);
        assert_eq!(classify(&rejected(403, None)), Verdict::Pause);
        assert_eq!(classify(&rejected(404, Some(20404))), Verdict::Pause);
        assert_eq!(classify(&rejected(404, None)), Verdict::Pause);
    }

    #[test]
    fn transient_failures_retry_with_the_servers_delay() {
        let e = SendError::Rejected {
            status: 429,
            code: Some(20429),
            message: String::new(),
            retry_after: Some(Duration::from_secs(7)),
        };
        assert_eq!(
            classify(&e),
            Verdict::Retry {
                after: Some(Duration::from_secs(7))
            }
        );
        for s in [500, 502, 503, 504] {
            assert_eq!(classify(&rejected(s, None)), Verdict::Retry { after: None });
        }
        assert_eq!(
            classify(&rejected(400, Some(21611))),
            Verdict::Retry { after: None }
        );
        assert_eq!(
            classify(&SendError::NotSent("refused".into())),
            Verdict::Retry { after: None }
        );
        assert_eq!(
            classify(&SendError::NoResponse("timeout".into())),
            Verdict::Retry { after: None }
        );
    }

    #[test]
    fn ambiguity() {
        assert!(is_ambiguous(&rejected(500, Some(20500))));
        assert!(is_ambiguous(&SendError::NoResponse("timed out".into())));
        assert!(is_ambiguous(&SendError::Unreadable {
            status: 201,
            detail: String::new()
        }));
        assert!(!is_ambiguous(&SendError::NotSent("refused".into())));
        assert!(!is_ambiguous(&rejected(429, Some(20429))));
        assert!(!is_ambiguous(&rejected(400, Some(21211))));
    }

    #[test]
    fn throttling() {
        assert!(is_throttled(&rejected(429, Some(20429))));
        assert!(is_throttled(&rejected(429, None)));
        assert!(!is_throttled(&rejected(503, None)));
        assert!(!is_throttled(&rejected(400, Some(21211))));
    }

    #[test]
    fn outage_signals() {
        assert!(is_outage_signal(&rejected(503, None)));
        assert!(is_outage_signal(&SendError::NotSent("x".into())));
        assert!(!is_outage_signal(&rejected(429, Some(20429))));
        assert!(!is_outage_signal(&rejected(400, Some(21211))));
    }
    #[test]
    fn the_judgement_applies_the_rules_in_order() {
        let transient = |maybe_created, availability| {
            Judgement::Transient(Transient {
                after: None,
                maybe_created,
                availability,
            })
        };
        let after = Some(Duration::from_secs(3));
        let cases = [
            (
                "429 waits without counting",
                SendError::Rejected {
                    status: 429,
                    code: Some(20429),
                    message: String::new(),
                    retry_after: after,
                },
                Judgement::Throttled { retry_after: after },
            ),
            (
                "20429 on another status is still throttling",
                rejected(503, Some(20429)),
                Judgement::Throttled { retry_after: None },
            ),
            (
                "a 5xx may have created it and signals an outage",
                rejected(502, None),
                transient(MaybeCreated::Yes, Availability::OutageSignal),
            ),
            (
                "a timeout may have created it",
                SendError::NoResponse("timed out".into()),
                transient(MaybeCreated::Yes, Availability::OutageSignal),
            ),
            (
                "a refused connection created nothing",
                SendError::NotSent("refused".into()),
                transient(MaybeCreated::No, Availability::OutageSignal),
            ),
            (
                "an unreadable 2xx may have created it; Twilio answered",
                SendError::Unreadable {
                    status: 201,
                    detail: String::new(),
                },
                transient(MaybeCreated::Yes, Availability::Answered),
            ),
            (
                "a full sender queue clears by waiting",
                rejected(400, Some(21611)),
                transient(MaybeCreated::No, Availability::Answered),
            ),
            (
                "bad credentials pause everything",
                rejected(401, Some(20003)),
                Judgement::AccountRefused,
            ),
            (
                "a bad number fails the message",
                rejected(400, Some(21211)),
                Judgement::Permanent,
            ),
        ];
        for (what, error, expected) in cases {
            assert_eq!(judge(&error), expected, "{what}");
        }
    }
}
