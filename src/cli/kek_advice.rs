//! What a server (or CLI command) started on PostgreSQL without a key-encryption key is
//! told to do, which depends on the database: where other replicas (or an earlier start)
//! already sealed keys, only their KEK opens them, so a new one would lead straight to
//! "the key-encryption key does not open the stored keys"; only a first install creates
//! one.

use std::path::Path;
use std::time::Duration;

use crate::config::{ConfigError, Database, MISSING_KEK, Settings};

const SETTING: &str = "GATEHOUSE_KEY_ENCRYPTION_KEY_FILE";

const COPY: &str = "copy the key-encryption key file the other replicas use (the same 32 \
     bytes; a new key would not open the stored keys) to this host, mode 0600, and set \
     GATEHOUSE_KEY_ENCRYPTION_KEY_FILE to its path";

const CREATE: &str = "create it with `head -c 32 /dev/urandom > FILE && chmod 600 FILE`, \
     keep a copy in your secret store, and give every replica the same file; move an \
     existing keys directory in with `gatehouse keys import`";

/// The sentence to add to `e`, when it is the missing KEK on PostgreSQL: empty otherwise.
pub(super) fn advice(e: &ConfigError, file: Option<&Path>) -> String {
    if e.key != SETTING || e.message != MISSING_KEK {
        return String::new();
    }
    let Ok(Database::Postgres(url)) = Settings::load_unchecked(file).map(|s| s.storage.database)
    else {
        return String::new();
    };
    // A look, not a wait: the configuration is refused either way.
    let timeout = Duration::from_secs(3);
    let stored = std::thread::scope(|scope| {
        scope
            .spawn(|| crate::service::keystore::keys_stored(&url, timeout))
            .join()
    });
    match stored {
        Ok(Ok(true)) => format!(
            "\nThis database already holds keys sealed by another replica or an earlier \
             start: {COPY}."
        ),
        Ok(Ok(false)) => format!("\nA first install (no keys in the database yet): {CREATE}."),
        _ => format!(
            "\nIf other replicas already run on this database, {COPY}. Only for a first \
             install, {CREATE}."
        ),
    }
}
