//! `${VAR}` expansion from the environment, done on the text before parsing so that line
//! numbers stay right. Comments are left alone; an unset variable is an error naming its line.

/// Expand `${NAME}` everywhere outside comments. `$${` escapes to a literal `${`.
pub fn expand(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, Vec<String>> {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let code_end = comment_start(line).unwrap_or(line.len());
        let (code, comment) = line.split_at(code_end);
        let mut rest = code;
        while let Some(pos) = rest.find("${") {
            if rest[..pos].ends_with('$') {
                out.push_str(&rest[..pos - 1]);
                out.push_str("${");
                rest = &rest[pos + 2..];
                continue;
            }
            out.push_str(&rest[..pos]);
            let after = &rest[pos + 2..];
            let Some(end) = after.find('}') else {
                errors.push(format!(
                    "line {}: unterminated ${{ in {:?}",
                    i + 1,
                    line.trim_end()
                ));
                rest = "";
                break;
            };
            let name = &after[..end];
            let valid =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                errors.push(format!("line {}: invalid variable name {name:?}", i + 1));
            } else {
                match lookup(name) {
                    Some(v) => out.push_str(&v),
                    None => errors.push(format!(
                        "line {}: environment variable {name} is not set",
                        i + 1
                    )),
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out.push_str(comment);
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Byte offset of a YAML comment: `#` at line start or after whitespace, outside quotes.
fn comment_start(line: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    let mut prev_ws = true;
    for (i, c) in line.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' && prev_ws => return Some(i),
            None => {}
        }
        prev_ws = c.is_whitespace();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "CERT_DIR").then(|| "/etc/gh".to_owned())
    }

    #[test]
    fn expands_and_reports_unset() {
        assert_eq!(
            expand("cert: ${CERT_DIR}/a.pem # ${NOPE}\n", env),
            Ok("cert: /etc/gh/a.pem # ${NOPE}\n".to_owned())
        );
        assert_eq!(expand("a: $${X}\n", env), Ok("a: ${X}\n".to_owned()));
        let err = expand("a: 1\nb: ${MISSING}\n", env).unwrap_err();
        assert_eq!(err, vec!["line 2: environment variable MISSING is not set"]);
        assert!(expand("a: \"x # ${CERT_DIR}\"", env).is_ok_and(|s| s.contains("/etc/gh")));
    }
}
