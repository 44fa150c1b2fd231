//! Parsing `Authorization: Bearer` (RFC 6750 §2.1) strictly.

/// Why an `Authorization` header does not carry a usable bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerError {
    /// No `Authorization` header at all (RFC 6750: answer with a bare challenge).
    Missing,
    /// More than one `Authorization` header.
    Duplicated,
    /// Present but not `Bearer <b64token>`.
    Malformed,
    /// Longer than the configured maximum.
    TooLong,
}

/// Extract the token from the `Authorization` header values of a request.
///
/// RFC 6750 §2.1: `credentials = "Bearer" 1*SP b64token`, the scheme is case-insensitive,
/// `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
/// Anything else — other schemes, empty tokens, control or non-ASCII bytes, embedded
/// spaces — is [`BearerError::Malformed`]. Several spaces after the scheme are tolerated
/// (`1*SP`), trailing whitespace is not.
pub fn bearer_token<'a>(
    mut values: impl Iterator<Item = &'a [u8]>,
    max_len: usize,
) -> Result<&'a str, BearerError> {
    let Some(value) = values.next() else {
        return Err(BearerError::Missing);
    };
    if values.next().is_some() {
        return Err(BearerError::Duplicated);
    }
    if value.len() > max_len {
        return Err(BearerError::TooLong);
    }
    if value.len() < 7 || !value[..6].eq_ignore_ascii_case(b"bearer") || value[6] != b' ' {
        return Err(BearerError::Malformed);
    }
    let mut token = &value[7..];
    while let [b' ', rest @ ..] = token {
        token = rest;
    }
    let body_len = token.iter().take_while(|b| is_b64token_char(**b)).count();
    let (body, pad) = token.split_at(body_len);
    if body.is_empty() || !pad.iter().all(|b| *b == b'=') {
        return Err(BearerError::Malformed);
    }
    std::str::from_utf8(token).map_err(|_| BearerError::Malformed)
}

fn is_b64token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(values: &[&[u8]]) -> Result<&'static str, BearerError> {
        let owned: Vec<&'static [u8]> = values
            .iter()
            .map(|v| &*Box::leak(v.to_vec().into_boxed_slice()))
            .collect();
        bearer_token(owned.into_iter(), 4096)
    }

    #[test]
    fn accepts_rfc6750_forms() {
        assert_eq!(parse(&[b"Bearer abc.DEF-_~+/=="]), Ok("abc.DEF-_~+/=="));
        assert_eq!(parse(&[b"bearer abc"]), Ok("abc"));
        assert_eq!(parse(&[b"BEARER   abc"]), Ok("abc"));
    }

    #[test]
    fn rejects_everything_else() {
        assert_eq!(parse(&[]), Err(BearerError::Missing));
        assert_eq!(
            parse(&[b"Bearer a", b"Bearer b"]),
            Err(BearerError::Duplicated)
        );
        for bad in [
            &b"Basic abc"[..],
            b"Bearer",
            b"Bearer ",
            b"Bearerabc",
            b"Bearer abc ",
            b"Bearer a bc",
            b"Bearer a=b",
            b"Bearer \x01abc",
            b"Bearer \xc3\xa9t\xc3\xa9",
            b"Bearer\tabc",
        ] {
            assert_eq!(parse(&[bad]), Err(BearerError::Malformed), "{bad:?}");
        }
        let long = [b"Bearer ".as_slice(), &[b'a'; 5000]].concat();
        assert_eq!(parse(&[&long]), Err(BearerError::TooLong));
    }
}
