//! The `gatehouse` command line: serve, and the operator's tools around it.

use std::io::{BufRead as _, IsTerminal as _};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use self::passkeys_tool::PasskeysCommand;
use crate::clock::SystemClock;
use crate::config::{Database, Settings};
use crate::crypto::keys;
use crate::crypto::lifecycle::Stage;
use crate::domain::{AuditKind, Email, FamilyId, NewPassword, Role, UserId};
use crate::service::admin::{self, Actor};
use crate::service::keystore::DatabaseKeyStore;
use crate::service::{AppState, ClientMeta, ServiceError};
use crate::startup::{self, Application};
use crate::storage::postgres::PostgresUrl;
use crate::storage::transfer::{self, TransferError};
use crate::storage::{AuditEvent, AuditFilter, BackupError, DatabaseSettings, Store, StoreError};

mod clients_tool;
mod kek_advice;
mod key_tool;
mod passkeys_tool;

#[derive(Parser)]
#[command(
    name = "gatehouse",
    version,
    about = "Authentication and token service: passwords in, RS256 access tokens and rotating refresh tokens out.",
    long_about = None,
    after_help = "Configuration comes from GATEHOUSE_* environment variables; see README.md."
)]
pub struct Cli {
    /// A TOML configuration file; GATEHOUSE_* environment variables override it.
    #[arg(long, global = true, env = "GATEHOUSE_CONFIG", value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP service (the default).
    Serve,
    /// Create or upgrade the database schema, then exit.
    Migrate,
    /// Manage signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage users.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Inspect and revoke refresh-token families (sessions).
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// Manage service clients (OAuth 2.0 client credentials).
    #[command(subcommand)]
    Clients(ClientsCommand),
    /// Read the audit log, newest first.
    Audit {
        /// Only events of this user.
        #[arg(long)]
        user: Option<String>,
        /// Only events of this type (login_failed, refresh_reuse_detected, ...).
        #[arg(long = "type")]
        kind: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Validate the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Copy the database consistently while the server runs (SQLite online backup; on
    /// PostgreSQL, use pg_dump).
    Backup {
        /// Where to write the copy; must not exist yet.
        #[arg(long, value_name = "FILE")]
        to: std::path::PathBuf,
    },
    /// Copy a SQLite install into PostgreSQL, in one transaction: users, sessions, token
    /// hashes, lockout counters, audit events; then, with --keys-from, its keys. Stop the
    /// service first: the copy is refused (exit 1) while a server uses the SQLite file.
    MigrateData {
        /// The SQLite database to copy; opened read-only, never changed.
        #[arg(long, value_name = "FILE")]
        from: std::path::PathBuf,
        /// The PostgreSQL database (postgres://...); its schema is migrated first.
        /// Default: GATEHOUSE_DATABASE, when it names PostgreSQL (keeps a password out
        /// of the process list).
        #[arg(long, value_name = "URL")]
        to: Option<String>,
        /// Copy even if the target already holds rows (none may collide with the
        /// source's); without it, a non-empty target is refused.
        #[arg(long)]
        into_non_empty: bool,
        /// The install's keys directory: after the data, its keys and refresh.secret are
        /// sealed into the target under GATEHOUSE_KEY_ENCRYPTION_KEY_FILE, as `gatehouse
        /// keys import` does, so every session refreshes after the move.
        #[arg(long, value_name = "DIR")]
        keys_from: Option<std::path::PathBuf>,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Generate an RSA-2048 key. Running servers publish it within the keys reload interval
    /// (SIGHUP: at once); it signs after `keys rotate` (the first key signs at once). On PostgreSQL it is stored in the database.
    Generate,
    /// List the keys: kid, stage, size, file (or name in the database).
    List,
    /// Make the next key sign; the signing key is retired (published until its tokens
    /// expire). Refused until the next key has been published for the JWKS max-age plus
    /// the reload interval, so no verifier's cache can miss it.
    Rotate {
        /// Rotate now even if some verifiers may not have the next key cached yet.
        #[arg(long)]
        force: bool,
    },
    /// Retire a key that does not sign: it stays published until its tokens expire.
    Retire {
        /// The key's id; one kid in 64 starts with `-`, so hyphen-led values are taken as is.
        #[arg(allow_hyphen_values = true)]
        kid: String,
        /// Stop publishing it at once (its tokens stop verifying).
        #[arg(long)]
        now: bool,
    },
    /// PostgreSQL only: move a keys directory (its keys, their stages from keys.json,
    /// and refresh.secret) into the database, sealed under the key-encryption key.
    /// Tokens signed and refresh tokens issued before keep working. The directory is
    /// left as it was.
    Import {
        /// The keys directory to read.
        #[arg(long, value_name = "DIR")]
        from: std::path::PathBuf,
        /// Replace the keys and refresh secret the database holds (their tokens stop
        /// working) instead of refusing.
        #[arg(long)]
        replace: bool,
    },
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Create a user; the password is read from stdin (or a prompt on a terminal).
    Create {
        #[arg(long)]
        email: String,
        /// Give the user the admin role.
        #[arg(long)]
        admin: bool,
    },
    /// List users, or those whose email starts with --email.
    List {
        #[arg(long)]
        email: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Show one user and their sessions.
    Show { email: String },
    /// Give a user the admin role.
    Promote { email: String },
    /// Disable a user: no login, no refresh; every session revoked.
    Disable { email: String },
    /// Enable a disabled user again (their sessions stay revoked).
    Enable { email: String },
    /// Take the admin role away from a user.
    Demote { email: String },
    /// Set a user's password, read from stdin (or a prompt on a terminal); every session
    /// of the user is revoked and outstanding reset links stop working.
    SetPassword { email: String },
    /// Queue a password-reset mail to a user (needs GATEHOUSE_SMTP_URL); a running
    /// gatehouse sends it.
    SendReset { email: String },
    /// Remove a user's second factors (TOTP, recovery codes, passkeys) and revoke every
    /// session, for a user who lost their authenticator and their recovery codes.
    ResetMfa { email: String },
    /// List a user's passkeys (the user by email or id): id, name, created, last used.
    Passkeys { email: String },
    /// Remove one of a user's passkeys (by email or id; their sessions stay).
    RemovePasskey { email: String, passkey_id: String },
}

#[derive(Subcommand)]
enum ClientsCommand {
    /// Create a client; prints its id and its secret, which is shown this once.
    Create {
        #[arg(long)]
        name: String,
        /// A scope the client may ask for (repeat for several): `introspect` lets it
        /// call /oauth/introspect, `revocations` read GET /v1/revocations.
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
        /// The `aud` of its tokens (default: GATEHOUSE_AUDIENCE).
        #[arg(long)]
        audience: Option<String>,
    },
    /// List clients (never a secret).
    List,
    /// Give a client a new secret; the old one keeps working for
    /// GATEHOUSE_CLIENT_SECRET_OVERLAP.
    RotateSecret { client_id: String },
    /// Delete a client: its secrets stop working, its tokens introspect inactive.
    Delete { client_id: String },
}

#[derive(Subcommand)]
enum SessionsCommand {
    /// List a user's sessions, revoked ones included.
    List {
        #[arg(long)]
        user: String,
    },
    /// Revoke one family, or every family of a user.
    Revoke {
        #[arg(long, conflicts_with = "user", required_unless_present = "user")]
        family: Option<String>,
        #[arg(long)]
        user: Option<String>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate the configuration and print the effective values.
    Check,
}

/// A failure the user can fix (exit 1) or one they cannot (exit 2).
enum Failure {
    User(String),
    Internal(String),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Internal(format!("{e:#}"))
    }
}

impl From<ServiceError> for Failure {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::EmailTaken => Failure::User("that email is already registered".into()),
            ServiceError::NotFound => Failure::User("not found".into()),
            ServiceError::Validation(v) => Failure::User(
                v.iter()
                    .map(|f| format!("{} {}", f.field, f.message))
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            other => Failure::Internal(other.to_string()),
        }
    }
}

pub fn main() -> ExitCode {
    crate::telemetry::init();
    // Usage mistakes are user errors (exit 1), not clap's customary 2, which we keep
    // for internal errors.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            let advice = kek_advice::advice(&e, cli.config.as_deref());
            eprintln!("gatehouse: configuration error: {e}{advice}");
            return ExitCode::from(1);
        }
    };
    let result = run(settings, cli.command.unwrap_or(Command::Serve));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::User(msg)) => {
            eprintln!("gatehouse: {msg}");
            ExitCode::from(1)
        }
        Err(Failure::Internal(msg)) => {
            eprintln!("gatehouse: internal error: {msg}");
            ExitCode::from(2)
        }
    }
}

fn serve(settings: Settings) -> Result<(), Failure> {
    crate::memory::limit_malloc_arenas();
    // Once, at start: the process's environment does not change while it runs.
    for warning in
        Settings::unknown_variables(std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()))
    {
        tracing::warn!("{warning}");
    }
    actix_web::rt::System::new().block_on(async move {
        let app = Application::build(settings)
            .await
            .map_err(|e| Failure::User(format!("cannot start: {e:#}")))?;
        app.run_until_stopped()
            .await
            .map_err(|e| Failure::Internal(e.to_string()))
    })
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Internal(e.to_string()))
}

fn run(settings: Settings, command: Command) -> Result<(), Failure> {
    match command {
        Command::Serve => serve(settings),
        Command::Migrate => {
            let store = startup::open_store(&settings)?;
            let version = store
                .schema_version()
                .map_err(|e| Failure::Internal(e.to_string()))?;
            println!(
                "database {} is at schema {version}",
                settings.database_settings()
            );
            Ok(())
        }
        Command::Config(ConfigCommand::Check) => {
            // Before the values, so that a failure is the one line it prints.
            let database = check_database(&settings)?;
            for (key, value) in settings.describe() {
                println!("{key}={value}");
            }
            for line in database {
                println!("{line}");
            }
            let keys_dir = &settings.server.keys_dir;
            match &settings.storage.key_encryption_key_file {
                Some(_) if settings.storage.database.postgres_url().is_some() => {}
                _ if !keys_dir.exists() => {
                    println!("# no keys directory yet: `serve` will create it and a signing key")
                }
                _ => match keys::load_dir(keys_dir) {
                    Ok(k) if k.is_empty() => {
                        println!("# no signing key yet: `serve` will generate one")
                    }
                    Ok(k) => println!("# {} signing key(s) readable and private", k.len()),
                    Err(e) => return Err(Failure::User(format!("keys: {e:#}"))),
                },
            }
            let unknown = Settings::unknown_variables(
                std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()),
            );
            for warning in unknown.iter().chain(&settings.warnings()) {
                println!("# warning: {warning}");
            }
            if let Some(url) = &settings.rate_limits.store {
                let ca_file = settings.rate_limits.store_ca_file.as_deref();
                match runtime()?.block_on(crate::http::limiter::probe(url, ca_file)) {
                    Ok(()) => println!("# rate-limit store {url} answers"),
                    // `serve` refuses to start on it: a setting to fix.
                    Err(e @ crate::http::limiter::ProbeFailure::Tls(_)) => {
                        return Err(Failure::User(crate::http::limiter::tls_refusal(url, &e)));
                    }
                    // A warning, not a failure: the service starts without Redis and
                    // applies GATEHOUSE_RATE_LIMIT_ON_STORE_ERROR until it answers.
                    Err(e) => println!(
                        "# warning: GATEHOUSE_RATE_LIMIT_STORE: {url} does not answer ({e}); \
                         until it does, GATEHOUSE_RATE_LIMIT_ON_STORE_ERROR={} applies",
                        settings.rate_limits.on_store_error.as_str()
                    ),
                }
            }
            println!("# configuration OK");
            Ok(())
        }
        Command::Keys(command) => key_tool::keys_tool(&settings, command),
        Command::Backup { to } => {
            let store = existing_store(&settings)?;
            if to.exists() {
                return Err(Failure::User(format!("{} already exists", to.display())));
            }
            match store.backup_to(&to) {
                Ok(()) => {}
                Err(BackupError::Unsupported(advice)) => {
                    return Err(Failure::User(format!(
                        "gatehouse backup copies SQLite files only; {advice}"
                    )));
                }
                Err(BackupError::Failed(e)) => return Err(e.into()),
            }
            println!(
                "backed up {} to {} (integrity ok)",
                settings.database_settings(),
                to.display()
            );
            Ok(())
        }
        Command::Users(UsersCommand::List { email, limit }) => {
            read_tool(&settings, Read::Users { email, limit })
        }
        Command::Users(UsersCommand::Show { email }) => read_tool(&settings, Read::User(email)),
        Command::Sessions(SessionsCommand::List { user }) => {
            read_tool(&settings, Read::Sessions(user))
        }
        Command::Audit { user, kind, limit } => {
            read_tool(&settings, Read::Audit { user, kind, limit })
        }
        Command::MigrateData {
            from,
            to,
            into_non_empty,
            keys_from,
        } => migrate_data(
            &settings,
            &from,
            to.as_deref(),
            into_non_empty,
            keys_from.as_deref(),
        ),
        Command::Users(UsersCommand::Create { email, admin }) => {
            admin_tool(&settings, Change::CreateUser { email, admin })
        }
        Command::Users(UsersCommand::Promote { email }) => {
            admin_tool(&settings, Change::Promote(email))
        }
        Command::Users(UsersCommand::Disable { email }) => {
            admin_tool(&settings, Change::Disable(email))
        }
        Command::Users(UsersCommand::Enable { email }) => {
            admin_tool(&settings, Change::Enable(email))
        }
        Command::Users(UsersCommand::Demote { email }) => {
            admin_tool(&settings, Change::Demote(email))
        }
        Command::Users(UsersCommand::SetPassword { email }) => {
            admin_tool(&settings, Change::SetPassword(email))
        }
        Command::Users(UsersCommand::SendReset { email }) => {
            admin_tool(&settings, Change::SendReset(email))
        }
        Command::Users(UsersCommand::ResetMfa { email }) => {
            admin_tool(&settings, Change::ResetMfa(email))
        }
        Command::Users(UsersCommand::Passkeys { email }) => {
            admin_tool(&settings, Change::Passkeys(PasskeysCommand::List(email)))
        }
        Command::Users(UsersCommand::RemovePasskey { email, passkey_id }) => {
            let command = PasskeysCommand::Remove {
                email,
                passkey: passkey_id,
            };
            admin_tool(&settings, Change::Passkeys(command))
        }
        Command::Sessions(SessionsCommand::Revoke { family, user }) => {
            admin_tool(&settings, Change::Revoke { family, user })
        }
        Command::Clients(command) => admin_tool(&settings, Change::Clients(command)),
    }
}

/// `config check`'s part about the database, as the lines to print: what `serve` would
/// find there, read only
/// (a check creates no file, migrates nothing and stores no key), so that "OK" means
/// the start would get past the database and the keys stored in it.
fn check_database(settings: &Settings) -> Result<Vec<String>, Failure> {
    let mut found = Vec::new();
    match &settings.storage.database {
        Database::Sqlite(path) => {
            crate::storage::sqlite::SqliteStore::probe(path)
                .map_err(|e| Failure::User(format!("database: {e:#}")))?;
            if path.exists() {
                found.push(format!(
                    "# SQLite database {} opens for writing",
                    path.display()
                ));
            } else {
                found.push(format!(
                    "# no SQLite database at {} yet: `serve` will create it",
                    path.display()
                ));
            }
        }
        Database::Postgres(url) => {
            // `validate` refuses PostgreSQL without a KEK file, so this never fails.
            let Some(kek) = settings.storage.key_encryption_key_file.as_deref() else {
                return Err(Failure::User(
                    "GATEHOUSE_KEY_ENCRYPTION_KEY_FILE is required on PostgreSQL".into(),
                ));
            };
            let checked = DatabaseKeyStore::check(
                url,
                settings.storage.db_connect_timeout,
                settings.storage.db_start_timeout,
                kek,
            )
            .map_err(|e| Failure::User(format!("database: {e:#}")))?;
            let schema = if checked.schema < checked.latest {
                format!(
                    "schema {} (`serve` migrates it to {})",
                    checked.schema, checked.latest
                )
            } else {
                format!("schema {}", checked.schema)
            };
            found.push(format!("# PostgreSQL {url}: connected, {schema}, writable"));
            if checked.keys_stored {
                found.push(
                    "# signing keys and the refresh secret live in the database, sealed \
                     under the key-encryption key, which opens them"
                        .into(),
                );
            } else {
                found.push(
                    "# no keys in the database yet: the first `serve` generates them and \
                     seals them under the key-encryption key (32 bytes, private)"
                        .into(),
                );
            }
        }
    }
    Ok(found)
}

fn migrate_data(
    settings: &Settings,
    from: &std::path::Path,
    to: Option<&str>,
    into_non_empty: bool,
    keys_from: Option<&std::path::Path>,
) -> Result<(), Failure> {
    // Refused before the data moves, not after.
    if keys_from.is_some() && settings.storage.key_encryption_key_file.is_none() {
        return Err(Failure::User(
            "--keys-from seals the keys under GATEHOUSE_KEY_ENCRYPTION_KEY_FILE: set it \
             (32 random bytes, mode 0600) first"
                .into(),
        ));
    }
    let to = match (to, settings.storage.database.postgres_url()) {
        (Some(url), _) => {
            PostgresUrl::parse(url).map_err(|e| Failure::User(format!("--to: {e}")))?
        }
        (None, Some(url)) => url.clone(),
        (None, None) => {
            return Err(Failure::User(
                "name the PostgreSQL database to copy into: --to postgres://... \
                 (or GATEHOUSE_DATABASE=postgres://...)"
                    .into(),
            ));
        }
    };
    let options = transfer::Options {
        into_non_empty,
        connect_timeout: settings.storage.db_connect_timeout,
    };
    let report = transfer::copy(from, &to, &options).map_err(|e| match e {
        TransferError::Refused(m) => Failure::User(m),
        TransferError::Failed(m) => Failure::Internal(m),
    })?;
    println!(
        "copied SQLite {} into PostgreSQL {to} (schema {}) in {:.1}s, one transaction:",
        from.display(),
        report.target_schema,
        report.elapsed.as_secs_f64()
    );
    for t in &report.tables {
        if t.target_before > 0 {
            println!(
                "{:<18} {:>10}  (the target held {} before)",
                t.table, t.copied, t.target_before
            );
        } else {
            println!("{:<18} {:>10}", t.table, t.copied);
        }
    }
    if !report.audit_ids_kept {
        println!("# audit events were numbered after the target's own, in their order");
    }
    println!("# verified: the target's counts match the source's");
    if let Some(dir) = keys_from {
        // A second transaction: should it fail, the data stays moved, and `gatehouse keys
        // import --from DIR` finishes the job.
        let mut target = settings.clone();
        target.storage.database = Database::Postgres(Box::new(to));
        key_tool::import_keys(&target, dir, false)?;
    }
    Ok(())
}

/// The store of an install that already has a database. Reads and backups must create
/// nothing: a database they created could only be empty, and a mistyped
/// GATEHOUSE_DATABASE would then look like an install without users.
fn existing_store(settings: &Settings) -> Result<Arc<dyn Store>, Failure> {
    if let DatabaseSettings::Sqlite { path, .. } = settings.database_settings()
        && !path.exists()
    {
        return Err(Failure::User(format!(
            "no database at {} yet: nothing to read (the first `gatehouse serve` or \
             `gatehouse migrate` creates it; check GATEHOUSE_DATABASE)",
            path.display()
        )));
    }
    Ok(startup::open_store(settings)?)
}

/// The read-only commands over the database.
enum Read {
    Users {
        email: Option<String>,
        limit: u32,
    },
    User(String),
    Sessions(String),
    Audit {
        user: Option<String>,
        kind: Option<String>,
        limit: u32,
    },
}

/// The read-only commands run on the store alone, so that reading neither generates a
/// signing key nor a refresh secret, as building the whole service state would.
fn read_tool(settings: &Settings, command: Read) -> Result<(), Failure> {
    let store = existing_store(settings)?;
    let store = store.as_ref();
    let read = |e: StoreError| Failure::from(ServiceError::from(e));
    match command {
        Read::Users { email, limit } => {
            let users = admin::search_users(store, email, limit.clamp(1, 1000)).map_err(read)?;
            for u in users {
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    u.id,
                    u.email.as_str(),
                    u.role.as_str(),
                    if u.disabled { "disabled" } else { "active" },
                    u.created_at.to_rfc3339()
                );
            }
        }
        Read::User(email) => {
            let u = find_user(store, &email)?;
            println!(
                "id:         {}\nemail:      {}\nrole:       {}\ndisabled:   {}\ncreated_at: {}",
                u.id,
                u.email.as_str(),
                u.role.as_str(),
                u.disabled,
                u.created_at.to_rfc3339()
            );
            print_sessions(store, u.id)?;
        }
        Read::Sessions(user) => {
            let u = find_user(store, &user)?;
            print_sessions(store, u.id)?;
        }
        Read::Audit { user, kind, limit } => {
            let user_id = match user {
                Some(e) => Some(find_user(store, &e)?.id),
                None => None,
            };
            let filter = AuditFilter {
                user_id,
                kind,
                limit: limit.clamp(1, 10_000),
                before: None,
            };
            for e in store.list_audit(&filter).map_err(read)? {
                println!(
                    "{}\t{}\t{}\tuser={}\tfamily={}\tactor={}\tip={}\t{}",
                    e.at.to_rfc3339(),
                    e.kind,
                    e.outcome,
                    e.user_id
                        .map(|u| u.to_string())
                        .unwrap_or_else(|| "-".into()),
                    e.family_id
                        .map(|u| u.to_string())
                        .unwrap_or_else(|| "-".into()),
                    e.actor_id
                        .map(|u| u.to_string())
                        .unwrap_or_else(|| "-".into()),
                    e.ip.as_deref().unwrap_or("-"),
                    e.detail.as_deref().unwrap_or(""),
                );
            }
        }
    }
    Ok(())
}

fn find_user(store: &dyn Store, raw: &str) -> Result<crate::domain::User, Failure> {
    let email = Email::parse(raw).map_err(|m| Failure::User(format!("email {m}")))?;
    admin::user_with_email(store, &email)
        .map_err(|e| Failure::from(ServiceError::from(e)))?
        .ok_or_else(|| Failure::User(format!("no user with email {raw}")))
}

fn read_password() -> Result<String, Failure> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        let first = rpassword::prompt_password("Password: ")
            .map_err(|e| Failure::Internal(e.to_string()))?;
        let again =
            rpassword::prompt_password("Again: ").map_err(|e| Failure::Internal(e.to_string()))?;
        if first != again {
            return Err(Failure::User("the passwords differ".into()));
        }
        return Ok(first);
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .map_err(|e| Failure::Internal(e.to_string()))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

async fn user_by_email(state: &AppState, raw: &str) -> Result<crate::domain::User, Failure> {
    let email = Email::parse(raw).map_err(|m| Failure::User(format!("email {m}")))?;
    admin::user_by_email(state, email)
        .await?
        .ok_or_else(|| Failure::User(format!("no user with email {raw}")))
}

/// The commands that change users and sessions: they need the whole service state.
enum Change {
    CreateUser {
        email: String,
        admin: bool,
    },
    Promote(String),
    Disable(String),
    ResetMfa(String),
    Enable(String),
    Demote(String),
    SetPassword(String),
    SendReset(String),
    Revoke {
        family: Option<String>,
        user: Option<String>,
    },
    Clients(ClientsCommand),
    Passkeys(PasskeysCommand),
}

fn admin_tool(settings: &Settings, change: Change) -> Result<(), Failure> {
    let rt = runtime()?;
    let _guard = rt.enter();
    let state = startup::build_state(settings, Arc::new(SystemClock))?;
    rt.block_on(change_as_operator(&state, change))
}

/// The CLI acts as an operator through the same service functions as the admin API, so
/// the rules and the audit events are the same.
async fn change_as_operator(state: &AppState, change: Change) -> Result<(), Failure> {
    let cli = ClientMeta::default();
    match change {
        Change::CreateUser { email, admin } => {
            let email = Email::parse(&email).map_err(|m| Failure::User(format!("email {m}")))?;
            let password = read_password()?;
            let password = NewPassword::parse(&password)
                .map_err(|m| Failure::User(format!("password {m}")))?;
            let role = if admin { Role::Admin } else { Role::User };
            let user = admin::create_user(state, Actor::Operator, email, password, role).await?;
            println!(
                "created user {} {} ({})",
                user.id,
                user.email.as_str(),
                role.as_str()
            );
        }
        Change::Promote(email) => {
            let u = user_by_email(state, &email).await?;
            admin::update_user(state, Actor::Operator, u.id, Some(Role::Admin), None, &cli).await?;
            println!("{} is now an admin", u.email.as_str());
        }
        Change::Disable(email) => {
            let u = user_by_email(state, &email).await?;
            admin::update_user(state, Actor::Operator, u.id, None, Some(true), &cli).await?;
            println!("{} is disabled and every session revoked", u.email.as_str());
        }
        Change::Enable(email) => {
            let u = user_by_email(state, &email).await?;
            admin::update_user(state, Actor::Operator, u.id, None, Some(false), &cli).await?;
            println!("{} is enabled", u.email.as_str());
        }
        Change::Demote(email) => {
            let u = user_by_email(state, &email).await?;
            admin::update_user(state, Actor::Operator, u.id, Some(Role::User), None, &cli).await?;
            println!("{} is no longer an admin", u.email.as_str());
        }
        Change::SetPassword(email) => {
            let u = user_by_email(state, &email).await?;
            let password = read_password()?;
            let password = NewPassword::parse(&password)
                .map_err(|m| Failure::User(format!("password {m}")))?;
            crate::service::mail::set_password_by_operator(state, u.id, password).await?;
            println!(
                "{} has a new password; every session was revoked",
                u.email.as_str()
            );
        }
        Change::SendReset(email) => {
            let u = user_by_email(state, &email).await?;
            if state.mail.is_none() {
                return Err(Failure::User(
                    "GATEHOUSE_SMTP_URL is unset: gatehouse sends no mail".into(),
                ));
            }
            if u.disabled {
                return Err(Failure::User(format!(
                    "{} is disabled: enable them first",
                    u.email.as_str()
                )));
            }
            crate::service::mail::admin_send_reset(state, u.id, &cli).await?;
            println!(
                "a reset mail to {} is queued; a running gatehouse sends it",
                u.email.as_str()
            );
        }
        Change::ResetMfa(email) => {
            let u = user_by_email(state, &email).await?;
            crate::service::mfa::admin_reset(state, None, u.id, &cli).await?;
            println!(
                "{}: second factor removed and every session revoked",
                u.email.as_str()
            );
        }
        Change::Revoke { family, user } => {
            if let Some(family) = family {
                let id = family
                    .parse::<FamilyId>()
                    .map_err(|_| Failure::User(format!("{family} is not a family id")))?;
                match admin::revoke_family(state, Actor::Operator, id, &cli).await {
                    Err(ServiceError::NotFound) => {
                        return Err(Failure::User(format!("no family {family}")));
                    }
                    other => other?,
                }
                println!("family {family} revoked");
            } else if let Some(user) = user {
                let u = user_by_email(state, &user).await?;
                admin::revoke_user_families(state, Actor::Operator, u.id, &cli).await?;
                println!("every session of {} revoked", u.email.as_str());
            }
        }
        Change::Clients(command) => clients_tool::run(state, command).await?,
        Change::Passkeys(command) => passkeys_tool::run(state, command).await?,
    }
    Ok(())
}

fn print_sessions(store: &dyn Store, user: UserId) -> Result<(), Failure> {
    let sessions = admin::sessions_of(store, user, chrono::Utc::now())
        .map_err(|e| Failure::from(ServiceError::from(e)))?
        .ok_or_else(|| Failure::from(ServiceError::NotFound))?;
    for s in sessions {
        println!(
            "{}\tcreated {}\tlast used {}\texpires {}\t{}",
            s.id,
            s.created_at.to_rfc3339(),
            s.last_used_at.to_rfc3339(),
            s.expires_at.to_rfc3339(),
            match (s.revoked_at, s.revoked_reason) {
                (Some(at), Some(r)) => format!("revoked {} ({})", at.to_rfc3339(), r.as_str()),
                (Some(at), None) => format!("revoked {}", at.to_rfc3339()),
                _ => "live".into(),
            }
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_retire_takes_a_kid_that_starts_with_a_hyphen() {
        let cli = Cli::try_parse_from(["gatehouse", "keys", "retire", "-teg6ukX8uGF8WWI", "--now"])
            .expect("a hyphen-led kid parses");
        match cli.command {
            Some(Command::Keys(KeysCommand::Retire { kid, now })) => {
                assert_eq!(kid, "-teg6ukX8uGF8WWI");
                assert!(now);
            }
            _ => panic!("parsed as another command"),
        }
    }
}
