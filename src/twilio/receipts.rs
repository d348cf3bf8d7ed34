//! Delivery receipts (optional), the Twilio side: the callback URL that names the row, the
//! signature check, the callback form read into a [`Receipt`], and the hand-off contract to
//! whoever applies them ([`ReceiptInbox`], [`Offer`]).
//!
//! With `STATUS_CALLBACK_URL` set, every create asks Twilio to POST status changes there. Each
//! callback is checked against `X-Twilio-Signature` exactly as Twilio signs it (see
//! docs/twilio.md §6.3: the configured URL, then every POST parameter name and value in sorted
//! order, HMAC-SHA1 with the auth token, base64; the URL is tried with and without an explicit
//! default port; compared in constant time). Unsigned or mis-signed requests get 403: a missing
//! or empty header never matches, even if the HMAC cannot be computed. Rejections are logged
//! through [`Rejections`], one line per interval with a count, so forged traffic cannot flood the
//! log.
//!
//! **Linking.** Each create's `StatusCallback` is `STATUS_CALLBACK_URL` plus our own query
//! parameter [`MESSAGE_PARAM`] = the row's id ([`url_for`]); Twilio signs that full URL, so a
//! verified callback names its row authoritatively. A receipt can therefore be applied even when it
//! arrives before our `sent` write (Twilio calls back within a second; the write may be slower), and
//! even when the create's answer was lost: the row is then recorded with the callback's SID.
//!
//! **Replays.** Twilio's signature has no timestamp, so a captured callback verifies forever and
//! can be posted any number of times. The [`ReceiptInbox`] a verified receipt is offered to
//! answers a (SID, status) pair taken within [`SEEN_FOR`] as [`Offer::Duplicate`] without taking
//! it again, and refuses ([`Offer::Full`], answered 503) only receipts that do not name their row,
//! so no flood can cost a receipt for a row we know. Offering never waits on the network, so the
//! HTTP handler (and every probe behind it) never waits on the database.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;

use crate::message::MessageId;
use crate::sync::Locked;

/// The query parameter naming the row in each message's `StatusCallback` URL.
pub const MESSAGE_PARAM: &str = "sms_sender_message";

/// The `StatusCallback` for message `id`: `base` with [`MESSAGE_PARAM`] added to its query (before
/// any `#` fragment, which carries Twilio's connection overrides and is not part of the request).
pub fn url_for(base: &str, id: &MessageId) -> String {
    let (url, fragment) = match base.find('#') {
        Some(i) => base.split_at(i),
        None => (base, ""),
    };
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{MESSAGE_PARAM}={id}{fragment}")
}

/// The message id in a callback request's raw query string, if it carries ours.
pub fn message_param(query: &str) -> Option<MessageId> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == MESSAGE_PARAM)
        .and_then(|(_, v)| MessageId::parse(v))
}

/// A verified status callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// `MessageSid`.
    pub sid: String,
    /// `MessageStatus` (`sent`, `delivered`, `undelivered`, `failed`, …).
    pub status: String,
    /// `ErrorCode`, for `failed`/`undelivered`.
    pub error_code: Option<String>,
    /// The row, from our parameter in the signed URL (absent for older messages).
    pub message: Option<MessageId>,
}

/// What the signature is computed over: the URL followed by each sorted `name` `value`.
fn signed_string(url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    sorted.dedup();
    let mut data = url.to_string();
    for (name, value) in sorted {
        data.push_str(name);
        data.push_str(value);
    }
    data
}

/// `X-Twilio-Signature` for a form POST to `url` with `params`, keyed by the auth token; `None`
/// when OpenSSL cannot compute the HMAC (it refuses an empty key, for one).
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> Option<String> {
    let mac = PKey::hmac(auth_token.as_bytes())
        .and_then(|key| {
            let mut signer = Signer::new(MessageDigest::sha1(), &key)?;
            signer.update(signed_string(url, params).as_bytes())?;
            signer.sign_to_vec()
        })
        .ok()
        .filter(|mac| !mac.is_empty())?;
    Some(openssl::base64::encode_block(&mac))
}

/// The URL as configured, and the same URL with its default port added or removed: Twilio's own
/// signing is inconsistent about `:443`/`:80`, and its validators accept both.
fn url_variants(url: &str) -> Vec<String> {
    let mut out = vec![url.to_string()];
    for (scheme, port) in [("https://", ":443"), ("http://", ":80")] {
        let Some(rest) = url.strip_prefix(scheme) else {
            continue;
        };
        let (host, path) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
        match host.strip_suffix(port) {
            Some(bare) => out.push(format!("{scheme}{bare}{path}")),
            None if !host.contains(':') => out.push(format!("{scheme}{host}{port}{path}")),
            None => {}
        }
    }
    out
}

/// Whether `header` is Twilio's signature of this request. An empty header, or a signature that
/// cannot be computed, is never a match.
pub fn verify(auth_token: &str, url: &str, params: &[(String, String)], header: &str) -> bool {
    let given = header.trim().as_bytes();
    if given.is_empty() {
        return false;
    }
    url_variants(url).iter().any(|u| {
        signature(auth_token, u, params).is_some_and(|expected| {
            expected.len() == given.len() && openssl::memcmp::eq(expected.as_bytes(), given)
        })
    })
}

/// At most one log line per this interval about rejected callbacks.
pub const REJECTION_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Counts rejected callbacks and says when to log them: the first at once, then at most one
/// line per interval, carrying the number rejected since the last line. Anyone can post forged
/// callbacks, so one line each would let them flood the log; the exact count is in the
/// `sms_sender_status_callbacks_total{result="rejected"}` metric. The worker counts unmatched
/// receipts (replayable) the same way.
pub struct Rejections {
    interval: Duration,
    /// When the last line was logged, and the rejections counted since (including that one's).
    state: Mutex<(Option<Instant>, u64)>,
}

impl Rejections {
    /// A counter logging at most once per `interval`.
    pub fn new(interval: Duration) -> Rejections {
        Rejections {
            interval,
            state: Mutex::new((None, 0)),
        }
    }

    /// Count one rejection at `now`; `Some(n)` when a line is due, `n` being the rejections it
    /// reports (this one included).
    pub fn record(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.locked();
        let (last, pending) = &mut *state;
        *pending += 1;
        let due = last.is_none_or(|t| now.saturating_duration_since(t) >= self.interval);
        if !due {
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(pending))
    }
}

/// Read the receipt out of verified callback parameters.
pub fn parse(params: &[(String, String)]) -> Option<Receipt> {
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let sid = get("MessageSid").or_else(|| get("SmsSid"))?;
    let valid_sid = sid.len() == 34 && sid.bytes().all(|b| b.is_ascii_alphanumeric());
    let status = get("MessageStatus").or_else(|| get("SmsStatus"))?;
    valid_sid.then(|| Receipt {
        sid,
        status,
        error_code: get("ErrorCode").filter(|c| !c.is_empty()),
        message: None,
    })
}

/// What [`ReceiptInbox::offer`] did with a verified receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Taken: it will be applied (answer 200).
    Queued,
    /// The same SID and status was taken within [`SEEN_FOR`]: a replay or a repeat, not queued
    /// again (answer 200).
    Duplicate,
    /// Nothing a row shows (a `queued`, `accepted`… status): not queued (answer 200).
    Ignored,
    /// No room (answer 503). Only receipts that do not name their row are ever refused.
    Full,
}

/// How long a (SID, status) pair taken into the inbox is remembered, so that the same callback
/// posted again (Twilio's signature has no timestamp: a captured one verifies forever) is
/// answered without being queued again.
pub const SEEN_FOR: Duration = Duration::from_secs(600);

/// Where verified receipts go: the worker that applies them to their rows.
pub trait ReceiptInbox: Send + Sync {
    /// Hand over a verified receipt (never waits on the network). Only [`Offer::Full`] should
    /// be answered with an error (503).
    fn offer(&self, receipt: Receipt) -> Offer;
    /// What the inbox has counted so far, for `/metrics`.
    fn counts(&self) -> InboxCounts;
}

/// The counts a [`ReceiptInbox`] keeps (all zero when receipts are off).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InboxCounts {
    /// Verified callbacks answered without queueing: the pair was taken within [`SEEN_FOR`].
    pub duplicates: u64,
    /// Receipts without our parameter whose SID no row records: dropped after one lookup.
    pub unmatched: u64,
    /// Verified callbacks refused for want of room (answered 503).
    pub refused: u64,
    /// Acknowledged receipts not applied yet.
    pub waiting: usize,
}

/// Append the receipts' own metric families to a `/metrics` page (zeros when receipts are off,
/// so the families always exist).
pub fn render_metrics(counts: InboxCounts, out: &mut String) {
    use std::fmt::Write as _;
    let InboxCounts {
        duplicates,
        unmatched,
        refused,
        waiting,
    } = counts;
    let name = "sms_sender_receipts_not_applied_total";
    let _ = writeln!(
        out,
        "# HELP {name} Verified status callbacks not applied, by reason: duplicate (the same \
         SID and status was taken in the last {} s; answered 200, not queued), unmatched (no \
         message id of ours and no row records the SID; dropped after one lookup), busy (no \
         room; answered 503).\n# TYPE {name} counter",
        SEEN_FOR.as_secs()
    );
    for (reason, value) in [
        ("duplicate", duplicates),
        ("unmatched", unmatched),
        ("busy", refused),
    ] {
        let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {value}");
    }
    let name = "sms_sender_receipts_waiting";
    let _ = writeln!(
        out,
        "# HELP {name} Acknowledged delivery receipts not applied yet.\n# TYPE {name} gauge\n\
         {name} {waiting}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_reference_test_vector() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let params = pairs(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ]);
        assert_eq!(
            signed_string(url, &params),
            "https://mycompany.com/myapp.php?foo=1&bar=2CallSidCA1234567890ABCDECaller+14158675309Digits1234From+14158675309To+18005551212"
        );
        assert_eq!(
            signature("12345", url, &params).as_deref(),
            Some("RSOYDt4T1cUTdK1PDd93/VVr8B8=")
        );
        assert!(verify(
            "12345",
            url,
            &params,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        let mut shuffled = params.clone();
        shuffled.reverse();
        assert!(
            verify("12345", url, &shuffled, "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
            "order-independent"
        );
        assert!(
            !verify("12346", url, &params, "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
            "wrong token"
        );
        assert!(
            !verify("12345", url, &params[1..], "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
            "missing param"
        );
        assert!(!verify("12345", url, &params, ""), "empty header");
    }

    #[test]
    fn a_missing_signature_is_never_accepted() {
        let params = pairs(&[("MessageSid", "SMx"), ("MessageStatus", "delivered")]);
        let url = "https://h.example/twilio/status";
        // Whatever the key, even one OpenSSL cannot make an HMAC key of, an empty or absent
        // header must not match.
        for token in ["tok", "", "\0"] {
            assert!(!verify(token, url, &params, ""), "token {token:?}");
            assert!(!verify(token, url, &params, "  "), "token {token:?}");
        }
    }

    #[test]
    fn rejections_are_logged_once_per_interval_with_a_count() {
        let r = Rejections::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(r.record(t0), Some(1), "the first is logged at once");
        for s in 1..=30 {
            assert_eq!(r.record(t0 + Duration::from_secs(s)), None);
        }
        assert_eq!(r.record(t0 + Duration::from_secs(60)), Some(31));
        assert_eq!(r.record(t0 + Duration::from_secs(61)), None);
        assert_eq!(r.record(t0 + Duration::from_secs(500)), Some(2));
    }

    #[test]
    fn default_ports_are_accepted_both_ways() {
        let params = pairs(&[("MessageSid", "SMx"), ("MessageStatus", "delivered")]);
        let with_port = signature("tok", "https://h.example:443/twilio/status", &params).unwrap();
        assert!(verify(
            "tok",
            "https://h.example/twilio/status",
            &params,
            &with_port
        ));
        let without = signature("tok", "https://h.example/twilio/status", &params).unwrap();
        assert!(verify(
            "tok",
            "https://h.example:443/twilio/status",
            &params,
            &without
        ));
        assert!(!verify(
            "tok",
            "https://h.example:8443/twilio/status",
            &params,
            &without
        ));
    }

    #[test]
    fn receipts_parse() {
        let sid = format!("SM{}", "a".repeat(32));
        let r = parse(&pairs(&[
            ("MessageSid", &sid),
            ("MessageStatus", "undelivered"),
            ("ErrorCode", "30003"),
        ]))
        .unwrap();
        assert_eq!(
            r,
            Receipt {
                sid: sid.clone(),
                status: "undelivered".into(),
                error_code: Some("30003".into()),
                message: None,
            }
        );
        assert!(parse(&pairs(&[("MessageStatus", "sent")])).is_none());
    }

    #[test]
    fn inbox_metrics_render_as_families() {
        let counts = InboxCounts {
            duplicates: 1,
            waiting: 1,
            ..InboxCounts::default()
        };
        let mut text = String::new();
        render_metrics(counts, &mut text);
        assert!(text.contains("sms_sender_receipts_not_applied_total{reason=\"duplicate\"} 1\n"));
        assert!(text.contains("sms_sender_receipts_not_applied_total{reason=\"unmatched\"} 0\n"));
        assert!(text.contains("sms_sender_receipts_not_applied_total{reason=\"busy\"} 0\n"));
        assert!(text.contains("sms_sender_receipts_waiting 1\n"));
        let mut off = String::new();
        render_metrics(InboxCounts::default(), &mut off);
        assert!(off.contains("sms_sender_receipts_waiting 0\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(
                line.rsplit(' ').next().unwrap().parse::<f64>().is_ok(),
                "{line}"
            );
        }
    }

    #[test]
    fn callback_urls_name_the_message_before_any_fragment() {
        let id = MessageId::parse("6f1c2e0a-0000-4000-8000-000000000001").unwrap();
        let with = |base: &str| url_for(base, &id);
        assert_eq!(
            with("https://h.example/twilio/status"),
            format!("https://h.example/twilio/status?{MESSAGE_PARAM}={id}")
        );
        assert_eq!(
            with("https://h.example/s?x=1#rc=3"),
            format!("https://h.example/s?x=1&{MESSAGE_PARAM}={id}#rc=3")
        );
        assert_eq!(
            message_param(&format!("x=1&{MESSAGE_PARAM}={id}")),
            Some(id.clone())
        );
        assert_eq!(message_param("x=1"), None);
        assert_eq!(message_param(&format!("{MESSAGE_PARAM}=not-a-uuid")), None);
        assert!(parse(&pairs(&[
            ("MessageSid", "SM1&x=y"),
            ("MessageStatus", "sent")
        ]))
        .is_none());
    }
}
