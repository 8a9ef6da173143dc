//! libFuzzer entry for `decache_fuzz::chat_template` (see fuzz/src/lib.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| decache_fuzz::chat_template(data));
