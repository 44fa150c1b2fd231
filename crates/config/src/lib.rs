//! Gatehouse's one YAML file: the external model ([`Config`]), loading with `${VAR}`
//! expansion, and validation that reports every problem at once with its field path and line.
//!
//! YAML parsing lives only in this crate (serde_yaml is archived upstream; swapping it must
//! not touch the others).
#![forbid(unsafe_code)]

mod duration;
mod env;
mod locate;
mod model;
mod paths;
mod validate;
pub use validate::{parse_nameserver, parse_peer_address};

pub use duration::Dur;
pub use model::*;

use sha2::{Digest, Sha256};
use std::fmt;
use std::path::Path;

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Field path, e.g. `routes[0].filters[1].mode`; empty for whole-file problems.
    pub path: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.path.is_empty(), self.line) {
            (true, Some(l)) => write!(f, "line {l}: {}", self.message),
            (true, None) => write!(f, "{}", self.message),
            (false, Some(l)) => write!(f, "{} (line {l}): {}", self.path, self.message),
            (false, None) => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

/// Every problem found in a file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// A parsed and validated configuration plus what it was loaded from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    /// Hex SHA-256 of the file's bytes (exported as an info metric).
    pub hash: String,
    /// Valid, but worth a second look (`check` prints them; `run` logs them).
    pub warnings: Vec<ConfigError>,
    /// The expanded text, to locate problems found later (in the files the config names).
    text: Text,
}

/// Config text, kept to locate problems; never printed (it may hold expanded secrets).
#[derive(Clone)]
struct Text(std::sync::Arc<str>);

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes of configuration>", self.0.len())
    }
}

impl Loaded {
    /// Problems found after loading (field path, message), with their lines.
    pub fn locate(&self, problems: Vec<(String, String)>) -> ConfigErrors {
        ConfigErrors(
            problems
                .into_iter()
                .map(|(path, message)| ConfigError {
                    line: locate::line_of(&self.text.0, &path),
                    path,
                    message,
                })
                .collect(),
        )
    }
}

/// Read, expand, parse and validate a file. Relative file paths in it are resolved against
/// its directory.
pub fn load_file(path: &Path) -> Result<Loaded, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            path: String::new(),
            line: None,
            message: format!("cannot read {}: {e}", path.display()),
        }])
    })?;
    let dir = path.parent().unwrap_or(Path::new(""));
    let base = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    load(&text, |name| std::env::var(name).ok(), Some(base))
}

/// Parse and validate YAML text, expanding `${VAR}` from the process environment.
pub fn load_str(text: &str) -> Result<Loaded, ConfigErrors> {
    load_str_with_env(text, |name| std::env::var(name).ok())
}

/// [`load_str`] with an explicit environment (tests).
pub fn load_str_with_env(
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Loaded, ConfigErrors> {
    load(text, env, None)
}

/// Load `text`; with `base`, relative file paths are resolved against it.
fn load(
    text: &str,
    env: impl Fn(&str) -> Option<String>,
    base: Option<&Path>,
) -> Result<Loaded, ConfigErrors> {
    let hash = hex::encode(Sha256::digest(text.as_bytes()));
    let expanded = env::expand(text, env).map_err(env_errors)?;
    let mut config: Config = parse(&expanded)?;
    if let Some(base) = base {
        paths::resolve(&mut config, base);
    }
    let located = |problems: Vec<(String, String)>| -> Vec<ConfigError> {
        problems
            .into_iter()
            .map(|(path, message)| ConfigError {
                line: locate::line_of(&expanded, &path),
                path,
                message,
            })
            .collect()
    };
    let problems = validate::validate(&config);
    if problems.is_empty() {
        let warnings = located(validate::warnings(&config));
        Ok(Loaded {
            config,
            hash,
            warnings,
            text: Text(expanded.as_str().into()),
        })
    } else {
        Err(ConfigErrors(located(problems)))
    }
}

fn env_errors(errs: Vec<String>) -> ConfigErrors {
    ConfigErrors(
        errs.into_iter()
            .map(|message| ConfigError {
                path: String::new(),
                line: None,
                message,
            })
            .collect(),
    )
}

/// Parse any YAML document into `T` with the same `${VAR}` expansion and error reporting
/// as the main config (used for the dev authorization server's client registry).
pub fn parse_yaml<T: serde::de::DeserializeOwned>(
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<T, ConfigErrors> {
    let expanded = env::expand(text, env).map_err(env_errors)?;
    parse(&expanded)
}

fn parse<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, ConfigErrors> {
    // A key written twice in one mapping: serde_yaml's own `Value` refuses it, but a typed
    // map (`upstreams`, `authorization_servers`) would silently keep the last one.
    if let Err(e) = serde_yaml::from_str::<serde_yaml::Value>(text) {
        let message = e.to_string();
        // "upstreams: duplicate entry with key \"app\" at line 7 column 3"
        const DUP: &str = "duplicate entry with key ";
        if let Some(at) = message.find(DUP) {
            let rest = &message[at + DUP.len()..];
            let key = rest
                .split(" at line ")
                .next()
                .unwrap_or(rest)
                .trim_matches('"')
                .to_owned();
            let parent = message[..at].trim_end_matches(": ");
            return Err(ConfigErrors(vec![ConfigError {
                path: if parent.is_empty() {
                    String::new()
                } else {
                    format!("{parent}.{key}")
                },
                line: locate::duplicate_key_line(text, &key)
                    .or_else(|| e.location().map(|l| l.line())),
                message: format!("duplicate key `{key}`: each key may appear once"),
            }]));
        }
    }
    let de = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize::<_, T>(de).map_err(|e| {
        let path = e.path().to_string();
        // "." is the whole file; "?" a syntax error with no field to name
        let path = if path == "." || path.starts_with('?') {
            String::new()
        } else {
            path
        };
        let inner = e.into_inner();
        let mut line = inner
            .location()
            .map(|l| l.line())
            .or_else(|| locate::line_of(text, &path));
        // serde_yaml appends " at line L column C" itself; we print the line separately.
        let mut message = inner.to_string();
        if let Some(i) = message.find(" at line ") {
            message.truncate(i);
        }
        // serde_yaml puts the path (or its parent's) in front of its message too: print
        // the path once
        if let Some((prefix, rest)) = message.split_once(": ") {
            if !prefix.is_empty() && path.starts_with(prefix) {
                message = rest.to_owned();
            }
        }
        if let Some(field) = message
            .strip_prefix("duplicate field `")
            .and_then(|r| r.split('`').next())
        {
            line = locate::duplicate_key_line(text, field).or(line);
            message = format!("duplicate key `{field}`: each key may appear once");
        }
        if message.contains("end of stream") || line.is_some_and(|l| l > text.lines().count()) {
            if let Some(l) = locate::unclosed_quote_line(text) {
                line = Some(l);
                message = "a quoted value is never closed (its quote opens here)".to_owned();
            }
        }
        let tab = line
            .and_then(|l| text.lines().nth(l.saturating_sub(1)))
            .is_some_and(|l| l.contains('\t'));
        if tab && message.contains("cannot start any token") {
            message = "a tab character: YAML is indented with spaces only".to_owned();
        }
        ConfigErrors(vec![ConfigError {
            path,
            line,
            message,
        }])
    })
}

/// Read a secret named in the config: from `file` (trailing newline trimmed) or the
/// environment variable `env`.
/// The one secret reader: validation (`check`) and the build both read secrets with it, so
/// they cannot disagree about what is usable. An empty secret is not.
pub fn read_secret(file: Option<&str>, env: Option<&str>) -> Result<String, String> {
    let secret = match (file, env) {
        (Some(f), None) => std::fs::read_to_string(f)
            .map(|s| s.trim_end_matches(['\r', '\n']).to_owned())
            .map_err(|e| format!("cannot read secret file {f}: {e}"))?,
        (None, Some(v)) => {
            std::env::var(v).map_err(|_| format!("environment variable {v} is not set"))?
        }
        (Some(_), Some(_)) => {
            return Err("give either a secret file or an env var, not both".to_owned())
        }
        (None, None) => return Err("a secret file or env var is required".to_owned()),
    };
    if secret.is_empty() {
        return Err(match (file, env) {
            (Some(f), _) => format!("the secret file {f} is empty"),
            (_, Some(v)) => format!("environment variable {v} is empty"),
            _ => "the secret is empty".to_owned(),
        });
    }
    Ok(secret)
}

#[cfg(test)]
mod tests;
