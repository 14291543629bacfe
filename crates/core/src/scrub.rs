//! Known secrets out of a text a user, a table or the server log will see.
//!
//! A CRM's error text may repeat what the request carried, and not always
//! as it was stored: percent-encoded as in a form body or query string
//! (`%2F` or `%2f`, `+` for a space), JSON-escaped (`\/`, `\u002F`), as the
//! base64 of `client_id:client_secret` of an HTTP Basic header, or cut off
//! part way when a body excerpt was bounded before it was scrubbed. Every
//! character of a secret is matched in any of those spellings, so mixed
//! ones are found too; what any secret covers is replaced by one
//! `[redacted]`, so a secret inside, or overlapping, another leaves nothing
//! behind.

use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine;

/// What replaces a secret.
pub const REDACTED: &str = "[redacted]";

/// Secrets shorter than this (in bytes) are left alone: they would match
/// ordinary words.
pub const MIN_SECRET_LEN: usize = 4;

/// A cut text's tail that begins a secret is redacted when it holds at
/// least this many of the secret's characters, and at least half of them.
pub const MIN_PARTIAL_LEN: usize = 8;

/// `text` with every secret of `secrets` (in any spelling above) replaced.
pub fn scrub<S: AsRef<str>>(text: &str, secrets: &[S]) -> String {
    let needles = needles(secrets);
    if needles.is_empty() || text.is_empty() {
        return text.to_owned();
    }
    let mut covered = vec![false; text.len()];
    for (i, _) in text.char_indices() {
        let longest = needles.iter().filter_map(|n| match_at(text, i, n)).max();
        if let Some(end) = longest {
            covered[i..end].iter_mut().for_each(|c| *c = true);
        }
    }
    let mut out = String::with_capacity(text.len());
    let mut in_secret = false;
    for (i, ch) in text.char_indices() {
        if covered[i] {
            if !in_secret {
                out.push_str(REDACTED);
            }
            in_secret = true;
        } else {
            in_secret = false;
            out.push(ch);
        }
    }
    out
}

/// The strings to look for: each secret long enough, and the base64 of
/// each secret and of each `a:b` pair (HTTP Basic: `client_id:secret`).
fn needles<S: AsRef<str>>(secrets: &[S]) -> Vec<Vec<char>> {
    let all: Vec<&str> = secrets.iter().map(AsRef::as_ref).collect();
    let long: Vec<&str> = all
        .iter()
        .copied()
        .filter(|s| s.len() >= MIN_SECRET_LEN)
        .collect();
    let mut out: Vec<String> = long.iter().map(|s| (*s).to_owned()).collect();
    let mut encoded = |raw: String| {
        for e in [STANDARD_NO_PAD.encode(&raw), URL_SAFE_NO_PAD.encode(&raw)] {
            out.push(e);
        }
    };
    for s in &long {
        encoded((*s).to_owned());
        for id in all.iter().filter(|id| *id != s && !id.is_empty()) {
            encoded(format!("{id}:{s}"));
        }
    }
    out.sort();
    out.dedup();
    out.into_iter().map(|s| s.chars().collect()).collect()
}

/// Where a match of `needle` that starts at byte `i` of `text` ends: the
/// whole needle, or a long enough beginning of it where the text was cut
/// (it ends there, or an ellipsis follows).
fn match_at(text: &str, i: usize, needle: &[char]) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut p = i;
    let mut matched = 0;
    for &c in needle {
        match match_char(&bytes[p..], c) {
            Some(n) => {
                p += n;
                matched += 1;
            }
            None => break,
        }
    }
    if matched == needle.len() {
        return Some(p);
    }
    if matched < MIN_PARTIAL_LEN || matched * 2 < needle.len() {
        return None;
    }
    let end = p + cut_escape(&bytes[p..]);
    let after = &text[end..];
    (after.is_empty() || after.starts_with('…') || after.starts_with("...")).then_some(end)
}

/// How many bytes at the start of `rest` spell `c`: itself, `+` for a
/// space, its UTF-8 bytes percent-encoded (either case), or a JSON escape.
fn match_char(rest: &[u8], c: char) -> Option<usize> {
    let mut buf = [0u8; 4];
    let lit = c.encode_utf8(&mut buf).as_bytes();
    // A JSON-escaped backslash before the literal one, which it begins.
    if c == '\\' && rest.starts_with(b"\\\\") {
        return Some(2);
    }
    if rest.starts_with(lit) {
        return Some(lit.len());
    }
    if c == ' ' && rest.first() == Some(&b'+') {
        return Some(1);
    }
    if let Some(n) = percent_encoded(rest, lit) {
        return Some(n);
    }
    if rest.first() != Some(&b'\\') {
        return None;
    }
    let short = match c {
        '/' | '"' | '\\' => Some(c as u8),
        _ => None,
    };
    if short.is_some() && rest.get(1).copied() == short {
        return Some(2);
    }
    json_unicode(rest, c)
}

fn percent_encoded(rest: &[u8], lit: &[u8]) -> Option<usize> {
    for (k, b) in lit.iter().enumerate() {
        let esc = rest.get(3 * k..3 * k + 3)?;
        if esc[0] != b'%' || hex_value(&esc[1..])? != u32::from(*b) {
            return None;
        }
    }
    Some(3 * lit.len())
}

/// `\uXXXX` (either case), or a surrogate pair for a character past the BMP.
fn json_unicode(rest: &[u8], c: char) -> Option<usize> {
    let unit = |at: usize| -> Option<u32> {
        let esc = rest.get(at..at + 6)?;
        (esc[0] == b'\\' && esc[1] == b'u')
            .then(|| hex_value(&esc[2..]))
            .flatten()
    };
    let mut units = [0u16; 2];
    let want = c.encode_utf16(&mut units);
    for (k, u) in want.iter().enumerate() {
        if unit(6 * k)? != u32::from(*u) {
            return None;
        }
    }
    Some(6 * want.len())
}

fn hex_value(digits: &[u8]) -> Option<u32> {
    let s = std::str::from_utf8(digits).ok()?;
    if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

/// The length of an escape the cut left unfinished at the start of `rest`
/// (`%`, `%2`, `\`, `\u00`...), else 0.
fn cut_escape(rest: &[u8]) -> usize {
    let hex_run = |from: usize, max: usize| {
        rest[from.min(rest.len())..]
            .iter()
            .take(max)
            .take_while(|b| b.is_ascii_hexdigit())
            .count()
    };
    match rest {
        [b'%', ..] => 1 + hex_run(1, 1),
        [b'\\', b'u', ..] => 2 + hex_run(2, 3),
        [b'\\', ..] => 1,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "pat-na1-ab/cd+ef=gh-0123456789";

    fn scrubbed(text: &str, secrets: &[&str]) -> String {
        scrub(text, secrets)
    }

    #[test]
    fn a_secret_as_it_is() {
        assert_eq!(
            scrubbed(&format!("token {TOKEN} refused, {TOKEN}."), &[TOKEN]),
            "token [redacted] refused, [redacted]."
        );
        assert_eq!(scrubbed("nothing here", &[TOKEN]), "nothing here");
    }

    #[test]
    fn secrets_shorter_than_four_bytes_are_left() {
        assert_eq!(scrubbed("a abc abcd", &["abc"]), "a abc abcd");
        assert_eq!(scrubbed("a abc abcd", &["abcd"]), "a abc [redacted]");
    }

    #[test]
    fn a_secret_inside_another_leaves_no_tail() {
        let inner = "tok-123456";
        let outer = "xx-tok-123456-yy";
        for secrets in [[inner, outer], [outer, inner]] {
            assert_eq!(
                scrubbed(&format!("a {outer} b {inner} c"), &secrets),
                "a [redacted] b [redacted] c"
            );
        }
        // Overlapping: the end of one is the start of the other.
        assert_eq!(
            scrubbed("<abcd1234efgh5678>", &["abcd1234efgh", "1234efgh5678"]),
            "<[redacted]>"
        );
    }

    #[test]
    fn percent_encoded_as_in_a_form_body_or_query_string() {
        let upper = "pat-na1-ab%2Fcd%2Bef%3Dgh-0123456789";
        let lower = "pat-na1-ab%2fcd%2bef%3dgh-0123456789";
        let mixed = "pat-na1-ab/cd%2Bef%3dgh-0123456789";
        for form in [upper, lower, mixed] {
            assert_eq!(
                scrubbed(
                    &format!("grant_type=refresh_token&refresh_token={form}&x=1"),
                    &[TOKEN]
                ),
                "grant_type=refresh_token&refresh_token=[redacted]&x=1",
                "{form}"
            );
        }
        // `+` for a space, as application/x-www-form-urlencoded writes it.
        assert_eq!(
            scrubbed("secret=my+pass+phrase&", &["my pass phrase"]),
            "secret=[redacted]&"
        );
        // UTF-8 percent-encoded byte by byte.
        assert_eq!(
            scrubbed("p=caf%C3%A9-secret", &["café-secret"]),
            "p=[redacted]"
        );
    }

    #[test]
    fn json_escaped() {
        assert_eq!(
            scrubbed(r#"{"token":"pat-na1-ab\/cd+ef=gh-0123456789"}"#, &[TOKEN]),
            r#"{"token":"[redacted]"}"#
        );
        assert_eq!(
            scrubbed(
                r#"{"token":"pat-na1-ab\u002Fcd\u002bef\u003Dgh-0123456789"}"#,
                &[TOKEN]
            ),
            r#"{"token":"[redacted]"}"#
        );
        assert_eq!(
            scrubbed(r#"said "se\"cr\\et1""#, &[r#"se"cr\et1"#]),
            r#"said "[redacted]""#
        );
        assert_eq!(
            scrubbed(r"x \ud83d\ude00-secret y", &["😀-secret"]),
            "x [redacted] y"
        );
    }

    #[test]
    fn base64_of_an_http_basic_pair() {
        let id = "3MVG9client.id";
        let secret = "client-secret-1";
        let basic = STANDARD_NO_PAD.encode(format!("{id}:{secret}"));
        assert_eq!(
            scrubbed(
                &format!("got Authorization: Basic {basic}=="),
                &[id, secret]
            ),
            "got Authorization: Basic [redacted]=="
        );
        // Also as the secret alone.
        let alone = STANDARD_NO_PAD.encode(secret);
        assert_eq!(scrubbed(&format!("k={alone}"), &[secret]), "k=[redacted]");
    }

    #[test]
    fn the_beginning_of_a_secret_where_a_text_was_cut() {
        // Cut after 20 of the secret's 30 characters, as body_excerpt and
        // bounded_text cut (with an ellipsis), or bare.
        let cut = &TOKEN[..20];
        assert_eq!(
            scrubbed(&format!("body: x {cut}…"), &[TOKEN]),
            "body: x [redacted]…"
        );
        assert_eq!(
            scrubbed(&format!("body: x {cut}"), &[TOKEN]),
            "body: x [redacted]"
        );
        assert_eq!(
            scrubbed(&format!("x {cut}... (endpoint)"), &[TOKEN]),
            "x [redacted]... (endpoint)"
        );
        // Cut inside an escape.
        assert_eq!(
            scrubbed("t=pat-na1-ab%2Fcd%2Bef%3", &[TOKEN]),
            "t=[redacted]"
        );
        // Not at a cut: a prefix followed by more text is another string.
        assert_eq!(
            scrubbed(&format!("{cut} and more"), &[TOKEN]),
            format!("{cut} and more")
        );
        // Too little of it: under half, or under 8 characters.
        let little = &TOKEN[..12];
        assert_eq!(
            scrubbed(&format!("x {little}…"), &[TOKEN]),
            format!("x {little}…")
        );
        assert_eq!(scrubbed("x abcdefg…", &["abcdefghij"]), "x abcdefg…");
        assert_eq!(scrubbed("x abcdefgh…", &["abcdefghij"]), "x [redacted]…");
    }

    #[test]
    fn a_body_excerpt_cut_inside_a_secret_shows_none_of_it() {
        // The HTTP layer bounds a body excerpt before the extension scrubs
        // it: the secret straddles the cut.
        let body = format!("{}token {TOKEN} was refused", "x".repeat(272));
        let excerpt = crate::http::body_excerpt(body.as_bytes());
        assert!(excerpt.contains(&TOKEN[..22]), "{excerpt}");
        assert!(!excerpt.contains(TOKEN));
        let out = scrub(&format!("body begins: {excerpt}"), &[TOKEN]);
        assert!(out.ends_with("token [redacted]…"), "{out}");
        assert!(!out.contains(&TOKEN[..8]), "{out}");
        // And through bounded_text, as runs.error is bounded.
        let bounded = crate::error::bounded_text(&body, 300);
        assert!(scrub(&bounded, &[TOKEN]).ends_with("token [redacted]…"));
    }
}
