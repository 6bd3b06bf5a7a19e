//! A duration setting's value, read the same way from the command line, a
//! config file and the environment (its own module, so that `cli` and
//! `config` do not import each other: `config` reads `cli`'s arguments).

/// A duration in seconds as written in a setting (integer or decimal).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Seconds(pub f64);

impl Seconds {
    /// As a TOML value: an integer when it is whole (`--print-config`).
    pub fn to_toml(self) -> toml::Value {
        if self.0.fract() == 0.0 && self.0.abs() < 1e15 {
            toml::Value::Integer(self.0 as i64)
        } else {
            toml::Value::Float(self.0)
        }
    }
}

/// Parses seconds (`15`, `0.5`): the value parser of every duration flag.
pub fn parse_seconds(s: &str) -> Result<Seconds, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(Seconds(v)),
        _ => Err(format!("expected a number of seconds, got {s:?}")),
    }
}
