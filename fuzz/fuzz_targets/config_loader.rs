//! The YAML loader: any text gives a config or errors with paths, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(errors) = gatehouse_config::load_str_with_env(text, |n| (n == "X").then(|| "1".to_owned())) {
            let _ = errors.to_string();
        }
    }
});
