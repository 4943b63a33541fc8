//! The fuzz targets' shared harness; `tests/fuzz_regressions.rs` in the library
//! includes the same file to replay crashes in the ordinary suite.

#[path = "harness.rs"]
pub mod harness;
