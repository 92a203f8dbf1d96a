//! The route template parser (`#[ws_route("..")]`): any text gives segments or an error with
//! a range on character boundaries; an accepted template renders to a path the router axum
//! uses accepts (or refuses with an error, never a panic), and parses the same way again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_syntax::route_path::{Segment, axum_path, parse};

fuzz_target!(|data: &[u8]| {
    let Ok(template) = std::str::from_utf8(data) else {
        return;
    };
    match parse(template) {
        Err(e) => {
            assert!(template.get(e.range.clone()).is_some(), "{e:?} on {template:?}");
            assert!(!e.message.is_empty());
        }
        Ok(segments) => {
            let names: Vec<&str> = segments
                .iter()
                .filter_map(|s| match s {
                    Segment::Param { name, .. } => Some(*name),
                    Segment::Static(_) => None,
                })
                .collect();
            let mut unique = names.clone();
            unique.sort_unstable();
            unique.dedup();
            assert_eq!(unique.len(), names.len(), "duplicate parameter accepted: {template}");
            let path = axum_path(&segments);
            let mut router = matchit::Router::new();
            let _ = router.insert(path.as_str(), ());
            assert_eq!(parse(template).ok(), Some(segments));
        }
    }
});
