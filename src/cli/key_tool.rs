//! `gatehouse keys …`: the signing keys and the refresh secret, on either backend.

use super::*;

pub(super) fn keys_tool(settings: &Settings, command: KeysCommand) -> Result<(), Failure> {
    let now = chrono::Utc::now();
    let timing = settings.key_timing();
    let user_error = |e: anyhow::Error| Failure::User(format!("{e:#}"));
    // The database's client runs a runtime of its own; this thread runs none, but
    // `key_store` is called the one way that is safe from any thread.
    let source = || startup::off_runtime(|| startup::key_store(settings)).map_err(user_error);
    match command {
        KeysCommand::Import { from, replace } => import_keys(settings, &from, replace)?,
        KeysCommand::Generate => {
            let generated = source()?.generate(now).map_err(user_error)?;
            // Servers publish a key the CLI made at their next reload, not when it is
            // written: every replica reads the database (PostgreSQL), the one server reads
            // the keys directory (SQLite), each on its own interval or at once on SIGHUP.
            // Saying "published now" invited a rotation before every server had it.
            let stage = match generated.stage {
                Stage::Current => "current: it signs now".to_owned(),
                _ => format!(
                    "next: running servers publish it within {}s (GATEHOUSE_KEYS_RELOAD_INTERVAL; \
                     SIGHUP: at once); `gatehouse keys rotate` is accepted {}s from now, once \
                     verifiers' caches hold it too",
                    settings.server.keys_reload_interval.as_secs(),
                    timing.publish_before_signing
                ),
            };
            println!(
                "generated {} kid={} ({stage})",
                generated.place, generated.kid
            );
            record_key_event(settings, AuditKind::KeyGenerated, generated.kid);
        }
        KeysCommand::List => {
            if let Database::Sqlite(_) = settings.storage.database {
                no_keys_yet(&settings.server.keys_dir)?;
            }
            for line in source()?.list(now, timing).map_err(user_error)? {
                println!(
                    "{}\t{} bits\t{}\t{}",
                    line.kid, line.bits, line.state, line.place
                );
            }
        }
        KeysCommand::Rotate { force } => {
            let (old, new) = source()?.rotate(now, timing, force).map_err(user_error)?;
            println!(
                "{new} signs now; {} is retired and stays published for {}s. Running servers pick this up within {}s (or send SIGHUP).",
                old.as_deref().unwrap_or("-"),
                timing.retire_after,
                settings.server.keys_reload_interval.as_secs()
            );
            record_key_event(
                settings,
                AuditKind::KeyRotated,
                format!("{} -> {new}", old.unwrap_or_default()),
            );
        }
        KeysCommand::Retire {
            kid,
            now: immediately,
        } => {
            source()?
                .retire(&kid, now, timing, immediately)
                .map_err(user_error)?;
            println!("{kid} retired");
            record_key_event(settings, AuditKind::KeyRetired, kid);
        }
    }
    Ok(())
}

/// `keys list` on a keys directory that holds no key yet says so, rather than failing on
/// a missing directory or listing nothing.
pub(super) fn no_keys_yet(dir: &std::path::Path) -> Result<(), Failure> {
    let has_key = std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.path().extension().is_some_and(|x| x == "pem"))
    });
    if has_key || (dir.exists() && std::fs::read_dir(dir).is_err()) {
        // Keys to list, or a directory that cannot be read: `list` says which.
        return Ok(());
    }
    Err(Failure::User(format!(
        "no signing key in {} yet: nothing to list (the first `gatehouse serve`, or \
         `gatehouse keys generate`, creates one)",
        dir.display()
    )))
}

/// `keys import`: a keys directory into the database, as one transaction.
pub(super) fn import_keys(
    settings: &Settings,
    from: &std::path::Path,
    replace: bool,
) -> Result<(), Failure> {
    let user_error = |e: anyhow::Error| Failure::User(format!("{e:#}"));
    let (Some(url), Some(kek)) = (
        settings.storage.database.postgres_url(),
        &settings.storage.key_encryption_key_file,
    ) else {
        return Err(Failure::User(
            "keys import moves a keys directory into a PostgreSQL database \
             (GATEHOUSE_DATABASE=postgres://… and GATEHOUSE_KEY_ENCRYPTION_KEY_FILE); \
             with SQLite the keys stay in GATEHOUSE_KEYS_DIR"
                .into(),
        ));
    };
    let secret_file = from.join("refresh.secret");
    let now = chrono::Utc::now();
    let imported = startup::off_runtime(|| {
        let keys = DatabaseKeyStore::open(
            url,
            settings.storage.db_connect_timeout,
            settings.storage.db_start_timeout,
            kek,
        )?;
        keys.import(from, &secret_file, now, settings.key_timing(), replace)
    })
    .map_err(user_error)?;
    if imported.replaced > 0 {
        println!(
            "replaced {} key(s) and secret(s) the database held",
            imported.replaced
        );
    }
    for (kid, stage, name) in &imported.keys {
        let stage = match stage {
            Stage::Next => "next",
            Stage::Current => "current",
            Stage::Retired => "retired",
        };
        println!("imported {kid} ({stage}) from {name}");
    }
    if imported.refresh_secret {
        println!("imported the refresh secret: refresh tokens issued before keep refreshing");
    } else {
        println!(
            "no refresh.secret in {}: the first server start generates one, and refresh \
             tokens issued before will not refresh",
            from.display()
        );
    }
    println!(
        "{} key(s) sealed into the database; {} was left as it was: delete it once every \
         replica runs on the database",
        imported.keys.len(),
        from.display()
    );
    record_key_event(
        settings,
        AuditKind::KeyGenerated,
        format!(
            "imported {} key(s) from {}",
            imported.keys.len(),
            from.display()
        ),
    );
    Ok(())
}

/// Key changes go to the audit log when the database is there; a missing database must
/// not stop key management (keys may be prepared before the first start).
pub(super) fn record_key_event(settings: &Settings, kind: AuditKind, detail: String) {
    if let Database::Sqlite(path) = &settings.storage.database
        && !path.exists()
    {
        return;
    }
    let Ok(store) = startup::open_store(settings) else {
        return;
    };
    let event = AuditEvent {
        detail: Some(format!("cli: {detail}")),
        ..AuditEvent::new(chrono::Utc::now(), kind, "ok")
    };
    if let Err(e) = store.record_audit(event) {
        eprintln!("gatehouse: warning: could not record the audit event: {e}");
    }
}
