use std::net::SocketAddr;
use std::sync::OnceLock;

use http::{HeaderMap, HeaderName, HeaderValue};

/// What the request said, kept for the handler: copied out of hyper's buffers so that an open
/// connection does not pin the memory of its upgrade request. The headers are kept as one
/// compact buffer (their size is bounded by `max_request_head`) and made a `HeaderMap` only if
/// the handler asks for them.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) path: String,
    pub(crate) query: Option<String>,
    /// `name`, `value` pairs, each preceded by its length in four bytes.
    raw_headers: Box<[u8]>,
    /// Unpacked on first use; boxed, so a connection whose handler never asks holds one
    /// pointer rather than a map.
    headers: OnceLock<Box<HeaderMap>>,
    pub(crate) params: Vec<(Box<str>, String)>,
    pub(crate) client: Option<SocketAddr>,
}

impl Head {
    pub(crate) fn new(
        parts: &http::request::Parts,
        params: Vec<(Box<str>, String)>,
        client: Option<SocketAddr>,
    ) -> Self {
        Self {
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(str::to_owned),
            raw_headers: pack(&parts.headers),
            headers: OnceLock::new(),
            params,
            client,
        }
    }

    pub(crate) fn headers(&self) -> &HeaderMap {
        self.headers
            .get_or_init(|| Box::new(unpack(&self.raw_headers)))
    }
}

/// Every header, in order, as length-prefixed names and values in one exact-size buffer.
fn pack(headers: &HeaderMap) -> Box<[u8]> {
    let len = headers
        .iter()
        .map(|(name, value)| 8 + name.as_str().len() + value.len())
        .sum();
    let mut raw = Vec::with_capacity(len);
    for (name, value) in headers {
        for bytes in [name.as_str().as_bytes(), value.as_bytes()] {
            // Within `max_request_head`, which a `usize` in 32 bits always holds.
            let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
            raw.extend_from_slice(&len.to_le_bytes());
            raw.extend_from_slice(&bytes[..len as usize]);
        }
    }
    raw.into_boxed_slice()
}

fn unpack(mut raw: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let mut next = || {
        let (len, rest) = raw.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_le_bytes(*len)).ok()?;
        let bytes = rest.get(..len)?;
        raw = &rest[len..];
        Some(bytes)
    };
    while let (Some(name), Some(value)) = (next(), next()) {
        // Both were valid when packed.
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            headers.append(name, value);
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_of_every_length_come_back_whole() {
        let mut headers = HeaderMap::new();
        for len in [0, 1, 255, 65_535, 65_536, 200_000] {
            let name = HeaderName::from_bytes(format!("x-len-{len}").as_bytes()).unwrap();
            let value = HeaderValue::from_bytes(&vec![b'v'; len]).unwrap();
            headers.append(name, value);
        }
        headers.append("x-len-0", HeaderValue::from_static("second"));
        // The longest name `http` allows.
        let long_name = HeaderName::from_bytes(&vec![b'n'; 65_535]).unwrap();
        headers.append(long_name, HeaderValue::from_static("under a long name"));
        assert_eq!(unpack(&pack(&headers)), headers);
    }

    #[test]
    fn the_buffer_is_exactly_what_it_holds() {
        let mut headers = HeaderMap::new();
        headers.append("host", HeaderValue::from_static("example.com"));
        headers.append("cookie", HeaderValue::from_static("a=1"));
        let packed = pack(&headers);
        assert_eq!(packed.len(), 8 + 4 + 11 + 8 + 6 + 3);
    }
}
