//! The canonical form of a JSON document, for fingerprints: the same
//! document whatever its key order and whitespace, and its strings however
//! they were escaped; numbers exactly as written (`1.0` and `1` differ:
//! the handler may tell them apart).
//!
//! A parser of its own: serde_json keeps numbers as written only with its
//! `arbitrary_precision` feature, which would change serde_json for every
//! crate of the program that links this one. This one is strict (RFC
//! 8259), bounded in depth, and refuses duplicate member names (which
//! readers resolve differently, so two such bodies cannot be said to be
//! "the same"): whatever it refuses is fingerprinted as bytes.

/// A parsed JSON value; numbers and strings borrow from or copy the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Json<'a> {
    Null,
    Bool(bool),
    /// As written.
    Number(&'a str),
    /// Decoded.
    String(String),
    Array(Vec<Json<'a>>),
    /// Members sorted by name (bytewise), names unique.
    Object(Vec<(String, Json<'a>)>),
}

/// Deepest nesting parsed; deeper documents are fingerprinted as bytes.
const MAX_DEPTH: usize = 64;

/// Parses `input` (UTF-8 JSON, one value, whitespace around it allowed);
/// `None` if it is not that, nests deeper than 64, or repeats a member name.
pub(crate) fn parse(input: &[u8]) -> Option<Json<'_>> {
    let text = std::str::from_utf8(input).ok()?;
    let mut p = Parser {
        s: text,
        b: text.as_bytes(),
        i: 0,
    };
    let v = p.value(0)?;
    p.ws();
    (p.i == p.b.len()).then_some(v)
}

struct Parser<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Parser<'a> {
    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.b.get(self.i) == Some(&c)).then(|| self.i += 1)
    }

    fn literal(&mut self, word: &str, v: Json<'a>) -> Option<Json<'a>> {
        self.b[self.i..].starts_with(word.as_bytes()).then(|| {
            self.i += word.len();
            v
        })
    }

    fn value(&mut self, depth: usize) -> Option<Json<'a>> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.ws();
        match *self.b.get(self.i)? {
            b'n' => self.literal("null", Json::Null),
            b't' => self.literal("true", Json::Bool(true)),
            b'f' => self.literal("false", Json::Bool(false)),
            b'"' => self.string().map(Json::String),
            b'[' => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.eat(b']').is_some() {
                    return Some(Json::Array(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    self.ws();
                    if self.eat(b']').is_some() {
                        return Some(Json::Array(items));
                    }
                    self.eat(b',')?;
                }
            }
            b'{' => {
                self.i += 1;
                let mut members: Vec<(String, Json<'a>)> = Vec::new();
                self.ws();
                if self.eat(b'}').is_none() {
                    loop {
                        self.ws();
                        let name = self.string()?;
                        self.ws();
                        self.eat(b':')?;
                        members.push((name, self.value(depth + 1)?));
                        self.ws();
                        if self.eat(b'}').is_some() {
                            break;
                        }
                        self.eat(b',')?;
                    }
                }
                members.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
                if members.windows(2).any(|w| w[0].0 == w[1].0) {
                    return None;
                }
                Some(Json::Object(members))
            }
            _ => self.number().map(Json::Number),
        }
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Option<&'a str> {
        let start = self.i;
        let digits = |p: &mut Self| {
            let from = p.i;
            while p.i < p.b.len() && p.b[p.i].is_ascii_digit() {
                p.i += 1;
            }
            p.i > from
        };
        let _ = self.eat(b'-');
        if self.eat(b'0').is_none() && !digits(self) {
            return None;
        }
        if self.eat(b'.').is_some() && !digits(self) {
            return None;
        }
        if matches!(self.b.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.b.get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if !digits(self) {
                return None;
            }
        }
        Some(&self.s[start..self.i])
    }

    fn hex4(&mut self) -> Option<u32> {
        let h = self.s.get(self.i..self.i + 4)?;
        self.i += 4;
        u32::from_str_radix(h, 16)
            .ok()
            .filter(|_| h.bytes().all(|c| c.is_ascii_hexdigit()))
    }

    fn string(&mut self) -> Option<String> {
        self.eat(b'"')?;
        let mut out = String::new();
        loop {
            let c = *self.b.get(self.i)?;
            match c {
                b'"' => {
                    self.i += 1;
                    return Some(out);
                }
                b'\\' => {
                    self.i += 1;
                    let e = *self.b.get(self.i)?;
                    self.i += 1;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let hi = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&hi) {
                                // A surrogate pair, or not JSON text we accept.
                                self.eat(b'\\')?;
                                self.eat(b'u')?;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return None;
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else {
                                hi
                            };
                            out.push(char::from_u32(code)?);
                        }
                        _ => return None,
                    }
                }
                0x00..=0x1f => return None,
                _ => {
                    // Copy one whole UTF-8 character (the input is a str).
                    let ch = self.s[self.i..].chars().next()?;
                    out.push(ch);
                    self.i += ch.len_utf8();
                }
            }
        }
    }
}

impl Json<'_> {
    /// Appends the canonical encoding: no whitespace, members sorted,
    /// strings with only `"`, `\` and control characters escaped.
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        match self {
            Json::Null => out.extend_from_slice(b"null"),
            Json::Bool(true) => out.extend_from_slice(b"true"),
            Json::Bool(false) => out.extend_from_slice(b"false"),
            Json::Number(n) => out.extend_from_slice(n.as_bytes()),
            Json::String(s) => write_string(s, out),
            Json::Array(items) => {
                out.push(b'[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    v.write(out);
                }
                out.push(b']');
            }
            Json::Object(members) => {
                out.push(b'{');
                for (i, (k, v)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_string(k, out);
                    out.push(b':');
                    v.write(out);
                }
                out.push(b'}');
            }
        }
    }

    /// The canonical encoding.
    pub(crate) fn canonical(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&mut out);
        out
    }

    /// The value at JSON pointer `pointer` (RFC 6901: `""` is the whole
    /// document, `/a/0/b~1c` member `a`, item 0, member `b/c`).
    pub(crate) fn at(&self, pointer: &str) -> Option<&Self> {
        if pointer.is_empty() {
            return Some(self);
        }
        let mut v = self;
        for token in pointer.strip_prefix('/')?.split('/') {
            let token = token.replace("~1", "/").replace("~0", "~");
            v = match v {
                Json::Object(m) => &m.iter().find(|(k, _)| *k == token)?.1,
                Json::Array(items) => {
                    if token.len() > 1 && token.starts_with('0') {
                        return None;
                    }
                    items.get(token.parse::<usize>().ok()?)?
                }
                _ => return None,
            };
        }
        Some(v)
    }
}

/// Writes `s` as a JSON string. Works on bytes: every byte of a multi-byte
/// UTF-8 character is 0x80 or above, so only ASCII is ever escaped, and
/// runs of bytes that need no escape are copied whole.
pub(crate) fn write_string(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let b = s.as_bytes();
    let mut run = 0;
    for (i, &c) in b.iter().enumerate() {
        let escaped: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x00..=0x1f => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(c >> 4)],
                HEX[usize::from(c & 15)],
            ],
            _ => continue,
        };
        out.extend_from_slice(&b[run..i]);
        out.extend_from_slice(escaped);
        run = i + 1;
    }
    out.extend_from_slice(&b[run..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> Option<String> {
        parse(s.as_bytes()).map(|j| String::from_utf8(j.canonical()).unwrap())
    }

    #[test]
    fn order_whitespace_and_escapes_do_not_matter_numbers_as_written_do() {
        assert_eq!(
            canon(" { \"b\" : [1, 2.50, -0e1], \"a\":\"\\u0041\\n\" } "),
            Some(r#"{"a":"A\u000a","b":[1,2.50,-0e1]}"#.into())
        );
        assert_eq!(canon(r#"{"a":1,"b":2}"#), canon(r#"{"b":2,"a":1}"#));
        assert_ne!(canon(r#"{"a":1}"#), canon(r#"{"a":1.0}"#));
        assert_eq!(canon(r#""\ud83d\ude00""#), Some("\"\u{1f600}\"".into()));
        assert_eq!(canon(r#""\/""#), canon(r#""/""#));
    }

    #[test]
    fn what_is_not_strict_json_is_refused() {
        for bad in [
            "",
            "{",
            "[1,]",
            "{\"a\":1,}",
            "01",
            "1.",
            ".5",
            "1e",
            "+1",
            "nul",
            "\"\\x\"",
            "\"\u{1}\"",
            "{\"a\":1,\"a\":2}",
            "\"\\ud800\"",
            "1 2",
            "{a:1}",
            "[1 2]",
        ] {
            assert_eq!(canon(bad), None, "{bad:?}");
        }
        let deep = "[".repeat(100) + &"]".repeat(100);
        assert_eq!(canon(&deep), None);
        assert_eq!(parse(&[0xff]), None);
    }

    #[test]
    fn pointers_select_members_and_items() {
        let j = parse(br#"{"a":{"b/c":[10,{"d":true}]},"~k":1}"#).unwrap();
        assert_eq!(j.at("/a/b~1c/1/d"), Some(&Json::Bool(true)));
        assert_eq!(j.at("/~0k"), Some(&Json::Number("1")));
        assert_eq!(j.at("/a/b~1c/01"), None);
        assert_eq!(j.at("/missing"), None);
        assert_eq!(j.at(""), Some(&j));
        assert_eq!(j.at("a"), None);
    }
}
