//! What a setting is, and the [`declare_settings!`] macro that turns the one
//! list of settings (`settings.rs`) into everything that reads, checks,
//! prints and documents them.
//!
//! As ripgrep's `flags/defs.rs`: a setting is declared once, and the command
//! line, the config file, the environment, the defaults, the validation,
//! `--print-config` and the README's tables are derived from that entry.
//! A value read from any source is a [`Sourced`] value that remembers where
//! it came from, so that every error names the setting and its source.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::seconds::{Seconds, parse_seconds};

/// Where a value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// ferrocorn's default.
    Default,
    /// A config file (`-c`).
    File(PathBuf),
    /// An environment variable.
    Env(&'static str),
    /// A command-line flag.
    Cli(&'static str),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(p) => write!(f, "config file {}", p.display()),
            Source::Env(name) => write!(f, "environment variable {name}"),
            Source::Cli(flag) => write!(f, "command line {flag}"),
        }
    }
}

/// A configuration error: one line naming the setting and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// An error with this message.
pub fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

/// An invalid value of setting `name` from `source`.
pub fn bad<T>(name: &str, source: &Source, msg: impl fmt::Display) -> Result<T, ConfigError> {
    match source {
        Source::Default => err(format!("invalid default for `{name}`: {msg}")),
        _ => err(format!("invalid value for `{name}` in {source}: {msg}")),
    }
}

/// A value with the source it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Sourced<T> {
    /// The value.
    pub value: T,
    /// Where it came from.
    pub source: Source,
}

/// How a setting's type reads from TOML and from an environment variable.
pub trait SettingValue: Sized {
    /// What the value must look like, for error messages.
    const EXPECTED: &'static str;
    /// The value of a TOML value, if it has the right type.
    fn from_toml(v: &toml::Value) -> Option<Self>;
    /// The value of an environment variable, if it parses.
    fn from_env(s: &str) -> Option<Self>;
}

impl SettingValue for u64 {
    const EXPECTED: &'static str = "a non-negative integer";
    fn from_toml(v: &toml::Value) -> Option<Self> {
        v.as_integer().and_then(|i| u64::try_from(i).ok())
    }
    fn from_env(s: &str) -> Option<Self> {
        s.trim().parse().ok()
    }
}

impl SettingValue for Seconds {
    const EXPECTED: &'static str = "a number of seconds";
    fn from_toml(v: &toml::Value) -> Option<Self> {
        match v {
            toml::Value::Integer(i) => Some(Seconds(*i as f64)),
            toml::Value::Float(f) if f.is_finite() => Some(Seconds(*f)),
            _ => None,
        }
    }
    fn from_env(s: &str) -> Option<Self> {
        parse_seconds(s).ok()
    }
}

impl SettingValue for String {
    const EXPECTED: &'static str = "a string";
    fn from_toml(v: &toml::Value) -> Option<Self> {
        v.as_str().map(str::to_owned)
    }
    fn from_env(s: &str) -> Option<Self> {
        Some(s.to_owned())
    }
}

impl SettingValue for PathBuf {
    const EXPECTED: &'static str = "a path (string)";
    fn from_toml(v: &toml::Value) -> Option<Self> {
        v.as_str().map(PathBuf::from)
    }
    fn from_env(s: &str) -> Option<Self> {
        Some(PathBuf::from(s))
    }
}

impl SettingValue for bool {
    const EXPECTED: &'static str = "true or false";
    fn from_toml(v: &toml::Value) -> Option<Self> {
        v.as_bool()
    }
    fn from_env(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Some(true),
            "0" | "false" | "no" | "off" => Some(false),
            _ => None,
        }
    }
}

impl SettingValue for Vec<String> {
    const EXPECTED: &'static str = "a string or an array of strings";
    fn from_toml(v: &toml::Value) -> Option<Self> {
        match v {
            toml::Value::String(s) => Some(vec![s.clone()]),
            toml::Value::Array(a) => a.iter().map(|v| v.as_str().map(str::to_owned)).collect(),
            _ => None,
        }
    }
    fn from_env(s: &str) -> Option<Self> {
        Some(s.split_whitespace().map(str::to_owned).collect())
    }
}

/// Header/value pairs (`secure_scheme_headers`): a TOML table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderPairs(pub Vec<(String, String)>);

impl SettingValue for HeaderPairs {
    const EXPECTED: &'static str = "a table of header = value strings";
    fn from_toml(v: &toml::Value) -> Option<Self> {
        let t = v.as_table()?;
        t.iter()
            .map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
            .collect::<Option<Vec<_>>>()
            .map(HeaderPairs)
    }
    fn from_env(_: &str) -> Option<Self> {
        None
    }
}

/// Sets `slot` from a TOML value; `Err` names the key and the source.
pub fn set_from_toml<T: SettingValue>(
    slot: &mut Option<Sourced<T>>,
    key: &str,
    value: &toml::Value,
    source: &Source,
) -> Result<(), ConfigError> {
    match T::from_toml(value) {
        Some(v) => {
            *slot = Some(Sourced {
                value: v,
                source: source.clone(),
            });
            Ok(())
        }
        None => err(format!(
            "invalid value for `{key}` in {source}: expected {}, got {}",
            T::EXPECTED,
            describe_toml(value)
        )),
    }
}

fn describe_toml(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("string {s:?}"),
        toml::Value::Integer(i) => format!("integer {i}"),
        toml::Value::Float(f) => format!("float {f}"),
        toml::Value::Boolean(b) => format!("boolean {b}"),
        toml::Value::Datetime(d) => format!("datetime {d}"),
        toml::Value::Array(_) => "an array".to_owned(),
        toml::Value::Table(_) => "a table".to_owned(),
    }
}

/// When an environment variable is read: gunicorn reads some as the
/// *defaults* of a setting (a config file overrides them), the seed's
/// variables override the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvStage {
    /// Below the config file (`PORT`, `WEB_CONCURRENCY`, ...).
    Default,
    /// Above the config file, below the command line.
    Override,
}

/// A variable read another way than [`SettingValue::from_env`], and what
/// it must look like.
pub type EnvRead<T> = (fn(&str) -> Option<T>, &'static str);

/// An environment variable's value read as `T` (empty = unset); `custom`
/// reads it another way than [`SettingValue::from_env`], expecting what its
/// second part says.
pub fn env_value<T: SettingValue>(
    env: &dyn Fn(&str) -> Option<String>,
    var: &'static str,
    setting: &str,
    custom: Option<EnvRead<T>>,
) -> Result<Option<Sourced<T>>, ConfigError> {
    let Some(raw) = env(var).filter(|s| !s.trim().is_empty()) else {
        return Ok(None);
    };
    let (read, expected) = custom.unwrap_or((T::from_env, T::EXPECTED));
    match read(&raw) {
        Some(value) => Ok(Some(Sourced {
            value,
            source: Source::Env(var),
        })),
        None => err(format!(
            "invalid value for `{setting}` in environment variable {var}: expected {expected}, got {raw:?}"
        )),
    }
}

/// How a flag's parsed value becomes a setting's value: an optional value.
pub fn opt<C: Clone, T: From<C>>(v: &Option<C>, flag: &'static str) -> Option<Sourced<T>> {
    v.as_ref().map(|v| Sourced {
        value: T::from(v.clone()),
        source: Source::Cli(flag),
    })
}

/// A repeatable flag: set when given at least once.
pub fn list(v: &[String], flag: &'static str) -> Option<Sourced<Vec<String>>> {
    (!v.is_empty()).then(|| Sourced {
        value: v.to_vec(),
        source: Source::Cli(flag),
    })
}

/// A switch that turns a setting on (`--preload`).
pub fn on(v: &bool, flag: &'static str) -> Option<Sourced<bool>> {
    v.then(|| Sourced {
        value: true,
        source: Source::Cli(flag),
    })
}

/// A switch that turns a setting off (`--no-metrics`).
pub fn off(v: &bool, flag: &'static str) -> Option<Sourced<bool>> {
    v.then(|| Sourced {
        value: false,
        source: Source::Cli(flag),
    })
}

/// Applies defaults and remembers which values were set explicitly.
#[derive(Debug, Default)]
pub struct Resolver {
    /// Every explicitly set setting and where it came from, in the list's order.
    pub explicit: Vec<(&'static str, Source)>,
}

impl Resolver {
    /// The value, or the default when it was not set.
    pub fn take<T>(&mut self, name: &'static str, v: Option<Sourced<T>>, default: T) -> Sourced<T> {
        self.take_opt(name, v).unwrap_or(Sourced {
            value: default,
            source: Source::Default,
        })
    }

    /// The value of a setting without a default, if it was set.
    pub fn take_opt<T>(&mut self, name: &'static str, v: Option<Sourced<T>>) -> Option<Sourced<T>> {
        if let Some(s) = &v {
            self.explicit.push((name, s.source.clone()));
        }
        v
    }
}

// ---- Checks: a setting's raw value to the value the server uses. ----

/// The largest integer a TOML file holds: the bound of the u64 settings, so
/// that `--print-config` prints what is used and it loads back.
pub const I64_MAX: u64 = i64::MAX as u64;

/// An integer in `min..=max`; `note` follows the range in the error.
pub fn range<O: TryFrom<u64>>(
    min: u64,
    max: u64,
    note: &'static str,
) -> impl Fn(&'static str, &Sourced<u64>) -> Result<O, ConfigError> {
    move |name, v| {
        if v.value < min || v.value > max {
            return bad(
                name,
                &v.source,
                format_args!("{} is out of range {min}..={max}{note}", v.value),
            );
        }
        O::try_from(v.value).or_else(|_| {
            bad(
                name,
                &v.source,
                format_args!("{} does not fit this machine", v.value),
            )
        })
    }
}

/// The smallest positive duration: shorter ones would round to zero, which
/// means "disabled" for most durations (issue 19).
const MIN_DURATION: Duration = Duration::from_millis(1);

/// A duration of at most a year; `positive` refuses 0.
pub fn secs(
    positive: bool,
) -> impl Fn(&'static str, &Sourced<Seconds>) -> Result<Duration, ConfigError> {
    move |name, v| {
        let s = v.value.0;
        if positive && s <= 0.0 {
            return bad(
                name,
                &v.source,
                format_args!("{s} must be more than 0 seconds"),
            );
        }
        if s < 0.0 {
            return bad(name, &v.source, format_args!("{s} must not be negative"));
        }
        // A year bounds every duration: larger values are typos.
        if s > 365.0 * 86400.0 {
            return bad(
                name,
                &v.source,
                format_args!("{s} seconds is more than a year"),
            );
        }
        let d = Duration::from_secs_f64(s);
        if s > 0.0 && d < MIN_DURATION {
            return bad(
                name,
                &v.source,
                format_args!(
                    "{s} seconds is less than the smallest duration, 0.001 seconds{}",
                    if positive { "" } else { " (0 disables)" }
                ),
            );
        }
        Ok(d)
    }
}

/// One of `allowed` (compared in lower case); the allowed spelling.
pub fn one_of(
    allowed: &'static [&'static str],
) -> impl Fn(&'static str, &Sourced<String>) -> Result<String, ConfigError> {
    move |name, v| {
        let lower = v.value.to_ascii_lowercase();
        match allowed.iter().find(|a| **a == lower) {
            Some(a) => Ok((*a).to_owned()),
            None => bad(
                name,
                &v.source,
                format_args!("{:?} is not one of {}", v.value, allowed.join(", ")),
            ),
        }
    }
}

/// Any value of the type, as given.
pub fn any<T: Clone>(_: &'static str, v: &Sourced<T>) -> Result<T, ConfigError> {
    Ok(v.value.clone())
}

/// Any value of the type, as given, for a setting that is off when unset.
pub fn some<T: Clone>(_: &'static str, v: &Sourced<T>) -> Result<Option<T>, ConfigError> {
    Ok(Some(v.value.clone()))
}

/// A path that is not empty.
pub fn some_path(name: &'static str, v: &Sourced<PathBuf>) -> Result<Option<PathBuf>, ConfigError> {
    if v.value.as_os_str().is_empty() {
        return bad(name, &v.source, "empty path");
    }
    Ok(Some(v.value.clone()))
}

/// A log destination that is not empty (`why` says what to use instead).
pub fn destination(
    why: &'static str,
) -> impl Fn(&'static str, &Sourced<String>) -> Result<String, ConfigError> {
    move |name, v| {
        if v.value.is_empty() {
            return bad(name, &v.source, why);
        }
        Ok(v.value.clone())
    }
}

// ---- `--print-config`: a checked value as TOML. ----

/// A checked value as `--print-config` writes it; `None` leaves the key out.
pub trait Print {
    /// The TOML value, if any.
    fn print(&self) -> Option<toml::Value>;
}

fn int(v: u64) -> Option<toml::Value> {
    // Every integer setting is validated to fit (`I64_MAX`): never clamped.
    Some(toml::Value::Integer(i64::try_from(v).unwrap_or(i64::MAX)))
}

impl Print for u64 {
    fn print(&self) -> Option<toml::Value> {
        int(*self)
    }
}

impl Print for usize {
    fn print(&self) -> Option<toml::Value> {
        int(*self as u64)
    }
}

impl Print for i32 {
    fn print(&self) -> Option<toml::Value> {
        int(u64::try_from(*self).unwrap_or(0))
    }
}

impl Print for u16 {
    fn print(&self) -> Option<toml::Value> {
        int(u64::from(*self))
    }
}

impl Print for Duration {
    fn print(&self) -> Option<toml::Value> {
        Some(Seconds(self.as_secs_f64()).to_toml())
    }
}

impl Print for bool {
    fn print(&self) -> Option<toml::Value> {
        Some(toml::Value::Boolean(*self))
    }
}

impl Print for String {
    fn print(&self) -> Option<toml::Value> {
        Some(toml::Value::String(self.clone()))
    }
}

impl Print for PathBuf {
    fn print(&self) -> Option<toml::Value> {
        Some(toml::Value::String(self.display().to_string()))
    }
}

impl Print for IpAddr {
    fn print(&self) -> Option<toml::Value> {
        Some(toml::Value::String(self.to_string()))
    }
}

impl<T: Print> Print for Option<T> {
    fn print(&self) -> Option<toml::Value> {
        self.as_ref().and_then(Print::print)
    }
}

// ---- The README's tables. ----

/// What the README's settings tables say about one setting (read by the
/// test that keeps the README's tables in step with the list).
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(test), allow(dead_code))]
pub struct SettingDoc {
    /// The TOML key.
    pub key: &'static str,
    /// The flag as errors name it (`--bind`, `APP_MODULE`) and the id of its
    /// clap argument, if it has a flag.
    pub flag: Option<(&'static str, &'static str)>,
    /// The environment variable read for it, if any.
    pub env: Option<&'static str>,
    /// The README's text: its default and what it does.
    pub readme: &'static str,
}

// ---- The macro. ----

/// `None`, or the expression given.
macro_rules! or_none {
    () => {
        None
    };
    ($e:expr) => {
        $e
    };
}
pub(crate) use or_none;

/// The TOML key: the one given, else the field's name.
macro_rules! key_of {
    ($key:literal $field:ident) => {
        $key
    };
    ($field:ident) => {
        stringify!($field)
    };
}
pub(crate) use key_of;

/// A setting's value after defaults: `Sourced<T>`, or `Option<Sourced<T>>`
/// for a setting without a default.
macro_rules! taken_ty {
    (none; $raw:ty) => { Option<$crate::setting::Sourced<$raw>> };
    ($default:tt; $raw:ty) => { $crate::setting::Sourced<$raw> };
}
pub(crate) use taken_ty;

/// Takes a layer's value, or the default.
macro_rules! take_value {
    (none; $r:ident, $key:expr, $v:expr) => {
        $r.take_opt($key, $v)
    };
    ($default:tt; $r:ident, $key:expr, $v:expr) => {
        $r.take($key, $v, $default)
    };
}
pub(crate) use take_value;

/// Checks a taken value; a setting without a default and without a value
/// is the checked type's default (`None`, empty).
macro_rules! check_value {
    (none; $key:expr, $v:expr, $check:expr) => {
        match $v {
            Some(v) => ($check)($key, v)?,
            None => Default::default(),
        }
    };
    ($default:tt; $key:expr, $v:expr, $check:expr) => {
        ($check)($key, $v)?
    };
}
pub(crate) use check_value;

/// The source of a taken value, `None` when it is unset.
macro_rules! source_of {
    (none; $v:expr) => {
        $v.as_ref().map(|v| &v.source)
    };
    ($default:tt; $v:expr) => {
        Some(&$v.source)
    };
}
pub(crate) use source_of;

/// How a checked value prints: the entry's `print`, else [`Print`].
macro_rules! printer {
    () => {
        $crate::setting::Print::print
    };
    ($print:expr) => {
        $print
    };
}
pub(crate) use printer;

/// Declares every setting once and derives from that list:
///
/// - `ServeArgs`, the command line's flags (clap derive attributes from
///   the entry, its doc comment as the help text);
/// - `Layer`, one source's optional values, read from a TOML table
///   (`set_toml`), the environment (`from_env`) and the flags (`from_cli`);
///   `SETTINGS`, every TOML key;
/// - `Taken`, the stacked layers with the defaults applied, and its checks
///   into the typed values: `Settings` (the `core` part), `MetricsValues`
///   (the `metrics` part) and `PythonSettings` (the `python` part);
/// - the `print` of each part for `--print-config`, and `to_worker`, which
///   sets the worker's settings (`WorkerConfig`) from them;
/// - `CORE_DOCS`, `METRICS_DOCS`, `PYTHON_DOCS` for the README's tables.
///
/// A flag that is no setting is `/// help` `name: Type = flag [clap attributes];`.
/// A setting is
///
/// ```text
/// /// The flag's help (and the field's doc).
/// field (core|metrics|python) {
///     flag: "--label" arg_field: ArgType = opt|list|on|off [clap attributes],  // optional
///     key: "toml_key",                    // optional: when it is not the field's name
///     worker: field,                      // optional: the WorkerConfig field it sets
///     type: Raw => Checked,               // as read (SettingValue) => as used
///     env: (Default|Override "VAR" [, read_fn, "expected"]),   // optional
///     default: none | literal | { expression },
///     check: fn(&'static str, &Sourced<Raw>) -> Result<Checked, ConfigError>,
///     print: fn(&Checked) -> Option<toml::Value>,   // optional, else Print
///     readme: "the README's cell: the default and what it does",
/// }
/// ```
macro_rules! declare_settings {
    // A flag that is not a setting.
    (@split [$($f:tt)*] [$($a:tt)*] [$($c:tt)*] [$($m:tt)*] [$($p:tt)*]
        $(#[doc = $doc:literal])* $cfield:ident: $cty:ty = flag [$($attr:tt)*]; $($rest:tt)*) => {
        $crate::setting::declare_settings! { @split
            [$($f)* $(#[doc = $doc])* #[arg($($attr)*)] pub $cfield: $cty,]
            [$($a)*] [$($c)*] [$($m)*] [$($p)*] $($rest)*
        }
    };
    // A setting with a flag, by part.
    (@split [$($f:tt)*] [$($a:tt)*] [$($c:tt)*] [$($m:tt)*] [$($p:tt)*]
        $(#[doc = $doc:literal])* $field:ident (core) {
            flag: $label:literal $cfield:ident: $cty:ty = $how:ident [$($attr:tt)*], $($body:tt)*
        } $($rest:tt)*) => {
        $crate::setting::declare_settings! { @split
            [$($f)* $(#[doc = $doc])* #[arg($($attr)*)] pub $cfield: $cty,]
            [$($a)* $(#[doc = $doc])* $field { cli: ($label, $cfield, $how), $($body)* }]
            [$($c)* $(#[doc = $doc])* $field { cli: ($label, $cfield, $how), $($body)* }]
            [$($m)*] [$($p)*] $($rest)*
        }
    };
    (@split [$($f:tt)*] [$($a:tt)*] [$($c:tt)*] [$($m:tt)*] [$($p:tt)*]
        $(#[doc = $doc:literal])* $field:ident (metrics) {
            flag: $label:literal $cfield:ident: $cty:ty = $how:ident [$($attr:tt)*], $($body:tt)*
        } $($rest:tt)*) => {
        $crate::setting::declare_settings! { @split
            [$($f)* $(#[doc = $doc])* #[arg($($attr)*)] pub $cfield: $cty,]
            [$($a)* $(#[doc = $doc])* $field { cli: ($label, $cfield, $how), $($body)* }]
            [$($c)*]
            [$($m)* $(#[doc = $doc])* $field { cli: ($label, $cfield, $how), $($body)* }]
            [$($p)*] $($rest)*
        }
    };
    (@split [$($f:tt)*] [$($a:tt)*] [$($c:tt)*] [$($m:tt)*] [$($p:tt)*]
        $(#[doc = $doc:literal])* $field:ident (python) {
            flag: $label:literal $cfield:ident: $cty:ty = $how:ident [$($attr:tt)*], $($body:tt)*
        } $($rest:tt)*) => {
        $crate::setting::declare_settings! { @split
            [$($f)* $(#[doc = $doc])* #[arg($($attr)*)] pub $cfield: $cty,]
            [$($a)* $(#[doc = $doc])* $field { cli: ($label, $cfield, $how), $($body)* }]
            [$($c)*] [$($m)*]
            [$($p)* $(#[doc = $doc])* $field { cli: ($label, $cfield, $how), $($body)* }]
            $($rest)*
        }
    };
    // A setting without a flag, by part.
    (@split [$($f:tt)*] [$($a:tt)*] [$($c:tt)*] [$($m:tt)*] [$($p:tt)*]
        $(#[doc = $doc:literal])* $field:ident (core) { $($body:tt)* } $($rest:tt)*) => {
        $crate::setting::declare_settings! { @split
            [$($f)*]
            [$($a)* $(#[doc = $doc])* $field { $($body)* }]
            [$($c)* $(#[doc = $doc])* $field { $($body)* }]
            [$($m)*] [$($p)*] $($rest)*
        }
    };
    (@split [$($f:tt)*] [$($a:tt)*] [$($c:tt)*] [$($m:tt)*] [$($p:tt)*]
        $(#[doc = $doc:literal])* $field:ident (metrics) { $($body:tt)* } $($rest:tt)*) => {
        $crate::setting::declare_settings! { @split
            [$($f)*]
            [$($a)* $(#[doc = $doc])* $field { $($body)* }]
            [$($c)*]
            [$($m)* $(#[doc = $doc])* $field { $($body)* }]
            [$($p)*] $($rest)*
        }
    };
    (@split [$($f:tt)*] [$($a:tt)*] [$($c:tt)*] [$($m:tt)*] [$($p:tt)*]
        $(#[doc = $doc:literal])* $field:ident (python) { $($body:tt)* } $($rest:tt)*) => {
        $crate::setting::declare_settings! { @split
            [$($f)*]
            [$($a)* $(#[doc = $doc])* $field { $($body)* }]
            [$($c)*] [$($m)*]
            [$($p)* $(#[doc = $doc])* $field { $($body)* }]
            $($rest)*
        }
    };
    // Every entry sorted: generate.
    (@split [$($f:tt)*] [$($a:tt)*] [$($c:tt)*] [$($m:tt)*] [$($p:tt)*]) => {
        $crate::setting::declare_settings!(@args $($f)*);
        $crate::setting::declare_settings!(@all $($a)*);
        $crate::setting::declare_settings!(@part Settings, core, CORE_DOCS, $($c)*);
        $crate::setting::declare_settings!(@part MetricsValues, metrics, METRICS_DOCS, $($m)*);
        $crate::setting::declare_settings!(@part PythonSettings, python, PYTHON_DOCS, $($p)*);
    };

    (@args $($fields:tt)*) => {
        /// The flags of `ferrocorn` serving: every setting, all optional so
        /// that the config file and the environment can supply them.
        #[derive(Debug, Clone, Default, clap::Args)]
        pub struct ServeArgs {
            $($fields)*
        }
    };

    (@all $(
        $(#[doc = $doc:literal])* $field:ident {
            $(cli: ($label:literal, $cfield:ident, $how:ident),)?
            $(key: $key:literal,)?
            $(worker: $wfield:ident,)?
            type: $raw:ty => $out:ty,
            $(env: ($stage:ident $var:literal $(, $read:expr, $expected:literal)?),)?
            default: $default:tt,
            check: $check:expr,
            $(print: $print:expr,)?
            readme: $readme:literal,
        }
    )*) => {
        /// One source's settings: every field optional, with its source.
        #[derive(Debug, Clone, Default, PartialEq)]
        pub struct Layer {
            $( $(#[doc = $doc])* pub $field: Option<$crate::setting::Sourced<$raw>>, )*
        }

        /// Every setting's name, as written in the config file.
        pub const SETTINGS: &[&str] = &[$($crate::setting::key_of!($($key)? $field)),*];

        /// The stacked layers with the defaults applied.
        pub struct Taken {
            $( pub $field: $crate::setting::taken_ty!($default; $raw), )*
            /// Every explicitly set setting and where it came from.
            pub explicit: Vec<(&'static str, $crate::setting::Source)>,
        }

        impl Layer {
            /// Sets `key` from a TOML value; `Ok(false)` for an unknown key.
            pub fn set_toml(
                &mut self,
                key: &str,
                value: &toml::Value,
                source: &$crate::setting::Source,
            ) -> Result<bool, $crate::setting::ConfigError> {
                $(
                    if key == $crate::setting::key_of!($($key)? $field) {
                        $crate::setting::set_from_toml(&mut self.$field, key, value, source)?;
                        return Ok(true);
                    }
                )*
                Ok(false)
            }

            /// This layer over `lower`: a value set here wins.
            pub fn over(self, lower: Layer) -> Layer {
                Layer { $( $field: self.$field.or(lower.$field), )* }
            }

            /// The command line's settings.
            pub fn from_cli(args: &ServeArgs) -> Layer {
                Layer {
                    $( $field: $crate::setting::or_none!($( $crate::setting::$how(&args.$cfield, $label) )?), )*
                }
            }

            /// The environment variables read at `stage`.
            pub fn from_env(
                env: &dyn Fn(&str) -> Option<String>,
                stage: $crate::setting::EnvStage,
            ) -> Result<Layer, $crate::setting::ConfigError> {
                let mut layer = Layer::default();
                $({
                    let key = $crate::setting::key_of!($($key)? $field);
                    $(
                        if stage == $crate::setting::EnvStage::$stage {
                            layer.$field = $crate::setting::env_value::<$raw>(
                                env,
                                $var,
                                key,
                                $crate::setting::or_none!($( Some(($read as fn(&str) -> Option<$raw>, $expected)) )?),
                            )?;
                        }
                    )?
                    let _ = key; // for the settings read from no variable
                })*
                Ok(layer)
            }

            /// The defaults applied, and the explicit values remembered.
            pub fn take(self) -> Taken {
                let mut r = $crate::setting::Resolver::default();
                $(
                    let $field = $crate::setting::take_value!(
                        $default; r, $crate::setting::key_of!($($key)? $field), self.$field
                    );
                )*
                Taken { $($field,)* explicit: r.explicit }
            }
        }
    };

    (@part $ty:ident, $part:ident, $docs:ident, $(
        $(#[doc = $doc:literal])* $field:ident {
            $(cli: ($label:literal, $cfield:ident, $how:ident),)?
            $(key: $key:literal,)?
            $(worker: $wfield:ident,)?
            type: $raw:ty => $out:ty,
            $(env: ($stage:ident $var:literal $(, $read:expr, $expected:literal)?),)?
            default: $default:tt,
            check: $check:expr,
            $(print: $print:expr,)?
            readme: $readme:literal,
        }
    )*) => {
        /// The settings of this part, checked.
        #[derive(Debug, Clone, PartialEq)]
        pub struct $ty {
            $( $(#[doc = $doc])* pub $field: $out, )*
        }

        impl Taken {
            /// Checks this part's values, in the list's order.
            pub fn $part(&self) -> Result<$ty, $crate::setting::ConfigError> {
                Ok($ty {
                    $( $field: $crate::setting::check_value!(
                        $default; $crate::setting::key_of!($($key)? $field), &self.$field, $check
                    ), )*
                })
            }
        }

        #[allow(dead_code)]
        impl $ty {
            /// Adds this part's values to `--print-config`'s table.
            pub fn print(&self, t: &mut toml::Table) {
                $(
                    if let Some(v) = ($crate::setting::printer!($($print)?))(&self.$field) {
                        t.insert($crate::setting::key_of!($($key)? $field).into(), v);
                    }
                )*
            }

            /// Sets the worker's settings of this part (those with `worker:`).
            pub fn to_worker(&self, w: &mut ::ferrocorn_worker::WorkerConfig) {
                $($( w.$wfield = self.$field.clone(); )?)*
                let _ = w;
            }

            /// Each setting of this part and where it came from (`None`: unset).
            pub fn sources(taken: &Taken) -> Vec<(&'static str, Option<&$crate::setting::Source>)> {
                vec![$( (
                    $crate::setting::key_of!($($key)? $field),
                    $crate::setting::source_of!($default; taken.$field),
                ) ),*]
            }
        }

        /// This part's rows of the README's settings tables.
        #[allow(dead_code)]
        pub const $docs: &[$crate::setting::SettingDoc] = &[$(
            $crate::setting::SettingDoc {
                key: $crate::setting::key_of!($($key)? $field),
                flag: $crate::setting::or_none!($( Some(($label, stringify!($cfield))) )?),
                env: $crate::setting::or_none!($( Some($var) )?),
                readme: $readme,
            }
        ),*];
    };

    // The list: sort its entries, then generate.
    ($($list:tt)*) => {
        $crate::setting::declare_settings!(@split [] [] [] [] [] $($list)*);
    };
}
pub(crate) use declare_settings;
