use super::*;

#[test]
fn twilio_happy_create_returns_full_resource_and_stores_it() {
    let d = TwilioDouble::start(TwilioConfig::default());
    // A busy sender: the message stays queued for the whole test, so fetch == create.
    d.set_send_delay(Duration::from_secs(600));
    // `+` as %2B, a space as `+` (form encoding), a repeated MediaUrl-free create.
    let raw = "To=%2B15551234567&From=%2B15557654321&Body=Hello+world&StatusCallback=https%3A%2F%2Fexample.com%2Fcb%3Fid%3D7";
    let resp = post_raw(&d, raw).unwrap();
    assert_eq!(resp.status, 201);
    let m = resp.json();
    let sid = m["sid"].as_str().unwrap().to_string();
    assert!(is_hex_sid(&sid, "SM"), "{sid}");
    assert_eq!(m["account_sid"], d.config().account_sid);
    assert_eq!(m["api_version"], "2010-04-01");
    assert_eq!(m["to"], "+15551234567");
    assert_eq!(m["from"], "+15557654321");
    assert_eq!(m["body"], "Hello world");
    assert_eq!(m["status"], "queued");
    assert_eq!(m["direction"], "outbound-api");
    assert_eq!(m["num_segments"], "1");
    assert_eq!(m["num_media"], "0");
    assert_eq!(m["price"], Value::Null);
    assert_eq!(m["error_code"], Value::Null);
    assert_eq!(m["messaging_service_sid"], Value::Null);
    let date = m["date_created"].as_str().unwrap();
    assert!(date.ends_with(" +0000") && date.len() == 31, "{date}");
    assert_eq!(m["date_sent"], Value::Null, "not sent yet (§2)");
    assert_eq!(m["date_updated"], date);
    let uri = format!(
        "/2010-04-01/Accounts/{}/Messages/{sid}.json",
        d.config().account_sid
    );
    assert_eq!(m["uri"], uri);
    assert_eq!(
        m["subresource_uris"]["media"],
        uri.replace(".json", "/Media.json")
    );

    let stored = d.messages();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].sid, sid);
    assert_eq!(stored[0].to, "+15551234567");
    assert_eq!(stored[0].from.as_deref(), Some("+15557654321"));
    assert_eq!(stored[0].body, "Hello world");
    assert_eq!(stored[0].requested_body, "Hello world");
    assert_eq!(stored[0].status, "queued");
    assert_eq!(
        stored[0].status_callback.as_deref(),
        Some("https://example.com/cb?id=7")
    );
    assert_eq!(stored[0].num_segments, 1);
    assert_eq!(d.create_requests(), 1);
    let reqs = d.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].status, Some(201));
    assert!(reqs[0].authorization_ok);
    assert!(reqs[0].form.contains(&("To".into(), "+15551234567".into())));

    // Fetch returns the same resource; an unknown SID is 20404.
    let fetched = get(&d, &uri);
    assert_eq!(fetched.status, 200);
    assert_eq!(fetched.json(), m);
    let missing = format!(
        "/2010-04-01/Accounts/{}/Messages/SM{}.json",
        d.config().account_sid,
        "0".repeat(32)
    );
    assert_twilio_error(&get(&d, &missing), 404, 20404);

    // Two creates never share a SID.
    let second = create(&d, &ok_form(&[]));
    assert_ne!(second.json()["sid"], m["sid"]);
}

#[test]
fn twilio_raw_plus_decodes_to_space_and_fails_21211() {
    let d = TwilioDouble::start(TwilioConfig::default());
    let resp = post_raw(&d, "To=+15551234567&From=%2B15557654321&Body=hi").unwrap();
    let body = assert_twilio_error(&resp, 400, 21211);
    assert_eq!(
        body["message"],
        "The 'To' number  15551234567 is not a valid phone number."
    );
    assert!(d.messages().is_empty());
}

#[test]
fn twilio_validation_codes_in_order() {
    let d = TwilioDouble::start(TwilioConfig::default());
    let long_gsm = "a".repeat(1601);
    let emoji_800 = "😀".repeat(800); // exactly 1600 UTF-16 units: allowed
    let emoji_801 = "😀".repeat(801); // 801 characters but 1602 units: rejected
    let cases: Vec<(Vec<(&str, &str)>, u64)> = vec![
        (vec![], 21604),
        (vec![("To", ""), ("From", FROM), ("Body", "x")], 21604),
        (vec![("Body", "x"), ("From", "garbage")], 21604),
        (vec![("To", "garbage")], 21603),
        (vec![("To", "garbage"), ("Body", "x")], 21603),
        (vec![("To", "garbage"), ("From", "garbage")], 21602),
        (
            vec![("To", "garbage"), ("From", "garbage"), ("Body", &long_gsm)],
            21617,
        ),
        (
            vec![("To", TO), ("From", FROM), ("Body", &emoji_801)],
            21617,
        ),
        (
            vec![("To", "garbage"), ("From", "garbage"), ("Body", "x")],
            21211,
        ),
        (
            vec![("To", "15551234567"), ("From", FROM), ("Body", "x")],
            21211,
        ),
        (
            vec![("To", "+0551234567"), ("From", FROM), ("Body", "x")],
            21211,
        ),
        (
            vec![("To", "+1555123"), ("From", FROM), ("Body", "x")],
            21211,
        ),
        (
            vec![("To", TO), ("From", "not valid!"), ("Body", "x")],
            21212,
        ),
        (vec![("To", TO), ("From", "+123"), ("Body", "x")], 21212),
        (
            vec![("To", TO), ("MessagingServiceSid", "MG123"), ("Body", "x")],
            21701,
        ),
        // Magic numbers (docs/twilio.md §8.3).
        (
            vec![("To", "+15005550001"), ("From", FROM), ("Body", "x")],
            21211,
        ),
        (
            vec![("To", "+15005550002"), ("From", FROM), ("Body", "x")],
            21612,
        ),
        (
            vec![("To", "+15005550003"), ("From", FROM), ("Body", "x")],
            21408,
        ),
        (
            vec![("To", "+15005550004"), ("From", FROM), ("Body", "x")],
            21610,
        ),
        (
            vec![("To", "+15005550009"), ("From", FROM), ("Body", "x")],
            21614,
        ),
        (
            vec![("To", TO), ("From", "+15005550001"), ("Body", "x")],
            21212,
        ),
        (
            vec![("To", TO), ("From", "+15005550007"), ("Body", "x")],
            21606,
        ),
        (
            vec![("To", TO), ("From", "+15005550008"), ("Body", "x")],
            21611,
        ),
        // From problems are reported before destination problems.
        (
            vec![
                ("To", "+15005550004"),
                ("From", "+15005550007"),
                ("Body", "x"),
            ],
            21606,
        ),
    ];
    for (form, code) in &cases {
        let resp = create(&d, form);
        let body = assert_twilio_error(&resp, 400, *code);
        if *code == 21604 {
            assert_eq!(body["message"], "A 'To' phone number is required.");
        }
    }
    assert!(d.messages().is_empty(), "no failed create may store");
    assert_eq!(d.create_requests(), cases.len());
    let recorded: Vec<Option<u32>> = d.requests().iter().map(|r| r.twilio_code).collect();
    assert_eq!(
        recorded,
        cases
            .iter()
            .map(|(_, c)| Some(*c as u32))
            .collect::<Vec<_>>()
    );

    // Boundaries that must pass: 1600 GSM chars, 1600 UTF-16 units, magic passing From,
    // alphanumeric sender, short code, media without body.
    let gsm_1600 = "a".repeat(1600);
    for form in [
        vec![("To", TO), ("From", FROM), ("Body", &gsm_1600)],
        vec![("To", TO), ("From", FROM), ("Body", &emoji_800)],
        vec![("To", TO), ("From", "+15005550006"), ("Body", "x")],
        vec![("To", TO), ("From", "ACME Corp"), ("Body", "x")],
        vec![("To", TO), ("From", "12345"), ("Body", "x")],
        vec![
            ("To", TO),
            ("From", FROM),
            ("MediaUrl", "https://example.com/a.png"),
            ("MediaUrl", "https://example.com/b.png"),
        ],
    ] {
        let resp = create(&d, &form);
        assert_eq!(resp.status, 201, "{}", String::from_utf8_lossy(&resp.body));
    }
    let stored = d.messages();
    assert_eq!(stored[0].num_segments, 11); // 1600 septets / 153 per segment
                                            // 1600 UTF-16 units; a surrogate pair is not split, so 33 emoji per 67-unit segment.
    assert_eq!(stored[1].num_segments, 25);
    let mms = stored.last().unwrap();
    assert_eq!(mms.media_urls.len(), 2, "repeated MediaUrl keys are kept");
    assert!(mms.sid.starts_with("MM"));
}

#[test]
fn twilio_ownership_and_messaging_services() {
    let service = format!("MG{}", "ab".repeat(16));
    let d = TwilioDouble::start(TwilioConfig {
        owned_numbers: vec![FROM.to_string(), "+15005550008".to_string()],
        messaging_services: vec![service.clone()],
        ..TwilioConfig::default()
    });
    assert_twilio_error(
        &create(&d, &[("To", TO), ("From", "+15559999999"), ("Body", "x")]),
        400,
        21606,
    );
    // Magic From numbers apply only to owned numbers once ownership is configured.
    assert_twilio_error(
        &create(&d, &[("To", TO), ("From", "+15005550001"), ("Body", "x")]),
        400,
        21606,
    );
    assert_twilio_error(
        &create(&d, &[("To", TO), ("From", "+15005550008"), ("Body", "x")]),
        400,
        21611,
    );
    let unknown = format!("MG{}", "cd".repeat(16));
    let body = assert_twilio_error(
        &create(
            &d,
            &[("To", TO), ("MessagingServiceSid", &unknown), ("Body", "x")],
        ),
        400,
        21701,
    );
    assert_eq!(
        body["message"],
        format!("The Messaging Service Sid {unknown} is invalid.")
    );

    let resp = create(
        &d,
        &[("To", TO), ("MessagingServiceSid", &service), ("Body", "x")],
    );
    assert_eq!(resp.status, 201);
    let m = resp.json();
    assert_eq!(m["from"], Value::Null);
    assert_eq!(m["messaging_service_sid"], service);
    assert_eq!(m["status"], "accepted");
    assert_eq!(m["num_segments"], "0");
    let ok = create(&d, &ok_form(&[]));
    assert_eq!(ok.status, 201);
    assert_eq!(d.messages().len(), 2);
}

#[test]
fn twilio_json_body_is_not_read() {
    let d = TwilioDouble::start(TwilioConfig::default());
    let a = auth(&d);
    let body = serde_json::to_vec(&json!({"To": TO, "From": FROM, "Body": "hi"})).unwrap();
    let resp = Client::connect(&d)
        .request(
            "POST",
            &messages_path(&d),
            &[("Authorization", &a), ("Content-Type", "application/json")],
            &body,
        )
        .unwrap()
        .unwrap();
    assert_twilio_error(&resp, 400, 21604);
    // A form body without a Content-Type is not read either.
    let resp = Client::connect(&d)
        .request(
            "POST",
            &messages_path(&d),
            &[("Authorization", &a)],
            encode_form(&ok_form(&[])).as_bytes(),
        )
        .unwrap()
        .unwrap();
    assert_twilio_error(&resp, 400, 21604);
    // The charset parameter is fine.
    let resp = Client::connect(&d)
        .request(
            "POST",
            &messages_path(&d),
            &[
                ("Authorization", &a),
                (
                    "Content-Type",
                    "application/x-www-form-urlencoded; charset=utf-8",
                ),
            ],
            encode_form(&ok_form(&[])).as_bytes(),
        )
        .unwrap()
        .unwrap();
    assert_eq!(resp.status, 201);
    assert_eq!(d.messages().len(), 1);
}

#[test]
fn twilio_error_texts_quote_numbers_and_full_paths() {
    let d = TwilioDouble::start(TwilioConfig::default());
    let ac = d.config().account_sid.clone();
    let cases: [(&str, &str, u64, String); 5] = [
        (
            "+15005550001",
            FROM,
            21211,
            "The 'To' number +15005550001 is not a valid phone number.".to_string(),
        ),
        (
            "+15005550009",
            FROM,
            21614,
            "'To' number +15005550009 is not a valid mobile number".to_string(),
        ),
        (
            TO,
            "+15005550001",
            21212,
            "The 'From' number +15005550001 is not a valid phone number, shortcode, or alphanumeric sender ID.".to_string(),
        ),
        (
            TO,
            "+15005550007",
            21606,
            "The 'From' phone number provided (+15005550007) is not a valid message-capable Twilio phone number for this destination.".to_string(),
        ),
        (
            "+15005550003",
            FROM,
            21408,
            "Permission to send an SMS has not been enabled for the region indicated by the 'To' number: +15005550003.".to_string(),
        ),
    ];
    for (to, from, code, message) in cases {
        let resp = create(&d, &[("To", to), ("From", from), ("Body", "x")]);
        let body = assert_twilio_error(&resp, 400, code);
        assert_eq!(body["message"], message);
    }
    let missing = format!("SM{}", "0".repeat(32));
    let body = assert_twilio_error(&get(&d, &message_path(&d, &missing)), 404, 20404);
    assert_eq!(
        body["message"],
        format!("The requested resource /2010-04-01/Accounts/{ac}/Messages/{missing}.json was not found")
    );
    let body = assert_twilio_error(
        &get(&d, &format!("/2010-04-01/Accounts/{ac}/Nothing.json")),
        404,
        20404,
    );
    assert_eq!(
        body["message"],
        format!("The requested resource /2010-04-01/Accounts/{ac}/Nothing.json was not found")
    );
    let service = format!("MG{}", "ab".repeat(16));
    let body = assert_twilio_error(
        &get(&d, &d.messaging_service_url(&service).replace(&d.url(), "")),
        404,
        20404,
    );
    assert_eq!(
        body["message"],
        format!("The requested resource /v1/Services/{service} was not found")
    );
}
