//! Delivery receipts (optional): Twilio's status callbacks, verified and applied to the row.
//!
//! With `STATUS_CALLBACK_URL` set, every create asks Twilio to POST status changes there. Each
//! callback is checked against `X-Twilio-Signature` exactly as Twilio signs it (reference
//! twilio-messages.md §6.3: the configured URL, then every POST parameter name and value in sorted
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
//! Updates are monotonic and idempotent: a row recording the SID moves only from `sending`/`sent`
//! to `delivered` (with `delivered_at`), `undelivered` or `failed`; a row that records no SID yet
//! (`sending`, or given back to `queued_for_send`) takes the SID and the receipt's status. A
//! duplicate, or a late `sent` after `delivered`, changes nothing.
//!
//! Receipts run on a worker thread fed by a bounded channel, so health probes never wait on the
//! database. One that cannot be applied yet (database failing; or a callback without our
//! parameter, from a message created before this version, whose SID is not recorded yet) is kept,
//! at most [`MAX_PENDING`] of them for at most [`PENDING_FOR`], and retried; every receipt dropped
//! after it was acknowledged is logged with its SID and the reason.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use log::{info, warn};
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;

use crate::clock;
use crate::message::MessageId;
use crate::ops::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::supabase::rest::{Rest, RestError};
use crate::sync::Locked;

/// The query parameter naming the row in each message's `StatusCallback` URL.
pub const MESSAGE_PARAM: &str = "sms_sender_message";
/// At most this many receipts wait to be applied.
pub const MAX_PENDING: usize = 10_000;
/// A receipt that could not be applied for this long is dropped (with a log line).
pub const PENDING_FOR: Duration = Duration::from_secs(600);

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
/// `sms_sender_status_callbacks_total{result="rejected"}` metric.
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
        let due = last.map_or(true, |t| now.saturating_duration_since(t) >= self.interval);
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

/// Where verified receipts go; cheap to clone.
#[derive(Clone)]
pub struct Inbox {
    tx: SyncSender<Receipt>,
}

impl Inbox {
    /// Hand over a receipt; `false` when the worker is saturated (answer 503 so Twilio retries).
    pub fn offer(&self, receipt: Receipt) -> bool {
        !matches!(
            self.tx.try_send(receipt),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_))
        )
    }
}

/// Start the worker that applies receipts; returns its inbox.
pub fn spawn(
    rest: Rest,
    metrics: std::sync::Arc<Metrics>,
    shutdown: Shutdown,
) -> std::io::Result<(Inbox, JoinHandle<()>)> {
    let (tx, rx) = sync_channel(256);
    let handle = crate::sync::spawn_named("receipts", 256 * 1024, move || {
        work(&rx, &rest, &metrics, &shutdown)
    })?;
    Ok((Inbox { tx }, handle))
}

/// A receipt waiting to be applied.
struct Pending {
    receipt: Receipt,
    since: Instant,
    next_try: Instant,
    tries: u32,
}

/// What one try to apply a receipt did.
enum Applied {
    /// The row changed.
    Done,
    /// Nothing to change (duplicate, out of order, not ours).
    Nothing,
    /// Not applicable yet: no row records this SID so far.
    NotYet,
    /// The database failed.
    Failed(RestError),
}

fn work(rx: &Receiver<Receipt>, rest: &Rest, _metrics: &Metrics, shutdown: &Shutdown) {
    let mut pending: Vec<Pending> = Vec::new();
    loop {
        // Woken at least every second so shutdown is seen (and what is pending reported).
        let wait = if pending.is_empty() {
            Duration::from_secs(1)
        } else {
            Duration::from_millis(500)
        };
        match rx.recv_timeout(wait) {
            Ok(receipt) => {
                let now = Instant::now();
                if pending.len() >= MAX_PENDING {
                    let oldest = pending.remove(0);
                    warn!(
                        "delivery receipt for {} ({}) dropped: {MAX_PENDING} receipts already wait \
                         to be applied",
                        oldest.receipt.sid, oldest.receipt.status
                    );
                }
                pending.push(Pending {
                    receipt,
                    since: now,
                    next_try: now,
                    tries: 0,
                });
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if shutdown.is_triggered() {
            break;
        }
        let now = Instant::now();
        pending.retain_mut(|p| {
            if p.next_try > now {
                return true;
            }
            let outcome = apply(rest, &p.receipt);
            let reason = match outcome {
                Applied::Done | Applied::Nothing => return false,
                Applied::NotYet => "no row records its SID".to_string(),
                Applied::Failed(e) => {
                    warn!(
                        "delivery receipt for {}: update failed ({e}); will retry",
                        p.receipt.sid
                    );
                    format!("the database kept failing ({e})")
                }
            };
            if now.duration_since(p.since) >= PENDING_FOR {
                warn!(
                    "delivery receipt for {} ({}) dropped after {} s: {reason}",
                    p.receipt.sid,
                    p.receipt.status,
                    PENDING_FOR.as_secs()
                );
                return false;
            }
            p.tries += 1;
            p.next_try = now + Duration::from_millis(500 << p.tries.min(6));
            true
        });
    }
    if !pending.is_empty() {
        let sids: Vec<&str> = pending
            .iter()
            .take(20)
            .map(|p| p.receipt.sid.as_str())
            .collect();
        warn!(
            "shutdown: {} acknowledged delivery receipt(s) not applied and dropped (database \
             failing, or SID not recorded yet): {}{}",
            pending.len(),
            sids.join(", "),
            if pending.len() > sids.len() {
                ", …"
            } else {
                ""
            }
        );
    }
}

/// Apply one receipt to its row.
fn apply(rest: &Rest, receipt: &Receipt) -> Applied {
    let now = SystemTime::now();
    let (new_status, delivered_at) = match receipt.status.as_str() {
        "delivered" => ("delivered", Some(clock::rfc3339_millis(now))),
        "undelivered" => ("undelivered", None),
        "failed" => ("failed", None),
        "sent" => ("sent", None),
        _ => return Applied::Nothing, // queued/sending/accepted/…: nothing a row shows
    };
    if new_status == "undelivered" || new_status == "failed" {
        warn!(
            "delivery receipt: {} is {new_status} (Twilio error code {})",
            receipt.sid,
            receipt.error_code.as_deref().unwrap_or("-")
        );
    }
    let result = match &receipt.message {
        Some(id) => rest.apply_receipt_to(
            id,
            &receipt.sid,
            new_status,
            delivered_at.as_deref(),
            &clock::rfc3339_millis(now),
        ),
        None if new_status == "sent" => return Applied::Nothing, // the row says so already
        None => rest.apply_receipt(&receipt.sid, new_status, delivered_at.as_deref()),
    };
    match result {
        Ok(true) => {
            info!("delivery receipt: {} → {new_status}", receipt.sid);
            Applied::Done
        }
        Ok(false) if receipt.message.is_some() => Applied::Nothing,
        Ok(false) => match rest.sid_owner(&receipt.sid) {
            Ok(Some(_)) => Applied::Nothing, // recorded, and already past this status
            Ok(None) => Applied::NotYet,
            Err(e) => Applied::Failed(e),
        },
        Err(e) => Applied::Failed(e),
    }
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
