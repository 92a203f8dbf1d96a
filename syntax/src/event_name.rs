//! Event names, namespaces and listener patterns.
//!
//! A name is one or more segments separated by `.` or `:`; a segment is one or more ASCII
//! letters, digits, `_` or `-`. A pattern may also use the wildcard segments `*` (exactly one
//! segment) and `**` (zero or more segments). A namespace is a name without wildcards.
//!
//! [`check`] is a `const fn`, so a name held in a `const` can be checked at compile time.

use std::collections::HashSet;
use std::ops::Range;

/// What kind of text to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An event name or a listener pattern (wildcards allowed).
    Pattern,
    /// A namespace: a name without wildcards.
    Namespace,
}

impl Kind {
    const fn what(self) -> &'static str {
        match self {
            Kind::Pattern => "event name",
            Kind::Namespace => "namespace",
        }
    }
}

/// What is wrong with a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// The text is empty.
    Empty,
    /// A character outside the grammar (whitespace included).
    InvalidCharacter,
    /// Two delimiters in a row, or one at either end.
    EmptySegment,
    /// A wildcard in a namespace.
    WildcardInNamespace,
    /// `*` inside a segment, or `***`.
    MalformedWildcard,
}

/// Why a name or pattern was refused, and the byte range of the offending part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameError {
    /// The bytes to blame.
    pub range: Range<usize>,
    /// What is wrong.
    pub problem: Problem,
    /// What was checked.
    pub kind: Kind,
}

const HELP_CHARS: &str =
    "names are segments of ASCII letters, digits, `_` and `-`, separated by `.` or `:`";
const HELP_WILDCARD: &str =
    "`*` matches exactly one segment and `**` any number; each must be a whole segment";
const HELP_NAMESPACE: &str =
    "wildcards belong in the event name, e.g. `namespace = \"chat\"` with `#[on(\"**\")]`";

impl NameError {
    /// The message, in rustc's voice, quoting the offending part of `text` (the text that was
    /// checked).
    pub fn message(&self, text: &str) -> String {
        let what = self.kind.what();
        let part = text.get(self.range.clone()).unwrap_or("");
        match self.problem {
            Problem::Empty => format!("{what} is empty"),
            Problem::InvalidCharacter => match part.chars().next() {
                Some(c) if c.is_whitespace() => format!("{what} contains whitespace"),
                Some(c) => format!("invalid character `{}` in {what}", c.escape_debug()),
                None => format!("invalid character in {what}"),
            },
            Problem::EmptySegment => format!("empty segment in {what} `{text}`"),
            Problem::WildcardInNamespace => {
                format!("a namespace cannot contain the wildcard `{part}`")
            }
            Problem::MalformedWildcard => format!("malformed wildcard `{part}`"),
        }
    }

    /// A short message that needs no allocation (for compile-time checks of constants).
    pub const fn summary(&self) -> &'static str {
        match (self.problem, self.kind) {
            (Problem::Empty, Kind::Pattern) => "invalid event name: it is empty",
            (Problem::Empty, Kind::Namespace) => "invalid namespace: it is empty",
            (Problem::InvalidCharacter, _) => {
                "invalid event name: a character is not an ASCII letter, digit, `_`, `-`, `.` or `:`"
            }
            (Problem::EmptySegment, _) => {
                "invalid event name: an empty segment (two delimiters in a row, or one at an end)"
            }
            (Problem::WildcardInNamespace, _) => "invalid namespace: it contains a wildcard",
            (Problem::MalformedWildcard, _) => {
                "invalid event name: `*` and `**` must each be a whole segment"
            }
        }
    }

    /// A `help` line: the correct form.
    pub const fn help(&self) -> &'static str {
        match self.problem {
            Problem::Empty | Problem::InvalidCharacter | Problem::EmptySegment => HELP_CHARS,
            Problem::WildcardInNamespace => HELP_NAMESPACE,
            Problem::MalformedWildcard => HELP_WILDCARD,
        }
    }
}

/// What a byte is to the grammar.
const OTHER: u8 = 0;
const SEGMENT: u8 = 1;
const DELIMITER: u8 = 2;
const STAR: u8 = 3;

/// The class of every byte (ASCII letters, digits, `_` and `-` are segment bytes).
const CLASSES: [u8; 256] = {
    let mut classes = [OTHER; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        classes[b] = if c.is_ascii_alphanumeric() || c == b'_' || c == b'-' {
            SEGMENT
        } else if c == b'.' || c == b':' {
            DELIMITER
        } else if c == b'*' {
            STAR
        } else {
            OTHER
        };
        b += 1;
    }
    classes
};

/// The length of the UTF-8 sequence that starts with `b`.
const fn utf8_len(b: u8) -> usize {
    if b < 0x80 {
        1
    } else if b < 0xE0 {
        2
    } else if b < 0xF0 {
        3
    } else {
        4
    }
}

/// Checks `text`; returns whether it contains a wildcard segment. One pass over the bytes.
#[inline]
pub const fn check(text: &str, kind: Kind) -> Result<bool, NameError> {
    const fn error(start: usize, end: usize, problem: Problem, kind: Kind) -> NameError {
        NameError {
            range: start..end,
            problem,
            kind,
        }
    }
    let bytes = text.as_bytes();
    if bytes.is_empty() {
        return Err(error(0, 0, Problem::Empty, kind));
    }
    let mut wildcard = false;
    // The current segment: where it starts, and how many `*` it holds.
    let mut start = 0;
    let mut stars = 0;
    let mut i = 0;
    loop {
        // The bytes of one segment.
        while i < bytes.len() && CLASSES[bytes[i] as usize] == SEGMENT {
            i += 1;
        }
        if i < bytes.len() {
            match CLASSES[bytes[i] as usize] {
                STAR => {
                    stars += 1;
                    i += 1;
                    continue;
                }
                DELIMITER => {}
                _ => {
                    let end = i + utf8_len(bytes[i]);
                    return Err(error(i, end, Problem::InvalidCharacter, kind));
                }
            }
        }
        // A delimiter (or the end) closes the segment `start..i`.
        if start == i {
            // Point at the delimiter that has no segment before it (or the last one).
            let at = if i == bytes.len() { i - 1 } else { i };
            return Err(error(at, at + 1, Problem::EmptySegment, kind));
        }
        if stars > 0 {
            if matches!(kind, Kind::Namespace) {
                return Err(error(start, i, Problem::WildcardInNamespace, kind));
            }
            if stars != i - start || stars > 2 {
                return Err(error(start, i, Problem::MalformedWildcard, kind));
            }
            wildcard = true;
        }
        if i == bytes.len() {
            return Ok(wildcard);
        }
        i += 1;
        start = i;
        stars = 0;
    }
}

/// One segment of a name or pattern, with the delimiter in front of it (`None` for the first).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Token<'a> {
    delimiter: Option<char>,
    text: &'a str,
}

fn tokens(text: &str) -> Vec<Token<'_>> {
    let mut out = Vec::new();
    let mut delimiter = None;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if c == '.' || c == ':' {
            out.push(Token {
                delimiter,
                text: &text[start..i],
            });
            delimiter = Some(c);
            start = i + 1;
        }
    }
    out.push(Token {
        delimiter,
        text: &text[start..],
    });
    out
}

/// A checked pattern that contains at least one wildcard.
#[derive(Debug, Clone)]
pub struct Pattern {
    text: Box<str>,
}

impl Pattern {
    /// `text` must have passed [`check`].
    pub fn new(text: &str) -> Self {
        Self { text: text.into() }
    }

    /// Whether `name` is matched: `*` is exactly one segment, `**` zero or more, and the
    /// delimiters of the pattern must be those of the name. A `**` that matches no segment
    /// gives its delimiter to the next token, so `a.**.b` matches `a.b` and `websocket:**`
    /// matches `websocket`.
    pub fn matches(&self, name: &str) -> bool {
        let pattern = tokens(&self.text);
        let name = tokens(name);
        let mut failed = HashSet::new();
        match_from(&pattern, &name, 0, 0, None, &mut failed)
    }
}

type Failed = HashSet<(usize, usize, Option<Option<char>>)>;

/// `inherited`: the delimiter a `**` that matched no segment hands to the next token.
fn match_from(
    p: &[Token<'_>],
    n: &[Token<'_>],
    i: usize,
    j: usize,
    inherited: Option<Option<char>>,
    failed: &mut Failed,
) -> bool {
    if failed.contains(&(i, j, inherited)) {
        return false;
    }
    let matched = match p.get(i) {
        None => j == n.len(),
        Some(token) => {
            let delimiter = inherited.unwrap_or(token.delimiter);
            if token.text == "**" {
                // Zero segments (the next token inherits this delimiter), or one or more, the
                // first of which must carry this delimiter.
                match_from(p, n, i + 1, j, Some(delimiter), failed)
                    || (n.get(j).is_some_and(|t| t.delimiter == delimiter)
                        && (j + 1..=n.len()).any(|k| match_from(p, n, i + 1, k, None, failed)))
            } else {
                n.get(j).is_some_and(|segment| {
                    segment.delimiter == delimiter
                        && (token.text == "*" || token.text == segment.text)
                }) && match_from(p, n, i + 1, j + 1, None, failed)
            }
        }
    };
    if !matched {
        failed.insert((i, j, inherited));
    }
    matched
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The matcher's answer, which the brute-force reference must give too.
    fn matches(pattern: &str, name: &str) -> bool {
        assert!(
            check(pattern, Kind::Pattern).unwrap(),
            "{pattern} has no wildcard"
        );
        let answer = Pattern::new(pattern).matches(name);
        // The brute force is exponential in the number of `**`.
        if pattern.matches("**").count() <= 4 {
            assert_eq!(
                crate::reference::matches(pattern, name),
                answer,
                "{pattern} on {name}: the reference disagrees"
            );
        }
        answer
    }

    fn refused(text: &str, kind: Kind) -> (Range<usize>, String) {
        let e = check(text, kind).unwrap_err();
        let message = e.message(text);
        (e.range, message)
    }

    #[test]
    fn accepts_names_and_patterns() {
        assert_eq!(check("room.message", Kind::Pattern), Ok(false));
        assert_eq!(check("user:auth:login", Kind::Pattern), Ok(false));
        assert_eq!(check("a-b_c.D9", Kind::Pattern), Ok(false));
        assert_eq!(check("chat.*", Kind::Pattern), Ok(true));
        assert_eq!(check("**", Kind::Pattern), Ok(true));
        assert_eq!(check("websocket", Kind::Namespace), Ok(false));
    }

    #[test]
    fn refuses_bad_names_with_ranges() {
        assert_eq!(refused("", Kind::Pattern).1, "event name is empty");
        assert_eq!(
            refused("room message", Kind::Pattern),
            (4..5, "event name contains whitespace".into())
        );
        assert_eq!(
            refused("room/message", Kind::Pattern),
            (4..5, "invalid character `/` in event name".into())
        );
        assert_eq!(
            refused("salle.é", Kind::Pattern),
            (6..8, "invalid character `é` in event name".into())
        );
        assert_eq!(
            refused("a\u{3000}b", Kind::Pattern),
            (1..4, "event name contains whitespace".into())
        );
        assert_eq!(refused("a..b", Kind::Pattern).0, 2..3);
        assert_eq!(refused("a.", Kind::Pattern).0, 1..2);
        assert_eq!(refused(".a", Kind::Pattern).0, 0..1);
        assert_eq!(
            refused("x.a**b", Kind::Pattern),
            (2..6, "malformed wildcard `a**b`".into())
        );
        assert_eq!(refused("***", Kind::Pattern).1, "malformed wildcard `***`");
        assert_eq!(
            refused("a.*", Kind::Namespace),
            (2..3, "a namespace cannot contain the wildcard `*`".into())
        );
        assert_eq!(refused("", Kind::Namespace).1, "namespace is empty");
    }

    #[test]
    fn works_in_const_context() {
        const OK: Result<bool, NameError> = check("switchboard:ws.error", Kind::Pattern);
        const BAD: Result<bool, NameError> = check("a b", Kind::Pattern);
        assert_eq!(OK, Ok(false));
        assert_eq!(BAD.unwrap_err().problem, Problem::InvalidCharacter);
    }

    #[test]
    fn wildcard_semantics() {
        assert!(matches("chat.*", "chat.message"));
        assert!(!matches("chat.*", "chat.message.edit"));
        assert!(!matches("chat.*", "chat"));
        assert!(!matches("chat.*", "chat:message"), "delimiters must match");
        assert!(matches("chat.**", "chat.message.edit"));
        assert!(matches("chat.**", "chat.message:edit"));
        assert!(matches("websocket:**", "websocket"));
        assert!(matches("websocket:**", "websocket:message.received"));
        assert!(!matches("websocket:**", "websocket.message"));
        assert!(!matches("websocket:**", "websocketx:a"));
        assert!(matches("**", "anything.at:all"));
        assert!(matches("**", "x"));
        assert!(matches("a.**.b", "a.b"));
        assert!(matches("a.**.b", "a.x.y.b"));
        assert!(!matches("a.**.b", "a.x.y.c"));
        assert!(matches("*.created", "user.created"));
        assert!(!matches("*.created", "user:created"));
        assert!(matches("**:login", "login"));
        assert!(matches("**:login", "user:auth:login"));
        assert!(matches("*:*:*", "user:auth:login"));
        assert!(!matches(
            "**.**.**.**.**.**.**.**.**.z",
            "a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.y"
        ));
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::{Kind, Pattern, check};
        use crate::reference;

        /// Names or patterns of one to `max` segments from `segments`, joined by `.` or `:`.
        fn joined(segments: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
            proptest::collection::vec((prop::sample::select(segments), prop::bool::ANY), 1..=max)
                .prop_map(|parts| {
                    let mut text = String::new();
                    for (i, (segment, colon)) in parts.into_iter().enumerate() {
                        if i > 0 {
                            text.push(if colon { ':' } else { '.' });
                        }
                        text.push_str(segment);
                    }
                    text
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig {
                cases: 4000,
                max_global_rejects: 100_000,
                ..ProptestConfig::default()
            })]

            #[test]
            fn the_matcher_agrees_with_brute_force(
                pattern in joined(&["a", "b", "ab", "*", "**"], 5),
                name in joined(&["a", "b", "ab"], 6),
            ) {
                prop_assume!(check(&pattern, Kind::Pattern) == Ok(true));
                prop_assert_eq!(
                    Pattern::new(&pattern).matches(&name),
                    reference::matches(&pattern, &name),
                    "pattern {} name {}", pattern, name
                );
            }

            #[test]
            fn any_text_is_checked_without_panicking(text in ".{0,40}") {
                let _ = check(&text, Kind::Pattern);
                let _ = check(&text, Kind::Namespace);
                if let Err(e) = check(&text, Kind::Pattern) {
                    prop_assert!(text.get(e.range.clone()).is_some(), "the range is on char boundaries");
                    prop_assert!(!e.message(&text).is_empty());
                }
            }
        }
    }
}
