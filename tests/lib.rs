//! Integration tests of Switchboard live in this package's `[[test]]` targets; this library is
//! empty.
