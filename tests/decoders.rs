//! Every decoder of untrusted input, fed arbitrary and adversarial bytes: none may panic, and
//! each must keep the properties its callers rely on.
//!
//! The decoders read what the network and the environment hand the service: Supabase Realtime
//! frames, PostgREST and Twilio response bodies, the timestamps inside them, and the
//! configuration variables; and text from outside is masked (`redact::scrub`) before it is
//! logged. A panic in one
//! of them takes a sender thread or the Realtime client down on a single odd byte, so this file
//! throws at them:
//! - random bytes, including invalid UTF-8 (converted lossily where a decoder takes `&str`);
//! - structure-aware mutations of the real frames and bodies from the references, which are the
//!   seed corpus of the fuzz targets (`fuzz/seeds/<target>/`): swapped JSON types, `null`s, deep
//!   nesting, huge numbers, very long strings, odd Unicode, then flipped, inserted and deleted
//!   bytes;
//! - generated valid inputs, to check properties and not only survival: formatting and unknown
//!   keys do not change a decoded frame, `[]` is a lost claim, an error body always yields its
//!   code, only canonical ids and SIDs and only E.164 senders are accepted, secrets never reach
//!   an error message.
//!
//! A panic fails the test by itself, so nothing here catches unwinds. The per-input invariants
//! (the same ones the fuzz targets check) live in `fuzz/harness.rs`, which is also where a new
//! decoder is registered, one line per decoder. Runs are deterministic: the seed is fixed.
//! `DECODERS_SEED=<n>` explores another one and `DECODERS_SCALE=<k>` multiplies the number of
//! cases, for a longer local run; a failure message always shows the offending input.

#[path = "../fuzz/harness.rs"]
mod harness;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant, UNIX_EPOCH};

use fastrand::Rng;
use serde_json::Value;
use sms_sender::clock::{parse_rfc2822, parse_rfc3339};
use sms_sender::message::{ClaimedMessage, MessageId};
use sms_sender::redact::scrub;
use sms_sender::supabase::realtime::frame::{binding_id, decode};
use sms_sender::supabase::rest::{parse_claim, parse_error, Claim, RestError};
use sms_sender::twilio::client::{parse_created, parse_rejection, Accepted, SendError};

use harness::{is_e164, Family, FAMILIES};

// ----------------------------------------------------------------------------------------------
// Run parameters and the seed corpus

/// A generator for one test: the run seed mixed with a per-test salt, so that tests running in
/// parallel stay independent and each stays reproducible alone.
fn rng(salt: u64) -> Rng {
    let base = std::env::var("DECODERS_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0x5eed_dec0_de00_0001);
    Rng::with_seed(base ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// `n` cases, times `DECODERS_SCALE`.
fn cases(n: usize) -> usize {
    let scale = std::env::var("DECODERS_SCALE")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(1);
    n * scale.max(1)
}

fn seed_dir(family: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(family)
}

/// The seed files of a fuzz target, in name order (directory order is not stable).
fn seeds(family: &str) -> Vec<(String, Vec<u8>)> {
    let dir = seed_dir(family);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("readable seed directory").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).expect("readable seed"))
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out
}

/// One seed, by file name: the property tests start from the reference samples too.
fn seed(family: &str, name: &str) -> String {
    let path = seed_dir(family).join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn report(test: &str, runs: usize, started: Instant) {
    eprintln!("{test}: {runs} inputs in {:?}", started.elapsed());
}

// ----------------------------------------------------------------------------------------------
// A JSON tree that can hold what serde_json::Value cannot: raw number tokens of any size,
// duplicate keys and keys in a chosen order, and raw text (invalid escapes, deep nesting).

#[derive(Clone, Debug)]
enum J {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
    Raw(String),
}

impl J {
    fn from_value(v: &Value) -> J {
        match v {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Number(n) => J::Num(n.to_string()),
            Value::String(s) => J::Str(s.clone()),
            Value::Array(a) => J::Arr(a.iter().map(J::from_value).collect()),
            Value::Object(o) => J::Obj(
                o.iter()
                    .map(|(k, v)| (k.clone(), J::from_value(v)))
                    .collect(),
            ),
        }
    }

    fn parse(text: &str) -> J {
        J::from_value(&serde_json::from_str(text).expect("seed is JSON"))
    }

    fn str(s: &str) -> J {
        J::Str(s.to_string())
    }

    fn obj(fields: &[(&str, J)]) -> J {
        J::Obj(
            fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    }

    /// The value at a path of object keys, if every step is an object holding the key.
    fn field_mut(&mut self, path: &[&str]) -> Option<&mut J> {
        let Some((first, rest)) = path.split_first() else {
            return Some(self);
        };
        match self {
            J::Obj(fields) => fields
                .iter_mut()
                .find(|(k, _)| k == first)
                .and_then(|(_, v)| v.field_mut(rest)),
            _ => None,
        }
    }

    /// Every node, as a path of child indices (the root is the empty path).
    fn paths(&self) -> Vec<Vec<usize>> {
        let mut out = vec![vec![]];
        let children: Vec<&J> = match self {
            J::Arr(items) => items.iter().collect(),
            J::Obj(fields) => fields.iter().map(|(_, v)| v).collect(),
            _ => vec![],
        };
        for (i, child) in children.into_iter().enumerate() {
            for mut sub in child.paths() {
                sub.insert(0, i);
                out.push(sub);
            }
        }
        out
    }

    fn at_mut(&mut self, path: &[usize]) -> &mut J {
        let Some((&first, rest)) = path.split_first() else {
            return self;
        };
        match self {
            J::Arr(items) => items[first].at_mut(rest),
            J::Obj(fields) => fields[first].1.at_mut(rest),
            _ => unreachable!("paths() only descends into containers"),
        }
    }

    /// Serialize with the formatting freedom JSON allows, as `style` says.
    fn emit(&self, rng: &mut Rng, style: Style) -> String {
        let mut out = String::new();
        self.write(rng, style, &mut out);
        out
    }

    fn write(&self, rng: &mut Rng, style: Style, out: &mut String) {
        space(rng, style, out);
        match self {
            J::Null => out.push_str("null"),
            J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            J::Num(n) | J::Raw(n) => out.push_str(n),
            J::Str(s) => write_string(s, rng, style, out),
            J::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(rng, style, out);
                }
                space(rng, style, out);
                out.push(']');
            }
            J::Obj(fields) => {
                let mut order: Vec<usize> = (0..fields.len()).collect();
                if style.shuffle {
                    rng.shuffle(&mut order);
                }
                out.push('{');
                for (n, &i) in order.iter().enumerate() {
                    if n > 0 {
                        out.push(',');
                    }
                    space(rng, style, out);
                    write_string(&fields[i].0, rng, style, out);
                    space(rng, style, out);
                    out.push(':');
                    fields[i].1.write(rng, style, out);
                }
                space(rng, style, out);
                out.push('}');
            }
        }
        space(rng, style, out);
    }
}

/// The formatting choices JSON leaves open; none may change what a decoder reads.
#[derive(Clone, Copy)]
struct Style {
    /// Object keys in random order.
    shuffle: bool,
    /// Random JSON white space between tokens.
    spaces: bool,
    /// Random `\uXXXX` and `\/` escapes in strings.
    escapes: bool,
}

impl Style {
    const COMPACT: Style = Style {
        shuffle: false,
        spaces: false,
        escapes: false,
    };

    fn random(rng: &mut Rng) -> Style {
        Style {
            shuffle: rng.bool(),
            spaces: rng.bool(),
            escapes: rng.bool(),
        }
    }
}

fn space(rng: &mut Rng, style: Style, out: &mut String) {
    if style.spaces && rng.u8(..3) == 0 {
        out.push_str(pick::<&str>(
            rng,
            &[" ", "\n", "\t", "\r\n", "   ", " \t\n\r "],
        ));
    }
}

fn write_string(s: &str, rng: &mut Rng, style: Style, out: &mut String) {
    out.push('"');
    // Characters that need no escape are copied in runs, so long strings stay cheap to emit in
    // an unoptimized test build; optional escapes are drawn in the first 256 bytes only.
    let mut copied = 0;
    for (i, c) in s.char_indices() {
        let optional = style.escapes && i < 256;
        let escape: Option<String> = match c {
            '"' => Some("\\\"".into()),
            '\\' => Some("\\\\".into()),
            '\n' => Some("\\n".into()),
            '\r' => Some("\\r".into()),
            '\t' => Some("\\t".into()),
            '\u{8}' => Some("\\b".into()),
            '\u{c}' => Some("\\f".into()),
            c if u32::from(c) < 0x20 => Some(format!("\\u{:04x}", u32::from(c))),
            '/' if optional && rng.bool() => Some("\\/".into()),
            // Any character may be written as UTF-16 escapes (a surrogate pair above U+FFFF).
            c if optional && rng.u8(..4) == 0 => {
                let mut units = [0u16; 2];
                let mut text = String::new();
                for unit in c.encode_utf16(&mut units) {
                    if rng.bool() {
                        let _ = write!(text, "\\u{unit:04x}");
                    } else {
                        let _ = write!(text, "\\u{unit:04X}");
                    }
                }
                Some(text)
            }
            _ => None,
        };
        if let Some(escape) = escape {
            out.push_str(&s[copied..i]);
            out.push_str(&escape);
            copied = i + c.len_utf8();
        }
    }
    out.push_str(&s[copied..]);
    out.push('"');
}

fn pick<'a, T>(rng: &mut Rng, items: &'a [T]) -> &'a T {
    &items[rng.usize(..items.len())]
}

// ----------------------------------------------------------------------------------------------
// Generators

/// Characters that break naive text handling: JSON specials, controls, combining marks,
/// surrogate-pair characters, direction overrides, non-ASCII digits and white space, characters
/// whose case mapping changes their length.
const ODD_CHARS: &[char] = &[
    '"',
    '\\',
    '/',
    '\u{0}',
    '\u{1}',
    '\u{1f}',
    '\u{7f}',
    '\u{85}',
    '\u{a0}',
    '\u{ad}',
    'é',
    '\u{301}',
    'ß',
    'İ',
    'ﬃ',
    '\u{200b}',
    '\u{200d}',
    '\u{2028}',
    '\u{202e}',
    '\u{3000}',
    '\u{feff}',
    '\u{fffd}',
    '\u{10ffff}',
    '👍',
    '🏽',
    '\u{1F512}',
    '٣',
    '３',
    '𝟑',
    '＋',
    '—',
];

const HUGE_NUMBERS: &[&str] = &[
    "0",
    "-0",
    "-1",
    "1.5",
    "1E+2",
    "-1e-2",
    "134217727",
    "4294967295",
    "4294967296",
    "9007199254740993",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775809",
    "1.7976931348623157e308",
    "1e309",
    "-1e400",
    "5e-324",
    "1e-400",
    "1e999999999999",
    "123456789012345678901234567890123456789",
    "0.1000000000000000055511151231257827021181583404541015625",
];

/// Text with a bias towards what breaks parsers, sometimes very long.
fn random_text(rng: &mut Rng) -> String {
    let mut s = String::new();
    for _ in 0..rng.usize(..24) {
        match rng.u8(..4) {
            0 => s.push(*pick(rng, ODD_CHARS)),
            1 => s.push(rng.char(..)),
            _ => s.push(rng.alphanumeric()),
        }
    }
    if rng.u8(..16) == 0 {
        s = s.repeat(rng.usize(100..2000));
        let mut cut = s.len().min(30_000);
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

fn random_scalar(rng: &mut Rng) -> J {
    match rng.u8(..5) {
        0 => J::Null,
        1 => J::Bool(rng.bool()),
        2 => J::Num(pick(rng, HUGE_NUMBERS).to_string()),
        3 => J::Num(rng.i64(..).to_string()),
        _ => J::Str(random_text(rng)),
    }
}

/// Any JSON value at most `depth` containers deep.
fn random_value(rng: &mut Rng, depth: usize) -> J {
    random_tree(rng, depth, true)
}

/// A value without numbers outside f64's range: what a database column can hold. A decoder that
/// reads rows as `serde_json::Value` (the claim) refuses `1e400` anywhere in the body, and so it
/// should: serde_json has no value for it.
fn tame_value(rng: &mut Rng, depth: usize) -> J {
    random_tree(rng, depth, false)
}

fn random_tree(rng: &mut Rng, depth: usize, wild: bool) -> J {
    if depth == 0 || rng.u8(..3) != 0 {
        return match random_scalar(rng) {
            J::Num(_) if !wild => J::Num(rng.i64(..).to_string()),
            scalar => scalar,
        };
    }
    let n = rng.usize(..4);
    if rng.bool() {
        J::Arr((0..n).map(|_| random_tree(rng, depth - 1, wild)).collect())
    } else {
        J::Obj(
            (0..n)
                .map(|_| (random_text(rng), random_tree(rng, depth - 1, wild)))
                .collect(),
        )
    }
}

/// serde_json stops at 128 levels; depths around that limit and far past it.
const DEPTHS: &[usize] = &[127, 128, 129, 10_000];

fn nested(depth: usize, object: bool) -> J {
    if object {
        J::Raw(format!(
            "{}null{}",
            "{\"a\":".repeat(depth),
            "}".repeat(depth)
        ))
    } else {
        J::Raw(format!("{}{}", "[".repeat(depth), "]".repeat(depth)))
    }
}

/// The values that stress a decoder: deep nesting, huge numbers, long and odd strings, invalid
/// escapes (lone surrogates, NUL), and every JSON type.
fn pathological_values() -> Vec<J> {
    let mut out = vec![
        J::Null,
        J::Bool(true),
        J::Arr(vec![]),
        J::Obj(vec![]),
        J::str(""),
        J::Str("x".repeat(4_000)),
        J::Str(ODD_CHARS.iter().collect()),
        J::Str("\u{0}".repeat(100)),
        J::Raw("\"\\ud800\"".into()),
        J::Raw("\"\\udc00\\ud800\"".into()),
        J::Raw("\"\\u0000\"".into()),
        J::Raw(format!("\"{}\"", "\\\\".repeat(1000))),
        J::Num("9".repeat(5_000)),
    ];
    out.extend(HUGE_NUMBERS.iter().map(|n| J::Num(n.to_string())));
    for &d in DEPTHS {
        out.push(nested(d, false));
        out.push(nested(d, true));
    }
    out
}

/// One structure-aware change at a random node.
fn mutate_json(rng: &mut Rng, root: &mut J) {
    let paths = root.paths();
    let path: &Vec<usize> = pick(rng, &paths);
    let node = root.at_mut(path);
    match rng.u8(..9) {
        0 => *node = J::Null,
        // Swap the type: a scalar, a container, or the same data under another type.
        1 => *node = random_value(rng, 2),
        2 => {
            static VALUES: std::sync::OnceLock<Vec<J>> = std::sync::OnceLock::new();
            *node = pick(rng, VALUES.get_or_init(pathological_values)).clone();
        }
        3 => *node = nested(*pick(rng, DEPTHS), rng.bool()),
        // Wrap: the value one level deeper.
        4 => {
            let inner = std::mem::replace(node, J::Null);
            *node = if rng.bool() {
                J::Arr(vec![inner])
            } else {
                J::Obj(vec![("v".into(), inner)])
            };
        }
        _ => match node {
            J::Obj(fields) => match rng.u8(..4) {
                0 if !fields.is_empty() => {
                    fields.remove(rng.usize(..fields.len()));
                }
                1 if !fields.is_empty() => {
                    // A duplicate key, with another value.
                    let key = fields[rng.usize(..fields.len())].0.clone();
                    fields.push((key, random_value(rng, 1)));
                }
                2 if !fields.is_empty() => {
                    let i = rng.usize(..fields.len());
                    fields[i].0 = fields[i].0.to_uppercase();
                }
                _ => fields.push((random_text(rng), random_value(rng, 2))),
            },
            J::Arr(items) => match rng.u8(..3) {
                0 if !items.is_empty() => {
                    items.remove(rng.usize(..items.len()));
                }
                1 if !items.is_empty() => {
                    let item = items[rng.usize(..items.len())].clone();
                    items.push(item);
                }
                _ => items.push(random_value(rng, 2)),
            },
            J::Str(s) => {
                let mut at = rng.usize(..=s.len());
                while !s.is_char_boundary(at) {
                    at -= 1;
                }
                match rng.u8(..3) {
                    0 => s.insert(at, *pick(rng, ODD_CHARS)),
                    1 => s.truncate(at),
                    _ => s.push_str(&"x".repeat(rng.usize(..30_000))),
                }
            }
            J::Num(n) => *n = pick(rng, HUGE_NUMBERS).to_string(),
            other => *other = random_scalar(rng),
        },
    }
}

/// Byte sequences that are not UTF-8: a lone continuation, a truncated sequence, an encoded
/// surrogate, an overlong slash, a code point past U+10FFFF, and bytes never valid.
const INVALID_UTF8: &[&[u8]] = &[
    b"\x80",
    b"\xc3",
    b"\xe2\x82",
    b"\xed\xa0\x80",
    b"\xc0\xaf",
    b"\xf4\x90\x80\x80",
    b"\xfe\xff",
];

/// JSON tokens and words the decoders look for, so random splices land on parser decisions.
const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "\"",
    ",",
    ":",
    "null",
    "true",
    "-",
    "0",
    "1e999",
    "\\",
    "\\u",
    "\\ud800",
    "\"topic\"",
    "\"event\"",
    "\"payload\"",
    "\"ref\"",
    "\"phx_reply\"",
    "\"postgres_changes\"",
    "\"status\"",
    "\"code\"",
    "\"message\"",
    "\"sid\"",
    "\"id\"",
    "\"content\"",
    "=",
    "\n",
];

/// One byte-level change: what a fuzzer's first mutations do.
fn mutate_bytes(rng: &mut Rng, data: &mut Vec<u8>, donors: &[Vec<u8>]) {
    let len = data.len();
    let at = rng.usize(..=len);
    match rng.u8(..9) {
        0 if len > 0 => data[at.min(len - 1)] ^= 1 << rng.u8(..8),
        1 if len > 0 => data[at.min(len - 1)] = rng.u8(..),
        2 => {
            let bytes: Vec<u8> = (0..rng.usize(1..8)).map(|_| rng.u8(..)).collect();
            data.splice(at..at, bytes);
        }
        3 => {
            data.splice(at..at, pick(rng, INVALID_UTF8).iter().copied());
        }
        4 => {
            data.splice(at..at, pick(rng, TOKENS).bytes());
        }
        5 => {
            let end = rng.usize(at..=len);
            data.drain(at..end);
        }
        6 => {
            let end = rng.usize(at..=len);
            let copy = data[at..end].to_vec();
            data.splice(end..end, copy);
        }
        7 => data.truncate(at),
        _ if !donors.is_empty() => {
            // Splice in a piece of another sample, as libFuzzer's cross-over does.
            let donor = pick(rng, donors);
            let from = rng.usize(..=donor.len());
            let to = rng.usize(from..=donor.len());
            data.splice(at..at, donor[from..to].iter().copied());
        }
        _ => data.push(rng.u8(..)),
    }
}

/// Bytes of a random kind: uniform, printable, JSON-ish token soup, Unicode, `NAME=value` lines.
fn random_input(rng: &mut Rng) -> Vec<u8> {
    let len = match rng.u8(..8) {
        0 => 0,
        1..=4 => rng.usize(1..32),
        5 | 6 => rng.usize(32..512),
        _ => rng.usize(512..8192),
    };
    match rng.u8(..5) {
        0 => (0..len).map(|_| rng.u8(..)).collect(),
        1 => (0..len).map(|_| rng.u8(0x20..0x7f)).collect(),
        2 => {
            let mut out = Vec::new();
            while out.len() < len {
                out.extend_from_slice(pick(rng, TOKENS).as_bytes());
            }
            out
        }
        3 => random_text(rng).into_bytes(),
        _ => {
            let mut out = String::new();
            for _ in 0..rng.usize(..12) {
                let name = pick(rng, harness::CONFIG_VARS);
                let _ = writeln!(out, "{name}={}", random_text(rng).replace('\n', ""));
            }
            out.into_bytes()
        }
    }
}

// ----------------------------------------------------------------------------------------------
// Survival: no decoder panics, and the per-input invariants of harness.rs hold.

#[test]
fn every_decoder_survives_random_bytes() {
    let started = Instant::now();
    let mut rng = rng(1);
    let mut runs = 0;
    for family in FAMILIES {
        for _ in 0..cases(4000) {
            let input = random_input(&mut rng);
            run_logged(family, &input);
            runs += 1;
        }
    }
    report("random bytes", runs, started);
}

#[test]
fn every_decoder_survives_mutated_reference_samples() {
    let started = Instant::now();
    let mut rng = rng(2);
    let mut runs = 0;
    for family in FAMILIES {
        let seeds = seeds(family.name);
        let donors: Vec<Vec<u8>> = seeds.iter().map(|(_, bytes)| bytes.clone()).collect();
        for _ in 0..cases(2500) {
            let (_, original) = pick(&mut rng, &seeds);
            let mut input = match std::str::from_utf8(original)
                .ok()
                .and_then(|t| serde_json::from_str::<Value>(t).ok())
            {
                Some(value) => {
                    let mut tree = J::from_value(&value);
                    for _ in 0..rng.usize(1..4) {
                        mutate_json(&mut rng, &mut tree);
                    }
                    let style = Style::random(&mut rng);
                    tree.emit(&mut rng, style).into_bytes()
                }
                None => original.clone(),
            };
            // Half the structural mutants, and every non-JSON sample, also get byte damage.
            if rng.bool() || input == *original {
                for _ in 0..rng.usize(1..5) {
                    mutate_bytes(&mut rng, &mut input, &donors);
                }
            }
            run_logged(family, &input);
            runs += 1;
        }
    }
    report("mutated samples", runs, started);
}

#[test]
fn every_decoder_survives_pathological_values_at_every_node() {
    let started = Instant::now();
    let mut rng = rng(3);
    let values = pathological_values();
    let mut runs = 0;
    for family in FAMILIES {
        // Alone, as the whole body.
        for value in &values {
            run_logged(family, value.emit(&mut rng, Style::COMPACT).as_bytes());
            runs += 1;
        }
        // And in place of each node of each JSON sample, the frame around it intact.
        for (_, bytes) in seeds(family.name) {
            let Ok(value) = serde_json::from_slice::<Value>(&bytes) else {
                continue;
            };
            let tree = J::from_value(&value);
            for path in tree.paths() {
                // Every kind of value at every node, but only a few of the numbers, which all
                // take the same paths in a decoder once the first few have been seen there.
                let numbers = values.iter().filter(|v| matches!(v, J::Num(_)));
                let sampled: Vec<&J> = numbers.filter(|_| rng.u8(..5) == 0).collect();
                let others = values.iter().filter(|v| !matches!(v, J::Num(_)));
                for value in others.chain(sampled) {
                    let mut copy = tree.clone();
                    *copy.at_mut(&path) = value.clone();
                    run_logged(family, copy.emit(&mut rng, Style::COMPACT).as_bytes());
                    runs += 1;
                }
            }
        }
    }
    report("pathological values", runs, started);
}

/// Run a family, saying which input made it panic (the panic message alone would not).
fn run_logged(family: &Family, input: &[u8]) {
    struct Guard<'a>(&'a Family, &'a [u8]);
    impl Drop for Guard<'_> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                let shown: String = String::from_utf8_lossy(self.1).chars().take(2000).collect();
                eprintln!("{} failed on input {shown:?}", self.0.name);
            }
        }
    }
    let _guard = Guard(family, input);
    harness::run(family, input);
}

#[test]
fn config_survives_arbitrary_values_for_every_variable() {
    let started = Instant::now();
    let mut rng = rng(4);
    let bases: Vec<Vec<(String, String)>> = seeds("config")
        .iter()
        .map(|(_, bytes)| env_of(&String::from_utf8_lossy(bytes)))
        .collect();
    let mut runs = 0;
    for _ in 0..cases(4000) {
        let mut vars = pick(&mut rng, &bases).clone();
        for _ in 0..rng.usize(1..5) {
            let name = *pick(&mut rng, harness::CONFIG_VARS);
            match rng.u8(..6) {
                0 => vars.retain(|(n, _)| n != name),
                // Names are looked up exactly: a lower-case twin must not count.
                1 => vars.push((name.to_lowercase(), config_value(&mut rng, name))),
                _ => vars.push((name.to_string(), config_value(&mut rng, name))),
            }
        }
        // Values may hold anything a process environment can, newlines included.
        let _ = harness::check_config(&vars);
        runs += 1;
    }
    report("config values", runs, started);
}

// ----------------------------------------------------------------------------------------------
// Realtime properties

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

// ----------------------------------------------------------------------------------------------
// PostgREST properties

fn claim_id() -> MessageId {
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
        for n in 0..rng.usize(..3) {
            fields.push((format!("x-extra-{n}"), tame_value(&mut rng, 2)));
        }
        let style = Style::random(&mut rng);
        let text = J::Arr(vec![row.clone()]).emit(&mut rng, style);
        let won = Claim::Won(ClaimedMessage {
            id: id.clone(),
            body,
            phone_number: phone,
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
            message.starts_with(body["message"].as_str().unwrap()),
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
        assert_eq!(got_code, Some(code), "{text}");
        assert!(got_message.starts_with(&message), "{text}");
        if let J::Str(hint) = hint {
            assert!(got_message.contains(&hint), "hint lost: {text}");
        }
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

// ----------------------------------------------------------------------------------------------
// Twilio properties

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

// ----------------------------------------------------------------------------------------------
// Config properties

fn env_of(text: &str) -> Vec<(String, String)> {
    harness::parse_env_lines(text)
        .into_iter()
        .filter(|(name, _)| !name.is_empty())
        .collect()
}

fn set(vars: &mut Vec<(String, String)>, name: &str, value: Option<String>) {
    vars.retain(|(n, _)| n != name);
    if let Some(value) = value {
        vars.push((name.to_string(), value));
    }
}

/// base64url without padding, as JWT segments are written.
fn b64url(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
        }
    }
    out
}

/// A JWT-shaped key with random claims (role, exp of any JSON type) and the given signature.
fn random_jwt(rng: &mut Rng, signature: &str) -> String {
    let role = match rng.u8(..4) {
        0 => J::str("service_role"),
        1 => J::str("anon"),
        2 => J::Null,
        _ => J::Str(random_text(rng)),
    };
    let exp = match rng.u8(..4) {
        0 => J::Num("4102444800".into()),
        1 => J::Num("1000".into()),
        2 => J::Num(pick(rng, HUGE_NUMBERS).to_string()),
        _ => random_scalar(rng),
    };
    let claims = J::obj(&[("role", role), ("exp", exp)]).emit(rng, Style::COMPACT);
    let header = b64url(br#"{"alg":"HS256","typ":"JWT"}"#);
    format!("{header}.{}.{signature}", b64url(claims.as_bytes()))
}

/// A value for `var`: near-valid for its kind most of the time, anything at all otherwise.
fn config_value(rng: &mut Rng, var: &str) -> String {
    if rng.u8(..4) == 0 {
        return random_text(rng);
    }
    let choices: &[&str] = match var {
        "STATUS_CALLBACK_URL" => &[
            "https://sms.example.com/twilio/status",
            "https://sms.example.com/twilio/status?x=1#y",
            "https://sms_1.example.com/twilio/status",
            "https:///twilio/status",
            "https://h/twilio/status/",
            "http://h/twilio/status ",
            "https://h/twilio/statuS",
            "/twilio/status",
        ],
        "MAX_SENDS_PER_SECOND" => &[
            "1", "0.01", "0.00999", "10000", "10000.5", "1e4", "1e400", "NaN", "inf", "-inf", "-0",
            " 2.5 ", "1,5", "",
        ],
        "SUPABASE_URL" | "TWILIO_API_URL" => &[
            "https://abc.supabase.co",
            "http://127.0.0.1:54321/",
            "https://",
            "http://h:0",
            "http://h:65536",
            "http://h:",
            "https://:80",
            "http://[::1]:8080",
            "http://[::1]",
            "https://user@host",
            "https://h/ path",
            "https://h?apikey=x",
            "HTTPS://h",
            "https://h//",
            "https://é.example",
            "ftp://h",
        ],
        "TWILIO_ACCOUNT_SID" | "TWILIO_MESSAGING_SERVICE_SID" => &[
            "AC0123456789abcdef0123456789abcdef",
            "MG0123456789abcdef0123456789abcdef",
            "SK0123456789abcdef0123456789abcdef",
            "ac0123456789abcdef0123456789abcdef",
            "AC0123456789abcdef0123456789abcde",
            "AC0123456789abcdef0123456789abcdeé",
            "MG٠123456789abcdef0123456789abcdef",
        ],
        "TWILIO_PHONE_NUMBER" => return random_phone(rng),
        "SUPABASE_SERVICE_KEY" => {
            return match rng.u8(..3) {
                0 => random_jwt(rng, "sig"),
                1 => format!("sb_secret_{}", random_text(rng)),
                _ => pick(
                    rng,
                    &["sb_publishable_x", "a.b", "a..c", "a.b.c.d", "x.!!!.y"],
                )
                .to_string(),
            }
        }
        "LOG_FORMAT" => &["json", "text", " json ", "JSON", "xml", ""],
        "RUST_LOG" => &["info", "sms_sender=trace,warn", "[", ""],
        _ => &[
            "0",
            "1",
            "100",
            "255",
            "256",
            "55000",
            "65535",
            "65536",
            "-1",
            "+5",
            " 42 ",
            "4_2",
            "1e3",
            "0x10",
            "٤٢",
            "１",
            "18446744073709551616",
            "",
            " ",
        ],
    };
    pick(rng, choices).to_string()
}

/// Valid E.164 numbers and their near misses, in equal parts.
fn random_phone(rng: &mut Rng) -> String {
    let len = rng.usize(8..=15);
    let mut digits: Vec<char> = (0..len)
        .map(|i| {
            let d = if i == 0 { rng.u8(1..10) } else { rng.u8(..10) };
            char::from(b'0' + d)
        })
        .collect();
    if rng.bool() {
        return format!("+{}", digits.into_iter().collect::<String>());
    }
    let at = rng.usize(..digits.len());
    match rng.u8(..9) {
        0 => digits.push(rng.digit(10)),
        1 => digits.truncate(7),
        2 => digits[0] = '0',
        3 => digits[at] = *pick(rng, &['٣', '３', '𝟑', ' ', '-', '.', '(']),
        4 => {
            return format!(
                "{}{}",
                pick(rng, &["", "00", "++", "＋", "+ "]),
                String::from_iter(&digits)
            )
        }
        5 => {
            return format!(
                "+{}{}",
                String::from_iter(&digits),
                pick(rng, &[" ", "\n", "\t", "\u{a0}", "x"])
            )
        }
        6 => {
            return format!(
                "{}+{}",
                pick(rng, &[" ", "\t", "\u{feff}"]),
                String::from_iter(&digits)
            )
        }
        7 => return pick(rng, &["", " ", "+", "\n"]).to_string(),
        _ => return random_text(rng),
    }
    format!("+{}", digits.into_iter().collect::<String>())
}

#[test]
fn config_never_accepts_an_invalid_e164_sender() {
    let mut rng = rng(13);
    let by_number = env_of(&seed("config", "legacy_jwt.env"));
    let by_service = env_of(&seed("config", "messaging_service_local.env"));
    assert!(harness::check_config(&by_number).is_ok());
    assert!(harness::check_config(&by_service).is_ok());
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..cases(4000) {
        let phone = random_phone(&mut rng);
        let blank = phone.trim().is_empty();
        let with_service = rng.bool();
        let mut vars = if with_service {
            by_service.clone()
        } else {
            by_number.clone()
        };
        set(&mut vars, "TWILIO_PHONE_NUMBER", Some(phone.clone()));
        let result = harness::check_config(&vars);
        // A blank value counts as unset: fine beside a Messaging Service, missing without one.
        let valid = if blank { with_service } else { is_e164(&phone) };
        match &result {
            Ok(_) => accepted += 1,
            Err(e) => {
                refused += 1;
                assert_eq!(e.var, "TWILIO_PHONE_NUMBER", "{phone:?}: {e}");
            }
        }
        assert_eq!(result.is_ok(), valid, "TWILIO_PHONE_NUMBER={phone:?}");
    }
    // Both outcomes were exercised, so the equality above is not vacuous.
    assert!(accepted > 500 && refused > 500, "{accepted} / {refused}");
}

#[test]
fn config_errors_never_contain_secrets() {
    let mut rng = rng(14);
    let bases: Vec<Vec<(String, String)>> = seeds("config")
        .iter()
        .map(|(_, bytes)| env_of(&String::from_utf8_lossy(bytes)))
        .collect();
    let mut errors_by_var = std::collections::BTreeMap::<&str, usize>::new();
    for _ in 0..cases(4000) {
        let mut vars = pick(&mut rng, &bases).clone();
        // Random damage elsewhere, so that every variable's error path gets its turn.
        for _ in 0..rng.usize(..3) {
            let name = *pick(&mut rng, harness::CONFIG_VARS);
            if !harness::SECRET_VARS.contains(&name) {
                set(&mut vars, name, Some(config_value(&mut rng, name)));
            }
        }
        // Each secret carries a random marker no message template can hold by chance, placed
        // where it keeps a valid secret valid (a JWT's signature, after sb_secret_, a token).
        let mut marker = || -> String { (0..12).map(|_| rng.alphanumeric()).collect() };
        let (key_mark, token_mark, sid_mark) = (marker(), marker(), marker());
        let key = match rng.u8(..4) {
            0 => random_jwt(&mut rng, &format!("sig{key_mark}")),
            1 => format!("sb_secret_{key_mark}"),
            2 => format!("sb_publishable_{key_mark}"),
            _ => format!(
                "{}{key_mark}{}",
                random_text(&mut rng),
                random_text(&mut rng)
            ),
        };
        let token = match rng.u8(..3) {
            0 => token_mark.clone(),
            1 => format!("{token_mark} {}", random_text(&mut rng)),
            _ => format!("{}{token_mark}", random_text(&mut rng)),
        };
        set(&mut vars, "SUPABASE_SERVICE_KEY", Some(key.clone()));
        set(&mut vars, "TWILIO_AUTH_TOKEN", Some(token.clone()));
        if rng.u8(..4) == 0 {
            set(
                &mut vars,
                "TWILIO_ACCOUNT_SID",
                Some(format!("AC{sid_mark}")),
            );
        }
        let shown = match harness::check_config(&vars) {
            Ok(config) => format!("{config:?}"),
            Err(e) => {
                *errors_by_var.entry(e.var).or_default() += 1;
                format!("{e} {e:?}")
            }
        };
        for (mark, var) in [
            (&key_mark, "SUPABASE_SERVICE_KEY"),
            (&token_mark, "TWILIO_AUTH_TOKEN"),
            (&sid_mark, "TWILIO_ACCOUNT_SID"),
        ] {
            assert!(!shown.contains(mark.as_str()), "{var} shown in {shown}");
        }
        assert!(
            !shown.contains(key.trim()) && !shown.contains(token.trim()),
            "{shown}"
        );
    }
    // The secrets' own error paths were reached, not only the ones before them.
    for var in [
        "SUPABASE_SERVICE_KEY",
        "TWILIO_AUTH_TOKEN",
        "TWILIO_ACCOUNT_SID",
    ] {
        assert!(
            errors_by_var.get(var).is_some_and(|&n| n > 50),
            "{errors_by_var:?}"
        );
    }
}

// ----------------------------------------------------------------------------------------------
// Timestamps

/// Seconds from 1970-01-01T00:00:00 to the start of a day, counted year by year and month by
/// month: a second formulation of the calendar, independent of `clock`'s day arithmetic.
fn epoch_seconds(year: i64, month: u32, day: u32, secs_of_day: i64) -> i64 {
    let leap = |y: i64| y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let mut days: i64 = (1970..year).map(|y| if leap(y) { 366 } else { 365 }).sum();
    for m in 1..month {
        days += i64::from(month_days(year, m));
    }
    days += i64::from(day) - 1;
    days * 86_400 + secs_of_day
}

fn month_days(year: i64, month: u32) -> u32 {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ][month as usize - 1]
}

/// Parts of a timestamp, each sometimes out of range, and whether they are all valid.
struct Stamp {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    /// Offset east of UTC in minutes, or `None` for `Z`/`GMT`.
    offset: Option<i32>,
}

impl Stamp {
    fn random(rng: &mut Rng) -> Stamp {
        let any = rng.i64(1970..2200);
        let year = *pick(
            rng,
            &[0, 1, 1969, 1970, 1999, 2000, 2023, 2024, 2100, 9999, any],
        );
        let month = if rng.u8(..8) == 0 {
            *pick(rng, &[0, 13, 99])
        } else {
            rng.u32(1..=12)
        };
        let day = if rng.u8(..8) == 0 {
            *pick(rng, &[0, 29, 30, 31, 32, 99])
        } else {
            rng.u32(1..=28)
        };
        let hour = if rng.u8(..8) == 0 {
            *pick(rng, &[23, 24, 99])
        } else {
            rng.u32(0..24)
        };
        let minute = if rng.u8(..8) == 0 {
            *pick(rng, &[59, 60, 99])
        } else {
            rng.u32(0..60)
        };
        let second = if rng.u8(..8) == 0 {
            *pick(rng, &[59, 60, 61, 99])
        } else {
            rng.u32(0..60)
        };
        let offset = match rng.u8(..4) {
            0 => None,
            1 => Some(0),
            2 => Some(rng.i32(-23 * 60 - 59..=23 * 60 + 59)),
            _ => Some(*pick(
                rng,
                &[24 * 60, -24 * 60, 60 * 99, 5 * 60 + 60, 14 * 60],
            )),
        };
        Stamp {
            year,
            month,
            day,
            hour,
            minute,
            second,
            offset,
        }
    }

    /// The instant these parts name, in seconds after the epoch, if they are all in range.
    fn expected(&self) -> Option<i64> {
        let offset = self.offset.unwrap_or(0);
        let valid = (1970..=9999).contains(&self.year)
            && (1..=12).contains(&self.month)
            && (1..=month_days(self.year, self.month)).contains(&self.day)
            && self.hour < 24
            && self.minute < 60
            && self.second <= 60
            && offset.unsigned_abs() / 60 < 24
            && offset.unsigned_abs() % 60 < 60;
        let secs = i64::from(self.hour * 3600 + self.minute * 60 + self.second);
        let total = epoch_seconds(self.year, self.month.clamp(1, 12), self.day, secs)
            - i64::from(offset) * 60;
        (valid && total >= 0).then_some(total)
    }

    fn zone(&self, rng: &mut Rng, colon: bool) -> String {
        match self.offset {
            None => pick(rng, &["Z", "GMT", "UT", "UTC"]).to_string(),
            Some(minutes) => {
                let sign = if minutes < 0 || (minutes == 0 && rng.bool()) {
                    '-'
                } else {
                    '+'
                };
                let (h, m) = (minutes.unsigned_abs() / 60, minutes.unsigned_abs() % 60);
                if colon {
                    format!("{sign}{h:02}:{m:02}")
                } else {
                    format!("{sign}{h:02}{m:02}")
                }
            }
        }
    }

    fn rfc3339(&self, rng: &mut Rng) -> (String, u32) {
        let sep = *pick(rng, &['T', 't', ' ']);
        let digits = rng.usize(..=9);
        let fraction: String = (0..digits)
            .map(|_| char::from(b'0' + rng.u8(..10)))
            .collect();
        let nanos = if digits == 0 {
            0
        } else {
            fraction.parse::<u32>().unwrap() * 10u32.pow(9 - digits as u32)
        };
        let zone = match self.offset {
            None => pick(rng, &["Z", "z"]).to_string(),
            Some(_) => {
                let colon = rng.bool();
                self.zone(rng, colon)
            }
        };
        let text = format!(
            "{:04}-{:02}-{:02}{sep}{:02}:{:02}:{:02}{}{zone}",
            self.year,
            self.month,
            self.day,
            self.hour,
            self.minute,
            self.second,
            if digits == 0 {
                String::new()
            } else {
                format!(".{fraction}")
            },
        );
        (text, nanos)
    }

    fn rfc2822(&self, rng: &mut Rng) -> String {
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let month = MONTHS
            .get((self.month as usize).wrapping_sub(1))
            .copied()
            .unwrap_or("Foo");
        let weekday = if rng.bool() { "Thu, " } else { "" };
        let zone = self.zone(rng, false);
        format!(
            "{weekday}{} {month} {:04} {:02}:{:02}:{:02} {zone}",
            self.day, self.year, self.hour, self.minute, self.second
        )
    }
}

/// One character-level change (never leaves the text unchanged): a non-ASCII or odd character
/// replacing, or inserted before, any character, or one character deleted.
fn damage(rng: &mut Rng, text: &str) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    let at = rng
        .usize(..chars.len().max(1))
        .min(chars.len().saturating_sub(1));
    let odd = if rng.bool() {
        *pick(rng, ODD_CHARS)
    } else {
        rng.char('\u{80}'..)
    };
    match rng.u8(..3) {
        0 if !chars.is_empty() => chars[at] = odd,
        1 if !chars.is_empty() => {
            chars.remove(at);
        }
        _ => chars.insert(at, odd),
    }
    chars.into_iter().collect()
}

#[test]
fn timestamp_parsers_read_valid_stamps_exactly_and_refuse_the_rest_without_panicking() {
    let started = Instant::now();
    let mut rng = rng(20);
    let mut runs = 0;
    for _ in 0..cases(6000) {
        let stamp = Stamp::random(&mut rng);
        let expected = stamp.expected();
        let (text, nanos) = stamp.rfc3339(&mut rng);
        let got = parse_rfc3339(&text);
        let want = expected.map(|s| UNIX_EPOCH + Duration::new(s as u64, nanos));
        assert_eq!(got, want, "{text:?}");
        let twilio = stamp.rfc2822(&mut rng);
        let want = expected.map(|s| UNIX_EPOCH + Duration::from_secs(s as u64));
        assert_eq!(parse_rfc2822(&twilio), want, "{twilio:?}");
        // Damaged copies: any answer but a panic, and never a different valid reading of a
        // stamp whose damage landed on a non-ASCII character (nothing non-ASCII is accepted
        // in the RFC 3339 form).
        for _ in 0..4 {
            let bad = damage(&mut rng, &text);
            if parse_rfc3339(&bad).is_some() {
                assert!(bad.trim().is_ascii(), "accepted {bad:?}");
            }
            let _ = parse_rfc2822(&damage(&mut rng, &twilio));
            let _ = parse_rfc2822(&bad);
            let _ = parse_rfc3339(&twilio);
        }
        runs += 10;
    }
    report("timestamps", runs, started);
}

// ----------------------------------------------------------------------------------------------
// Masking

/// An E.164-looking number: `+` and 7 to 15 digits.
fn random_number(rng: &mut Rng) -> String {
    let digits = rng.usize(7..=15);
    let mut n = String::from("+");
    n.push(char::from(b'1' + rng.u8(..9)));
    for _ in 1..digits {
        n.push(char::from(b'0' + rng.u8(..10)));
    }
    n
}

#[test]
fn scrub_never_lets_a_number_through_whatever_surrounds_it() {
    let started = Instant::now();
    let mut rng = rng(21);
    let contexts: &[(&str, &str)] = &[
        ("The 'To' number ", " is not a valid phone number."),
        ("", ""),
        ("To=", "&From=+15005550006"),
        ("AC0123456789abcdef0123456789abcde", "f"),
        ("\u{202e}", "\u{0}"),
        ("+", "+"),
        ("12", "34"),
        ("é", "ü"),
    ];
    let mut runs = 0;
    for _ in 0..cases(5000) {
        let number = random_number(&mut rng);
        let (before, after) = *pick(&mut rng, contexts);
        let mut text = format!("{before}{number}{after}");
        if rng.bool() {
            text = format!("{}{text}{}", random_text(&mut rng), random_text(&mut rng));
        }
        let out = scrub(&text);
        assert!(!out.contains(&number), "{number} in {out:?} from {text:?}");
        let digits = &number[1..];
        assert!(!out.contains(digits), "{digits} in {out:?} from {text:?}");
        harness::check_scrubbed(&out, &text);
        runs += 1;
    }
    report("scrub", runs, started);
}

#[test]
fn reference_seeds_mean_what_their_names_say() {
    // The property tests above lean on these samples; a broken seed would weaken them silently.
    let frame = |name| decode(&seed("realtime_frame", name));
    assert!(frame("change_update.json").is_ok());
    assert!(frame("system_subscribed.json").is_ok());
    assert!(frame("join_reply_error_no_topic.json").is_err());
    let id = claim_id();
    let claim = |name| parse_claim(&id, &seed("postgrest_body", name));
    assert!(matches!(claim("claim_won.json"), Ok(Claim::Won(_))));
    assert!(matches!(
        claim("claim_malformed.json"),
        Ok(Claim::Malformed { .. })
    ));
    assert_eq!(
        parse_rejection(400, &seed("twilio_body", "error_21211.json"), None).twilio_code(),
        Some(21211)
    );
    let config = |name| harness::check_config(&env_of(&seed("config", name)));
    assert!(config("legacy_jwt.env").is_ok());
    assert!(config("secret_key_all_vars.env").is_ok());
    assert_eq!(
        config("anon_key_rejected.env").unwrap_err().var,
        "SUPABASE_SERVICE_KEY"
    );
    for (name, _) in seeds("clock") {
        let text = seed("clock", &name);
        let read = text
            .lines()
            .all(|l| parse_rfc3339(l).or_else(|| parse_rfc2822(l)).is_some());
        assert!(read, "clock seed {name} does not parse");
    }
    let masked = scrub(&seed("redact", "error_21211.json"));
    assert!(masked.contains("********0001") && !masked.contains("+15005550001"));
}
