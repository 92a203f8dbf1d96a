//! The macros' diagnostics (`ui/*.rs` must fail with the reviewed `.stderr`) and accepted forms
//! (`ui/pass/*.rs` must compile and run).

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("ui/*.rs");
    t.pass("ui/pass/*.rs");
}
