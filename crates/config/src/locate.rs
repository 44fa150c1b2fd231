//! Find the line of a field path (`routes[1].filters[0].mode`) in YAML text, for errors that
//! serde reports without a location (values buffered by tagged enums, semantic checks).
//! Best effort on block-style YAML: returns the line of the deepest segment it finds.

/// One step of a path.
#[derive(Debug, PartialEq)]
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

fn segments(path: &str) -> Vec<Seg<'_>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Seg::Key(key));
        }
        while let Some(end) = rest.find(']') {
            if let Ok(i) = rest[1..end].parse() {
                out.push(Seg::Index(i));
            }
            rest = &rest[end + 1..];
        }
    }
    out
}

/// 1-based line number of `path` in `text`, or of its deepest ancestor found.
pub fn line_of(text: &str, path: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut start = 0usize;
    let mut parent_indent: isize = -1;
    let mut found = None;
    for seg in segments(path) {
        let mut hit = None;
        let mut seq_indent: Option<usize> = None;
        let mut count = 0usize;
        for (i, raw) in lines.iter().enumerate().skip(start) {
            let content = raw.trim_start();
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            let indent = raw.len() - content.len();
            // a line at or left of the parent's indentation ends the parent's block
            // (the first line of a sequence item may share the dash's line)
            let is_item = content.starts_with("- ") || content == "-";
            let same_line_item = i == start && found.is_some();
            let seq_at_parent = matches!(seg, Seg::Index(_)) && is_item;
            if (indent as isize) < parent_indent
                || ((indent as isize) == parent_indent && !same_line_item && !seq_at_parent)
            {
                break;
            }
            match seg {
                Seg::Key(k) => {
                    let (key_indent, body) = match content.strip_prefix("- ") {
                        Some(b) => (indent + 2, b.trim_start()),
                        None => (indent, content),
                    };
                    if body.starts_with(k) && body[k.len()..].starts_with(':') {
                        hit = Some((i, key_indent as isize));
                        break;
                    }
                }
                Seg::Index(n) => {
                    if is_item {
                        let si = *seq_indent.get_or_insert(indent);
                        if indent == si {
                            if count == n {
                                hit = Some((i, indent as isize));
                                break;
                            }
                            count += 1;
                        }
                    }
                }
            }
        }
        match hit {
            Some((i, ind)) => {
                found = Some(i + 1);
                start = i;
                parent_indent = ind;
                // keys of a sequence item sit right of its dash
                if matches!(seg, Seg::Key(_)) {
                    start = i + 1;
                }
            }
            None => break,
        }
    }
    found
}

/// The line where `key` appears a second time as a mapping key at the indentation of its
/// first appearance (the duplicate a parser complains about), 1-based.
pub fn duplicate_key_line(text: &str, key: &str) -> Option<usize> {
    let mut first: Option<usize> = None;
    for (i, line) in text.lines().enumerate() {
        let body = line.trim_start();
        let indent = line.len() - body.len();
        let body = body.strip_prefix("- ").unwrap_or(body);
        let unquoted = body
            .strip_prefix(key)
            .or_else(|| body.strip_prefix(&format!("\"{key}\"")))
            .or_else(|| body.strip_prefix(&format!("'{key}'")));
        if !unquoted.is_some_and(|rest| rest.trim_start().starts_with(':')) {
            continue;
        }
        match first {
            None => first = Some(indent),
            Some(f) if f == indent => return Some(i + 1),
            Some(_) => {}
        }
    }
    None
}

/// The line of the first quoted value that is never closed, 1-based: the parser only
/// notices at the end of the file, which is no help to whoever has to fix it.
pub fn unclosed_quote_line(text: &str) -> Option<usize> {
    let mut open: Option<(char, usize)> = None;
    for (i, line) in text.lines().enumerate() {
        let mut prev = ' ';
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match open {
                Some(('"', _)) if c == '\\' => {
                    chars.next();
                }
                Some((q, _)) if c == q => {
                    // '' inside single quotes is an escaped quote
                    if q == '\'' && chars.peek() == Some(&'\'') {
                        chars.next();
                    } else {
                        open = None;
                    }
                }
                Some(_) => {}
                None if c == '#' && (prev == ' ' || prev == '\t') => break,
                // a quote opens a scalar only where a value starts
                None if (c == '"' || c == '\'')
                    && matches!(prev, ' ' | '[' | '{' | ',' | ':' | '-') =>
                {
                    open = Some((c, i + 1));
                }
                None => {}
            }
            prev = c;
        }
    }
    open.map(|(_, line)| line)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "version: 1
routes:
  - name: a
    upstream: x
  - name: b
    filters:
      - kind: client_cert
        mode: required
      - kind: claims
        scope: [x]
";

    #[test]
    fn finds_nested_paths() {
        assert_eq!(line_of(DOC, "version"), Some(1));
        assert_eq!(line_of(DOC, "routes[0].upstream"), Some(4));
        assert_eq!(line_of(DOC, "routes[1]"), Some(5));
        assert_eq!(line_of(DOC, "routes[1].filters[0].mode"), Some(8));
        assert_eq!(line_of(DOC, "routes[1].filters[1].scope"), Some(10));
        assert_eq!(line_of(DOC, "routes[1].filters[1].kind"), Some(9));
        // unknown leaf: deepest ancestor
        assert_eq!(line_of(DOC, "routes[1].filters[1].nope"), Some(9));
        let flush = "routes:\n- name: a\n- name: b\n  upstream: y\n";
        assert_eq!(line_of(flush, "routes[1].upstream"), Some(4));
    }
}
