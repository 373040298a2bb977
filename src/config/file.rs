//! The TOML file: the variables' names without the prefix, in lower case.

use std::collections::HashMap;
use std::path::Path;

use super::{ConfigError, settings};

/// Reads a TOML file into `GATEHOUSE_*`-named strings, refusing unknown keys (a typo
/// must not silently leave a default in force).
pub(super) fn read_toml(path: &Path) -> Result<HashMap<String, String>, ConfigError> {
    let key = "GATEHOUSE_CONFIG";
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(key, format!("cannot read {}: {e}", path.display())))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| ConfigError::new(key, format!("{} is not valid TOML: {e}", path.display())))?;
    let mut out = HashMap::new();
    for (name, value) in table {
        let Some(setting) = settings().find(|s| s.file_key() == name) else {
            return Err(ConfigError::new(
                key,
                format!("{}: unknown setting {name:?}", path.display()),
            ));
        };
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => if b { "on" } else { "off" }.to_owned(),
            toml::Value::Array(items) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| v.to_string())
                })
                .collect::<Vec<_>>()
                .join(","),
            other => {
                return Err(ConfigError::new(
                    key,
                    format!("{}: {name} cannot be {}", path.display(), other.type_str()),
                ));
            }
        };
        out.insert(setting.env.to_owned(), text);
    }
    Ok(out)
}
