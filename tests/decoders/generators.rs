//! The input generators every decoder test draws from: a JSON tree that can hold what
//! `serde_json::Value` cannot, its formatting choices, random and pathological values,
//! structure-aware and byte-level mutations.

use super::*;

// ----------------------------------------------------------------------------------------------
// A JSON tree that can hold what serde_json::Value cannot: raw number tokens of any size,
// duplicate keys and keys in a chosen order, and raw text (invalid escapes, deep nesting).

#[derive(Clone, Debug)]
pub(crate) enum J {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
    Raw(String),
}

impl J {
    pub(crate) fn from_value(v: &Value) -> J {
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

    pub(crate) fn parse(text: &str) -> J {
        J::from_value(&serde_json::from_str(text).expect("seed is JSON"))
    }

    pub(crate) fn str(s: &str) -> J {
        J::Str(s.to_string())
    }

    pub(crate) fn obj(fields: &[(&str, J)]) -> J {
        J::Obj(
            fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    }

    /// The value at a path of object keys, if every step is an object holding the key.
    pub(crate) fn field_mut(&mut self, path: &[&str]) -> Option<&mut J> {
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
    pub(crate) fn paths(&self) -> Vec<Vec<usize>> {
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

    pub(crate) fn at_mut(&mut self, path: &[usize]) -> &mut J {
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
    pub(crate) fn emit(&self, rng: &mut Rng, style: Style) -> String {
        let mut out = String::new();
        self.write(rng, style, &mut out);
        out
    }

    pub(crate) fn write(&self, rng: &mut Rng, style: Style, out: &mut String) {
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
pub(crate) struct Style {
    /// Object keys in random order.
    pub(crate) shuffle: bool,
    /// Random JSON white space between tokens.
    pub(crate) spaces: bool,
    /// Random `\uXXXX` and `\/` escapes in strings.
    pub(crate) escapes: bool,
}

impl Style {
    pub(crate) const COMPACT: Style = Style {
        shuffle: false,
        spaces: false,
        escapes: false,
    };

    pub(crate) fn random(rng: &mut Rng) -> Style {
        Style {
            shuffle: rng.bool(),
            spaces: rng.bool(),
            escapes: rng.bool(),
        }
    }
}

pub(crate) fn space(rng: &mut Rng, style: Style, out: &mut String) {
    if style.spaces && rng.u8(..3) == 0 {
        out.push_str(pick::<&str>(
            rng,
            &[" ", "\n", "\t", "\r\n", "   ", " \t\n\r "],
        ));
    }
}

pub(crate) fn write_string(s: &str, rng: &mut Rng, style: Style, out: &mut String) {
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

pub(crate) fn pick<'a, T>(rng: &mut Rng, items: &'a [T]) -> &'a T {
    &items[rng.usize(..items.len())]
}

// ----------------------------------------------------------------------------------------------
// Generators

/// Characters that break naive text handling: JSON specials, controls, combining marks,
/// surrogate-pair characters, direction overrides, non-ASCII digits and white space, characters
/// whose case mapping changes their length.
pub(crate) const ODD_CHARS: &[char] = &[
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

pub(crate) const HUGE_NUMBERS: &[&str] = &[
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
pub(crate) fn random_text(rng: &mut Rng) -> String {
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

pub(crate) fn random_scalar(rng: &mut Rng) -> J {
    match rng.u8(..5) {
        0 => J::Null,
        1 => J::Bool(rng.bool()),
        2 => J::Num(pick(rng, HUGE_NUMBERS).to_string()),
        3 => J::Num(rng.i64(..).to_string()),
        _ => J::Str(random_text(rng)),
    }
}

/// Any JSON value at most `depth` containers deep.
pub(crate) fn random_value(rng: &mut Rng, depth: usize) -> J {
    random_tree(rng, depth, true)
}

/// A value without numbers outside f64's range: what a database column can hold. A decoder that
/// reads rows as `serde_json::Value` (the claim) refuses `1e400` anywhere in the body, and so it
/// should: serde_json has no value for it.
pub(crate) fn tame_value(rng: &mut Rng, depth: usize) -> J {
    random_tree(rng, depth, false)
}

pub(crate) fn random_tree(rng: &mut Rng, depth: usize, wild: bool) -> J {
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
pub(crate) const DEPTHS: &[usize] = &[127, 128, 129, 10_000];

pub(crate) fn nested(depth: usize, object: bool) -> J {
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
pub(crate) fn pathological_values() -> Vec<J> {
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
pub(crate) fn mutate_json(rng: &mut Rng, root: &mut J) {
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
pub(crate) const INVALID_UTF8: &[&[u8]] = &[
    b"\x80",
    b"\xc3",
    b"\xe2\x82",
    b"\xed\xa0\x80",
    b"\xc0\xaf",
    b"\xf4\x90\x80\x80",
    b"\xfe\xff",
];

/// JSON tokens and words the decoders look for, so random splices land on parser decisions.
pub(crate) const TOKENS: &[&str] = &[
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
pub(crate) fn mutate_bytes(rng: &mut Rng, data: &mut Vec<u8>, donors: &[Vec<u8>]) {
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
pub(crate) fn random_input(rng: &mut Rng) -> Vec<u8> {
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
