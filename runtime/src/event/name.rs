//! The grammar of event names and patterns.
//!
//! This file is shared, through `#[path]`, by the runtime (names given to `Events::on` at run
//! time) and by `switchboard-macros` (names given to `#[on]`/`#[once]`, checked at compile time),
//! so both accept exactly the same language. It depends on `std` only.
//!
//! A name is one or more segments separated by `.` or `:`; a segment is one or more ASCII
//! letters, digits, `_` or `-`. A pattern may also use the wildcard segments `*` (exactly one
//! segment) and `**` (zero or more segments).

use std::ops::Range;

/// Why a name or pattern was refused, with the byte range of the offending part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NameError {
    pub(crate) range: Range<usize>,
    pub(crate) message: String,
    pub(crate) help: &'static str,
}

const HELP_CHARS: &str =
    "names are segments of ASCII letters, digits, `_` and `-`, separated by `.` or `:`";
const HELP_WILDCARD: &str =
    "`*` matches exactly one segment and `**` any number; each must be a whole segment";

/// What kind of text to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// An event name or a listener pattern (wildcards allowed).
    Pattern,
    /// A namespace: a name without wildcards.
    Namespace,
}

/// Checks `text`; returns whether it contains a wildcard segment.
pub(crate) fn check(text: &str, kind: Kind) -> Result<bool, NameError> {
    let what = match kind {
        Kind::Pattern => "event name",
        Kind::Namespace => "namespace",
    };
    if text.is_empty() {
        return Err(NameError {
            range: 0..0,
            message: format!("{what} is empty"),
            help: HELP_CHARS,
        });
    }
    let mut wildcard = false;
    let mut start = 0;
    for (end, c) in text.char_indices().chain([(text.len(), '.')]) {
        if !is_delimiter(c) {
            if !(c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '*') {
                let message = if c.is_whitespace() {
                    format!("{what} contains whitespace")
                } else {
                    format!("invalid character `{c}` in {what}")
                };
                return Err(NameError {
                    range: end..end + c.len_utf8(),
                    message,
                    help: HELP_CHARS,
                });
            }
            continue;
        }
        let segment = &text[start..end];
        if segment.is_empty() {
            // Point at the delimiter that has no segment before it (or the last one).
            let at = if end == text.len() { end - 1 } else { end };
            return Err(NameError {
                range: at..at + 1,
                message: format!("empty segment in {what} `{text}`"),
                help: HELP_CHARS,
            });
        }
        if segment.contains('*') {
            if kind == Kind::Namespace {
                return Err(NameError {
                    range: start..end,
                    message: format!("a namespace cannot contain the wildcard `{segment}`"),
                    help: "wildcards belong in the event name, e.g. `namespace = \"chat\"` with `#[on(\"**\")]`",
                });
            }
            if segment != "*" && segment != "**" {
                return Err(NameError {
                    range: start..end,
                    message: format!("malformed wildcard `{segment}`"),
                    help: HELP_WILDCARD,
                });
            }
            wildcard = true;
        }
        start = end + 1;
    }
    Ok(wildcard)
}

fn is_delimiter(c: char) -> bool {
    c == '.' || c == ':'
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
        if is_delimiter(c) {
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
pub(crate) struct Pattern {
    text: Box<str>,
}

impl Pattern {
    /// `text` must have passed [`check`].
    pub(crate) fn new(text: &str) -> Self {
        Self { text: text.into() }
    }

    /// Whether `name` is matched: `*` is exactly one segment, `**` zero or more, and the
    /// delimiters of the pattern must be those of the name.
    pub(crate) fn matches(&self, name: &str) -> bool {
        let pattern = tokens(&self.text);
        let name = tokens(name);
        let mut failed = std::collections::HashSet::new();
        match_from(&pattern, &name, 0, 0, None, &mut failed)
    }
}

/// `inherited`: when a `**` matched no segment, the next pattern token takes its delimiter
/// (so `a.**.b` matches `a.b`, and `websocket:**` matches `websocket`).
fn match_from(
    p: &[Token<'_>],
    n: &[Token<'_>],
    i: usize,
    j: usize,
    inherited: Option<Option<char>>,
    failed: &mut std::collections::HashSet<(usize, usize, Option<Option<char>>)>,
) -> bool {
    if failed.contains(&(i, j, inherited)) {
        return false;
    }
    let result = (|| {
        let Some(token) = p.get(i) else {
            return j == n.len();
        };
        let delimiter = inherited.unwrap_or(token.delimiter);
        if token.text == "**" {
            // Zero segments: the next token inherits this delimiter.
            if match_from(p, n, i + 1, j, Some(delimiter), failed) {
                return true;
            }
            // One or more: the first matched segment must carry this delimiter.
            if n.get(j).is_none_or(|t| t.delimiter != delimiter) {
                return false;
            }
            (j + 1..=n.len()).any(|k| match_from(p, n, i + 1, k, None, failed))
        } else {
            let Some(segment) = n.get(j) else {
                return false;
            };
            segment.delimiter == delimiter
                && (token.text == "*" || token.text == segment.text)
                && match_from(p, n, i + 1, j + 1, None, failed)
        }
    })();
    if !result {
        failed.insert((i, j, inherited));
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, name: &str) -> bool {
        assert!(
            check(pattern, Kind::Pattern).unwrap(),
            "{pattern} has no wildcard"
        );
        Pattern::new(pattern).matches(name)
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
        let e = check("", Kind::Pattern).unwrap_err();
        assert_eq!(e.message, "event name is empty");
        let e = check("room message", Kind::Pattern).unwrap_err();
        assert_eq!(
            (e.range, e.message.as_str()),
            (4..5, "event name contains whitespace")
        );
        let e = check("room/message", Kind::Pattern).unwrap_err();
        assert_eq!(
            (e.range, e.message.as_str()),
            (4..5, "invalid character `/` in event name")
        );
        let e = check("a..b", Kind::Pattern).unwrap_err();
        assert_eq!(e.range, 2..3);
        let e = check("a.", Kind::Pattern).unwrap_err();
        assert_eq!(e.range, 1..2);
        let e = check(".a", Kind::Pattern).unwrap_err();
        assert_eq!(e.range, 0..1);
        let e = check("x.a**b", Kind::Pattern).unwrap_err();
        assert_eq!(
            (e.range, e.message.as_str()),
            (2..6, "malformed wildcard `a**b`")
        );
        let e = check("***", Kind::Pattern).unwrap_err();
        assert_eq!(e.message, "malformed wildcard `***`");
        let e = check("a.*", Kind::Namespace).unwrap_err();
        assert_eq!(e.range, 2..3);
        assert_eq!(
            check("", Kind::Namespace).unwrap_err().message,
            "namespace is empty"
        );
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
}
