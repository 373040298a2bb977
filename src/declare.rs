//! How a setting is declared, once, by the part that reads it.
//!
//! [`group!`] writes a settings struct: each field carries its variable (and so its file
//! key), its default, its README text, its parser, its check and how `config check`
//! prints it. The struct, its list of [`Setting`]s and its reader all come from that one
//! block, so a field cannot exist without a variable, nor a variable without a parser.
//!
//! Neutral ground: this module imports nothing of ours, so `http` and `service` can
//! declare their own groups without depending on `config`, which only assembles them.

use std::time::Duration;

/// A setting as the outside world sees it: its variable, default and description.
#[derive(Debug)]
pub struct Setting {
    /// The environment variable. The file key is the same name without `GATEHOUSE_`, in
    /// lower case ([`Setting::file_key`]).
    pub env: &'static str,
    pub default: Fallback,
    /// The README's description.
    pub meaning: &'static str,
}

/// A setting's value when neither the environment nor the file gives one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fallback {
    /// Written as a user would write it and parsed by the same parser, so a default
    /// cannot be something a user could not set. `""` is the empty list.
    Value(&'static str),
    /// The machine's core count.
    Cores,
}

impl Setting {
    /// The key of this setting in a configuration file.
    pub fn file_key(&self) -> String {
        self.env
            .strip_prefix("GATEHOUSE_")
            .unwrap_or(self.env)
            .to_ascii_lowercase()
    }

    pub fn default_value(&self) -> String {
        match self.default {
            Fallback::Value(v) => v.to_owned(),
            Fallback::Cores => std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .to_string(),
        }
    }
}

/// A value refused, naming the variable it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub env: &'static str,
    pub message: String,
}

/// Settings read by one consumer, as written by [`group!`].
pub trait Group: Sized {
    /// In declaration order.
    const SETTINGS: &'static [Setting];
    /// Parses each setting from `value` (which falls back to the default itself).
    fn read(value: &mut dyn FnMut(&'static Setting) -> String) -> Result<Self, Invalid>;
    /// Refuses a value that parsed but is unsafe or broken, also for settings built in
    /// code (tests), which never pass through `read`.
    fn check(&self) -> Result<(), Invalid>;
    /// The effective values, for `config check`.
    fn describe(&self) -> Vec<(&'static str, String)>;
}

/// Declares a settings struct and its [`Group`] implementation. Each field:
///
/// ```text
/// /// doc comment of the field
/// pub name: Type {
///     env: "GATEHOUSE_NAME",
///     default: Fallback::Value("…"),
///     meaning: "the README's text",
///     parse: fn(&str) -> Result<Type, String>,
///     check: fn(&Self) -> Result<(), String>,   // optional; may look at other fields
///     show: fn(&Type) -> String,
/// }
/// ```
macro_rules! group {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(
                $(#[doc = $doc:literal])*
                pub $field:ident: $ty:ty {
                    env: $env:literal,
                    default: $default:expr,
                    meaning: $meaning:expr,
                    parse: $parse:expr,
                    $(check: $check:expr,)?
                    show: $show:expr $(,)?
                }
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        pub struct $name {
            $( $(#[doc = $doc])* pub $field: $ty, )*
        }

        impl $crate::declare::Group for $name {
            const SETTINGS: &'static [$crate::declare::Setting] = &[$(
                $crate::declare::Setting { env: $env, default: $default, meaning: $meaning }
            ),*];

            fn read(
                value: &mut dyn FnMut(&'static $crate::declare::Setting) -> String,
            ) -> Result<Self, $crate::declare::Invalid> {
                Ok(Self { $(
                    $field: {
                        const SETTING: $crate::declare::Setting = $crate::declare::Setting {
                            env: $env,
                            default: $default,
                            meaning: $meaning,
                        };
                        let parse: fn(&str) -> Result<$ty, String> = $parse;
                        parse(&value(&SETTING))
                            .map_err(|message| $crate::declare::Invalid { env: $env, message })?
                    },
                )* })
            }

            fn check(&self) -> Result<(), $crate::declare::Invalid> {
                $($(
                    let check: fn(&Self) -> Result<(), String> = $check;
                    check(self)
                        .map_err(|message| $crate::declare::Invalid { env: $env, message })?;
                )?)*
                Ok(())
            }

            fn describe(&self) -> Vec<(&'static str, String)> {
                vec![$(
                    ($env, {
                        let show: fn(&$ty) -> String = $show;
                        show(&self.$field)
                    })
                ),*]
            }
        }
    };
}
pub(crate) use group;

pub const MINUTE: Duration = Duration::from_secs(60);

pub fn text(v: &str) -> Result<String, String> {
    Ok(v.trim().to_owned())
}

/// `90` or `90s`, `15m`, `12h`, `7d`.
pub fn duration(v: &str) -> Result<Duration, String> {
    parse_duration(v)
        .ok_or_else(|| format!("{v:?} is not a duration (examples: 90, 90s, 15m, 12h, 7d)"))
}

pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = digits.parse().ok()?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return None,
    };
    n.checked_mul(scale).map(Duration::from_secs)
}

/// A whole number of at least 1.
pub fn count(v: &str) -> Result<u32, String> {
    v.trim()
        .parse::<u32>()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| format!("{v:?} is not a whole number ≥ 1"))
}

/// [`count`], as a size.
pub fn workers(v: &str) -> Result<usize, String> {
    count(v).map(|n| n as usize)
}

/// Every on/off setting reads the same words; anything else is refused, because a typo
/// that quietly meant `off` would turn off HSTS without a word.
pub fn switch(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "1" => Ok(true),
        "off" | "false" | "0" => Ok(false),
        _ => Err(format!("{v:?} is not on or off")),
    }
}

pub fn secs(d: &Duration) -> String {
    format!("{}s", d.as_secs())
}

pub fn on_off(b: &bool) -> String {
    if *b { "on" } else { "off" }.into()
}

pub fn at_least_a_minute(d: Duration) -> Result<(), String> {
    if d < MINUTE {
        return Err("must be at least 1 minute".into());
    }
    Ok(())
}

pub fn at_least_a_second(d: Duration) -> Result<(), String> {
    if d < Duration::from_secs(1) {
        return Err("must be at least 1 second".into());
    }
    Ok(())
}

pub fn at_least_one(n: usize) -> Result<(), String> {
    if n == 0 {
        return Err("must be at least 1".into());
    }
    Ok(())
}

/// An `http(s)://` URL with a host; plain http only on a loopback host.
pub fn validate_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("{url:?} must start with https:// or http://"))?;
    let host = rest.split(['/', ':']).next().unwrap_or("");
    if host.is_empty() || rest.contains(char::is_whitespace) {
        return Err(format!("{url:?} has no host"));
    }
    let loopback = host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if url.starts_with("http://") && !loopback {
        return Err(format!(
            "{url:?} uses plain http on a non-loopback host; use https://"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("1w"), None);
        assert_eq!(parse_duration("-5"), None);
        assert_eq!(parse_duration(""), None);
    }
}
