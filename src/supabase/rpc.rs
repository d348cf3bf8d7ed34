//! The database functions of scaled mode (`sql/migrations/002_scaled_mode.sql`, contract in
//! `docs/scaled-mode.md`), called over PostgREST RPC (`POST /rest/v1/rpc/<function>`):
//!
//! - [`Rest::scaled_mode`]: whether the migration is installed, and its partition count;
//! - [`Rest::claim_batch`]: the batch claim, `queued_for_send → sending` for up to `max_rows` rows
//!   of some partitions, stamped like the single claim ([`Rest::claim`]).
//!
//! Invariant: a row of the batch is read exactly as the single claim reads its row
//! (`claimed_row` in `rest`), so every claimed row is either `Won` with what sending needs or
//! `Malformed` (to be failed under the same stamp); each row appears at most once in the answer.

use std::collections::HashSet;

use serde::Deserialize;

use super::rest::{claimed_row, json_kind, Claim, Rest, RestError};
use crate::message::MessageId;
use crate::redact;

/// The most partitions a scaled-mode database may declare: a partition is a Realtime channel
/// each instance may join, so the count stays small.
pub const MAX_PARTITIONS: u16 = 256;

/// The most rows one batch claim may take (the database function refuses more).
pub const MAX_CLAIM_BATCH: usize = 1000;

/// The database function telling whether scaled mode is installed.
const SCALED_MODE_FN: &str = "sms_sender_scaled_mode";

/// The database function of the batch claim.
const CLAIM_FN: &str = "sms_sender_claim";

/// PostgREST's "function not found in the schema cache" (answered with 404).
const FUNCTION_NOT_FOUND: &str = "PGRST202";

/// What the database says about scaled mode when it is installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaledMode {
    /// How many partitions rows are spread over (`1..=`[`MAX_PARTITIONS`]); a row's partition is
    /// `sms_sender_partition(id)`, its wake-ups go to topic `sms-sender:p<partition>`.
    pub partitions: u16,
}

impl Rest {
    /// Whether the database has scaled mode installed: `Some` with its partition count, `None`
    /// when the function does not exist (404 `PGRST202`: the default mode). Any other answer,
    /// including a declaration out of range, is an error.
    pub fn scaled_mode(&self) -> Result<Option<ScaledMode>, RestError> {
        match self.call_rpc(SCALED_MODE_FN, &serde_json::json!({})) {
            Ok(text) => parse_scaled_mode(&text).map(Some),
            Err(RestError::Status {
                status: 404,
                code: Some(code),
                ..
            }) if code == FUNCTION_NOT_FOUND => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Claim up to `max_rows` queued outbound rows of `partitions` (empty: every partition),
    /// oldest first, stamping `sent_at` with the lease `stamp` as [`Rest::claim`] does, so every
    /// later write of each claim is fenced the same way. Rows locked by a concurrent claim are
    /// skipped, never waited for. `max_rows` above [`MAX_CLAIM_BATCH`] asks for that many; zero
    /// asks for nothing and makes no request.
    ///
    /// A row the answer does not identify (no readable id) cannot be sent nor failed from here:
    /// it stays `sending` under `stamp` until orphan recovery settles it; it is left out of the
    /// result and logged.
    pub fn claim_batch(
        &self,
        partitions: &[u16],
        max_rows: usize,
        stamp: &str,
    ) -> Result<Vec<Claim>, RestError> {
        if max_rows == 0 {
            return Ok(Vec::new());
        }
        let args = serde_json::json!({
            "partitions": partitions,
            "max_rows": max_rows.min(MAX_CLAIM_BATCH),
            "stamp": stamp,
        });
        let text = self.call_rpc(CLAIM_FN, &args)?;
        let batch = parse_claim_batch(&text)?;
        if batch.unidentified > 0 {
            log::warn!(
                "the batch claim returned {} row(s) without a readable id; orphan recovery will \
                 settle them when their claim expires",
                batch.unidentified
            );
        }
        Ok(batch.claims)
    }
}

/// A batch claim's answer, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimBatch {
    /// One entry per identified row, in the order returned (oldest first), each id once.
    pub claims: Vec<Claim>,
    /// Rows without a readable id (or repeating an id already read): left out of `claims`.
    pub unidentified: usize,
}

/// Read the answer of `sms_sender_scaled_mode()`: `{"partitions": P}` with P an integer in
/// `1..=`[`MAX_PARTITIONS`] (other fields are ignored); anything else is unreadable.
pub fn parse_scaled_mode(text: &str) -> Result<ScaledMode, RestError> {
    #[derive(Deserialize)]
    struct Declaration {
        partitions: serde_json::Value,
    }
    let unreadable = |what: String| {
        RestError::Body(redact::scrub(&format!(
            "{SCALED_MODE_FN}() answered {what} instead of {{\"partitions\": 1..{MAX_PARTITIONS}}}"
        )))
    };
    let declaration: Declaration =
        serde_json::from_str(text).map_err(|e| unreadable(format!("an unreadable body ({e})")))?;
    let count = match &declaration.partitions {
        serde_json::Value::Number(n) => n.as_u64(),
        other => return Err(unreadable(format!("partitions as {}", json_kind(other)))),
    };
    match count {
        Some(p) if (1..=u64::from(MAX_PARTITIONS)).contains(&p) => Ok(ScaledMode {
            partitions: p as u16,
        }),
        _ => Err(unreadable(format!("partitions {}", declaration.partitions))),
    }
}

/// Read the answer of `sms_sender_claim(…)`: a JSON array of rows (anything else is
/// unreadable). Each row with a readable id is read as the single claim reads its row; rows
/// without one, and repeats of an id, are counted in [`ClaimBatch::unidentified`].
pub fn parse_claim_batch(text: &str) -> Result<ClaimBatch, RestError> {
    #[derive(Deserialize)]
    struct RowId {
        #[serde(default)]
        id: serde_json::Value,
    }
    let rows: Vec<&serde_json::value::RawValue> = serde_json::from_str(text).map_err(|e| {
        RestError::Body(redact::scrub(&format!(
            "batch claim response is not a JSON array: {e}"
        )))
    })?;
    let mut seen = HashSet::with_capacity(rows.len());
    let mut batch = ClaimBatch {
        claims: Vec::with_capacity(rows.len()),
        unidentified: 0,
    };
    for raw in rows {
        let id = serde_json::from_str::<RowId>(raw.get())
            .ok()
            .and_then(|r| r.id.as_str().and_then(MessageId::parse));
        match id {
            // A repeated row is the same claim: starting it twice could send it twice.
            Some(id) if seen.insert(id.clone()) => batch.claims.push(claimed_row(&id, raw.get())),
            _ => batch.unidentified += 1,
        }
    }
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::ClaimedMessage;

    const A: &str = "6f1c2e0a-0000-4000-8000-00000000000a";
    const B: &str = "6f1c2e0a-0000-4000-8000-00000000000b";

    fn id(text: &str) -> MessageId {
        MessageId::parse(text).unwrap()
    }

    fn won(text: &str, body: &str, phone: Option<&str>, sid: Option<&str>) -> Claim {
        Claim::Won(ClaimedMessage {
            id: id(text),
            body: body.into(),
            phone_number: phone.map(String::from),
            previous_sid: sid.map(String::from),
        })
    }

    #[test]
    fn scaled_mode_declarations() {
        assert_eq!(
            parse_scaled_mode(r#"{"partitions": 16}"#),
            Ok(ScaledMode { partitions: 16 })
        );
        assert_eq!(
            parse_scaled_mode(r#"{"partitions":1,"future":"field"}"#),
            Ok(ScaledMode { partitions: 1 })
        );
        assert_eq!(
            parse_scaled_mode(r#"{"partitions":256}"#),
            Ok(ScaledMode { partitions: 256 })
        );
        for bad in [
            r#"{"partitions": 0}"#,
            r#"{"partitions": 257}"#,
            r#"{"partitions": -1}"#,
            r#"{"partitions": 16.5}"#,
            r#"{"partitions": 1e2}"#,
            r#"{"partitions": "16"}"#,
            r#"{"partitions": null}"#,
            r#"{"partitions": 18446744073709551617}"#,
            r#"{}"#,
            r#"[{"partitions": 16}]"#,
            "16",
            "null",
            "",
            "<html>",
        ] {
            assert!(
                matches!(parse_scaled_mode(bad), Err(RestError::Body(_))),
                "{bad:?} gave {:?}",
                parse_scaled_mode(bad)
            );
        }
    }

    #[test]
    fn batch_rows_read_like_the_single_claim() {
        let text = format!(
            r#"[{{"id":"{A}","content":"hi","twilio_message_sid":"SM1","conversation":{{"phone_number":"+15551234567"}}}},
                {{"id":"{}","content":"yo","twilio_message_sid":null,"conversation":null}}]"#,
            B.to_uppercase()
        );
        assert_eq!(
            parse_claim_batch(&text),
            Ok(ClaimBatch {
                claims: vec![
                    won(A, "hi", Some("+15551234567"), Some("SM1")),
                    won(B, "yo", None, None),
                ],
                unidentified: 0,
            })
        );
        assert_eq!(
            parse_claim_batch(" [ ] "),
            Ok(ClaimBatch {
                claims: vec![],
                unidentified: 0
            })
        );
        // Every row the single claim reads, the batch reads the same way.
        for row in [
            format!(r#"{{"id":"{A}","content":"hi","conversation":{{"phone_number":"+1"}}}}"#),
            format!(r#"{{"id":"{A}","content":null,"conversation":null}}"#),
            format!(r#"{{"id":"{A}","content":42,"conversation":null}}"#),
            format!(
                r#"{{"id":"{A}","content":"hi","conversation":{{"phone_number":15551234567}}}}"#
            ),
            format!(r#"{{"id":"{A}","content":"hi","conversation":"+15551234567"}}"#),
            format!(r#"{{"id":"{A}","content":"hi","twilio_message_sid":7}}"#),
            format!(r#"{{"id":"{A}"}}"#),
        ] {
            let single = crate::supabase::rest::parse_claim(&id(A), &format!("[{row}]")).unwrap();
            let batch = parse_claim_batch(&format!("[{row}]")).unwrap();
            assert_eq!(batch.claims, vec![single], "{row}");
        }
    }

    #[test]
    fn odd_batch_rows() {
        // Numbers as text, an embedded object as text: the row is ours and cannot be sent.
        let text = format!(
            r#"[{{"id":"{A}","content":42,"conversation":null}},
                {{"id":"{B}","content":"hi","conversation":{{"phone_number":15551234567}}}}]"#
        );
        let batch = parse_claim_batch(&text).unwrap();
        assert!(matches!(
            &batch.claims[..],
            [Claim::Malformed { id: a, reason: ra }, Claim::Malformed { id: b, reason: rb }]
                if *a == id(A) && ra.contains("number") && *b == id(B) && rb.contains("number")
        ));
        let text = format!(r#"[{{"id":"{A}","content":"hi","conversation":"+15551234567"}}]"#);
        assert!(matches!(
            &parse_claim_batch(&text).unwrap().claims[..],
            [Claim::Malformed { reason, .. }] if reason.starts_with("unreadable row")
        ));
        // A row without a readable id cannot be named: left out and counted; the others stand.
        let text = format!(
            r#"[{{"id":"not-a-uuid","content":"x"}}, {{"id":12,"content":"x"}}, {{"content":"x"}},
                null, 7, "{A}", [], {{"id":"{A}","content":"hi","conversation":null}},
                {{"id":"{A}","content":"again","conversation":null}}]"#
        );
        assert_eq!(
            parse_claim_batch(&text),
            Ok(ClaimBatch {
                claims: vec![won(A, "hi", None, None)],
                unidentified: 8,
            })
        );
        // Not an array: unreadable, whatever it is.
        for bad in [
            "{}",
            "null",
            "\"[]\"",
            "42",
            "",
            "<html>",
            "[",
            "[] []",
            "{\"code\":\"PGRST202\"}",
        ] {
            assert!(
                matches!(parse_claim_batch(bad), Err(RestError::Body(_))),
                "{bad:?}"
            );
        }
    }
}
