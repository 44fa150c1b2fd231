//! Introspection responses: classification of any status, content type and body.
#![no_main]
use gatehouse_config::IntrospectionFormat;
use gatehouse_phantom::{classify, Body};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let format = match selector % 3 {
        0 => IntrospectionFormat::Json,
        1 => IntrospectionFormat::Jwt,
        _ => IntrospectionFormat::TokenIntrospectionJwt,
    };
    let status = if selector & 0x80 == 0 { 200 } else { 204 };
    let content_type = match (selector >> 2) % 4 {
        0 => "application/json",
        1 => "application/jwt",
        2 => "application/token-introspection+jwt",
        _ => "text/html",
    };
    if let Ok(Body::Json(map)) = classify(format, status, content_type, rest) {
        // only an object with active: true is ever classified as active claims
        assert_eq!(map.get("active"), Some(&serde_json::Value::Bool(true)));
    }
});
