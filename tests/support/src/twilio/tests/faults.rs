use super::*;

#[test]
fn twilio_fault_too_many_requests_then_normal() {
    let d = TwilioDouble::start(TwilioConfig::default());
    d.fail_next_creates(
        2,
        Fault::TooManyRequests {
            retry_after: Some(3),
        },
    );
    for _ in 0..2 {
        let resp = create(&d, &ok_form(&[]));
        let body = assert_twilio_error(&resp, 429, 20429);
        assert_eq!(body["message"], "Too Many Requests");
        assert_eq!(resp.header("retry-after"), Some("3"));
    }
    assert!(d.messages().is_empty());
    // Faults apply to creates only: listing still works.
    assert_eq!(get(&d, &messages_path(&d)).status, 200);
    let resp = create(&d, &ok_form(&[]));
    assert_eq!(resp.status, 201);
    assert_eq!(d.messages().len(), 1);
    assert_eq!(d.create_requests(), 3);
    // Without Retry-After.
    d.fail_next_creates(1, Fault::TooManyRequests { retry_after: None });
    let resp = create(&d, &ok_form(&[]));
    assert_eq!(resp.status, 429);
    assert_eq!(resp.header("retry-after"), None);
}

#[test]
fn twilio_fault_error_and_non_json_do_not_create() {
    let d = TwilioDouble::start(TwilioConfig::default());
    d.fail_next_creates(
        1,
        Fault::Error {
            status: 503,
            code: 20503,
            message: "Service unavailable".into(),
            retry_after: Some(7),
        },
    );
    d.fail_next_creates(1, Fault::NonJsonError { status: 502 });
    let resp = create(&d, &ok_form(&[]));
    let body = assert_twilio_error(&resp, 503, 20503);
    assert_eq!(body["message"], "Service unavailable");
    assert_eq!(resp.header("retry-after"), Some("7"));
    let resp = create(&d, &ok_form(&[]));
    assert_eq!(resp.status, 502);
    assert!(resp
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(serde_json::from_slice::<Value>(&resp.body).is_err());
    assert!(d.messages().is_empty());
    // Before-create faults win over validation.
    d.fail_next_creates(1, Fault::TooManyRequests { retry_after: None });
    assert_eq!(create(&d, &[]).status, 429);
    let codes: Vec<_> = d
        .requests()
        .iter()
        .map(|r| (r.status, r.twilio_code))
        .collect();
    assert_eq!(
        codes,
        vec![
            (Some(503), Some(20503)),
            (Some(502), None),
            (Some(429), Some(20429))
        ]
    );
}

#[test]
fn twilio_fault_hangup_before_create() {
    let d = TwilioDouble::start(TwilioConfig::default());
    d.fail_next_creates(1, Fault::HangupBeforeCreate);
    assert!(post_raw(&d, &encode_form(&ok_form(&[]))).is_none());
    assert!(d.messages().is_empty());
    assert_eq!(d.create_requests(), 1);
    assert_eq!(d.requests()[0].status, None);
    assert_eq!(create(&d, &ok_form(&[])).status, 201);
}

#[test]
fn twilio_fault_error_after_create_stores() {
    let d = TwilioDouble::start(TwilioConfig::default());
    d.fail_next_creates(1, Fault::ErrorAfterCreate { status: 500 });
    d.fail_next_creates(1, Fault::ErrorAfterCreate { status: 503 });
    let resp = create(&d, &ok_form(&[]));
    assert_twilio_error(&resp, 500, 20500);
    assert_twilio_error(&create(&d, &ok_form(&[])), 503, 20503);
    assert_eq!(d.messages().len(), 2, "the messages exist despite the 5xx");
    // They are visible to reconciliation through the list.
    let page = get(&d, &format!("{}?To=%2B15551234567", messages_path(&d))).json();
    assert_eq!(page["messages"].as_array().unwrap().len(), 2);
}

#[test]
fn twilio_fault_after_create_consumed_by_invalid_request() {
    let d = TwilioDouble::start(TwilioConfig::default());
    d.fail_next_creates(1, Fault::ErrorAfterCreate { status: 500 });
    assert_twilio_error(&create(&d, &[("To", TO)]), 400, 21603);
    assert_eq!(create(&d, &ok_form(&[])).status, 201);
    assert_eq!(d.messages().len(), 1);
}

#[test]
fn twilio_fault_hangup_after_create_stores() {
    let d = TwilioDouble::start(TwilioConfig::default());
    d.fail_next_creates(1, Fault::HangupAfterCreate);
    assert!(post_raw(&d, &encode_form(&ok_form(&[]))).is_none());
    assert_eq!(d.messages().len(), 1);
    assert_eq!(d.requests()[0].status, None);
    assert_eq!(create(&d, &ok_form(&[])).status, 201);
    assert_eq!(d.messages().len(), 2);
}

#[test]
fn twilio_fault_delay_after_create_times_out_client() {
    let d = TwilioDouble::start(TwilioConfig::default());
    d.fail_next_creates(1, Fault::DelayAfterCreate(Duration::from_millis(600)));
    let mut client = Client::connect(&d);
    client.set_read_timeout(Duration::from_millis(150));
    let a = auth(&d);
    let started = Instant::now();
    let result = client.request(
        "POST",
        &messages_path(&d),
        &[
            ("Authorization", &a),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        encode_form(&ok_form(&[])).as_bytes(),
    );
    assert!(result.is_err(), "the client must time out");
    assert!(started.elapsed() < Duration::from_millis(550));
    assert!(d.wait_for_messages(1, Duration::from_secs(2)));
    // A patient client gets the normal 201 after the delay.
    d.fail_next_creates(1, Fault::DelayAfterCreate(Duration::from_millis(300)));
    let started = Instant::now();
    let resp = create(&d, &ok_form(&[]));
    assert_eq!(resp.status, 201);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(d.messages().len(), 2);
}

#[test]
fn twilio_outage_and_queue_precedence() {
    let d = TwilioDouble::start(TwilioConfig::default());
    d.set_outage(Some(Fault::ErrorAfterCreate { status: 500 }));
    d.fail_next_creates(1, Fault::TooManyRequests { retry_after: None });
    assert_eq!(
        create(&d, &ok_form(&[])).status,
        429,
        "the queue goes first"
    );
    assert_eq!(create(&d, &ok_form(&[])).status, 500);
    assert_eq!(create(&d, &ok_form(&[])).status, 500);
    assert_eq!(d.messages().len(), 2);
    d.set_outage(None);
    assert_eq!(create(&d, &ok_form(&[])).status, 201);
}

#[test]
fn twilio_list_faults_and_outage() {
    let d = TwilioDouble::start(TwilioConfig::default());
    let sid = sid_of(&create(&d, &ok_form(&[])));
    let error = |status, code, message: &str, retry_after| Fault::Error {
        status,
        code,
        message: message.to_string(),
        retry_after,
    };
    d.fail_next_lists(1, error(403, 20003, "Permission Denied", None));
    d.fail_next_lists(1, error(400, 20001, "Invalid parameter", None));
    d.fail_next_lists(
        1,
        error(500, 20500, "An internal server error has occurred", Some(2)),
    );
    d.fail_next_lists(1, Fault::HangupBeforeCreate);
    d.fail_next_lists(1, Fault::NonJsonError { status: 502 });
    // Creates and fetches are not affected and consume nothing.
    assert_eq!(create(&d, &ok_form(&[])).status, 201);
    assert_eq!(get(&d, &message_path(&d, &sid)).status, 200);
    let list = messages_path(&d);
    assert_twilio_error(&get(&d, &list), 403, 20003);
    assert_twilio_error(&get(&d, &format!("{list}?PageSize=x")), 400, 20001);
    let resp = get(&d, &list);
    assert_twilio_error(&resp, 500, 20500);
    assert_eq!(resp.header("retry-after"), Some("2"));
    let a = auth(&d);
    let hung = Client::connect(&d)
        .request("GET", &list, &[("Authorization", &a)], b"")
        .unwrap();
    assert!(hung.is_none(), "hang up without answering");
    let resp = get(&d, &list);
    assert_eq!(resp.status, 502);
    assert!(serde_json::from_slice::<Value>(&resp.body).is_err());
    assert_eq!(
        get(&d, &list).json()["messages"].as_array().unwrap().len(),
        2
    );

    // An outage lasts until cleared; queued faults go first.
    d.set_list_outage(Some(Fault::TooManyRequests {
        retry_after: Some(1),
    }));
    d.fail_next_lists(1, Fault::HangupAfterCreate);
    assert!(Client::connect(&d)
        .request("GET", &list, &[("Authorization", &a)], b"")
        .unwrap()
        .is_none());
    for _ in 0..2 {
        let resp = get(&d, &list);
        assert_twilio_error(&resp, 429, 20429);
        assert_eq!(resp.header("retry-after"), Some("1"));
    }
    assert_eq!(create(&d, &ok_form(&[])).status, 201);
    d.set_list_outage(None);
    assert_eq!(get(&d, &list).status, 200);
    let statuses: Vec<Option<u16>> = d
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path == list)
        .map(|r| r.status)
        .collect();
    assert_eq!(
        statuses,
        [
            Some(403),
            Some(400),
            Some(500),
            None,
            Some(502),
            Some(200),
            None,
            Some(429),
            Some(429),
            Some(200)
        ]
    );
}

#[test]
fn twilio_hold_creates_until_released() {
    let d = TwilioDouble::start(TwilioConfig::default());
    d.hold_creates(true);
    assert!(!d.release_one_create(), "nothing is waiting");
    thread::scope(|s| {
        let one = s.spawn(|| create(&d, &[("To", TO), ("From", FROM), ("Body", "one")]));
        let two = s.spawn(|| create(&d, &[("To", TO), ("From", FROM), ("Body", "two")]));
        assert!(d.wait_for_held_creates(2, Duration::from_secs(5)));
        assert_eq!(d.held_creates(), 2);
        assert!(d.messages().is_empty(), "held creates store nothing");
        // Invalid creates and before-create faults are answered at once; reads proceed.
        assert_twilio_error(&create(&d, &[("To", TO)]), 400, 21603);
        d.fail_next_creates(1, Fault::TooManyRequests { retry_after: None });
        assert_eq!(create(&d, &ok_form(&[])).status, 429);
        assert_eq!(get(&d, &messages_path(&d)).status, 200);
        assert_eq!(d.held_creates(), 2);

        assert!(d.release_one_create());
        assert!(d.wait_for_messages(1, Duration::from_secs(5)));
        assert!(!d.wait_for_messages(2, Duration::from_millis(100)));
        assert_eq!(d.held_creates(), 1);
        d.hold_creates(false);
        assert_eq!(one.join().unwrap().status, 201);
        assert_eq!(two.join().unwrap().status, 201);
    });
    assert_eq!(d.held_creates(), 0);
    let mut bodies: Vec<String> = d.messages().into_iter().map(|m| m.body).collect();
    bodies.sort();
    assert_eq!(bodies, ["one", "two"]);
    // Off: creates do not wait.
    assert!(!d.release_one_create());
    assert_eq!(create(&d, &ok_form(&[])).status, 201);

    // Stopping the double lets a held create through (it stores; the answer is cut).
    d.hold_creates(true);
    thread::scope(|s| {
        let held = s.spawn(|| post_raw(&d, &encode_form(&ok_form(&[]))));
        assert!(d.wait_for_held_creates(1, Duration::from_secs(5)));
        d.stop();
        assert!(d.wait_for_messages(4, Duration::from_secs(5)));
        let _ = held.join();
    });
}
