use super::*;

#[test]
fn twilio_auth_and_routing() {
    let key = format!("SK{}", "12".repeat(16));
    let d = TwilioDouble::start(TwilioConfig {
        api_keys: vec![(key.clone(), "key-secret".to_string())],
        ..TwilioConfig::default()
    });
    let ac = d.config().account_sid.clone();
    let form = encode_form(&ok_form(&[]));
    let send = |authz: Option<&str>, path: &str, method: &str| {
        let mut headers = vec![("Content-Type", "application/x-www-form-urlencoded")];
        if let Some(a) = authz {
            headers.push(("Authorization", a));
        }
        Client::connect(&d)
            .request(method, path, &headers, form.as_bytes())
            .unwrap()
            .unwrap()
    };
    let path = messages_path(&d);

    let resp = send(None, &path, "POST");
    assert_eq!(resp.status, 401);
    assert_eq!(
        resp.json(),
        json!({"code":20003,"detail":"Your AccountSid or AuthToken was incorrect.","message":"Authenticate","more_info":"https://www.twilio.com/docs/errors/20003","status":401})
    );
    assert_eq!(
        resp.header("www-authenticate"),
        Some("Basic realm=\"Twilio API\"")
    );
    assert_twilio_error(&send(Some(&basic(&ac, "wrong")), &path, "POST"), 401, 20003);
    assert_twilio_error(
        &send(Some(&basic(&key, "wrong")), &path, "POST"),
        401,
        20003,
    );
    assert_twilio_error(&send(Some("Bearer abc"), &path, "POST"), 401, 20003);
    assert!(d.messages().is_empty());
    assert_eq!(
        d.create_requests(),
        4,
        "every POST counts, even unauthenticated"
    );
    assert!(!d.requests()[0].authorization_ok);

    // The API key works, with the account SID in the path.
    let resp = send(Some(&basic(&key, "key-secret")), &path, "POST");
    assert_eq!(resp.status, 201);
    assert_eq!(resp.json()["account_sid"], ac);
    // …but the key SID in the path is not an account: 20404.
    let key_path = format!("/2010-04-01/Accounts/{key}/Messages.json");
    assert_twilio_error(
        &send(Some(&basic(&key, "key-secret")), &key_path, "POST"),
        404,
        20404,
    );
    // Another well-formed account: permission failure.
    let other = format!("/2010-04-01/Accounts/AC{}/Messages.json", "f".repeat(32));
    assert_twilio_error(&send(Some(&auth(&d)), &other, "POST"), 401, 20003);
    // No `.json`, unknown paths, wrong methods.
    let no_json = format!("/2010-04-01/Accounts/{ac}/Messages");
    let body = assert_twilio_error(&send(Some(&auth(&d)), &no_json, "POST"), 404, 20404);
    assert_eq!(
        body,
        json!({"code":20404,"message":format!("The requested resource {no_json} was not found"),"more_info":"https://www.twilio.com/docs/errors/20404","status":404})
    );
    assert_twilio_error(&send(Some(&auth(&d)), "/nothing/here", "GET"), 404, 20404);
    let resp = send(Some(&auth(&d)), &path, "DELETE");
    assert_twilio_error(&resp, 405, 20004);
    assert_eq!(resp.header("allow"), Some("GET, POST"));
    assert_eq!(d.messages().len(), 1);

    // Account fetch and owned numbers, for a configuration check.
    let account = get(&d, &format!("/2010-04-01/Accounts/{ac}.json"));
    assert_eq!(account.status, 200);
    let a = account.json();
    assert_eq!(a["sid"], ac);
    assert_eq!(a["status"], "active");
    assert_eq!(a["type"], "Full");
    let numbers = get(
        &d,
        &format!("/2010-04-01/Accounts/{ac}/IncomingPhoneNumbers.json?PhoneNumber=%2B15557654321"),
    );
    assert_eq!(numbers.status, 200);
    assert_eq!(numbers.json()["incoming_phone_numbers"], json!([]));
}

#[test]
fn twilio_incoming_phone_numbers_lists_owned() {
    let d = TwilioDouble::start(TwilioConfig {
        owned_numbers: vec![FROM.to_string(), "+447700900123".to_string()],
        ..TwilioConfig::default()
    });
    let ac = d.config().account_sid.clone();
    let path = format!("/2010-04-01/Accounts/{ac}/IncomingPhoneNumbers.json");
    let all = get(&d, &path).json();
    assert_eq!(all["incoming_phone_numbers"].as_array().unwrap().len(), 2);
    let one = get(&d, &format!("{path}?PhoneNumber=%2B15557654321")).json();
    let list = one["incoming_phone_numbers"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["phone_number"], FROM);
    assert_eq!(list[0]["capabilities"]["sms"], true);
    assert!(is_sid(list[0]["sid"].as_str().unwrap(), "PN"));
    assert_eq!(one["next_page_uri"], Value::Null);
    assert_eq!(
        all["incoming_phone_numbers"][0]["sid"], list[0]["sid"],
        "stable PN sid"
    );
}

#[test]
fn twilio_latency_applies_to_every_request() {
    let d = TwilioDouble::start(TwilioConfig::default());
    d.set_latency(Duration::from_millis(200));
    let started = Instant::now();
    assert_eq!(get(&d, &messages_path(&d)).status, 200);
    assert!(started.elapsed() >= Duration::from_millis(200));
    let started = Instant::now();
    assert_eq!(create(&d, &ok_form(&[])).status, 201);
    assert!(started.elapsed() >= Duration::from_millis(200));
    d.set_latency(Duration::ZERO);
    let started = Instant::now();
    create(&d, &ok_form(&[]));
    assert!(started.elapsed() < Duration::from_millis(200));
}

#[test]
fn twilio_concurrency_limit_refuses_with_20429_without_creating() {
    let d = std::sync::Arc::new(TwilioDouble::start(TwilioConfig::default()));
    d.set_concurrency_limit(Some(2));
    d.set_create_latency(Duration::from_millis(400));
    let answers: Vec<u16> = (0..3)
        .map(|i| {
            let d = d.clone();
            std::thread::sleep(Duration::from_millis(if i == 2 { 100 } else { 0 }));
            std::thread::spawn(move || create(&d, &ok_form(&[])).status)
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    assert_eq!(
        answers.iter().filter(|s| **s == 201).count(),
        2,
        "{answers:?}"
    );
    assert_eq!(
        answers.iter().filter(|s| **s == 429).count(),
        1,
        "{answers:?}"
    );
    assert_eq!(d.too_many_requests(), 1);
    assert_eq!(d.peak_concurrency(), 2);
    assert_eq!(d.messages().len(), 2, "a refused request creates nothing");
    let refused = d
        .requests()
        .into_iter()
        .find(|r| r.status == Some(429))
        .unwrap();
    assert_eq!(refused.twilio_code, Some(20429));
    d.set_concurrency_limit(None);
    assert_eq!(create(&d, &ok_form(&[])).status, 201);
}

#[test]
fn twilio_keep_alive_and_wait_and_stop() {
    let d = TwilioDouble::start(TwilioConfig::default());
    let a = auth(&d);
    let mut client = Client::connect(&d);
    for _ in 0..3 {
        let resp = client
            .request(
                "POST",
                &messages_path(&d),
                &[
                    ("Authorization", &a),
                    ("Content-Type", "application/x-www-form-urlencoded"),
                ],
                encode_form(&ok_form(&[])).as_bytes(),
            )
            .unwrap()
            .unwrap();
        assert_eq!(resp.status, 201);
    }
    assert_eq!(d.connections_accepted(), 1);
    assert!(d.wait_for_messages(3, Duration::from_millis(10)));
    let started = Instant::now();
    assert!(!d.wait_for_messages(4, Duration::from_millis(100)));
    assert!(started.elapsed() >= Duration::from_millis(100));

    // A waiter is woken by a create from another thread.
    let url = d.url();
    let body = encode_form(&ok_form(&[]));
    let path = messages_path(&d);
    let poster = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        let mut s = TcpStream::connect(url.trim_start_matches("http://")).unwrap();
        let req = format!(
            "POST {path} HTTP/1.1\r\nAuthorization: {a}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    });
    assert!(d.wait_for_messages(4, Duration::from_secs(5)));
    assert!(poster.join().unwrap().starts_with("HTTP/1.1 201"));

    // After stop, the kept-alive connection is cut and new connections fail or go unanswered.
    d.stop();
    let cut = client.request("GET", &messages_path(&d), &[], b"");
    assert!(matches!(cut, Ok(None) | Err(_)));
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let addr = d.url().trim_start_matches("http://").to_string();
        match TcpStream::connect(&addr) {
            Err(_) => break,
            Ok(mut s) => {
                s.set_read_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                let _ = s.write_all(b"GET / HTTP/1.1\r\n\r\n");
                let mut buf = [0u8; 1];
                if !matches!(s.read(&mut buf), Ok(n) if n > 0) {
                    break;
                }
            }
        }
        assert!(Instant::now() < deadline, "still serving after stop");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn twilio_create_latency_applies_to_creates_only() {
    // Generous gaps: only the ordering matters, and a loaded machine adds its own delays.
    let d = TwilioDouble::start(TwilioConfig::default());
    d.set_create_latency(Duration::from_millis(1000));
    let started = Instant::now();
    assert_eq!(create(&d, &ok_form(&[])).status, 201);
    assert!(started.elapsed() >= Duration::from_millis(1000));
    let started = Instant::now();
    assert_eq!(get(&d, &messages_path(&d)).status, 200);
    assert!(started.elapsed() < Duration::from_millis(1000));
    // It adds to the latency of every request.
    d.set_latency(Duration::from_millis(100));
    let started = Instant::now();
    assert_eq!(create(&d, &ok_form(&[])).status, 201);
    assert!(started.elapsed() >= Duration::from_millis(1100));
}

#[test]
fn twilio_double_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<TwilioDouble>();
    assert_send_sync::<StoredMessage>();
    assert_send_sync::<RecordedRequest>();
}
