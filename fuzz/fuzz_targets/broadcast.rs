//! Fuzz target: an arbitrary image opened as a broadcast ring (typed, or bytes if it holds
//! one), then a bounded run of operations.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tally_fuzz::harness::run(tally_fuzz::harness::Target::Broadcast, data);
});
