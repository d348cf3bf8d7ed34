//! Realtime frames: unknown keys, key order and formatting change nothing; only our binding is ours.

use super::*;

/// Object paths that decoders read through a typed view, where unknown keys must be ignored.
/// (Not `payload.response`: a reply keeps it as a JSON value, unknown keys included.)
const VIEW_PATHS: &[&[&str]] = &[
    &[],
    &["payload"],
    &["payload", "data"],
    &["payload", "data", "record"],
    &["payload", "data", "old_record"],
];

#[test]
fn realtime_decode_ignores_unknown_keys_key_order_and_formatting() {
    let started = Instant::now();
    let mut rng = rng(5);
    let mut runs = 0;
    for (name, bytes) in seeds("realtime_frame") {
        let text = String::from_utf8(bytes).unwrap();
        let expected = decode(&text);
        let tree = J::parse(&text);
        for _ in 0..cases(300) {
            let mut frame = tree.clone();
            for n in 0..rng.usize(..4) {
                let path = *pick(&mut rng, VIEW_PATHS);
                if let Some(J::Obj(fields)) = frame.field_mut(path) {
                    // Prefixed so as never to collide with a field a decoder knows.
                    let key = format!("x-unknown-{n}{}", random_text(&mut rng));
                    fields.push((key, random_value(&mut rng, 3)));
                }
            }
            let style = Style::random(&mut rng);
            let variant = frame.emit(&mut rng, style);
            match (&expected, decode(&variant)) {
                (Ok(want), Ok(got)) => assert_eq!(&got, want, "{name}: {variant}"),
                // Error texts carry positions, which formatting moves; only the verdict counts.
                (Err(_), Err(_)) => {}
                (want, got) => panic!("{name}: {want:?} became {got:?} for {variant}"),
            }
            runs += 1;
        }
    }
    report("decode invariance", runs, started);
}

#[test]
fn binding_id_accepts_exactly_our_binding() {
    let mut rng = rng(6);
    let reply = decode(&seed("realtime_frame", "join_reply_ok.json")).unwrap();
    let sms_sender::supabase::realtime::frame::ServerFrame::Reply { response, .. } = reply else {
        panic!("join_reply_ok.json is not a reply: {reply:?}");
    };
    assert_eq!(binding_id(&response), Ok(31339886));

    let ours = |id: J, event: &str| {
        J::obj(&[
            ("id", id),
            ("event", J::str(event)),
            ("schema", J::str("public")),
            ("table", J::str("messages")),
            ("filter", J::str("status=eq.queued_for_send")),
        ])
    };
    let check = |rng: &mut Rng, items: Vec<J>| -> Result<u64, String> {
        let response = J::obj(&[("postgres_changes", J::Arr(items))]);
        let style = Style::random(rng);
        let text = response.emit(rng, style);
        let value: Value = serde_json::from_str(&text).expect("generated JSON");
        harness::check_binding_id(&value);
        binding_id(&value)
    };

    for _ in 0..cases(2000) {
        // Any integer id the server may hash to, any case of the event, extras echoed back.
        let id = match rng.u8(..3) {
            0 => rng.u64(..134_217_728),
            1 => *pick(&mut rng, &[0, u64::MAX, u64::from(u32::MAX) + 1]),
            _ => rng.u64(..),
        };
        let event: String = "update"
            .chars()
            .map(|c| {
                if rng.bool() {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect();
        let mut item = ours(J::Num(id.to_string()), &event);
        if let J::Obj(fields) = &mut item {
            for n in 0..rng.usize(..3) {
                fields.push((format!("select{n}"), tame_value(&mut rng, 2)));
            }
        }
        assert_eq!(check(&mut rng, vec![item.clone()]), Ok(id));

        // Each way of not being exactly our one binding is refused.
        let mut wrong = item.clone();
        let field = *pick(&mut rng, &["event", "schema", "table", "filter", "id"]);
        let slot = wrong.field_mut(&[field]).unwrap();
        *slot = match (field, rng.u8(..4)) {
            ("id", 0) => J::Str(id.to_string()),
            ("id", 1) => J::Num(format!("-{}", id.max(1))),
            ("id", 2) => {
                J::Num(pick(&mut rng, &["1.5", "18446744073709551616", "1e3"]).to_string())
            }
            ("event", 0) => J::str(pick::<&str>(
                &mut rng,
                &["INSERT", "*", "DELETE", "UPDATE "],
            )),
            (_, 0) => J::Null,
            (_, 1) => J::Num("1".into()),
            (_, _) => match slot {
                J::Str(s) => J::Str(format!("{s}{}", pick(&mut rng, &[" ", "x", "*", "\u{0}"]))),
                _ => J::str("other"),
            },
        };
        assert!(check(&mut rng, vec![wrong]).is_err(), "{field} changed");
        assert!(check(&mut rng, vec![item.clone(), item]).is_err(), "two");
    }
    assert!(check(&mut rng, vec![]).is_err());
    assert!(binding_id(&Value::Null).is_err());
}
