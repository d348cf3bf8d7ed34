//! Reading Messages back: `GET …/Messages.json` (filters by `To`, `From` and `DateSent`,
//! newest first, cursor paging through `next_page_uri`/`previous_page_uri`, the faults injected
//! into lists) and `GET …/Messages/{Sid}.json`. Both show a message only once its visibility lag
//! has passed, with its lifecycle (status, `date_sent`) as of the read.

use super::dates::{date_matches, parse_date_filter, unix_seconds, DateBound};
use super::responses::{message_json, not_found, refusal, server_error, twilio_error, Outcome};
use super::routes::{first_value, TwilioHandler};
use super::Fault;
use crate::http::{self, Request, Response};
use serde_json::json;
use std::time::{Duration, Instant, SystemTime};

/// The page size when a list does not ask for one.
pub(super) const DEFAULT_PAGE_SIZE: usize = 50;
/// The largest `PageSize` Twilio accepts.
pub(super) const MAX_PAGE_SIZE: usize = 1000;

impl TwilioHandler {
    /// The fault the next list gets, if any: `(answer instead of the page, delay before
    /// answering)`. A list creates nothing, so the `*AfterCreate` faults stand for a failure
    /// after the work: a 5xx, a hang-up, or a normal answer after the delay.
    pub(super) fn list_fault(&self) -> (Option<Outcome>, Duration) {
        let Some(fault) = self.shared.lock().list_faults.next() else {
            return (None, Duration::ZERO);
        };
        if let Some(outcome) = refusal(&fault) {
            return (Some(outcome), Duration::ZERO);
        }
        match fault {
            Fault::DelayAfterCreate(delay) => (None, delay),
            Fault::ErrorAfterCreate { status } => (Some(server_error(status)), Duration::ZERO),
            // `HangupAfterCreate`: the refusals were answered above.
            _ => (Some(Outcome::hangup()), Duration::ZERO),
        }
    }

    /// `GET …/Messages/{Sid}.json`: 404 / 20404 until the message is visible.
    pub(super) fn fetch(&self, sid: &str, path: &str) -> Outcome {
        let now = Instant::now();
        let state = self.shared.lock();
        match state.by_sid.get(sid).map(|&idx| &state.messages[idx]) {
            Some(m) if m.visible_at <= now => Outcome::respond(Response::json(
                200,
                &message_json(m, Some(SystemTime::now()), state.redact_bodies),
            )),
            _ => not_found(path),
        }
    }

    /// `GET …/Messages.json`: filters, newest first, cursor paging (see the module invariants).
    pub(super) fn list(&self, req: &Request) -> Outcome {
        let query = req.query_pairs();
        let get = |key: &str| first_value(&query, key);
        let to = get("To");
        let from = get("From");
        // (wire name, raw value, parsed bound) in the order Twilio writes them into page URIs.
        let mut dates: Vec<(&str, &str, DateBound)> = Vec::new();
        for key in ["DateSent", "DateSent<", "DateSent>"] {
            if let Some(raw) = get(key) {
                match parse_date_filter(raw) {
                    Some(bound) => dates.push((key, raw, bound)),
                    None => {
                        return twilio_error(400, 20001, &format!("Invalid {key} value: {raw}"))
                    }
                }
            }
        }
        let page_size = match get("PageSize") {
            None => DEFAULT_PAGE_SIZE,
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=MAX_PAGE_SIZE).contains(&n) => n,
                _ => {
                    return twilio_error(
                        400,
                        20001,
                        &format!("Invalid PageSize {v}: must be between 1 and {MAX_PAGE_SIZE}"),
                    )
                }
            },
        };
        let page = match get("Page") {
            None => 0,
            Some(v) => match v.parse::<usize>() {
                Ok(n) => n,
                Err(_) => return twilio_error(400, 20001, &format!("Invalid Page {v}")),
            },
        };
        let token = get("PageToken");

        let (now, wall) = (Instant::now(), SystemTime::now());
        let state = self.shared.lock();
        let key = |i: usize| (state.messages[i].date_created, i);
        let mut matching: Vec<usize> = (0..state.messages.len())
            .filter(|&i| {
                let m = &state.messages[i];
                let sent = m.date_sent_at(wall).map(unix_seconds);
                m.visible_at <= now
                    && to.iter().all(|t| m.to == *t)
                    && from.iter().all(|f| m.from.as_deref() == Some(*f))
                    // A message not sent yet (date_sent null) matches no DateSent filter.
                    && dates.iter().all(|(name, _, bound)| {
                        sent.is_some_and(|sent| date_matches(name, *bound, sent))
                    })
            })
            .collect();
        matching.sort_by_key(|&i| std::cmp::Reverse(key(i)));

        let (lo, hi) = match token {
            None => {
                let lo = page.saturating_mul(page_size).min(matching.len());
                (lo, (lo + page_size).min(matching.len()))
            }
            Some(token) => {
                let anchor = token
                    .get(..2)
                    .filter(|p| *p == "PA" || *p == "PB")
                    .and_then(|_| state.by_sid.get(&token[2..]).copied());
                let Some(anchor) = anchor else {
                    return twilio_error(400, 20001, &format!("Invalid PageToken {token}"));
                };
                let anchor_key = key(anchor);
                if token.starts_with("PA") {
                    // Everything strictly after the anchor in newest-first order.
                    let lo = matching.partition_point(|&i| key(i) >= anchor_key);
                    (lo, (lo + page_size).min(matching.len()))
                } else {
                    // The page that ends just before the anchor.
                    let hi = matching.partition_point(|&i| key(i) > anchor_key);
                    (hi.saturating_sub(page_size), hi)
                }
            }
        };
        let items = &matching[lo..hi];

        let account = &self.shared.config.account_sid;
        let mut base = format!("/2010-04-01/Accounts/{account}/Messages.json?");
        for (k, v) in [("To", to), ("From", from)] {
            if let Some(v) = v {
                base.push_str(&format!("{k}={}&", form_encode(v)));
            }
        }
        for (k, raw, _) in &dates {
            base.push_str(&format!("{}={}&", form_encode(k), form_encode(raw)));
        }
        base.push_str(&format!("PageSize={page_size}"));
        let page_uri = |p: usize, token: Option<String>| match token {
            Some(t) => format!("{base}&Page={p}&PageToken={t}"),
            None => format!("{base}&Page={p}"),
        };
        let next = (hi < matching.len() && hi > lo).then(|| {
            page_uri(
                page + 1,
                Some(format!("PA{}", state.messages[matching[hi - 1]].sid)),
            )
        });
        let previous = (lo > 0 && hi > lo).then(|| {
            page_uri(
                page.saturating_sub(1),
                Some(format!("PB{}", state.messages[matching[lo]].sid)),
            )
        });
        let start = page.saturating_mul(page_size);
        let end = if items.is_empty() {
            start
        } else {
            start + items.len() - 1
        };
        let body = json!({
            "messages": items
                .iter()
                .map(|&i| message_json(&state.messages[i], Some(wall), state.redact_bodies))
                .collect::<Vec<_>>(),
            "end": end,
            "first_page_uri": page_uri(0, None),
            "next_page_uri": next,
            "page": page,
            "page_size": page_size,
            "previous_page_uri": previous,
            "start": start,
            "uri": page_uri(page, token.map(str::to_string)),
        });
        Outcome::respond(Response::json(200, &body))
    }
}

/// Form-encode a value the way Twilio writes its page URIs: `%XX`, spaces as `+`.
pub(super) fn form_encode(s: &str) -> String {
    http::percent_encode(s).replace("%20", "+")
}
