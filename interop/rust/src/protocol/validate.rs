//! Field checks for the definitions in `protocol/schemas/common.schema.json`.
//!
//! The checks are written out by hand rather than run through a JSON Schema engine: the schemas
//! are small and fixed, and a schema engine would more than double the crate's build. Each
//! function names the schema definition it implements, and the vectors test them.

use std::time::SystemTime;

use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A JSON object as received.
pub(crate) type Object = Map<String, Value>;

/// Why a field failed its check; becomes the error message of a `bad_request` reply.
pub(crate) type Invalid = String;

/// `$defs/name`: task ids, task types and queue names, one NATS subject token.
pub(crate) fn is_name(s: &str) -> bool {
    (1..=256).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'-'))
}

/// `$defs/token`: an attempt token, 8 to 64 subject-safe characters.
pub(crate) fn is_token(s: &str) -> bool {
    (8..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

/// `$defs/subject`: a NATS subject without wildcards and without empty tokens.
pub(crate) fn is_subject(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|token| {
            !token.is_empty()
                && !token
                    .chars()
                    .any(|c| c.is_whitespace() || c == '*' || c == '>')
        })
}

/// The `traceparent` pattern of `task_request.schema.json` (W3C trace context, version 00 form).
pub(crate) fn is_traceparent(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    let lower_hex = |p: &str, n: usize| {
        p.len() == n
            && p.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    parts.len() == 4
        && lower_hex(parts[0], 2)
        && lower_hex(parts[1], 32)
        && lower_hex(parts[2], 16)
        && lower_hex(parts[3], 2)
}

/// The base64 pattern the schemas give for encoded payloads and results: the standard alphabet
/// with up to two padding characters at the end. Decoding checks the rest (length, padding).
pub(crate) fn is_base64_text(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    s.len() - body.len() <= 2
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// `$defs/timestamp`: RFC 3339 with a `T`, seconds, optional fraction, and `Z` or an offset.
///
/// The schema's pattern is checked first because RFC 3339 parsers accept forms the schema does
/// not (lowercase `t`/`z`, a space as separator); the parse then rejects impossible dates.
pub(crate) fn parse_timestamp(s: &str) -> Option<SystemTime> {
    if !matches_timestamp_pattern(s.as_bytes()) {
        return None;
    }
    OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .map(SystemTime::from)
}

fn matches_timestamp_pattern(s: &[u8]) -> bool {
    // YYYY-MM-DDTHH:MM:SS
    let shape = b"dddd-dd-ddTdd:dd:dd";
    if s.len() < shape.len() {
        return false;
    }
    let (head, mut rest) = s.split_at(shape.len());
    let head_ok = head.iter().zip(shape).all(|(c, want)| match want {
        b'd' => c.is_ascii_digit(),
        _ => c == want,
    });
    // Seconds 00 to 59: the RFC 3339 parser would take a leap second 60, the schema does not.
    if !head_ok || &head[17..19] > b"59".as_slice() {
        return false;
    }
    if let Some(fraction) = rest.strip_prefix(b".") {
        let digits = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=9).contains(&digits) {
            return false;
        }
        rest = &fraction[digits..];
    }
    match rest {
        b"Z" => true,
        [sign, h1, h2, b':', m1, m2] => {
            matches!(sign, b'+' | b'-')
                && [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit())
                && [*h1, *h2] <= *b"23"
                && [*m1, *m2] <= *b"59"
        }
        _ => false,
    }
}

/// A required member.
pub(crate) fn required<'a>(obj: &'a Object, key: &str) -> Result<&'a Value, Invalid> {
    obj.get(key).ok_or_else(|| format!("{key} is missing"))
}

/// A required string member.
pub(crate) fn string<'a>(obj: &'a Object, key: &str) -> Result<&'a str, Invalid> {
    required(obj, key)?
        .as_str()
        .ok_or_else(|| format!("{key} must be a string"))
}

/// A required string member that passes `check`; `what` names the definition in the message.
pub(crate) fn string_matching<'a>(
    obj: &'a Object,
    key: &str,
    check: fn(&str) -> bool,
    what: &str,
) -> Result<&'a str, Invalid> {
    let s = string(obj, key)?;
    if check(s) {
        Ok(s)
    } else {
        Err(format!("{key} must be {what}"))
    }
}

/// A non-negative integer as JSON Schema counts integers: `1` and `1.0` alike (a number with
/// a zero fractional part), which JSON libraries that keep floats apart would refuse.
pub(crate) fn as_integer(value: &Value) -> Option<u64> {
    value.as_u64().or_else(|| {
        let f = value.as_f64()?;
        // 2^64 as f64; below it every integral f64 converts exactly.
        (f.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&f)).then_some(f as u64)
    })
}

/// A required integer member of at least `min`.
pub(crate) fn integer_at_least(obj: &Object, key: &str, min: u64) -> Result<u64, Invalid> {
    match as_integer(required(obj, key)?) {
        Some(n) if n >= min => Ok(n),
        _ => Err(format!("{key} must be an integer >= {min}")),
    }
}

/// A required timestamp member.
pub(crate) fn timestamp(obj: &Object, key: &str) -> Result<SystemTime, Invalid> {
    parse_timestamp(string(obj, key)?).ok_or_else(|| format!("{key} must be an RFC 3339 timestamp"))
}

/// A string whose length in characters, as JSON Schema counts it, lies in `range`.
pub(crate) fn char_len_in(s: &str, range: std::ops::RangeInclusive<usize>) -> bool {
    range.contains(&s.chars().count())
}

/// `s` cut to at most `max` characters, so that a message stays within a schema's `maxLength`.
pub(crate) fn truncate_chars(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((end, _)) => &s[..end],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_single_subject_tokens() {
        assert!(is_name("email:new"));
        assert!(is_name("a_b-C9"));
        assert!(!is_name(""));
        assert!(!is_name("my.task.id"));
        assert!(!is_name(&"x".repeat(257)));
    }

    #[test]
    fn integers_are_counted_as_json_schema_does() {
        assert_eq!(as_integer(&serde_json::json!(1)), Some(1));
        assert_eq!(as_integer(&serde_json::json!(1.0)), Some(1));
        assert_eq!(as_integer(&serde_json::json!(1.5)), None);
        assert_eq!(as_integer(&serde_json::json!(-1)), None);
        assert_eq!(as_integer(&serde_json::json!("1")), None);
    }

    #[test]
    fn subjects_have_no_wildcards_or_empty_tokens() {
        assert!(is_subject("jetbridge.hb.d1.abc"));
        assert!(!is_subject("jetbridge.*"));
        assert!(!is_subject("a..b"));
        assert!(!is_subject("a b"));
        assert!(!is_subject(""));
    }

    #[test]
    fn timestamps_follow_the_schema_pattern() {
        assert!(parse_timestamp("2026-11-24T10:00:00.123Z").is_some());
        assert!(parse_timestamp("2026-11-24T10:00:00Z").is_some());
        assert!(parse_timestamp("2026-11-24T12:00:00.123456789+02:00").is_some());
        assert!(parse_timestamp("2026-11-24t10:00:00Z").is_none());
        assert!(parse_timestamp("2026-11-24 10:00:00Z").is_none());
        assert!(parse_timestamp("2026-13-24T10:00:00Z").is_none());
        assert!(parse_timestamp("tomorrow").is_none());
    }

    #[test]
    fn offsets_are_applied() {
        assert_eq!(
            parse_timestamp("2026-11-24T12:00:00+02:00"),
            parse_timestamp("2026-11-24T10:00:00.000Z")
        );
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate_chars("héllo", 2), "hé");
        assert_eq!(truncate_chars("ab", 5), "ab");
    }
}
