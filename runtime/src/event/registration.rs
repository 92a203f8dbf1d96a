//! The record `#[on]` and `#[once]` submit for each listener function.

use super::{EventContext, ListenerCall, Priority};

/// One listener function, as registered by `#[on]`/`#[once]`.
#[doc(hidden)]
#[derive(Debug)]
pub struct ListenerRegistration {
    /// The event name or pattern as written (without the namespace).
    pub event: &'static str,
    /// The `namespace = ".."` option, or `""`.
    pub namespace: &'static str,
    pub priority: Priority,
    pub once: bool,
    pub call: fn(&mut EventContext<'_>, bool) -> ListenerCall,
    pub function: &'static str,
    pub module_path: &'static str,
    pub file: &'static str,
    pub line: u32,
}

inventory::collect!(ListenerRegistration);

impl ListenerRegistration {
    /// The full event name: `namespace:event`, or `event`.
    pub(crate) fn full_name(&self) -> String {
        if self.namespace.is_empty() {
            self.event.to_owned()
        } else {
            format!("{}:{}", self.namespace, self.event)
        }
    }

    /// `module::function (file:line)`, as errors and logs name it.
    pub(crate) fn label(&self) -> String {
        format!(
            "{}::{} ({}:{})",
            self.module_path, self.function, self.file, self.line
        )
    }
}
