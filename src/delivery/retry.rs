//! The one place that decides what a failed send means: try again, give up on this message, or
//! stop sending altogether because the account or configuration is wrong.
//!
//! Rules (docs/twilio.md §4): 429 and 5xx and network failures are transient;
//! 401/403 and 404 on our own account path mean our credentials or URL are wrong, which no
//! message can fix, so we pause instead of failing every message; every other 4xx is permanent
//! for that message, including codes we do not know (Twilio refines codes over time). 21611
//! (sender queue full) is the one 4xx that clears by waiting.

use std::time::Duration;

use crate::twilio::client::SendError;

/// What to do after a failed send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
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

/// Classify a send failure.
pub fn classify(error: &SendError) -> Verdict {
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
pub fn is_ambiguous(error: &SendError) -> bool {
    match error {
        SendError::NotSent(_) => false,
        SendError::NoResponse(_) | SendError::Unreadable { .. } => true,
        SendError::Rejected { status, .. } => *status >= 500,
    }
}

/// Whether Twilio refused the request for the account's concurrency limit (429 / 20429): it was
/// never processed, so it is always safe to try again.
pub fn is_throttled(error: &SendError) -> bool {
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
pub fn is_outage_signal(error: &SendError) -> bool {
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
}
