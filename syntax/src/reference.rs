//! A brute-force reference for the wildcard matcher of [`event_name`](crate::event_name), for
//! property tests and fuzzing only: slow, and obviously right.
//!
//! Every `**` of a pattern is replaced by each possible number of single-segment wildcards
//! (zero to the length of the name), the first carrying the delimiter of the `**`, the others
//! any delimiter; a `**` replaced by none hands its delimiter to the token after it. A name
//! matches if one of those wildcard-free expansions matches it segment by segment.

/// What may stand in front of a pattern token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delimiter {
    /// Nothing: the token is the name's first segment.
    First,
    /// This delimiter.
    Exactly(char),
    /// Either delimiter (a segment inside a `**`).
    Any,
}

/// A pattern token after expansion: a segment (or `*`), and what stands in front of it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Part {
    delimiter: Delimiter,
    text: String,
}

fn split(text: &str) -> Vec<(Option<char>, String)> {
    let mut out = Vec::new();
    let mut delimiter = None;
    let mut segment = String::new();
    for c in text.chars() {
        if c == '.' || c == ':' {
            out.push((delimiter, std::mem::take(&mut segment)));
            delimiter = Some(c);
        } else {
            segment.push(c);
        }
    }
    out.push((delimiter, segment));
    out
}

/// Whether `name` matches `pattern` (both must have passed the grammar's check, `name` without
/// wildcards).
pub fn matches(pattern: &str, name: &str) -> bool {
    let name = split(name);
    let pattern: Vec<Part> = split(pattern)
        .into_iter()
        .map(|(delimiter, text)| Part {
            delimiter: delimiter.map_or(Delimiter::First, Delimiter::Exactly),
            text,
        })
        .collect();
    expansions(&pattern, name.len())
        .iter()
        .any(|expansion| segment_by_segment(expansion, &name))
}

/// Every pattern without `**` that `pattern` stands for, of exactly `len` tokens (a name of
/// `len` segments can match no other).
fn expansions(pattern: &[Part], len: usize) -> Vec<Vec<Part>> {
    let Some(at) = pattern.iter().position(|p| p.text == "**") else {
        return if pattern.len() == len {
            vec![pattern.to_vec()]
        } else {
            Vec::new()
        };
    };
    let fixed = pattern.iter().filter(|p| p.text != "**").count();
    if fixed > len {
        return Vec::new();
    }
    let max = len - fixed;
    let (before, rest) = pattern.split_at(at);
    let star = &rest[0];
    let after = &rest[1..];
    let mut out = Vec::new();
    for count in 0..=max {
        let mut expanded = before.to_vec();
        if count == 0 {
            let mut after = after.to_vec();
            if let Some(next) = after.first_mut() {
                next.delimiter = star.delimiter;
            }
            expanded.extend(after);
        } else {
            expanded.push(Part {
                delimiter: star.delimiter,
                text: "*".into(),
            });
            for _ in 1..count {
                expanded.push(Part {
                    delimiter: Delimiter::Any,
                    text: "*".into(),
                });
            }
            expanded.extend(after.iter().cloned());
        }
        out.extend(expansions(&expanded, len));
    }
    out
}

fn segment_by_segment(pattern: &[Part], name: &[(Option<char>, String)]) -> bool {
    pattern.len() == name.len()
        && pattern.iter().zip(name).all(|(p, (delimiter, text))| {
            let delimiter_ok = match p.delimiter {
                Delimiter::First => delimiter.is_none(),
                Delimiter::Exactly(c) => *delimiter == Some(c),
                Delimiter::Any => delimiter.is_some(),
            };
            delimiter_ok && (p.text == "*" || p.text == *text)
        })
}
