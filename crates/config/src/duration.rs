//! Durations written with a unit: `500ms`, `2s`, `5m`, `1h`.

use serde::{de, Deserialize, Deserializer};
use std::time::Duration;

/// A [`Duration`] deserialized from a string with a unit (`ms`, `s`, `m`, `h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl Dur {
    /// Seconds.
    pub const fn secs(s: u64) -> Self {
        Self(Duration::from_secs(s))
    }
}

impl std::str::FromStr for Dur {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| format!("duration {s:?} needs a unit (ms, s, m, h)"))?;
        let (num, unit) = s.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("duration {s:?} must start with a whole number"))?;
        let d = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            _ => {
                return Err(format!(
                    "duration {s:?} has unknown unit {unit:?} (ms, s, m, h)"
                ))
            }
        };
        Ok(Dur(d))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!("500ms".parse::<Dur>(), Ok(Dur(Duration::from_millis(500))));
        assert_eq!("2s".parse::<Dur>(), Ok(Dur::secs(2)));
        assert_eq!("5m".parse::<Dur>(), Ok(Dur::secs(300)));
        assert_eq!("1h".parse::<Dur>(), Ok(Dur::secs(3600)));
        assert!("5".parse::<Dur>().is_err());
        assert!("s".parse::<Dur>().is_err());
        assert!("2 days".parse::<Dur>().is_err());
    }
}
