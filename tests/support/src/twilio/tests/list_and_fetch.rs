use super::*;

#[test]
fn twilio_list_filters_and_pages_exactly_once() {
    let d = TwilioDouble::start(TwilioConfig::default());
    // Sent at once, so the DateSent filters below see every message.
    d.set_send_delay(Duration::ZERO);
    let other = "+15550001111";
    let mut created = Vec::new();
    for i in 0..5 {
        let body = format!("m{i}");
        let resp = create(&d, &[("To", TO), ("From", FROM), ("Body", &body)]);
        created.push(resp.json()["sid"].as_str().unwrap().to_string());
        create(&d, &[("To", other), ("From", FROM), ("Body", "noise")]);
    }
    let today = rfc2822(SystemTime::now()); // for the day
    let (y, m, day) = civil(SystemTime::now());
    let ymd = format!("{y:04}-{m:02}-{day:02}");
    assert!(today.contains(&format!("{day:02} ")));

    let first = format!(
        "{}?To=%2B15551234567&DateSent%3E={ymd}&PageSize=2",
        messages_path(&d)
    );
    let mut target = first.clone();
    let mut seen = Vec::new();
    let mut pages = 0;
    let mut late = None;
    loop {
        let resp = get(&d, &target);
        assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
        let page = resp.json();
        assert_eq!(page["page_size"], 2);
        assert_eq!(page["page"], pages);
        assert_eq!(page["start"], pages * 2);
        let uri = page["uri"].as_str().unwrap();
        assert!(uri.contains("To=%2B15551234567&DateSent%3E="), "{uri}");
        assert_eq!(
            page["first_page_uri"],
            format!(
                "/2010-04-01/Accounts/{}/Messages.json?To=%2B15551234567&DateSent%3E={ymd}&PageSize=2&Page=0",
                d.config().account_sid
            )
        );
        if pages == 0 {
            assert_eq!(page["previous_page_uri"], Value::Null);
            // A message created while paging must not shift or repeat the remaining pages.
            late = Some(
                create(&d, &ok_form(&[])).json()["sid"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
        } else {
            assert!(page["previous_page_uri"].is_string());
        }
        for m in page["messages"].as_array().unwrap() {
            assert_eq!(m["to"], TO);
            seen.push(m["sid"].as_str().unwrap().to_string());
        }
        pages += 1;
        match page["next_page_uri"].as_str() {
            Some(next) => {
                assert!(next.contains("PageToken="), "{next}");
                target = next.to_string();
            }
            None => break,
        }
        assert!(pages < 10, "paging does not terminate");
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = created.iter().rev().cloned().collect();
    assert_eq!(seen, expected, "newest first, every message exactly once");

    // Going back from page 2 (via previous_page_uri) lands on page 1's content.
    let p1 = get(&d, &format!("{first}&Page=0")).json();
    let p2 = get(&d, p1["next_page_uri"].as_str().unwrap()).json();
    let back = get(&d, p2["previous_page_uri"].as_str().unwrap()).json();
    assert_eq!(back["messages"], p1["messages"]);
    // p1 now starts with the late message, created after the first listing.
    assert_eq!(p1["messages"][0]["sid"], late.unwrap().as_str());

    // Tomorrow-onwards and before-yesterday find nothing; From filters; raw `>` key works.
    let tomorrow = civil(SystemTime::now() + Duration::from_secs(86_400));
    let tomorrow = format!("{:04}-{:02}-{:02}", tomorrow.0, tomorrow.1, tomorrow.2);
    let none = get(&d, &format!("{}?DateSent>={tomorrow}", messages_path(&d))).json();
    assert_eq!(none["messages"], json!([]));
    assert_eq!(none["next_page_uri"], Value::Null);
    assert!(none["uri"]
        .as_str()
        .unwrap()
        .contains(&format!("DateSent%3E={tomorrow}")));
    let all = get(&d, &format!("{}?DateSent={ymd}", messages_path(&d))).json();
    assert_eq!(all["messages"].as_array().unwrap().len(), 11);
    assert_eq!(all["page_size"], 50);
    let noise = get(
        &d,
        &format!(
            "{}?To=%2B15550001111&From=%2B15557654321",
            messages_path(&d)
        ),
    )
    .json();
    assert_eq!(noise["messages"].as_array().unwrap().len(), 5);
    let nobody = get(&d, &format!("{}?From=%2B15550000000", messages_path(&d))).json();
    assert_eq!(nobody["messages"], json!([]));

    for bad in [
        "PageSize=0",
        "PageSize=1001",
        "PageSize=x",
        "DateSent%3E=yesterday",
        "PageToken=PAnope",
    ] {
        assert_twilio_error(
            &get(&d, &format!("{}?{bad}", messages_path(&d))),
            400,
            20001,
        );
    }
}

#[test]
fn twilio_list_date_filters_against_seeded_history() {
    let d = TwilioDouble::start(TwilioConfig::default());
    let at = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
    // 2020-01-01T11:00:00Z and 12:00:00Z, 2020-01-02T00:00:00Z.
    let base = 1_577_836_800;
    let a = d.seed_message(TO, FROM, "a", at(base + 11 * 3600)).sid;
    let b = d.seed_message(TO, FROM, "b", at(base + 12 * 3600)).sid;
    let c = d.seed_message(TO, FROM, "c", at(base + 86_400)).sid;
    // Still queued for the whole test: listed, but matching no DateSent filter.
    d.set_send_delay(Duration::from_secs(600));
    let fresh = create(&d, &ok_form(&[])).json()["sid"]
        .as_str()
        .unwrap()
        .to_string();
    let list = |q: &str| list_sids(&d, q);
    assert_eq!(
        list(""),
        vec![fresh.clone(), c.clone(), b.clone(), a.clone()]
    );
    assert_eq!(list("DateSent=2020-01-01"), vec![b.clone(), a.clone()]);
    assert_eq!(list("DateSent%3C=2020-01-01"), vec![b.clone(), a.clone()]);
    assert_eq!(list("DateSent%3E=2020-01-02"), vec![c.clone()]);
    // Instants are inclusive.
    assert_eq!(
        list("DateSent%3E=2020-01-01T12:00:00Z&DateSent%3C=2020-01-02T00:00:00Z"),
        vec![c.clone(), b.clone()]
    );
    assert_eq!(
        list("DateSent%3E=2020-01-01T12%3A00%3A01Z&DateSent%3C=2020-01-01T23:59:59Z"),
        Vec::<String>::new()
    );
    assert_eq!(
        list("DateSent%3C=Wed%2C+01+Jan+2020+11%3A00%3A00+-0000"),
        vec![a.clone()]
    );
    let seeded = &d.messages()[0];
    assert_eq!(seeded.status, "delivered");
    let fetched = get(
        &d,
        &format!("{}/{a}.json", messages_path(&d).trim_end_matches(".json")),
    )
    .json();
    assert_eq!(fetched["date_created"], "Wed, 01 Jan 2020 11:00:00 +0000");
    assert_eq!(fetched["date_sent"], "Wed, 01 Jan 2020 11:00:00 +0000");
    assert_eq!(
        fetched["status"], "delivered",
        "seeded history keeps its status"
    );
}

#[test]
fn twilio_lifecycle_queued_then_sent_after_send_delay() {
    let d = TwilioDouble::start(TwilioConfig::default());
    // The default delay is non-zero, as with the real service.
    assert_eq!(DEFAULT_SEND_DELAY, Duration::from_secs(1));
    let default = stored(&d, &sid_of(&create(&d, &ok_form(&[]))));
    assert_eq!(default.sends_at, default.date_created + DEFAULT_SEND_DELAY);

    // A busy sender: stays queued/accepted, date_sent null, on every read.
    d.set_send_delay(Duration::from_secs(600));
    let service = format!("MG{}", "ab".repeat(16));
    let busy = sid_of(&create(&d, &ok_form(&[])));
    let busy_mg = sid_of(&create(
        &d,
        &[("To", TO), ("MessagingServiceSid", &service), ("Body", "x")],
    ));
    for (sid, initial) in [(&busy, "queued"), (&busy_mg, "accepted")] {
        let m = get(&d, &message_path(&d, sid)).json();
        assert_eq!(m["status"], initial);
        assert_eq!(m["date_sent"], Value::Null);
        assert_eq!(m["date_updated"], m["date_created"]);
    }

    // A short delay: the create answer shows the initial state, later reads show `sent`.
    d.set_send_delay(Duration::from_millis(200));
    let resp = create(&d, &ok_form(&[])).json();
    assert_eq!(resp["status"], "queued");
    assert_eq!(resp["date_sent"], Value::Null);
    let quick_mg = create(
        &d,
        &[("To", TO), ("MessagingServiceSid", &service), ("Body", "x")],
    )
    .json();
    assert_eq!(quick_mg["status"], "accepted");
    assert_eq!(quick_mg["date_sent"], Value::Null);
    thread::sleep(Duration::from_millis(250));
    for created in [&resp, &quick_mg] {
        let sid = created["sid"].as_str().unwrap();
        let record = stored(&d, sid);
        assert_eq!(
            record.sends_at,
            record.date_created + Duration::from_millis(200)
        );
        let m = get(&d, &message_path(&d, sid)).json();
        assert_eq!(m["status"], "sent");
        assert_eq!(m["date_sent"], rfc2822(record.sends_at));
        assert_eq!(m["date_updated"], m["date_sent"]);
        assert_eq!(m["date_created"], created["date_created"]);
        // The record keeps the initial status; the lifecycle is computed from the clock.
        assert!(matches!(record.status.as_str(), "queued" | "accepted"));
        assert_eq!(record.status_at(SystemTime::now()), "sent");
        assert_eq!(record.status_at(record.date_created), record.status);
        assert_eq!(record.date_sent_at(record.date_created), None);
    }
    let page = get(&d, &messages_path(&d)).json();
    let statuses: Vec<&str> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["status"].as_str().unwrap())
        .collect();
    assert_eq!(&statuses[..4], ["sent", "sent", "accepted", "queued"]);

    // A later delay change does not move messages already stored.
    d.set_send_delay(Duration::from_secs(600));
    let sid = resp["sid"].as_str().unwrap();
    assert_eq!(get(&d, &message_path(&d, sid)).json()["status"], "sent");

    // Seeded history keeps its explicit status, date_sent = date_created.
    let when = SystemTime::now() - Duration::from_secs(3600);
    let seeded = d.seed_message(TO, FROM, "old", when);
    assert_eq!(seeded.sends_at, when);
    let m = get(&d, &message_path(&d, &seeded.sid)).json();
    assert_eq!(m["status"], "delivered");
    assert_eq!(m["date_sent"], rfc2822(when));
    assert_eq!(m["date_sent"], m["date_created"]);
}

#[test]
fn twilio_date_sent_filters_ignore_messages_not_sent() {
    let d = TwilioDouble::start(TwilioConfig::default());
    d.set_send_delay(Duration::from_secs(600));
    let queued = sid_of(&create(&d, &ok_form(&[])));
    d.set_send_delay(Duration::ZERO);
    let sent = sid_of(&create(&d, &ok_form(&[])));
    let (y, m, dd) = civil(stored(&d, &sent).sends_at);
    let ymd = format!("{y:04}-{m:02}-{dd:02}");
    // Both are listed, newest first by date_created…
    assert_eq!(list_sids(&d, ""), vec![sent.clone(), queued.clone()]);
    assert_eq!(
        list_sids(&d, "To=%2B15551234567"),
        vec![sent.clone(), queued.clone()]
    );
    // …but the queued one (date_sent null) matches no DateSent filter at all.
    for q in [
        format!("DateSent={ymd}"),
        "DateSent%3E=1970-01-01".to_string(),
        "DateSent%3C=2999-12-31".to_string(),
        "DateSent%3E=1970-01-01&DateSent%3C=2999-12-31&To=%2B15551234567".to_string(),
    ] {
        assert_eq!(list_sids(&d, &q), vec![sent.clone()], "{q}");
    }
}

#[test]
fn twilio_visibility_lag_hides_new_messages_from_list_and_fetch() {
    let d = TwilioDouble::start(TwilioConfig::default());
    let ac = d.config().account_sid.clone();
    let early = d.seed_message(TO, FROM, "history", SystemTime::now()).sid;
    d.set_visibility_lag(Duration::from_secs(600));
    let started = Instant::now();
    let hidden = sid_of(&create(&d, &ok_form(&[])));
    d.set_visibility_lag(Duration::from_millis(200));
    let soon = sid_of(&create(&d, &ok_form(&[])));
    // The test's record shows both at once.
    assert_eq!(d.messages().len(), 3);
    assert!(stored(&d, &hidden).visible_at >= started + Duration::from_secs(600));
    // A seeded message made later is still visible at once.
    d.set_visibility_lag(Duration::from_secs(600));
    let later = d.seed_message(TO, FROM, "history", SystemTime::now()).sid;
    let body = assert_twilio_error(&get(&d, &message_path(&d, &hidden)), 404, 20404);
    assert_eq!(
        body["message"],
        format!(
            "The requested resource /2010-04-01/Accounts/{ac}/Messages/{hidden}.json was not found"
        )
    );
    assert_eq!(get(&d, &message_path(&d, &early)).status, 200);
    thread::sleep(Duration::from_millis(250));
    assert_eq!(get(&d, &message_path(&d, &soon)).status, 200);
    assert_eq!(get(&d, &message_path(&d, &later)).status, 200);
    assert_twilio_error(&get(&d, &message_path(&d, &hidden)), 404, 20404);
    let listed = list_sids(&d, "To=%2B15551234567");
    assert!(!listed.contains(&hidden), "{listed:?}");
    assert_eq!(listed.len(), 3);
    assert!(listed.contains(&soon) && listed.contains(&early) && listed.contains(&later));
}

#[test]
fn twilio_trial_account_prefixes_bodies_and_keeps_requested_body() {
    let d = TwilioDouble::start(TwilioConfig::default());
    d.set_trial(true);
    let resp = create(&d, &[("To", TO), ("From", FROM), ("Body", "hi there")]).json();
    let expected = format!("{TRIAL_PREFIX}hi there");
    assert_eq!(TRIAL_PREFIX, "Sent from your Twilio trial account - ");
    assert_eq!(resp["body"], expected);
    let sid = resp["sid"].as_str().unwrap();
    let record = stored(&d, sid);
    assert_eq!(record.body, expected);
    assert_eq!(record.requested_body, "hi there");
    assert_eq!(record.num_segments, count_segments(&expected));
    assert_eq!(get(&d, &message_path(&d, sid)).json()["body"], expected);
    let page = get(&d, &messages_path(&d)).json();
    assert_eq!(page["messages"][0]["body"], expected);
    // 160 requested characters become two billed segments once prefixed.
    let full = "a".repeat(160);
    let long = sid_of(&create(&d, &[("To", TO), ("From", FROM), ("Body", &full)]));
    assert_eq!(stored(&d, &long).num_segments, 2);
    assert_eq!(stored(&d, &long).requested_body, full);
    // Seeded history on a trial account is prefixed too.
    let seeded = d.seed_message(TO, FROM, "old", SystemTime::now());
    assert_eq!(seeded.body, format!("{TRIAL_PREFIX}old"));
    assert_eq!(seeded.requested_body, "old");
    // Off again: stored as sent; no Body (media only) → empty requested_body.
    d.set_trial(false);
    let plain = create(&d, &ok_form(&[])).json();
    assert_eq!(plain["body"], "hello");
    let media = sid_of(&create(
        &d,
        &[
            ("To", TO),
            ("From", FROM),
            ("MediaUrl", "https://example.com/a.png"),
        ],
    ));
    assert_eq!(stored(&d, &media).requested_body, "");
}

#[test]
fn twilio_redaction_blanks_bodies_on_read_only() {
    let d = TwilioDouble::start(TwilioConfig::default());
    d.set_redact_bodies(true);
    let resp = create(&d, &ok_form(&[])).json();
    assert_eq!(resp["body"], "hello", "the create response keeps the body");
    let sid = resp["sid"].as_str().unwrap();
    assert_eq!(get(&d, &message_path(&d, sid)).json()["body"], "");
    let page = get(&d, &messages_path(&d)).json();
    assert_eq!(page["messages"][0]["body"], "");
    assert_eq!(page["messages"][0]["sid"], sid);
    assert_eq!(d.messages()[0].body, "hello");
    assert_eq!(d.messages()[0].requested_body, "hello");
    d.set_redact_bodies(false);
    assert_eq!(get(&d, &message_path(&d, sid)).json()["body"], "hello");
}
