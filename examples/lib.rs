//! Runnable Switchboard programs: `cargo run -p switchboard-examples --example NAME`.
