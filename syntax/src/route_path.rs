//! Route path templates: `/chat/{room}`, `/items/{id:int}`, `/files/{rest:path}`.
//!
//! A `&str` goes in; segments, or an error with the byte range to blame, come out. The
//! [`Converter`] of each parameter also decides, at run time, which values it accepts.

use std::ops::Range;

/// Nexios' path converters: which values a `{name:converter}` segment accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Converter {
    /// `{name}` or `{name:str}`: any non-empty segment.
    Str,
    /// `{name:int}`: digits.
    Int,
    /// `{name:float}`: digits, optionally a dot and digits.
    Float,
    /// `{name:path}`: the rest of the path, slashes included.
    Path,
    /// `{name:uuid}`: a lowercase hyphenated UUID.
    Uuid,
    /// `{name:slug}`: letters, digits, `-` and `_`.
    Slug,
}

impl Converter {
    /// The converter named `name` in a template (`int`, `slug`, ..).
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "str" => Converter::Str,
            "int" => Converter::Int,
            "float" => Converter::Float,
            "path" => Converter::Path,
            "uuid" => Converter::Uuid,
            "slug" => Converter::Slug,
            _ => return None,
        })
    }

    /// The variant's name (`Int`), for generated code.
    pub fn variant(self) -> &'static str {
        match self {
            Converter::Str => "Str",
            Converter::Int => "Int",
            Converter::Float => "Float",
            Converter::Path => "Path",
            Converter::Uuid => "Uuid",
            Converter::Slug => "Slug",
        }
    }

    /// Whether `value` (a percent-decoded path segment, or the rest of the path for `path`)
    /// matches.
    pub fn accepts(self, value: &str) -> bool {
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        match self {
            Converter::Str | Converter::Path => !value.is_empty(),
            Converter::Int => digits(value),
            Converter::Float => match value.split_once('.') {
                Some((whole, fraction)) => digits(whole) && digits(fraction),
                None => digits(value),
            },
            Converter::Slug => {
                !value.is_empty()
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            }
            Converter::Uuid => {
                let mut groups = value.split('-');
                [8, 4, 4, 4, 12].iter().all(|&len| {
                    groups.next().is_some_and(|g| {
                        g.len() == len
                            && g.bytes()
                                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                    })
                }) && groups.next().is_none()
            }
        }
    }
}

/// One segment of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment<'a> {
    /// Literal text.
    Static(&'a str),
    /// A parameter.
    Param {
        /// Its name.
        name: &'a str,
        /// What values it accepts.
        converter: Converter,
    },
}

/// Why a template was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathError {
    /// The bytes of the template to blame.
    pub range: Range<usize>,
    /// The message, in rustc's voice.
    pub message: String,
    /// A `help` line with the correct form, where there is one.
    pub help: Option<&'static str>,
}

fn error(range: Range<usize>, message: impl Into<String>, help: Option<&'static str>) -> PathError {
    PathError {
        range,
        message: message.into(),
        help,
    }
}

/// The most path parameters a route may have (the router axum uses cannot take more than 25).
pub const MAX_PARAMS: usize = 16;

const CONVERTERS: &str = "valid converters are `str`, `int`, `float`, `path`, `uuid` and `slug`";

/// Parses a template; the first mistake is reported.
pub fn parse(template: &str) -> Result<Vec<Segment<'_>>, PathError> {
    if template.is_empty() {
        return Err(error(
            0..0,
            "the route path is empty",
            Some("write a path starting with `/`, such as `/chat/{room}`"),
        ));
    }
    if !template.starts_with('/') {
        let first = template.chars().next().map_or(1, char::len_utf8);
        return Err(error(
            0..first,
            "the route path must start with `/`",
            Some("write `/` first, such as `/chat/{room}`"),
        ));
    }
    let mut segments: Vec<Segment<'_>> = Vec::new();
    let mut path_param: Option<(Range<usize>, &str)> = None;
    let mut start = 1;
    let parts: Vec<&str> = template[1..].split('/').collect();
    let count = parts.len();
    for (i, part) in parts.into_iter().enumerate() {
        let range = start..start + part.len();
        let last = i + 1 == count;
        if part.is_empty() && !last {
            return Err(error(
                start - 1..start + 1,
                "empty segment in the route path",
                Some("remove the doubled `/`"),
            ));
        }
        let segment = parse_segment(part, range.clone())?;
        if let Segment::Param { name, .. } = &segment
            && segments
                .iter()
                .any(|s| matches!(s, Segment::Param { name: n, .. } if n == name))
        {
            return Err(error(
                range,
                format!("duplicate parameter `{name}`"),
                Some("give each path parameter its own name"),
            ));
        }
        if let Some((range, name)) = &path_param {
            return Err(error(
                range.clone(),
                format!("`{{{name}:path}}` must be the last segment"),
                Some("the `path` converter matches the rest of the path, slashes included"),
            ));
        }
        if let Segment::Param {
            name,
            converter: Converter::Path,
        } = segment
        {
            path_param = Some((range.clone(), name));
        }
        let params = segments
            .iter()
            .filter(|s| matches!(s, Segment::Param { .. }))
            .count();
        if params == MAX_PARAMS && matches!(segment, Segment::Param { .. }) {
            return Err(error(
                range,
                format!("more than {MAX_PARAMS} path parameters"),
                Some("a route has at most 16 path parameters: take the rest as one `{rest:path}`"),
            ));
        }
        segments.push(segment);
        start = range.end + 1;
    }
    Ok(segments)
}

fn parse_segment(part: &str, range: Range<usize>) -> Result<Segment<'_>, PathError> {
    let at = |i: usize, len: usize| range.start + i..range.start + i + len;
    let Some(open) = part.find('{') else {
        if let Some(close) = part.find('}') {
            return Err(error(at(close, 1), "unmatched `}` in the route path", None));
        }
        for (i, c) in part.char_indices() {
            if c.is_whitespace() {
                return Err(error(
                    at(i, c.len_utf8()),
                    "whitespace in the route path",
                    None,
                ));
            }
            if c.is_control() || matches!(c, '*' | '?' | '#' | '\\') {
                return Err(error(
                    at(i, c.len_utf8()),
                    format!(
                        "invalid character `{}` in the route path",
                        c.escape_default()
                    ),
                    Some("parameters are written `{name}`; a catch-all is `{name:path}`"),
                ));
            }
        }
        if part.starts_with(':') {
            return Err(error(
                at(0, 1),
                "parameters are written `{name}`, not `:name`",
                None,
            ));
        }
        return Ok(Segment::Static(part));
    };
    let Some(close) = part[open..].find('}').map(|c| c + open) else {
        return Err(error(
            at(open, part.len() - open),
            "unclosed `{` in the route path",
            None,
        ));
    };
    if open != 0 || close != part.len() - 1 {
        return Err(error(
            range,
            "a path parameter must be a whole segment",
            Some("write the parameter alone between slashes, such as `/files/{name}`"),
        ));
    }
    let inner = &part[1..close];
    if inner.contains('{') {
        return Err(error(
            at(1 + inner.find('{').unwrap_or(0), 1),
            "nested `{` in the route path",
            None,
        ));
    }
    let (name, converter) = match inner.split_once(':') {
        Some((name, converter)) => (name, Some(converter)),
        None => (inner, None),
    };
    if name.is_empty() {
        return Err(error(
            range,
            "empty parameter name",
            Some("name the parameter, such as `{room}`"),
        ));
    }
    let valid_name = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid_name {
        return Err(error(
            at(1, name.len()),
            format!("invalid parameter name `{name}`"),
            Some(
                "a parameter name is an identifier: the name of the handler's parameter that receives it",
            ),
        ));
    }
    let converter = match converter {
        None => Converter::Str,
        Some(c) => Converter::parse(c).ok_or_else(|| {
            error(
                at(2 + name.len(), c.len()),
                format!("unknown converter `{c}`"),
                Some(CONVERTERS),
            )
        })?,
    };
    Ok(Segment::Param { name, converter })
}

/// The template in axum's syntax: converters dropped, a `path` parameter as a catch-all.
pub fn axum_path(segments: &[Segment<'_>]) -> String {
    let mut path = String::new();
    for segment in segments {
        path.push('/');
        match segment {
            Segment::Static(s) => path.push_str(s),
            Segment::Param {
                name,
                converter: Converter::Path,
            } => {
                path.push_str("{*");
                path.push_str(name);
                path.push('}');
            }
            Segment::Param { name, .. } => {
                path.push('{');
                path.push_str(name);
                path.push('}');
            }
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(template: &str) -> (Range<usize>, String) {
        let e = parse(template).unwrap_err();
        (e.range, e.message)
    }

    #[test]
    fn parses_and_renders_for_axum() {
        let cases = [
            ("/", "/"),
            ("/chat/{room}", "/chat/{room}"),
            ("/items/{id:int}", "/items/{id}"),
            ("/files/{rest:path}", "/files/{*rest}"),
            ("/a/{x:slug}/b/{y:uuid}/", "/a/{x}/b/{y}/"),
        ];
        for (template, axum) in cases {
            assert_eq!(axum_path(&parse(template).unwrap()), axum, "{template}");
        }
        assert_eq!(
            parse("/items/{id:int}").unwrap(),
            [
                Segment::Static("items"),
                Segment::Param {
                    name: "id",
                    converter: Converter::Int
                }
            ]
        );
    }

    #[test]
    fn reports_the_mistake_and_where() {
        assert_eq!(message("").1, "the route path is empty");
        assert_eq!(
            message("chat"),
            (0..1, "the route path must start with `/`".into())
        );
        let many: String = (0..17).map(|i| format!("/{{p{i}}}")).collect();
        assert_eq!(message(&many).1, "more than 16 path parameters");
        assert!(parse(&many[..many.len() - 6]).is_ok(), "16 are fine");
        // Found by fuzzing: the range covers the whole first character.
        assert_eq!(
            message("ҋs/n"),
            (0..2, "the route path must start with `/`".into())
        );
        assert_eq!(
            message("/a//b"),
            (2..4, "empty segment in the route path".into())
        );
        assert_eq!(
            message("/chat/{room"),
            (6..11, "unclosed `{` in the route path".into())
        );
        assert_eq!(
            message("/chat/room}"),
            (10..11, "unmatched `}` in the route path".into())
        );
        assert_eq!(message("/chat/{}"), (6..8, "empty parameter name".into()));
        assert_eq!(
            message("/chat/{1x}"),
            (7..9, "invalid parameter name `1x`".into())
        );
        assert_eq!(
            message("/chat/{a-b}"),
            (7..10, "invalid parameter name `a-b`".into())
        );
        assert_eq!(
            message("/i/{id:number}"),
            (7..13, "unknown converter `number`".into())
        );
        assert_eq!(
            message("/{a}/{a}"),
            (5..8, "duplicate parameter `a`".into())
        );
        assert_eq!(
            message("/{rest:path}/x"),
            (1..12, "`{rest:path}` must be the last segment".into())
        );
        assert_eq!(
            message("/file{id}.txt").1,
            "a path parameter must be a whole segment"
        );
        assert_eq!(
            message("/a b"),
            (2..3, "whitespace in the route path".into())
        );
        assert_eq!(
            message("/:id").1,
            "parameters are written `{name}`, not `:name`"
        );
        assert_eq!(
            message("/x/*rest").1,
            "invalid character `*` in the route path"
        );
    }

    #[test]
    fn converters_follow_nexios() {
        assert!(Converter::Int.accepts("42"));
        assert!(!Converter::Int.accepts("-1"));
        assert!(!Converter::Int.accepts("abc"));
        assert!(!Converter::Int.accepts(""));
        assert!(Converter::Float.accepts("3.14"));
        assert!(Converter::Float.accepts("3"));
        assert!(!Converter::Float.accepts("3."));
        assert!(!Converter::Float.accepts(".5"));
        assert!(Converter::Slug.accepts("hello-world_2"));
        assert!(!Converter::Slug.accepts("hello world"));
        assert!(Converter::Uuid.accepts("123e4567-e89b-12d3-a456-426614174000"));
        assert!(!Converter::Uuid.accepts("123E4567-E89B-12D3-A456-426614174000"));
        assert!(!Converter::Uuid.accepts("123e4567-e89b-12d3-a456-426614174000-0"));
        assert!(!Converter::Uuid.accepts("not-a-uuid"));
        assert!(Converter::Path.accepts("a/b/c"));
        assert!(Converter::Str.accepts("anything at all"));
        assert!(!Converter::Str.accepts(""));
    }
}
