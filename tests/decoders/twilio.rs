//! Twilio bodies: error codes and Message SIDs.

use super::*;

#[test]
fn twilio_error_bodies_always_yield_their_code() {
    let mut rng = rng(11);
    for (name, bytes) in seeds("twilio_body") {
        let text = String::from_utf8(bytes).unwrap();
        let Ok(body) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        if let Some(code) = body.get("code").and_then(Value::as_u64) {
            let error = parse_rejection(body["status"].as_u64().unwrap() as u16, &text, None);
            assert_eq!(error.twilio_code().map(u64::from), Some(code), "{name}");
        }
    }
    for _ in 0..cases(3000) {
        let status = *pick(&mut rng, &[400, 401, 403, 404, 405, 429, 500, 503]);
        let code = match rng.u8(..3) {
            0 => *pick(&mut rng, &[20003, 20404, 20429, 21211, 21610, 21617, 30007]),
            1 => *pick(&mut rng, &[0, u32::MAX]),
            _ => rng.u32(..),
        };
        let message = random_text(&mut rng);
        let mut fields = vec![
            ("code".to_string(), J::Num(code.to_string())),
            (
                "more_info".to_string(),
                J::Str(format!("https://www.twilio.com/docs/errors/{code}")),
            ),
            ("status".to_string(), J::Num(status.to_string())),
        ];
        // `message` is always sent; a body without it must still give the code.
        let with_message = rng.u8(..8) != 0;
        if with_message {
            fields.push(("message".into(), J::Str(message.clone())));
        }
        match rng.u8(..3) {
            0 => fields.push(("detail".into(), J::Str(random_text(&mut rng)))),
            1 => fields.push(("details".into(), random_value(&mut rng, 2))),
            _ => {}
        }
        for n in 0..rng.usize(..3) {
            fields.push((format!("x-{n}"), random_value(&mut rng, 2)));
        }
        let style = Style::random(&mut rng);
        let text = J::Obj(fields).emit(&mut rng, style);
        let retry_after = rng.bool().then(|| Duration::from_secs(rng.u64(..100_000)));
        let error = parse_rejection(status, &text, retry_after);
        let expected = SendError::Rejected {
            status,
            code: Some(code),
            // Twilio's texts are masked (numbers, account SIDs) and bounded before anyone logs them.
            message: if with_message {
                sms_sender::redact::scrub(&message)
            } else {
                String::new()
            },
            retry_after,
        };
        assert_eq!(error, expected, "{text}");
    }
}

#[test]
fn twilio_created_accepts_exactly_message_sids() {
    let mut rng = rng(12);
    let reference = J::parse(&seed("twilio_body", "created_queued.json"));
    assert_eq!(
        parse_created(201, &reference.emit(&mut rng, Style::COMPACT)).map(|a| a.sid),
        Ok("SMaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".into())
    );
    let hex = b"0123456789abcdefABCDEF";
    for _ in 0..cases(3000) {
        let mut sid = pick(&mut rng, &["SM", "MM"]).to_string();
        sid.extend((0..32).map(|_| char::from(*pick(&mut rng, hex))));
        // Sometimes a damaged SID: another prefix, a length off by one, a non-hex character.
        let damaged = rng.bool();
        if damaged {
            match rng.u8(..4) {
                0 => sid.replace_range(
                    ..2,
                    pick::<&str>(&mut rng, &["sm", "MG", "AC", "SK", "S", ""]),
                ),
                1 => sid.push('a'),
                2 => {
                    sid.pop();
                }
                _ => {
                    let at = rng.usize(2..sid.len());
                    let odd = pick(&mut rng, &["g", "-", " ", "é", "\u{0}", "０"]);
                    sid.replace_range(at..at + 1, odd);
                }
            }
        }
        let status = match rng.u8(..3) {
            0 => None,
            1 => Some(J::Null),
            _ => Some(J::Str(random_text(&mut rng))),
        };
        let mut body = reference.clone();
        *body.field_mut(&["sid"]).unwrap() = J::Str(sid.clone());
        match &status {
            Some(s) => *body.field_mut(&["status"]).unwrap() = s.clone(),
            None => {
                if let J::Obj(fields) = &mut body {
                    fields.retain(|(k, _)| k != "status");
                }
            }
        }
        let style = Style::random(&mut rng);
        let text = body.emit(&mut rng, style);
        let http = *pick(&mut rng, &[200, 201]);
        let got = parse_created(http, &text);
        assert_eq!(got.is_ok(), harness::is_message_sid(&sid), "{sid:?}");
        if !damaged {
            let expected = Accepted {
                sid,
                status: match status {
                    Some(J::Str(s)) => s,
                    _ => "queued".into(),
                },
            };
            assert_eq!(got, Ok(expected), "{text}");
        } else if let Err(e) = got {
            assert!(matches!(e, SendError::Unreadable { status, .. } if status == http));
        }
    }
}
