//! libFuzzer entry for `decache_fuzz::http_body` (see fuzz/src/lib.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| decache_fuzz::http_body(data));
