//! A JSON text as PostgreSQL's `jsonb` stores it, built here instead of by
//! `jsonb_in`: the backend then copies bytes instead of lexing, sorting and
//! converting every record (a quarter of a sync's time for Salesforce's wide
//! records). The layout follows PostgreSQL 15's `jsonb_util.c`
//! (`convertToJsonb`) and the numbers `numeric_in` (`numeric.c`); a test in
//! the extension compares the bytes with `jsonb_in`'s over real records and
//! edge cases. Anything this module is not sure of (a lone surrogate,
//! `\u0000`, an exponent past ±1000, nesting past 1000 levels) gives None,
//! and the caller hands the text to `jsonb_in`, which decides as before.

use std::borrow::Cow;

const JENTRY_OFFLENMASK: u32 = 0x0FFF_FFFF;
const JENTRY_TYPEMASK: u32 = 0x7000_0000;
const JENTRY_HAS_OFF: u32 = 0x8000_0000;
const JENTRY_ISNUMERIC: u32 = 0x1000_0000;
const JENTRY_ISBOOL_FALSE: u32 = 0x2000_0000;
const JENTRY_ISBOOL_TRUE: u32 = 0x3000_0000;
const JENTRY_ISNULL: u32 = 0x4000_0000;
const JENTRY_ISCONTAINER: u32 = 0x5000_0000;
const JB_FSCALAR: u32 = 0x1000_0000;
const JB_FOBJECT: u32 = 0x2000_0000;
const JB_FARRAY: u32 = 0x4000_0000;
const JB_OFFSET_STRIDE: usize = 32;
/// Nesting deeper than this is left to `jsonb_in`.
const MAX_DEPTH: usize = 1000;
/// Containers with more items than this are left to `jsonb_in` (whose own
/// work arrays fail past about 2^23 pairs or 2^24 elements).
const MAX_ITEMS: usize = 1 << 20;

/// A parsed JSON value; strings borrow from the text when unescaped.
enum Node<'a> {
    Null,
    Bool(bool),
    /// A `numeric` varlena (4-byte header included).
    Num(Vec<u8>),
    Str(Cow<'a, str>),
    Arr(Vec<Node<'a>>),
    Obj(Vec<(Cow<'a, str>, Node<'a>)>),
}

/// The `jsonb` varlena of `json`: its first 4 bytes are left for the
/// varlena header (the caller sets the length there, in its own byte
/// order); None when `json` should go to `jsonb_in` instead.
pub fn encode(json: &str) -> Option<Vec<u8>> {
    let (root, _) = parse(json, false)?;
    encode_node(root, json.len())
}

/// `json` parsed whole, and (`spans`) where each value of a top-level
/// object starts and ends in it, in order.
fn parse(json: &str, spans: bool) -> Option<(Node<'_>, Vec<(usize, usize)>)> {
    let mut p = Parser {
        s: json.as_bytes(),
        text: json,
        at: 0,
        spans: spans.then(Vec::new),
    };
    p.ws();
    let root = p.value(0)?;
    p.ws();
    if p.at != p.s.len() {
        return None;
    }
    Some((root, p.spans.unwrap_or_default()))
}

/// A value of an object's top level, as [`encode_picking`] finds it in the
/// text: strings decoded (borrowed when they hold no escape), numbers,
/// arrays and objects as their JSON text.
#[derive(Debug, PartialEq)]
pub enum Picked<'a> {
    Null,
    Bool(bool),
    Str(Cow<'a, str>),
    Num(&'a str),
    Json(&'a str),
}

/// [`encode`] a JSON object, and pick the values of some of its top-level
/// keys on the way (one parse for both): `pick` gives a key's slot in the
/// returned values (of `slots`), None for keys not wanted. Of a repeated
/// key the last value is picked, as jsonb keeps it. None when `json` is
/// not an object or should go to `jsonb_in`.
pub fn encode_picking<'a>(
    json: &'a str,
    slots: usize,
    pick: impl Fn(&str) -> Option<usize>,
) -> Option<(Vec<u8>, Vec<Option<Picked<'a>>>)> {
    let (root, spans) = parse(json, true)?;
    let Node::Obj(pairs) = &root else {
        return None;
    };
    let mut out: Vec<Option<Picked<'a>>> = (0..slots).map(|_| None).collect();
    for ((k, v), &(from, to)) in pairs.iter().zip(&spans) {
        let Some(slot) = pick(k).filter(|&i| i < slots) else {
            continue;
        };
        out[slot] = Some(match v {
            Node::Null => Picked::Null,
            Node::Bool(b) => Picked::Bool(*b),
            Node::Str(s) => Picked::Str(s.clone()),
            Node::Num(_) => Picked::Num(&json[from..to]),
            Node::Arr(_) | Node::Obj(_) => Picked::Json(&json[from..to]),
        });
    }
    Some((encode_node(root, json.len())?, out))
}

/// The varlena of a parsed value (`len`: its text's length, to size it).
fn encode_node(root: Node<'_>, len: usize) -> Option<Vec<u8>> {
    let mut buf = Vec::with_capacity(len + 64);
    buf.extend_from_slice(&[0; 4]);
    match root {
        // A scalar at the top is stored as a one-element "raw scalar" array.
        Node::Arr(_) | Node::Obj(_) => put_value(&mut buf, &root)?,
        scalar => put_array(&mut buf, std::slice::from_ref(&scalar), true)?,
    };
    Some(buf)
}

fn pad4(buf: &mut Vec<u8>) -> usize {
    let pad = (4 - buf.len() % 4) % 4;
    buf.resize(buf.len() + pad, 0);
    pad
}

fn fits(len: usize) -> Option<u32> {
    u32::try_from(len).ok().filter(|l| *l <= JENTRY_OFFLENMASK)
}

/// Append `v`; returns its JEntry (type and length).
fn put_value(buf: &mut Vec<u8>, v: &Node<'_>) -> Option<u32> {
    Some(match v {
        Node::Null => JENTRY_ISNULL,
        Node::Bool(true) => JENTRY_ISBOOL_TRUE,
        Node::Bool(false) => JENTRY_ISBOOL_FALSE,
        Node::Str(s) => {
            buf.extend_from_slice(s.as_bytes());
            fits(s.len())?
        }
        Node::Num(n) => {
            let pad = pad4(buf);
            buf.extend_from_slice(n);
            JENTRY_ISNUMERIC | fits(pad + n.len())?
        }
        Node::Arr(items) => put_array(buf, items, false)?,
        Node::Obj(pairs) => put_object(buf, pairs)?,
    })
}

/// Write entry `meta` of a container: every 32nd one holds the end offset
/// of its data instead of its length.
fn put_entry(buf: &mut [u8], at: usize, i: usize, meta: u32, total: &mut usize) -> Option<()> {
    *total += (meta & JENTRY_OFFLENMASK) as usize;
    let total_len = fits(*total)?;
    let meta = if i.is_multiple_of(JB_OFFSET_STRIDE) {
        (meta & JENTRY_TYPEMASK) | total_len | JENTRY_HAS_OFF
    } else {
        meta
    };
    buf[at + 4 * i..at + 4 * i + 4].copy_from_slice(&meta.to_ne_bytes());
    Some(())
}

fn put_array(buf: &mut Vec<u8>, items: &[Node<'_>], raw_scalar: bool) -> Option<u32> {
    let base = buf.len();
    pad4(buf);
    let mut head = fits(items.len())? | JB_FARRAY;
    if raw_scalar {
        head |= JB_FSCALAR;
    }
    buf.extend_from_slice(&head.to_ne_bytes());
    let entries = buf.len();
    buf.resize(entries + 4 * items.len(), 0);
    let mut total = 0;
    for (i, item) in items.iter().enumerate() {
        let meta = put_value(buf, item)?;
        put_entry(buf, entries, i, meta, &mut total)?;
    }
    Some(JENTRY_ISCONTAINER | fits(buf.len() - base)?)
}

fn put_object(buf: &mut Vec<u8>, pairs: &[(Cow<'_, str>, Node<'_>)]) -> Option<u32> {
    // Keys by length, then bytes; of equal keys the last one written wins.
    let mut order: Vec<usize> = (0..pairs.len()).collect();
    let key = |i: usize| {
        let k = pairs[i].0.as_bytes();
        (k.len(), k)
    };
    order.sort_by(|&a, &b| key(a).cmp(&key(b)).then(b.cmp(&a)));
    order.dedup_by(|later, kept| key(*later) == key(*kept));
    let n = order.len();
    let base = buf.len();
    pad4(buf);
    buf.extend_from_slice(&(fits(n)? | JB_FOBJECT).to_ne_bytes());
    let entries = buf.len();
    buf.resize(entries + 8 * n, 0);
    let mut total = 0;
    for (i, &p) in order.iter().enumerate() {
        let k = &pairs[p].0;
        buf.extend_from_slice(k.as_bytes());
        put_entry(buf, entries, i, fits(k.len())?, &mut total)?;
    }
    for (i, &p) in order.iter().enumerate() {
        let meta = put_value(buf, &pairs[p].1)?;
        put_entry(buf, entries, n + i, meta, &mut total)?;
    }
    Some(JENTRY_ISCONTAINER | fits(buf.len() - base)?)
}

struct Parser<'a> {
    s: &'a [u8],
    text: &'a str,
    at: usize,
    /// Where each value of the top-level object starts and ends in the
    /// text, in order (kept only when asked for).
    spans: Option<Vec<(usize, usize)>>,
}

impl<'a> Parser<'a> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.s.get(self.at) {
            self.at += 1;
        }
    }

    fn eat(&mut self, word: &[u8]) -> Option<()> {
        self.s[self.at..]
            .starts_with(word)
            .then(|| self.at += word.len())
    }

    fn value(&mut self, depth: usize) -> Option<Node<'a>> {
        if depth > MAX_DEPTH {
            return None;
        }
        let v = match *self.s.get(self.at)? {
            b'{' => {
                let mut pairs = Vec::new();
                self.items(b'}', |p| {
                    if p.s.get(p.at) != Some(&b'"') {
                        return None;
                    }
                    let k = p.string()?;
                    p.ws();
                    p.eat(b":")?;
                    p.ws();
                    let from = p.at;
                    pairs.push((k, p.value(depth + 1)?));
                    if depth == 0 {
                        if let Some(spans) = p.spans.as_mut() {
                            spans.push((from, p.at));
                        }
                    }
                    Some(())
                })?;
                Node::Obj(pairs)
            }
            b'[' => {
                let mut items = Vec::new();
                self.items(b']', |p| {
                    items.push(p.value(depth + 1)?);
                    Some(())
                })?;
                Node::Arr(items)
            }
            b'"' => Node::Str(self.string()?),
            b't' => {
                self.eat(b"true")?;
                Node::Bool(true)
            }
            b'f' => {
                self.eat(b"false")?;
                Node::Bool(false)
            }
            b'n' => {
                self.eat(b"null")?;
                Node::Null
            }
            b'-' | b'0'..=b'9' => Node::Num(self.number()?),
            _ => return None,
        };
        // A word or number must end where a delimiter starts ("truex", "1x").
        match self.s.get(self.at) {
            None | Some(b' ' | b'\t' | b'\n' | b'\r' | b',' | b']' | b'}' | b':') => Some(v),
            Some(_) if matches!(v, Node::Obj(_) | Node::Arr(_) | Node::Str(_)) => Some(v),
            Some(_) => None,
        }
    }

    /// The items of an object or array, from its opening bracket to
    /// `close`, separated by commas: `item` reads one.
    fn items(&mut self, close: u8, mut item: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.at += 1;
        self.ws();
        if self.s.get(self.at) == Some(&close) {
            self.at += 1;
            return Some(());
        }
        for _ in 0..MAX_ITEMS {
            self.ws();
            item(self)?;
            self.ws();
            match *self.s.get(self.at)? {
                b',' => self.at += 1,
                c if c == close => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
        None
    }

    /// A string at `"`; borrowed when it has no escape.
    fn string(&mut self) -> Option<Cow<'a, str>> {
        self.at += 1;
        let start = self.at;
        let mut out: Option<String> = None;
        loop {
            let b = *self.s.get(self.at)?;
            match b {
                b'"' => {
                    let end = self.at;
                    self.at += 1;
                    return Some(match out {
                        Some(s) => Cow::Owned(s),
                        None => Cow::Borrowed(&self.text[start..end]),
                    });
                }
                0x00..=0x1f => return None,
                b'\\' => {
                    let s = out.get_or_insert_with(|| self.text[start..self.at].to_owned());
                    self.at += 1;
                    let c = match *self.s.get(self.at)? {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = hex4(self.s.get(self.at + 1..self.at + 5)?)?;
                            self.at += 4;
                            match hi {
                                // jsonb cannot hold U+0000.
                                0 => return None,
                                0xD800..=0xDBFF => {
                                    if self.s.get(self.at + 1..self.at + 3)? != b"\\u" {
                                        return None;
                                    }
                                    let lo = hex4(self.s.get(self.at + 3..self.at + 7)?)?;
                                    if !(0xDC00..=0xDFFF).contains(&lo) {
                                        return None;
                                    }
                                    self.at += 6;
                                    char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))?
                                }
                                0xDC00..=0xDFFF => return None,
                                c => char::from_u32(c)?,
                            }
                        }
                        _ => return None,
                    };
                    s.push(c);
                    self.at += 1;
                }
                _ => {
                    // Copy up to the next quote, escape or control byte.
                    let from = self.at;
                    while let Some(&c) = self.s.get(self.at) {
                        if c == b'"' || c == b'\\' || c < 0x20 {
                            break;
                        }
                        self.at += 1;
                    }
                    if let Some(s) = out.as_mut() {
                        s.push_str(&self.text[from..self.at]);
                    }
                }
            }
        }
    }

    /// A number as JSON writes it, as the `numeric` `numeric_in` makes of it.
    fn number(&mut self) -> Option<Vec<u8>> {
        let start = self.at;
        let s = self.s;
        let neg = s[self.at] == b'-';
        if neg {
            self.at += 1;
        }
        let digits_from = |p: &mut usize| {
            let from = *p;
            while s.get(*p).is_some_and(u8::is_ascii_digit) {
                *p += 1;
            }
            *p - from
        };
        let int_start = self.at;
        let int_len = digits_from(&mut self.at);
        if int_len == 0 || (int_len > 1 && s[int_start] == b'0') {
            return None;
        }
        let mut frac = &s[0..0];
        if s.get(self.at) == Some(&b'.') {
            self.at += 1;
            let from = self.at;
            if digits_from(&mut self.at) == 0 {
                return None;
            }
            frac = &s[from..self.at];
        }
        let mut exponent: i64 = 0;
        if let Some(b'e' | b'E') = s.get(self.at) {
            self.at += 1;
            let negexp = match s.get(self.at) {
                Some(b'-') => {
                    self.at += 1;
                    true
                }
                Some(b'+') => {
                    self.at += 1;
                    false
                }
                _ => false,
            };
            let from = self.at;
            let n = digits_from(&mut self.at);
            if n == 0 || n > 4 {
                return None;
            }
            exponent = std::str::from_utf8(&s[from..self.at]).ok()?.parse().ok()?;
            if negexp {
                exponent = -exponent;
            }
        }
        if exponent.abs() > 1000 || self.at - start > 1000 {
            return None;
        }
        numeric(
            neg,
            &s[int_start..int_start + int_len],
            frac,
            exponent as i32,
        )
    }
}

fn hex4(h: &[u8]) -> Option<u32> {
    if !h.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u32::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()
}

/// `numeric_in`'s varlena for the decimal digits `int` `.` `frac`, times
/// ten to `exponent` (`set_var_from_str`, `strip_var`, `make_result`).
fn numeric(neg: bool, int: &[u8], frac: &[u8], exponent: i32) -> Option<Vec<u8>> {
    const DEC_DIGITS: i32 = 4;
    // The digits, between 4 zeros before and 3 after (on the stack for
    // the numbers CRMs send; a long one takes a vector).
    let mut short_dec = [0u8; 64];
    let mut long_dec = Vec::new();
    let n = int.len() + frac.len();
    let dec: &mut [u8] = if n + 7 <= short_dec.len() {
        &mut short_dec[..n + 7]
    } else {
        long_dec.resize(n + 7, 0);
        &mut long_dec
    };
    for (slot, d) in dec[4..].iter_mut().zip(int.iter().chain(frac)) {
        *slot = d - b'0';
    }
    let ddigits = n as i32;
    let dweight = int.len() as i32 - 1 + exponent;
    let dscale = (frac.len() as i32 - exponent).max(0);
    let mut weight = if dweight >= 0 {
        (dweight + 1 + DEC_DIGITS - 1) / DEC_DIGITS - 1
    } else {
        -((-dweight - 1) / DEC_DIGITS + 1)
    };
    let offset = (weight + 1) * DEC_DIGITS - (dweight + 1);
    let ndigits = (ddigits + offset + DEC_DIGITS - 1) / DEC_DIGITS;
    let mut i = (DEC_DIGITS - offset) as usize;
    let mut short_digits = [0i16; 16];
    let mut long_digits = Vec::new();
    let digits: &mut [i16] = if (ndigits as usize) <= short_digits.len() {
        &mut short_digits[..ndigits as usize]
    } else {
        long_digits.resize(ndigits as usize, 0);
        &mut long_digits
    };
    for d in digits.iter_mut() {
        *d = ((dec[i] as i16 * 10 + dec[i + 1] as i16) * 10 + dec[i + 2] as i16) * 10
            + dec[i + 3] as i16;
        i += DEC_DIGITS as usize;
    }
    // Leading and trailing zero digits go; zero is positive, of weight 0.
    let lead = digits.iter().take_while(|d| **d == 0).count();
    weight -= lead as i32;
    let mut digits = &digits[lead..];
    while let Some((0, rest)) = digits.split_last() {
        digits = rest;
    }
    let neg = neg && !digits.is_empty();
    if digits.is_empty() {
        weight = 0;
    }
    let short = dscale <= 0x3F && (-64..=63).contains(&weight);
    if !short && (dscale > 0x3FFF || !(i16::MIN as i32..=i16::MAX as i32).contains(&weight)) {
        return None;
    }
    let mut out = Vec::with_capacity(8 + 2 * digits.len());
    out.extend_from_slice(&[0; 4]);
    if short {
        let head: u16 = 0x8000
            | if neg { 0x2000 } else { 0 }
            | ((dscale as u16) << 7)
            | if weight < 0 { 0x0040 } else { 0 }
            | (weight as u16 & 0x003F);
        out.extend_from_slice(&head.to_ne_bytes());
    } else {
        let sign_dscale: u16 = if neg { 0x4000 } else { 0 } | (dscale as u16 & 0x3FFF);
        out.extend_from_slice(&sign_dscale.to_ne_bytes());
        out.extend_from_slice(&(weight as i16).to_ne_bytes());
    }
    for d in digits {
        out.extend_from_slice(&d.to_ne_bytes());
    }
    let len = out.len() as u32;
    out[..4].copy_from_slice(&varsize_4b(len));
    Some(out)
}

/// A container's entry: its JEntry and its bytes.
type Entry<'a> = (u32, &'a [u8]);

/// The entries of a `jsonb` object read from `container` (the bytes after
/// the varlena header, as PostgreSQL 15's `JsonbContainer` lays them out):
/// its number of pairs n and its keys' n entries, then, with `values`, its
/// values' n, each as (JEntry, its bytes); None when it is not an object or
/// the entries read do not fit in it.
fn object_entries(container: &[u8], values: bool) -> Option<(usize, Vec<Entry<'_>>)> {
    let word = |at: usize| -> Option<u32> {
        Some(u32::from_ne_bytes(
            container.get(at..at + 4)?.try_into().ok()?,
        ))
    };
    let header = word(0)?;
    if header & JB_FOBJECT == 0 {
        return None;
    }
    let n = (header & JENTRY_OFFLENMASK) as usize;
    // Keys' entries, then values' (2n), then the data, keys first.
    let data = 4usize.checked_add(n.checked_mul(8)?)?;
    let read = if values { 2 * n } else { n };
    // (Each entry takes at least its four bytes: no more than fit.)
    let mut out = Vec::with_capacity(read.min(container.len() / 4));
    let mut at = 0usize;
    for i in 0..read {
        let entry = word(4 + 4 * i)?;
        let field = (entry & JENTRY_OFFLENMASK) as usize;
        // An entry with HAS_OFF holds where it ends; the others their length.
        let len = if entry & JENTRY_HAS_OFF != 0 {
            field.checked_sub(at)?
        } else {
            field
        };
        let end = at.checked_add(len)?;
        out.push((entry, container.get(data + at..data + end)?));
        at = end;
    }
    Some((n, out))
}

/// The keys of a `jsonb` object, in its stored order (by length, then
/// bytes), read from `container` as [`object_entries`] does (its values
/// are not read); None when it is not an object or its keys do not fit in
/// it.
pub fn object_keys(container: &[u8]) -> Option<Vec<&[u8]>> {
    let (_, keys) = object_entries(container, false)?;
    Some(keys.into_iter().map(|(_, b)| b).collect())
}

/// The pairs of a `jsonb` object whose every value is a string (as the
/// merge's cleaned values are), in stored key order, read from `container`
/// as [`object_entries`] does; None when it is not such an object (a
/// value of another type, entries that do not fit, text that is not
/// UTF-8).
pub fn string_object(container: &[u8]) -> Option<Vec<(&str, &str)>> {
    let (n, entries) = object_entries(container, true)?;
    // Keys are strings; a value may be anything (its type bits).
    fn text(entry: u32, bytes: &[u8]) -> Option<&str> {
        (entry & JENTRY_TYPEMASK == 0)
            .then(|| std::str::from_utf8(bytes).ok())
            .flatten()
    }
    (0..n)
        .map(|i| {
            let (k, v) = (entries[i], entries[n + i]);
            Some((text(k.0, k.1)?, text(v.0, v.1)?))
        })
        .collect()
}

/// A 4-byte varlena header for `len` bytes (`SET_VARSIZE`).
pub fn varsize_4b(len: u32) -> [u8; 4] {
    if cfg!(target_endian = "little") {
        (len << 2).to_ne_bytes()
    } else {
        (len & 0x3FFF_FFFF).to_ne_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(s: &str) -> Vec<u8> {
        let v = encode(s).unwrap();
        // Raw scalar array: header, one JEntry, padding, the numeric.
        let head = u32::from_ne_bytes(v[4..8].try_into().unwrap());
        assert_eq!(head, 1 | JB_FARRAY | JB_FSCALAR);
        v[12..].to_vec()
    }

    fn digits(v: &[u8]) -> Vec<i16> {
        v.chunks(2)
            .map(|c| i16::from_ne_bytes([c[0], c[1]]))
            .collect()
    }

    #[test]
    fn object_keys_reads_back_what_encode_wrote() {
        let body = |json: &str| encode(json).unwrap()[4..].to_vec();
        let keys = |json: &str| -> Option<Vec<String>> {
            let b = body(json);
            object_keys(&b).map(|k| {
                k.iter()
                    .map(|k| String::from_utf8(k.to_vec()).unwrap())
                    .collect()
            })
        };
        // Stored by length, then bytes; a repeated key once.
        assert_eq!(
            keys(r#"{"title": 1, "a": {"x": 2}, "é": null, "bb": [1], "a": 3}"#).unwrap(),
            ["a", "bb", "é", "title"]
        );
        assert_eq!(keys("{}").unwrap(), Vec::<String>::new());
        // Past the offset stride (every 32nd entry holds an end offset).
        let many: Vec<String> = (0..70).map(|i| format!("\"key{i:03}\": {i}")).collect();
        let got = keys(&format!("{{{}}}", many.join(", "))).unwrap();
        assert_eq!(got.len(), 70);
        assert_eq!(got[0], "key000");
        assert_eq!(got[69], "key069");
        // Not an object.
        assert_eq!(keys("[1, 2]"), None);
        assert_eq!(keys("\"a\""), None);
        // Cut short: no key read past the end.
        let b = body(r#"{"first": 1, "second": 2}"#);
        for cut in 0..b.len() - 1 {
            if let Some(k) = object_keys(&b[..cut]) {
                assert!(k.iter().all(|k| k.len() <= cut));
            }
        }
    }

    #[test]
    fn string_object_reads_back_the_pairs_encode_wrote() {
        let pairs = |json: &str| -> Option<Vec<(String, String)>> {
            let b = encode(json).unwrap()[4..].to_vec();
            string_object(&b).map(|p| {
                p.into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect()
            })
        };
        let own = |p: &[(&str, &str)]| -> Vec<(String, String)> {
            p.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        // Stored key order (length, then bytes); escapes decoded.
        assert_eq!(
            pairs(r#"{"title": "Dr \"Who\"", "a": "", "é": "Zoë\n\u00e9"}"#).unwrap(),
            own(&[("a", ""), ("é", "Zoë\né"), ("title", "Dr \"Who\"")])
        );
        assert_eq!(pairs("{}").unwrap(), own(&[]));
        // Past the offset stride.
        let many: Vec<String> = (0..70)
            .map(|i| format!("\"key{i:03}\": \"v{i}\""))
            .collect();
        let got = pairs(&format!("{{{}}}", many.join(", "))).unwrap();
        assert_eq!(got.len(), 70);
        assert_eq!(got[69], ("key069".to_owned(), "v69".to_owned()));
        // Any value not a string, or not an object: None.
        for json in [
            r#"{"a": "x", "b": 1}"#,
            r#"{"a": null}"#,
            r#"{"a": true}"#,
            r#"{"a": false}"#,
            r#"{"a": {"b": "c"}}"#,
            r#"{"a": ["b"]}"#,
            r#"["a", "b"]"#,
            r#""a""#,
        ] {
            assert_eq!(pairs(json), None, "{json}");
        }
        // Cut short: None, never a pair read past the end.
        let b = encode(r#"{"first": "one", "second": "two"}"#).unwrap()[4..].to_vec();
        for cut in 0..b.len() {
            assert_eq!(string_object(&b[..cut]), None, "cut at {cut}");
        }
    }

    #[test]
    fn numbers_take_numeric_in_s_short_form() {
        // 123.45: weight 0, dscale 2, digits 123, 4500.
        let n = num("123.45");
        assert_eq!(&n[..4], &varsize_4b(10));
        assert_eq!(digits(&n[4..]), [(0x8000u16 | (2 << 7)) as i16, 123, 4500]);
        // -0.0010: negative, weight -1, dscale 4, digit 10.
        let n = num("-0.0010");
        assert_eq!(
            digits(&n[4..]),
            [(0x8000u16 | 0x2000 | (4 << 7) | 0x40 | 0x3F) as i16, 10]
        );
        // -0 is zero: positive, weight 0, no digits.
        assert_eq!(digits(&num("-0")[4..]), [0x8000u16 as i16]);
        // 1e5 = 10, 0000 (trailing zero digit stripped): weight 1, dscale 0.
        assert_eq!(digits(&num("1e5")[4..]), [(0x8000u16 | 1) as i16, 10]);
        // 2.5E-3: 0.0025, dscale 4.
        assert_eq!(
            digits(&num("2.5E-3")[4..]),
            [(0x8000u16 | (4 << 7) | 0x7F) as i16, 25]
        );
    }

    #[test]
    fn large_numbers_take_the_long_form() {
        // 1e300: weight 75 does not fit the short form.
        let n = num("1e300");
        assert_eq!(digits(&n[4..]), [0, 75, 1]);
    }

    #[test]
    fn picking_encodes_the_same_and_finds_top_level_values_as_written() {
        let text = r#"{"a": 1.50, "b": "x\"y", "c": {"a": 2}, "a": -0, "d": [1, "a"], "e": true, "f": null, "g": "plain"}"#;
        let slot = |k: &str| {
            ["a", "b", "c", "d", "e", "f", "g", "zz"]
                .iter()
                .position(|x| *x == k)
        };
        let (bytes, picked) = encode_picking(text, 8, slot).expect("an object");
        assert_eq!(Some(bytes), encode(text));
        assert_eq!(
            picked,
            [
                // The last of a repeated key, as jsonb keeps it.
                Some(Picked::Num("-0")),
                Some(Picked::Str(Cow::Owned("x\"y".into()))),
                Some(Picked::Json(r#"{"a": 2}"#)),
                Some(Picked::Json(r#"[1, "a"]"#)),
                Some(Picked::Bool(true)),
                Some(Picked::Null),
                Some(Picked::Str(Cow::Borrowed("plain"))),
                None,
            ]
        );
        // Nested keys are not the object's own.
        let (_, picked) = encode_picking(r#"{"c": {"g": 1}}"#, 8, slot).unwrap();
        assert_eq!(picked[6], None);
        // Not an object, or left to jsonb_in: nothing picked.
        assert!(encode_picking("[1, 2]", 1, |_| Some(0)).is_none());
        assert!(encode_picking(r#"{"a": "\u0000"}"#, 1, |_| Some(0)).is_none());
    }

    #[test]
    fn object_keys_sort_by_length_then_bytes_and_the_last_wins() {
        let v = encode(r#"{"bb": 1, "a": true, "ab": null, "a": false}"#).unwrap();
        let head = u32::from_ne_bytes(v[4..8].try_into().unwrap());
        assert_eq!(head, 3 | JB_FOBJECT);
        // Keys data follows the 6 JEntries: "a", "ab", "bb".
        assert_eq!(&v[32..37], b"aabbb");
        // The value of "a" is the last one written: false.
        let e = |i: usize| u32::from_ne_bytes(v[8 + 4 * i..12 + 4 * i].try_into().unwrap());
        assert_eq!(e(3) & JENTRY_TYPEMASK, JENTRY_ISBOOL_FALSE);
        assert_eq!(e(4) & JENTRY_TYPEMASK, JENTRY_ISNULL);
        assert_eq!(e(5) & JENTRY_TYPEMASK, JENTRY_ISNUMERIC);
    }

    #[test]
    fn escapes_are_decoded() {
        let v = encode(r#"["a\"b\\\/\n\u00e9\ud83d\ude00"]"#).unwrap();
        let s = std::str::from_utf8(&v[12..]).unwrap();
        assert_eq!(s, "a\"b\\/\né😀");
    }

    #[test]
    fn what_jsonb_in_should_decide_is_left_to_it() {
        for bad in [
            "",
            "{",
            "[1,]",
            "{\"a\" 1}",
            "01",
            "1.",
            ".5",
            "+1",
            "1e",
            "truex",
            "nul",
            "\"\\u0000\"",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"a\u{1}\"",
            "1e1001",
            "[1] 2",
            "\"\\x\"",
            "{\"a\":1,}",
            "\"\\u+123\"",
        ] {
            assert!(encode(bad).is_none(), "{bad:?}");
        }
        assert!(encode(&"[".repeat(1002)).is_none());
        let many = |n: usize| format!("[{}0]", "0,".repeat(n - 1));
        assert!(encode(&many(MAX_ITEMS)).is_some());
        assert!(encode(&many(MAX_ITEMS + 1)).is_none());
    }

    #[test]
    fn every_32nd_entry_holds_an_offset() {
        let arr: Vec<String> = (0..40).map(|i| format!("\"s{i}\"")).collect();
        let v = encode(&format!("[{}]", arr.join(","))).unwrap();
        let e = |i: usize| u32::from_ne_bytes(v[8 + 4 * i..12 + 4 * i].try_into().unwrap());
        assert_eq!(e(0), JENTRY_HAS_OFF | 2);
        assert_eq!(e(1), 2);
        // s0..s9 are 2 bytes, s10..s31 3: the 33rd ends at 20 + 66 + 3.
        assert_eq!(e(32), JENTRY_HAS_OFF | 89);
    }
}
