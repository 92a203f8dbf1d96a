//! Event-name validation and wildcard matching: any pattern and name are checked without a
//! panic (errors carry ranges on character boundaries), and the memoised wildcard matcher
//! agrees with the brute-force reference on every valid pair (small enough to brute-force).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_syntax::event_name::{Kind, Pattern, check};
use switchboard_syntax::reference;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (pattern, name) = text.split_once('\n').unwrap_or((text, ""));
    for (text, kind) in [
        (pattern, Kind::Pattern),
        (pattern, Kind::Namespace),
        (name, Kind::Pattern),
    ] {
        if let Err(e) = check(text, kind) {
            assert!(text.get(e.range.clone()).is_some(), "{e:?} on {text:?}");
            assert!(!e.message(text).is_empty());
        }
    }
    if check(pattern, Kind::Pattern) != Ok(true) || check(name, Kind::Pattern) != Ok(false) {
        return;
    }
    let answer = Pattern::new(pattern).matches(name);
    let segments = name.split(['.', ':']).count();
    if pattern.matches("**").count() <= 3 && segments <= 12 {
        assert_eq!(answer, reference::matches(pattern, name), "{pattern} on {name}");
    }
});
