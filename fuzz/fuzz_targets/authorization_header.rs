//! RFC 6750 `Authorization` parsing: split the input into up to three header values.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let values: Vec<&[u8]> = data.splitn(3, |b| *b == 0).collect();
    if let Ok(token) = gatehouse_core::bearer_token(values.iter().copied(), 8192) {
        assert!(!token.is_empty());
        assert!(token.bytes().all(|b| b.is_ascii_graphic()));
    }
});
