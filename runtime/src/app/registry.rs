//! Collecting the registrations the macros submitted: filtering by module, sorting into a
//! defined order (inventory's is unspecified), and finding conflicts.

use std::collections::HashMap;

use crate::event::registration::ListenerRegistration;
use crate::{Error, ErrorKind};

/// Whether `module_path` is `prefix` or inside it.
pub(crate) fn in_module(module_path: &str, prefix: Option<&str>) -> bool {
    match prefix {
        None => true,
        Some(prefix) => {
            module_path == prefix
                || module_path
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with("::"))
        }
    }
}

/// The listener registrations under `prefix`, sorted by (module path, file, line), with every
/// duplicate (the same function registered twice for the same event and priority) reported.
pub(crate) fn listeners(prefix: Option<&str>) -> Result<Vec<&'static ListenerRegistration>, Error> {
    let mut all: Vec<&'static ListenerRegistration> = inventory::iter::<ListenerRegistration>
        .into_iter()
        .filter(|r| in_module(r.module_path, prefix))
        .collect();
    all.sort_by(|a, b| {
        (a.module_path, a.file, a.line, a.event, a.namespace).cmp(&(
            b.module_path,
            b.file,
            b.line,
            b.event,
            b.namespace,
        ))
    });
    let mut seen: HashMap<(&str, &str, String, crate::Priority), &ListenerRegistration> =
        HashMap::new();
    let mut problems = Vec::new();
    for r in &all {
        let key = (r.module_path, r.function, r.full_name(), r.priority);
        if let Some(first) = seen.insert(key, r) {
            problems.push(format!(
                "`{}::{}` is registered twice for event `{}` with priority {:?}: at {}:{} and at {}:{}",
                r.module_path,
                r.function,
                r.full_name(),
                r.priority,
                first.file,
                first.line,
                r.file,
                r.line
            ));
        }
    }
    if problems.is_empty() {
        Ok(all)
    } else {
        Err(Error::new(ErrorKind::Registration, problems.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::in_module;

    #[test]
    fn module_prefix_matches_whole_segments() {
        assert!(in_module("app::chat", Some("app::chat")));
        assert!(in_module("app::chat::inner", Some("app::chat")));
        assert!(!in_module("app::chatter", Some("app::chat")));
        assert!(in_module("anything", None));
    }
}
