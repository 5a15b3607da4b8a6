//! A JSON scanner for the documents sluice reads on the request path: it walks the members
//! of objects and the elements of arrays, hands each member's name and each value's place to
//! the caller, and checks the syntax of every value it passes over without building it.
//!
//! Why not serde_json: a request body is read for five top-level fields beside a prompt,
//! and a streamed answer for three fields of each token's chunk. Through serde's visitors
//! and derived structs that cost about 3,500 instructions per request body and 5,000 per
//! chunk (`benches/load/instructions.sh`, `sse_instructions.sh`); this scanner costs a
//! fraction of it. It accepts what serde_json accepts (RFC 8259), except that nesting is
//! bounded at 128 levels in what it skips, and that, like serde_json's own skipping, it does
//! not check the UTF-8 inside strings it passes over: [`string`] and [`members`] check the
//! strings they hand out.

use std::borrow::Cow;
use std::ops::Range;

/// How deep arrays and objects may nest, as in serde_json.
const MAX_DEPTH: usize = 128;

/// The body is not valid JSON (or nests too deep).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invalid;

/// A position in a JSON text.
pub struct Scanner<'a> {
    bytes: &'a [u8],
    pos: usize,
}

/// What a value is, read from its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Object,
    Array,
    String,
    Number,
    True,
    False,
    Null,
}

impl<'a> Scanner<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Scanner { bytes, pos: 0 }
    }

    /// The text the scanner reads.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Skips whitespace and says whether the text ends there.
    pub fn at_end(&mut self) -> bool {
        self.skip_whitespace();
        self.pos == self.bytes.len()
    }

    /// Enters an object: whitespace, then `{`.
    fn open_object(&mut self) -> Result<(), Invalid> {
        self.skip_whitespace();
        self.expect(b'{')
    }

    /// What the next value is, from its first byte (whitespace skipped); `None` if no value
    /// can start there.
    pub fn peek_kind(&mut self) -> Option<Kind> {
        self.skip_whitespace();
        Some(match self.peek()? {
            b'{' => Kind::Object,
            b'[' => Kind::Array,
            b'"' => Kind::String,
            b't' => Kind::True,
            b'f' => Kind::False,
            b'n' => Kind::Null,
            b'-' | b'0'..=b'9' => Kind::Number,
            _ => return None,
        })
    }

    /// The name of the object's next member, as the span of its contents (without the
    /// quotes) and whether it holds escapes; `None` at the object's closing brace. `first`
    /// says whether this is the first member asked for (no comma before it).
    fn next_member(&mut self, first: bool) -> Result<Option<(Range<usize>, bool)>, Invalid> {
        if !self.next_item(b'}', first)? {
            return Ok(None);
        }
        let (quoted, escaped) = self.string()?;
        self.skip_whitespace();
        self.expect(b':')?;
        Ok(Some((quoted.start + 1..quoted.end - 1, escaped)))
    }

    /// Steps to the next item of the object or array being read, whose closing byte is
    /// `close`: past the comma after the previous item (there is none before the first), or
    /// past `close`. `true` when an item follows, with whitespace skipped; a comma straight
    /// before `close` is then refused by the item's reader. Always inlined: left to the
    /// compiler, it cost about 220 instructions per request (`benches/load/instructions.sh`).
    #[inline(always)]
    fn next_item(&mut self, close: u8, first: bool) -> Result<bool, Invalid> {
        self.skip_whitespace();
        if first {
            if self.peek() == Some(close) {
                self.pos += 1;
                return Ok(false);
            }
            return Ok(true);
        }
        match self.next_byte()? {
            b',' => {
                self.skip_whitespace();
                Ok(true)
            }
            byte if byte == close => Ok(false),
            _ => Err(Invalid),
        }
    }

    /// Skips the next value, checking its syntax; returns its kind and its span.
    pub fn value(&mut self) -> Result<(Kind, Range<usize>), Invalid> {
        self.skip_whitespace();
        let start = self.pos;
        let kind = self.skip_value(0)?;
        Ok((kind, start..self.pos))
    }

    fn skip_value(&mut self, depth: usize) -> Result<Kind, Invalid> {
        let Some(first) = self.peek() else {
            return Err(Invalid);
        };
        match first {
            b'{' | b'[' if depth >= MAX_DEPTH => Err(Invalid),
            b'{' => {
                self.pos += 1;
                let mut first = true;
                while self.next_item(b'}', first)? {
                    first = false;
                    self.string()?;
                    self.skip_whitespace();
                    self.expect(b':')?;
                    self.skip_whitespace();
                    self.skip_value(depth + 1)?;
                }
                Ok(Kind::Object)
            }
            b'[' => {
                self.pos += 1;
                let mut first = true;
                while self.next_item(b']', first)? {
                    first = false;
                    self.skip_value(depth + 1)?;
                }
                Ok(Kind::Array)
            }
            b'"' => self.string().map(|_| Kind::String),
            b't' => self.literal(b"true").map(|_| Kind::True),
            b'f' => self.literal(b"false").map(|_| Kind::False),
            b'n' => self.literal(b"null").map(|_| Kind::Null),
            b'-' | b'0'..=b'9' => self.number().map(|_| Kind::Number),
            _ => Err(Invalid),
        }
    }

    /// A string, quotes included, and whether it holds escapes: escapes checked, control
    /// characters refused.
    #[inline]
    fn string(&mut self) -> Result<(Range<usize>, bool), Invalid> {
        let start = self.pos;
        let mut escaped = false;
        self.expect(b'"')?;
        loop {
            self.pos += plain_run(&self.bytes[self.pos..]);
            match self.next_byte()? {
                b'"' => return Ok((start..self.pos, escaped)),
                b'\\' => match self.next_byte()? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => escaped = true,
                    b'u' => {
                        let hex = self.bytes.get(self.pos..self.pos + 4).ok_or(Invalid)?;
                        if !hex.iter().all(u8::is_ascii_hexdigit) {
                            return Err(Invalid);
                        }
                        self.pos += 4;
                        escaped = true;
                    }
                    _ => return Err(Invalid),
                },
                _ => return Err(Invalid),
            }
        }
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Result<(), Invalid> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.next_byte()? {
            b'0' => {}
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return Err(Invalid),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(Invalid);
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(Invalid);
            }
        }
        Ok(())
    }

    fn digits(&mut self) -> usize {
        let run = self.bytes[self.pos..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        self.pos += run;
        run
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), Invalid> {
        if !self.bytes[self.pos..].starts_with(word) {
            return Err(Invalid);
        }
        self.pos += word.len();
        Ok(())
    }

    #[inline]
    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn next_byte(&mut self) -> Result<u8, Invalid> {
        let b = self.peek().ok_or(Invalid)?;
        self.pos += 1;
        Ok(b)
    }

    fn expect(&mut self, want: u8) -> Result<(), Invalid> {
        (self.next_byte()? == want).then_some(()).ok_or(Invalid)
    }
}

/// Reads the object at the scanner, calling `each` with the scanner and the name of each
/// member (unescaped): `each` must consume the member's value, with [`Scanner::value`] or by
/// reading into it. `None` when the text is not an object, or when `each` says `None`.
pub fn members<'a>(
    scan: &mut Scanner<'a>,
    mut each: impl FnMut(&mut Scanner<'a>, &[u8]) -> Option<()>,
) -> Option<()> {
    scan.open_object().ok()?;
    let mut first = true;
    while let Some((name, escaped)) = scan.next_member(first).ok()? {
        first = false;
        let contents = &scan.bytes()[name];
        if escaped {
            each(scan, unescape(contents)?.as_bytes())?;
        } else {
            each(scan, contents)?;
        }
    }
    Some(())
}

/// Reads the array at the scanner, calling `each` with the scanner at each element, which
/// `each` must consume. `None` when the text is not an array, or when `each` says `None`.
pub fn elements<'a>(
    scan: &mut Scanner<'a>,
    mut each: impl FnMut(&mut Scanner<'a>) -> Option<()>,
) -> Option<()> {
    scan.skip_whitespace();
    scan.expect(b'[').ok()?;
    let mut first = true;
    while scan.next_item(b']', first).ok()? {
        first = false;
        each(scan)?;
    }
    Some(())
}

/// The string value at the scanner, unescaped: borrowed from the text when it has no
/// escapes. `Err` when the text there is not a JSON string; `Ok(None)` when its contents are
/// not valid UTF-8 or an escape names a lone surrogate (which serde_json refuses), the
/// string being passed over all the same.
pub fn string<'a>(scan: &mut Scanner<'a>) -> Result<Option<Cow<'a, str>>, Invalid> {
    scan.skip_whitespace();
    let (quoted, _) = scan.string()?;
    Ok(contents(&scan.bytes()[quoted]))
}

/// The text of a string value given with its quotes (one that [`Scanner::value`] found),
/// unescaped and checked as [`string`] does.
pub fn contents(quoted: &[u8]) -> Option<Cow<'_, str>> {
    unescape(quoted.get(1..quoted.len().checked_sub(1)?)?)
}

/// The contents of a string (without its quotes), unescaped and checked.
fn unescape(contents: &[u8]) -> Option<Cow<'_, str>> {
    if !contents.contains(&b'\\') {
        return std::str::from_utf8(contents).ok().map(Cow::Borrowed);
    }
    let mut quoted = Vec::with_capacity(contents.len() + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(contents);
    quoted.push(b'"');
    serde_json::from_slice::<String>(&quoted)
        .ok()
        .map(Cow::Owned)
}

/// How many bytes of `bytes` come before the first quote, backslash or control character
/// (all of them if there is none). Eight bytes at a time: a prompt is mostly long runs of
/// plain text, which a byte-by-byte loop crosses at several instructions per byte.
#[inline]
fn plain_run(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // The high bit of each byte of `x` that is zero (exact for the lowest such byte, which
    // is all that is read: a borrow can only mark bytes above it).
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let first_special = |word: [u8; 8]| {
        let x = u64::from_le_bytes(word);
        let special = zero(x ^ (ONES * u64::from(b'"')))
            | zero(x ^ (ONES * u64::from(b'\\')))
            | (x.wrapping_sub(ONES * 0x20) & !x & HIGHS);
        (special != 0).then(|| (special.trailing_zeros() / 8) as usize)
    };
    let mut chunks = bytes.chunks_exact(8);
    let mut at = 0;
    for chunk in chunks.by_ref() {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        if let Some(i) = first_special(word) {
            return at + i;
        }
        at += 8;
    }
    // The last few bytes, padded with spaces (plain) to a whole word.
    let tail = chunks.remainder();
    let mut word = [b' '; 8];
    word[..tail.len()].copy_from_slice(tail);
    at + first_special(word).unwrap_or(tail.len())
}

/// A number value as a `u64` when it is a whole number in range, as serde_json reads it
/// (`7`, not `7.0`, `-7` or `1e3`).
pub fn as_u64(raw: &[u8]) -> Option<u64> {
    if raw.is_empty() || !raw.iter().all(u8::is_ascii_digit) {
        return None;
    }
    raw.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// A repeatable stream of numbers below a bound (xorshift), for the tests that alter JSON
/// texts at random places.
#[cfg(test)]
pub(crate) fn test_numbers(seed: u64) -> impl FnMut(usize) -> usize {
    let mut state = seed;
    move |bound| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % bound as u64) as usize
    }
}

#[cfg(test)]
mod tests;
