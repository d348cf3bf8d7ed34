//! PostgREST bodies: claims, error bodies, message ids.

use super::*;

pub(super) fn claim_id() -> MessageId {
    MessageId::parse(harness::CLAIM_ID).unwrap()
}

#[test]
fn claim_of_an_empty_array_is_lost() {
    let mut rng = rng(7);
    let id = claim_id();
    assert_eq!(
        parse_claim(&id, &seed("postgrest_body", "claim_lost.json")),
        Ok(Claim::Lost)
    );
    let ws = |rng: &mut Rng| -> String {
        (0..rng.usize(..4))
            .map(|_| *pick(rng, &[' ', '\t', '\n', '\r']))
            .collect()
    };
    for _ in 0..cases(1000) {
        let text = format!("{}[{}]{}", ws(&mut rng), ws(&mut rng), ws(&mut rng));
        assert_eq!(parse_claim(&id, &text), Ok(Claim::Lost), "{text:?}");
    }
    // Not `[]`: never Lost (an empty row, a nested list, a second value, a BOM, not JSON).
    for text in [
        "[null]",
        "[[]]",
        "[{}]",
        "[] []",
        "[],",
        "\u{feff}[]",
        "[",
        "]",
        "",
        "{}",
    ] {
        assert_ne!(parse_claim(&id, text), Ok(Claim::Lost), "{text:?}");
    }
}

#[test]
fn claim_reads_the_won_row_whatever_its_formatting() {
    let mut rng = rng(8);
    let id = claim_id();
    for _ in 0..cases(3000) {
        let body = random_text(&mut rng);
        let phone = rng.bool().then(|| random_text(&mut rng));
        // The database may spell the uuid in upper case; it is the same row.
        let row_id = if rng.bool() {
            harness::CLAIM_ID.to_uppercase()
        } else {
            harness::CLAIM_ID.to_string()
        };
        let mut row = J::obj(&[("id", J::Str(row_id)), ("content", J::Str(body.clone()))]);
        let J::Obj(fields) = &mut row else {
            unreachable!()
        };
        match &phone {
            Some(p) => fields.push((
                "conversation".into(),
                J::obj(&[
                    ("phone_number", J::Str(p.clone())),
                    ("id", J::Num("7".into())),
                ]),
            )),
            None if rng.bool() => fields.push(("conversation".into(), J::Null)),
            None => {}
        }
        // A requeued row carries its previous attempt's SID; others have null or no column.
        let previous_sid = rng.bool().then(|| format!("SM{:032x}", rng.u128(..)));
        match &previous_sid {
            Some(sid) => fields.push(("twilio_message_sid".into(), J::Str(sid.clone()))),
            None if rng.bool() => fields.push(("twilio_message_sid".into(), J::Null)),
            None => {}
        }
        for n in 0..rng.usize(..3) {
            fields.push((format!("x-extra-{n}"), tame_value(&mut rng, 2)));
        }
        let style = Style::random(&mut rng);
        let text = J::Arr(vec![row.clone()]).emit(&mut rng, style);
        let won = Claim::Won(ClaimedMessage {
            id: id.clone(),
            body,
            phone_number: phone,
            previous_sid,
        });
        assert_eq!(parse_claim(&id, &text), Ok(won), "{text}");

        // A content that is not text is the row's fault: Malformed, never Won nor an error.
        let mut bad = row.clone();
        *bad.field_mut(&["content"]).unwrap() = match random_value(&mut rng, 2) {
            J::Str(_) => J::Null,
            other => other,
        };
        let text = J::Arr(vec![bad]).emit(&mut rng, Style::COMPACT);
        let got = parse_claim(&id, &text);
        // (Numbers past serde_json's range make the body unreadable instead; both are safe.)
        assert!(
            matches!(got, Ok(Claim::Malformed { .. }) | Err(RestError::Body(_))),
            "{text} gave {got:?}"
        );

        // Another row's id: not ours to send.
        let mut other = row;
        let mut other_id = harness::CLAIM_ID.to_string();
        other_id.replace_range(35..36, "2");
        *other.field_mut(&["id"]).unwrap() = J::Str(other_id);
        let text = J::Arr(vec![other]).emit(&mut rng, Style::COMPACT);
        assert!(
            matches!(parse_claim(&id, &text), Ok(Claim::Malformed { .. })),
            "{text}"
        );
    }
    // Not an array at all: unreadable, for every JSON type and for the edge's HTML.
    for text in [
        "{}",
        "null",
        "\"[]\"",
        "3",
        &seed("postgrest_body", "edge_502.html"),
    ] {
        assert!(
            matches!(parse_claim(&id, text), Err(RestError::Body(_))),
            "{text:?}"
        );
    }
}

#[test]
fn postgrest_error_bodies_keep_their_code() {
    let mut rng = rng(9);
    // The reference samples first.
    for (name, bytes) in seeds("postgrest_body") {
        let text = String::from_utf8(bytes).unwrap();
        let Ok(Value::Object(body)) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        let RestError::Status { code, message, .. } = parse_error(400, &text) else {
            panic!("{name}");
        };
        assert_eq!(
            code.as_deref(),
            body.get("code").and_then(Value::as_str),
            "{name}"
        );
        assert!(
            message.starts_with(&scrub(body["message"].as_str().unwrap())),
            "{name}"
        );
    }
    let codes = [
        "PGRST204", "PGRST116", "22P02", "42501", "21000", "57014", "PGRST301",
    ];
    for _ in 0..cases(3000) {
        let status = rng.u16(..);
        let code = if rng.bool() {
            pick(&mut rng, &codes).to_string()
        } else {
            random_text(&mut rng)
        };
        let message = random_text(&mut rng);
        let hint = match rng.u8(..3) {
            0 => J::Null,
            1 => J::str(""),
            _ => J::Str(random_text(&mut rng)),
        };
        let mut body = J::obj(&[
            ("code", J::Str(code.clone())),
            ("message", J::Str(message.clone())),
            ("hint", hint.clone()),
            (
                "details",
                if rng.bool() {
                    J::Null
                } else {
                    J::Str(random_text(&mut rng))
                },
            ),
        ]);
        if let J::Obj(fields) = &mut body {
            for n in 0..rng.usize(..3) {
                fields.push((format!("x-{n}"), random_value(&mut rng, 2)));
            }
        }
        let style = Style::random(&mut rng);
        let text = body.emit(&mut rng, style);
        let RestError::Status {
            status: got_status,
            code: got_code,
            message: got_message,
        } = parse_error(status, &text)
        else {
            panic!("{text}");
        };
        assert_eq!(got_status, status);
        // Code, message and hint come back scrubbed (a trigger can raise any text).
        assert_eq!(got_code, Some(scrub(&code)), "{text}");
        let said = match hint {
            J::Str(hint) if !hint.is_empty() => format!("{message} (hint: {hint})"),
            _ => message,
        };
        assert_eq!(got_message, scrub(&said), "{text}");
    }
}

#[test]
fn message_id_accepts_exactly_the_canonical_form() {
    let mut rng = rng(10);
    let hex = b"0123456789abcdefABCDEF";
    for _ in 0..cases(5000) {
        let valid: String = (0..36)
            .map(|i| match i {
                8 | 13 | 18 | 23 => '-',
                _ => char::from(*pick(&mut rng, hex)),
            })
            .collect();
        let parsed = MessageId::parse(&valid).unwrap_or_else(|| panic!("refused {valid}"));
        assert_eq!(parsed.as_str(), valid.to_ascii_lowercase());
        harness::check_message_id(&valid);

        // Near misses: every kind of one-character damage, and the usual wrappings.
        let mut chars: Vec<char> = valid.chars().collect();
        let at = rng.usize(..chars.len());
        let odd = *pick(
            &mut rng,
            &['g', 'G', '-', '_', ' ', '{', 'é', '０', '\u{0}', '\n', 'x'],
        );
        match rng.u8(..6) {
            0 => chars[at] = odd,
            1 => chars.insert(at, *pick(&mut rng, &['0', '-', odd])),
            2 => {
                chars.remove(at);
            }
            3 => chars.swap(at, *pick(&mut rng, &[8, 13, 18, 23])),
            4 => chars.push(*pick(&mut rng, &['\n', ' ', '}', '0'])),
            _ => {
                let wrapped = format!("{}{valid}", pick(&mut rng, &["{", "urn:uuid:", " "]));
                chars = wrapped.chars().collect();
            }
        }
        let near: String = chars.into_iter().collect();
        harness::check_message_id(&near);
    }
}
