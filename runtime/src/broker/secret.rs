//! Broker URLs carry secrets (a password in the user info, `?pass=` on a Unix socket URL, a
//! token): what is printed of them (`Debug`, errors, logs) goes through [`redact`] first.

/// Query parameters whose value is a secret.
const SECRET_PARAMS: &[&str] = &["pass", "password", "token", "auth", "secret"];

/// `url` with every secret in it replaced by `***`: the password of the user info
/// (`redis://user:***@host`) and the value of query parameters such as `pass` or `token`.
/// Text that is not a URL comes back unchanged.
pub(crate) fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    // The authority ends at the first `/`, `?` or `#` after the scheme; the user info is what
    // comes before its last `@`.
    let rest = &url[scheme_end..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    let mut out = String::with_capacity(url.len());
    out.push_str(&url[..scheme_end]);
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            match userinfo.split_once(':') {
                Some((user, _password)) => {
                    out.push_str(user);
                    out.push_str(":***");
                }
                // A lone token in the user info (`nats://token@host`) is a secret too; a lone
                // user name is not, but telling the two apart needs the scheme's rules: hide it.
                None if userinfo.is_empty() => {}
                None => out.push_str("***"),
            }
            out.push_str(&authority[at..]);
        }
        None => out.push_str(authority),
    }
    let tail = &rest[authority_len..];
    let (before_fragment, fragment) = match tail.find('#') {
        Some(i) => tail.split_at(i),
        None => (tail, ""),
    };
    match before_fragment.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            for (i, pair) in query.split('&').enumerate() {
                if i > 0 {
                    out.push('&');
                }
                match pair.split_once('=') {
                    Some((key, _))
                        if SECRET_PARAMS.contains(&key.to_ascii_lowercase().as_str()) =>
                    {
                        out.push_str(key);
                        out.push_str("=***");
                    }
                    _ => out.push_str(pair),
                }
            }
        }
        None => out.push_str(before_fragment),
    }
    out.push_str(fragment);
    out
}

/// The secrets of a broker's settings, to scrub from text that did not come from us (an
/// error message of the client library, a server's answer) before it is printed.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
#[derive(Clone, Default)]
pub(crate) struct Secrets(Vec<String>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} hidden)", self.0.len())
    }
}

#[cfg_attr(not(feature = "redis"), allow(dead_code))]
impl Secrets {
    /// Adds one (and its percent-encoded form, as it appears in a URL). Secrets shorter than
    /// 3 bytes are not scrubbed: replacing every `a` in a message would hide more than it
    /// protects, and such a password is no secret anyway.
    pub(crate) fn add(&mut self, secret: &str) {
        if secret.len() < 3 {
            return;
        }
        // As a form encodes it (space as `+`) and as a URL's user info does (`%20`).
        let encoded: String = form_urlencoded::byte_serialize(secret.as_bytes()).collect();
        let url_encoded = encoded.replace('+', "%20");
        for s in [secret.to_owned(), encoded, url_encoded] {
            if !self.0.contains(&s) {
                self.0.push(s);
            }
        }
        // Longest first, so a secret that contains another is replaced whole.
        self.0.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }

    /// `text` with every secret replaced by `***`.
    pub(crate) fn scrub(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for secret in &self.0 {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), "***");
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_info_passwords_are_hidden() {
        assert_eq!(
            redact("redis://user:secret@127.0.0.1:6379/0"),
            "redis://user:***@127.0.0.1:6379/0"
        );
        assert_eq!(
            redact("rediss://:p%40ss@cache.internal:6380"),
            "rediss://:***@cache.internal:6380"
        );
        assert_eq!(redact("nats://s3cr3t@host:4222"), "nats://***@host:4222");
        // An `@` in the path is not user info.
        assert_eq!(
            redact("redis+unix:///run/a@b/redis.sock"),
            "redis+unix:///run/a@b/redis.sock"
        );
    }

    #[test]
    fn secret_query_parameters_are_hidden() {
        assert_eq!(
            redact("redis+unix:///tmp/r.sock?db=2&user=app&pass=hunter22"),
            "redis+unix:///tmp/r.sock?db=2&user=app&pass=***"
        );
        assert_eq!(
            redact("nats://host?Token=abc#frag"),
            "nats://host?Token=***#frag"
        );
    }

    #[test]
    fn urls_without_secrets_are_unchanged() {
        for url in [
            "redis://127.0.0.1:6379",
            "redis://127.0.0.1:6379/3?protocol=resp3",
            "not a url",
            "",
        ] {
            assert_eq!(redact(url), url);
        }
    }

    #[test]
    fn scrub_replaces_raw_and_encoded_forms() {
        let mut secrets = Secrets::default();
        secrets.add("p@ss word");
        secrets.add("ab");
        let text = "auth failed for p@ss word (url redis://:p%40ss+word@h), ab stays";
        assert_eq!(
            secrets.scrub(text),
            "auth failed for *** (url redis://:***@h), ab stays"
        );
        assert_eq!(format!("{secrets:?}"), "Secrets(3 hidden)");
    }
}
