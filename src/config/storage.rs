//! Where the data lives and how each backend is tuned; [`StorageSettings::database`]
//! names one backend, so a path and a URL can never both be set.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::declare::{self, Fallback, group};
use crate::storage::DatabaseSettings;
use crate::storage::postgres::PostgresUrl;
use crate::storage::sqlite::Synchronous;

/// `GATEHOUSE_DATABASE`: its form picks the backend.
#[derive(Clone, Debug)]
pub enum Database {
    /// A SQLite file (a path or `sqlite://path`).
    Sqlite(PathBuf),
    Postgres(Box<PostgresUrl>),
}

impl Database {
    fn parse(v: &str) -> Result<Self, String> {
        let v = v.trim();
        if v.starts_with("postgres://") || v.starts_with("postgresql://") {
            return PostgresUrl::parse(v).map(|url| Database::Postgres(Box::new(url)));
        }
        let path = match v.split_once("://") {
            Some(("sqlite", path)) => path,
            // A typo'd scheme would otherwise become a directory named after it.
            Some((scheme, _)) => {
                return Err(format!(
                    "{scheme}:// is not a database gatehouse knows: use a SQLite path, \
                     sqlite://PATH or postgres://…"
                ));
            }
            None => v,
        };
        if path.is_empty() {
            return Err("sqlite:// needs a path".into());
        }
        Ok(Database::Sqlite(PathBuf::from(path)))
    }

    /// The SQLite file, for the tools that read the file itself.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            Database::Sqlite(path) => Some(path),
            Database::Postgres(_) => None,
        }
    }

    pub fn postgres_url(&self) -> Option<&PostgresUrl> {
        match self {
            Database::Sqlite(_) => None,
            Database::Postgres(url) => Some(url.as_ref()),
        }
    }
}

/// Redacted: `config check` output lands in tickets and logs.
impl std::fmt::Display for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Sqlite(path) => write!(f, "{}", path.display()),
            Database::Postgres(url) => write!(f, "{url}"),
        }
    }
}

fn synchronous(v: &str) -> Result<Synchronous, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "normal" => Ok(Synchronous::Normal),
        "full" => Ok(Synchronous::Full),
        _ => Err(format!("{v:?} is not `normal` or `full`")),
    }
}

fn show_synchronous(s: &Synchronous) -> String {
    match s {
        Synchronous::Normal => "normal",
        Synchronous::Full => "full",
    }
    .into()
}

/// The refusal when PostgreSQL is named without a KEK; the CLI adds what to do.
pub const MISSING_KEK: &str = "required when GATEHOUSE_DATABASE is PostgreSQL: keys live \
     in the database there, sealed under this key";

group! {
    /// Storage, read by `startup` and the CLI to open it.
    #[derive(Clone, Debug)]
    pub struct StorageSettings {
        pub database: Database {
            env: "GATEHOUSE_DATABASE",
            default: Fallback::Value("./data/gatehouse.db"),
            meaning: "where the data lives; the form picks the backend: a SQLite file path or \
                      `sqlite://PATH` (created 0600, directory 0700), or a PostgreSQL URL \
                      `postgres://USER:PASSWORD@HOST:PORT/DB?sslmode=verify-full` (see \
                      deploy/README.md *PostgreSQL*); `config check` hides the password",
            parse: Database::parse,
            check: |s| match &s.database {
                Database::Sqlite(path) if path.as_os_str().is_empty() => {
                    Err("names no database".into())
                }
                _ => Ok(()),
            },
            show: Database::to_string,
        },
        /// On PostgreSQL, the file holding the key that seals the keys stored in the
        /// database (required there; unused with SQLite).
        pub key_encryption_key_file: Option<PathBuf> {
            env: "GATEHOUSE_KEY_ENCRYPTION_KEY_FILE",
            default: Fallback::Value(""),
            meaning: "PostgreSQL only, and required there: a file of exactly 32 random bytes \
                      (`head -c 32 /dev/urandom`), mode 0600, the same on every replica; it \
                      seals the signing keys and refresh secret stored in the database and is \
                      never stored itself (see deploy/README.md *Keys on PostgreSQL*)",
            parse: |v| {
                let v = v.trim();
                Ok((!v.is_empty()).then(|| PathBuf::from(v)))
            },
            check: |s| {
                // Keys in files on PostgreSQL would let each replica make its own signing
                // key and refresh secret, the very split this setting exists to prevent.
                if matches!(s.database, Database::Postgres(_))
                    && s.key_encryption_key_file.is_none()
                {
                    // What to do about it depends on the database (copy the other
                    // replicas' KEK, or create the first one): `cli::kek_advice` looks.
                    return Err(MISSING_KEK.into());
                }
                Ok(())
            },
            show: |v| v.as_ref().map_or_else(|| "(none)".into(), |p| p.display().to_string()),
        },
        pub sqlite_synchronous: Synchronous {
            env: "GATEHOUSE_SQLITE_SYNCHRONOUS",
            default: Fallback::Value("normal"),
            meaning: "`normal` or `full`: see *Durability*",
            parse: synchronous,
            show: show_synchronous,
        },
        pub db_readers: u32 {
            env: "GATEHOUSE_DB_READERS",
            default: Fallback::Value("8"),
            meaning: "pooled SQLite reader connections",
            parse: declare::count,
            show: u32::to_string,
        },
        /// PostgreSQL connections in this process's pool.
        pub db_pool_size: u32 {
            env: "GATEHOUSE_DB_POOL_SIZE",
            default: Fallback::Value("10"),
            meaning: "PostgreSQL connections per gatehouse process (mind the server's \
                      `max_connections` across replicas)",
            parse: declare::count,
            show: u32::to_string,
        },
        pub db_connect_timeout: Duration {
            env: "GATEHOUSE_DB_CONNECT_TIMEOUT",
            default: Fallback::Value("5s"),
            meaning: "PostgreSQL: how long to wait for a new connection, or for a free pooled \
                      one, before answering 503",
            parse: declare::duration,
            check: |s| {
                if s.db_connect_timeout < Duration::from_secs(1)
                    || s.db_connect_timeout > Duration::from_secs(60)
                {
                    return Err("must be between 1 second and 1 minute".into());
                }
                Ok(())
            },
            show: declare::secs,
        },
        /// How long start-up waits for a PostgreSQL server that cannot be reached yet.
        pub db_start_timeout: Duration {
            env: "GATEHOUSE_DB_START_TIMEOUT",
            default: Fallback::Value("30s"),
            meaning: "PostgreSQL: how long start-up (`serve` and the CLI) retries a server \
                      that cannot be reached yet before exiting non-zero; `0` tries once",
            parse: declare::duration,
            check: |s| {
                if s.db_start_timeout > Duration::from_secs(600) {
                    return Err("must be at most 10 minutes".into());
                }
                Ok(())
            },
            show: declare::secs,
        },
        /// Prepare PostgreSQL statements once per connection.
        pub db_prepared_statements: bool {
            env: "GATEHOUSE_DB_PREPARED_STATEMENTS",
            default: Fallback::Value("on"),
            meaning: "PostgreSQL: prepare each statement once per connection, then run it by \
                      name; `off` sends every statement unnamed (parsed and planned each \
                      time), for PgBouncer before 1.21 in transaction pooling (see \
                      deploy/README.md *PostgreSQL*)",
            parse: declare::switch,
            show: declare::on_off,
        },
    }
}

impl StorageSettings {
    /// The store to open: the backend `database` names, with that backend's settings.
    pub fn database_settings(&self) -> DatabaseSettings {
        match &self.database {
            Database::Postgres(url) => DatabaseSettings::Postgres {
                url: url.clone(),
                pool_size: self.db_pool_size,
                connect_timeout: self.db_connect_timeout,
                start_timeout: self.db_start_timeout,
                prepared_statements: self.db_prepared_statements,
            },
            Database::Sqlite(path) => DatabaseSettings::Sqlite {
                path: path.clone(),
                synchronous: self.sqlite_synchronous,
                readers: self.db_readers,
            },
        }
    }
}
