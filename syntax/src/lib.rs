//! The grammar of [Switchboard](https://docs.rs/switchboard)'s event names and route paths.
//!
//! One implementation, shared by `switchboard-macros` (which checks names and paths at compile
//! time, with errors inside the string literal) and `switchboard` (which checks names given at
//! run time, and matches paths and wildcards), so both accept exactly the same language. It
//! depends on `std` only. Use Switchboard itself: this crate's API follows its needs.

pub mod event_name;
pub mod route_path;

#[cfg(any(test, fuzzing))]
pub mod reference;
