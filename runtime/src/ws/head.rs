use std::net::SocketAddr;
use std::sync::OnceLock;

use http::{HeaderMap, HeaderName, HeaderValue};

/// What the request said, kept for the handler: copied out of hyper's buffers so that an open
/// connection does not pin the memory of its upgrade request. The headers are kept as one
/// compact buffer and made a `HeaderMap` only if the handler asks for them.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) path: String,
    pub(crate) query: Option<String>,
    /// `name`, `value` pairs, each preceded by its length in two bytes.
    raw_headers: Box<[u8]>,
    headers: OnceLock<HeaderMap>,
    pub(crate) params: Vec<(Box<str>, String)>,
    pub(crate) client: Option<SocketAddr>,
}

impl Head {
    pub(crate) fn new(
        parts: &http::request::Parts,
        params: Vec<(Box<str>, String)>,
        client: Option<SocketAddr>,
    ) -> Self {
        let mut raw = Vec::new();
        for (name, value) in &parts.headers {
            for bytes in [name.as_str().as_bytes(), value.as_bytes()] {
                // hyper bounds a header line far below 64 KiB.
                let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
                raw.extend_from_slice(&len.to_le_bytes());
                raw.extend_from_slice(&bytes[..usize::from(len)]);
            }
        }
        Self {
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(str::to_owned),
            raw_headers: raw.into_boxed_slice(),
            headers: OnceLock::new(),
            params,
            client,
        }
    }

    pub(crate) fn headers(&self) -> &HeaderMap {
        self.headers.get_or_init(|| {
            let mut headers = HeaderMap::new();
            let mut raw = &self.raw_headers[..];
            let mut next = || {
                let len = usize::from(u16::from_le_bytes([*raw.first()?, *raw.get(1)?]));
                let bytes = raw.get(2..2 + len)?;
                raw = &raw[2 + len..];
                Some(bytes)
            };
            while let (Some(name), Some(value)) = (next(), next()) {
                if let (Ok(name), Ok(value)) =
                    (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
                {
                    headers.append(name, value);
                }
            }
            headers
        })
    }
}
