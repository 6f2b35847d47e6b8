//! The borrow rules that make nonblocking operations sound, shown by programs
//! that must not compile.

#[test]
fn nonblocking_buffers_must_outlive_their_scope() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
