//! libFuzzer entry for `decache_fuzz::tokenizer` (see fuzz/src/lib.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| decache_fuzz::tokenizer(data));
