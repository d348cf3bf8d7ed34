//! The account-level resources a configuration check reads: the Account itself, the
//! IncomingPhoneNumbers it owns (the configured numbers, all SMS-capable) and its Messaging
//! Services (the Messaging API's `GET /v1/Services/{Sid}`).

use super::create::is_sid;
use super::dates::rfc2822;
use super::list::{form_encode, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
use super::responses::{twilio_error, Outcome, API_VERSION};
use super::routes::{first_value, TwilioHandler};
use crate::http::{Request, Response};
use serde_json::{json, Value};
use std::time::{Duration, UNIX_EPOCH};

impl TwilioHandler {
    /// `GET /v1/Services/{MG}` (the Messaging API): the service if the account has it.
    pub(super) fn messaging_service(&self, sid: &str) -> Outcome {
        let known = &self.shared.config.messaging_services;
        if is_sid(sid, "MG") && known.iter().any(|s| s == sid) {
            Outcome::respond(Response::json(
                200,
                &json!({"sid": sid, "account_sid": self.shared.config.account_sid,
                        "friendly_name": "Test service", "url": format!("https://messaging.twilio.com/v1/Services/{sid}")}),
            ))
        } else {
            twilio_error(
                404,
                20404,
                &format!("The requested resource /v1/Services/{sid} was not found"),
            )
        }
    }

    /// `GET /2010-04-01/Accounts/{AccountSid}.json`: enough of the Account resource for a
    /// credentials check.
    pub(super) fn account_json(&self) -> Value {
        let sid = &self.shared.config.account_sid;
        let base = format!("/2010-04-01/Accounts/{sid}");
        let date = rfc2822(UNIX_EPOCH + Duration::from_secs(1_438_286_400));
        json!({
            "auth_token": self.shared.config.auth_token,
            "date_created": date,
            "date_updated": date,
            "friendly_name": "sms-sender test account",
            "owner_account_sid": sid,
            "sid": sid,
            "status": "active",
            "subresource_uris": {
                "incoming_phone_numbers": format!("{base}/IncomingPhoneNumbers.json"),
                "messages": format!("{base}/Messages.json"),
            },
            "type": "Full",
            "uri": format!("{base}.json"),
        })
    }

    /// `GET …/IncomingPhoneNumbers.json[?PhoneNumber=…]`: the configured owned numbers, all
    /// SMS-capable. `PhoneNumber` matches as a substring with `*` wildcards ignored, which is
    /// how Twilio treats partial numbers.
    pub(super) fn incoming_phone_numbers(&self, req: &Request) -> Outcome {
        let query = req.query_pairs();
        let get = |key: &str| first_value(&query, key);
        let filter = get("PhoneNumber").map(|p| p.replace('*', ""));
        let page_size = match get("PageSize").map(str::parse::<usize>) {
            None => DEFAULT_PAGE_SIZE,
            Some(Ok(n)) if (1..=MAX_PAGE_SIZE).contains(&n) => n,
            Some(_) => return twilio_error(400, 20001, "Invalid PageSize"),
        };
        let page = match get("Page").map(str::parse::<usize>) {
            None => 0,
            Some(Ok(n)) => n,
            Some(Err(_)) => return twilio_error(400, 20001, "Invalid Page"),
        };
        let config = &self.shared.config;
        let matching: Vec<&String> = config
            .owned_numbers
            .iter()
            .filter(|n| filter.iter().all(|f| n.contains(f.as_str())))
            .collect();
        let lo = page.saturating_mul(page_size).min(matching.len());
        let hi = (lo + page_size).min(matching.len());
        let account = &config.account_sid;
        let mut base = format!("/2010-04-01/Accounts/{account}/IncomingPhoneNumbers.json?");
        if let Some(p) = get("PhoneNumber") {
            base.push_str(&format!("PhoneNumber={}&", form_encode(p)));
        }
        base.push_str(&format!("PageSize={page_size}"));
        let date = rfc2822(UNIX_EPOCH + Duration::from_secs(1_438_298_344));
        let numbers: Vec<Value> = matching[lo..hi]
            .iter()
            .map(|number| {
                let sid = format!("PN{}", stable_hex(number));
                json!({
                    "account_sid": account,
                    "api_version": API_VERSION,
                    "capabilities": {"fax": false, "mms": true, "sms": true, "voice": true},
                    "date_created": date,
                    "date_updated": date,
                    "friendly_name": number,
                    "phone_number": number,
                    "sid": sid,
                    "sms_method": "POST",
                    "sms_url": "",
                    "status": "in-use",
                    "status_callback": "",
                    "uri": format!("/2010-04-01/Accounts/{account}/IncomingPhoneNumbers/{sid}.json"),
                })
            })
            .collect();
        let start = page.saturating_mul(page_size);
        let body = json!({
            "end": if hi > lo { start + (hi - lo) - 1 } else { start },
            "first_page_uri": format!("{base}&Page=0"),
            "incoming_phone_numbers": numbers,
            "next_page_uri": (hi < matching.len()).then(|| format!("{base}&Page={}", page + 1)),
            "page": page,
            "page_size": page_size,
            "previous_page_uri": (page > 0).then(|| format!("{base}&Page={}", page - 1)),
            "start": start,
            "uri": format!("{base}&Page={page}"),
        });
        Outcome::respond(Response::json(200, &body))
    }
}

/// 32 hex digits derived from `s` (two FNV-1a passes), so a number's `PN` SID is the same on
/// every call without storing it.
fn stable_hex(s: &str) -> String {
    let fnv = |seed: u64| {
        s.bytes().fold(seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    format!(
        "{:016x}{:016x}",
        fnv(0xcbf2_9ce4_8422_2325),
        fnv(0x6c62_272e_07bb_0142)
    )
}
