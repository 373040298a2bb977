//! What only the PostgreSQL backend has: URLs and their TLS modes, and the CLI on a URL.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use gatehouse::storage::postgres::PostgresUrl;
use gatehouse::storage::{self, DatabaseSettings};

use crate::pgdb::{TestDatabase, admin_client, loud};

/// The session's own row in `pg_stat_ssl`: whether this connection is encrypted.
fn encrypted(url: &PostgresUrl) -> anyhow::Result<bool> {
    let mut client = admin_client(url)?;
    Ok(client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )?
        .try_get(0)?)
}

/// `url` with `param` added to its query.
fn with_param(url: &str, param: &str) -> String {
    let joiner = if url.contains('?') { '&' } else { '?' };
    format!("{url}{joiner}{param}")
}

fn open(url: &PostgresUrl) -> anyhow::Result<()> {
    let store = storage::open(&DatabaseSettings::Postgres {
        url: Box::new(url.clone()),
        pool_size: 1,
        // Short: the refused handshakes are retried until it runs out.
        connect_timeout: Duration::from_secs(2),
        start_timeout: Duration::ZERO,
        prepared_statements: true,
    })?;
    store.ping()?;
    Ok(())
}

#[test]
fn plain_and_sslmode_disable_urls_work() {
    let Some(db) = TestDatabase::new("plain_and_sslmode_disable_urls_work") else {
        return;
    };
    let plain = PostgresUrl::parse(&db.url_text()).expect("the test URL");
    open(&plain).expect("a plain URL opens the store");
    let disabled = PostgresUrl::parse(&with_param(&db.url_text(), "sslmode=disable")).expect("URL");
    open(&disabled).expect("sslmode=disable opens the store");
    assert!(
        !encrypted(&disabled).expect("connect"),
        "sslmode=disable must not encrypt"
    );
}

#[test]
fn sslmode_require_encrypts_and_verify_full_checks_the_certificate() {
    let Some(db) = TestDatabase::new("sslmode_require_encrypts") else {
        return;
    };
    let base = db.url_text();
    let mut admin = admin_client(&db.url()).expect("connect");
    let ssl: String = admin
        .query_one("SHOW ssl", &[])
        .and_then(|r| r.try_get(0))
        .expect("SHOW ssl");
    let require = PostgresUrl::parse(&with_param(&base, "sslmode=require")).expect("URL");
    if ssl != "on" {
        loud(&format!(
            "the test server has no TLS certificate (ssl = {ssl}): only the refusal of \
             sslmode=require without TLS is tested; encryption is NOT"
        ));
        assert!(
            open(&require).is_err(),
            "require must not fall back to plain"
        );
        return;
    }
    open(&require).expect("sslmode=require opens the store");
    assert!(
        encrypted(&require).expect("connect"),
        "sslmode=require encrypts"
    );
    assert!(
        encrypted(&PostgresUrl::parse(&base).expect("URL")).expect("connect"),
        "the default (prefer) uses TLS when the server offers it"
    );

    // Refused whoever signed it: the certificate does not name the address dialled.
    let verify = PostgresUrl::parse(&with_param(&base, "sslmode=verify-full")).expect("URL");
    let refused = open(&verify).expect_err("verify-full accepted a certificate for another name");
    assert!(
        format!("{refused:#}")
            .to_lowercase()
            .contains("tls handshake"),
        "{refused:#}"
    );

    let cert_file: String = admin
        .query_one("SHOW ssl_cert_file", &[])
        .and_then(|r| r.try_get(0))
        .expect("SHOW ssl_cert_file");
    // A root the server's certificate does not chain to: refused.
    let stranger = "/usr/share/ca-certificates/mozilla/ISRG_Root_X1.crt";
    if std::path::Path::new(stranger).exists() {
        let url = with_param(&base, &format!("sslmode=verify-ca&sslrootcert={stranger}"));
        assert!(
            open(&PostgresUrl::parse(&url).expect("URL")).is_err(),
            "verify-ca accepted a certificate its root did not sign"
        );
    }
    if std::fs::read(&cert_file).is_err() {
        loud(&format!(
            "{cert_file} is not readable: verify-ca/verify-full against a trusted \
             certificate are NOT tested"
        ));
        return;
    }
    // Its own certificate as the root: verify-ca passes whatever the name.
    let url = with_param(&base, &format!("sslmode=verify-ca&sslrootcert={cert_file}"));
    let verify_ca = PostgresUrl::parse(&url).expect("URL");
    open(&verify_ca).expect("verify-ca with the server's certificate as root");
    assert!(encrypted(&verify_ca).expect("connect"));
    // Debian's snakeoil certificate names `localhost`: verify-full passes there.
    if cert_file.contains("snakeoil") && base.contains("@127.0.0.1:") {
        let url = with_param(
            &base.replacen("@127.0.0.1:", "@localhost:", 1),
            &format!("sslmode=verify-full&sslrootcert={cert_file}"),
        );
        let verify_full = PostgresUrl::parse(&url).expect("URL");
        open(&verify_full).expect("verify-full with a certificate for the host dialled");
        assert!(encrypted(&verify_full).expect("connect"));
    }
}

fn gatehouse(db: &TestDatabase, keys: &std::path::Path, url: &str) -> Command {
    // PostgreSQL keeps the keys in the database, sealed under a key-encryption key.
    let kek = keys.join("kek");
    if !kek.exists() {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::write(&kek, gatehouse::crypto::random_bytes::<32>()).expect("write the KEK");
        std::fs::set_permissions(&kek, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GATEHOUSE_KEY_ENCRYPTION_KEY_FILE", &kek)
        .env("GATEHOUSE_DATABASE", url)
        .env("GATEHOUSE_KEYS_DIR", keys)
        .env("GATEHOUSE_LOG_FORMAT", "text")
        .env("RUST_LOG", "warn");
    let _ = db;
    cmd
}

fn run(mut cmd: Command, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut child = cmd
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run gatehouse");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    let out = child.wait_with_output().expect("gatehouse exits");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The password the URL carries for the CLI: a made-up one under trust auth, which the
/// output must never show.
const FAKE_PASSWORD: &str = "n0t-Shown-anywhere";

#[test]
fn the_cli_works_on_a_postgres_url_and_never_prints_its_password() {
    let Some(db) = TestDatabase::new("the_cli_works_on_a_postgres_url") else {
        return;
    };
    let mut url = db.url_text();
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let with_password = match authority.split_once('@') {
        Some((user, host)) if !user.contains(':') => {
            Some(format!("{scheme}://{user}:{FAKE_PASSWORD}@{host}/{path}"))
        }
        _ => None,
    };
    if let Some(w) = with_password {
        url = w;
    }
    let keys = tempfile::tempdir().expect("temp dir");
    let cli = || gatehouse(&db, keys.path(), &url);

    let (code, out, err) = run(cli(), &["config", "check"], None);
    assert_eq!(code, 0, "{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("GATEHOUSE_DATABASE="))
        .expect("config check prints the database");
    assert!(line.contains("***@"), "{line}");
    for text in [&out, &err] {
        assert!(
            !text.contains(FAKE_PASSWORD),
            "the password was printed: {text}"
        );
    }

    let (code, out, err) = run(cli(), &["migrate"], None);
    assert_eq!(code, 0, "{err}");
    // The newest schema is the number of migration files.
    let latest = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
        .expect("migrations")
        .count();
    assert!(
        out.contains("PostgreSQL") && out.contains(&format!("schema {latest}")),
        "{out}"
    );
    assert!(!out.contains(FAKE_PASSWORD) && !err.contains(FAKE_PASSWORD));

    let (code, out, err) = run(
        cli(),
        &["users", "create", "--email", "ops@example.com", "--admin"],
        Some("Long-enough-Passphrase-42!\n"),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ops@example.com"), "{out}");
    let (code, out, err) = run(cli(), &["users", "list"], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ops@example.com\tadmin"), "{out}");
    let (code, out, err) = run(cli(), &["audit", "--limit", "5"], None);
    assert_eq!(code, 0, "{err}");
    assert!(!out.trim().is_empty(), "the user's creation is audited");

    let target = keys.path().join("copy.db");
    let (code, _, err) = run(
        cli(),
        &["backup", "--to", target.to_str().expect("utf-8 path")],
        None,
    );
    assert_eq!(
        code, 1,
        "backup on PostgreSQL is the user's to do elsewhere: {err}"
    );
    assert!(err.contains("pg_dump"), "{err}");
    assert!(!target.exists());
}

/// A connection killed while it idled in the pool (a server restart, a failover, an
/// operator's `pg_terminate_backend`) is found at checkout and replaced before any
/// statement is sent on it: the write that comes next succeeds, on a fresh connection,
/// without a restart of gatehouse. (A connection killed under a statement in flight is
/// a 503 for a write: tests/reliability/pg_faults.rs.)
#[test]
fn killed_connections_are_replaced_before_use() {
    use gatehouse::domain::{Email, Role, UserId};
    use gatehouse::storage::NewUser;

    let Some(db) = TestDatabase::new("killed_connections_are_replaced_before_use") else {
        return;
    };
    let store = storage::open(&DatabaseSettings::Postgres {
        url: Box::new(db.url()),
        pool_size: 1,
        connect_timeout: Duration::from_secs(5),
        start_timeout: Duration::ZERO,
        prepared_statements: true,
    })
    .expect("open");
    let mut admin = admin_client(&db.url()).expect("connect");
    let kill = |admin: &mut postgres::Client| {
        let killed = admin
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&db.name],
            )
            .expect("terminate");
        assert_eq!(killed.len(), 1, "the pool's one connection");
        // The server closes the socket after its FATAL message.
        std::thread::sleep(Duration::from_millis(200));
    };
    let new_user = |address: &str| {
        store.create_user(NewUser {
            id: UserId::random(),
            email: &Email::parse(address).expect("email"),
            password_hash: "x",
            role: Role::User,
            now: chrono::Utc::now(),
        })
    };
    new_user("before@example.com").expect("a write before");

    kill(&mut admin);
    new_user("after@example.com").expect("a write after the kill gets a new connection");

    kill(&mut admin);
    // A read changes nothing, so it is retried on a fresh connection at once.
    store.ping().expect("a read survives a killed connection");
    assert!(
        store
            .account_by_email(&Email::parse("after@example.com").expect("email"))
            .expect("read")
            .is_some()
    );
}

/// The server opens its store inside actix's runtime and drops it there at shutdown;
/// the synchronous driver must neither start nor close its own runtime on that thread.
#[test]
fn the_store_opens_and_closes_inside_an_async_runtime() {
    let Some(db) = TestDatabase::new("the_store_opens_and_closes_inside_an_async_runtime") else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let store = storage::open(&DatabaseSettings::Postgres {
            url: Box::new(db.url()),
            pool_size: 2,
            connect_timeout: Duration::from_secs(5),
            start_timeout: Duration::ZERO,
            prepared_statements: true,
        })
        .expect("open inside a runtime");
        let on_pool = std::sync::Arc::clone(&store);
        tokio::task::spawn_blocking(move || on_pool.ping())
            .await
            .expect("join")
            .expect("ping on the blocking pool");
        drop(store);
    });
}

/// Relays one PostgreSQL connection at a time and counts what the client sends: each
/// flush of the client is one request the server must answer before the client goes
/// on, so the count between two points is the round trips taken.
struct CountingProxy {
    port: u16,
    sends: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl CountingProxy {
    fn start(upstream: std::net::SocketAddr) -> Self {
        use std::io::{Read as _, Write as _};
        use std::net::{TcpListener, TcpStream};
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let sends = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = std::sync::Arc::clone(&sends);
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                type Counter = Option<std::sync::Arc<std::sync::atomic::AtomicUsize>>;
                let pump = |mut from: TcpStream, mut to: TcpStream, count: Counter| {
                    std::thread::spawn(move || {
                        let mut buf = vec![0u8; 1 << 16];
                        while let Ok(n @ 1..) = from.read(&mut buf) {
                            if let Some(c) = &count {
                                c.fetch_add(1, Ordering::SeqCst);
                            }
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    })
                };
                let (c2, s2) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                pump(client, server, Some(std::sync::Arc::clone(&counter)));
                pump(s2, c2, None);
            }
        });
        Self { port, sends }
    }

    fn take(&self) -> usize {
        self.sends.swap(0, std::sync::atomic::Ordering::SeqCst)
    }
}

/// The round trips the hot paths cost on PostgreSQL (issue 12: at most two per refresh): a refresh
/// is a read and a claim, a login's family one statement, an access check one read.
/// Prepared, the first call of each statement on a connection takes one more, to prepare
/// it, and no later call does.
#[test]
fn hot_paths_take_one_round_trip_per_store_call() {
    round_trips_of_the_hot_paths("hot_paths_take_one_round_trip_per_store_call", true);
}

#[test]
fn hot_paths_take_one_round_trip_per_store_call_unprepared() {
    round_trips_of_the_hot_paths("hot_paths_unprepared", false);
}

fn round_trips_of_the_hot_paths(test: &str, prepared: bool) {
    use chrono::{Duration as Days, Utc};
    use gatehouse::domain::{AuditKind, Email, FamilyId, Role, UserId};
    use gatehouse::storage::{AuditEvent, Lease, LeaseId, NewFamily, NewUser, Settle, Spend};

    let Some(db) = TestDatabase::new(test) else {
        return;
    };
    let url = db.url();
    let host = url.config().get_hosts().first().cloned();
    let port = url.config().get_ports().first().copied().unwrap_or(5432);
    let upstream = match host {
        Some(postgres::config::Host::Tcp(h)) => {
            std::net::ToSocketAddrs::to_socket_addrs(&(h.as_str(), port))
                .ok()
                .and_then(|mut a| a.next())
        }
        _ => None,
    };
    let Some(upstream) = upstream.filter(|_| url.config().get_password().is_none()) else {
        loud(
            "the test server is not reached over TCP without a password: round trips are \
             NOT counted",
        );
        return;
    };
    let proxy = CountingProxy::start(upstream);
    let proxied = format!(
        "postgres://{}@127.0.0.1:{}/{}?sslmode=disable",
        url.config().get_user().unwrap_or("postgres"),
        proxy.port,
        db.name
    );
    let store = storage::open(&DatabaseSettings::Postgres {
        url: Box::new(PostgresUrl::parse(&proxied).expect("URL")),
        pool_size: 1,
        connect_timeout: Duration::from_secs(5),
        start_timeout: Duration::ZERO,
        prepared_statements: prepared,
    })
    .expect("open through the proxy");

    // The same calls twice on the pool's one connection: the first round prepares.
    for round in 0..2u8 {
        let first = round == 0;
        let now = Utc::now();
        let email = Email::parse(&format!("trips{round}@example.com")).expect("email");
        let user = store
            .create_user(NewUser {
                id: UserId::random(),
                email: &email,
                password_hash: "x",
                role: Role::User,
                now,
            })
            .expect("user");
        proxy.take();

        // `statements`: how many texts the call runs, each prepared on its first call.
        let count = |what: &str, expected: usize, statements: usize| {
            let taken = proxy.take();
            let prepares = if prepared && first { statements } else { 0 };
            assert_eq!(
                taken,
                expected + prepares,
                "{what}: round trips (round {round}, prepared: {prepared})"
            );
        };
        let keys = [
            format!("email:trips{round}@example.com"),
            "ip:unknown".to_owned(),
        ];
        let lease = Lease {
            id: LeaseId::random(),
            keys: keys.to_vec(),
            window_secs: 600,
            now,
            ttl: Days::seconds(60),
        };
        assert!(
            store
                .reserve_attempt(&lease, &|_| true)
                .expect("reserve")
                .leased
        );
        // BEGIN, the per-key locks, the read, the lease's insert, COMMIT.
        count("reserve_attempt", 5, 3);
        store.login_failures(&keys, 600, now).expect("lockout");
        count("login_failures", 1, 1);
        store.account_by_email(&email).expect("account");
        count("account_by_email", 1, 1);
        let family = FamilyId::random();
        let (token, child) = ([1 + 2 * round; 32], [2 + 2 * round; 32]);
        assert!(
            store
                .create_family(NewFamily {
                    id: family,
                    user_id: user.id,
                    first_token: token,
                    now,
                    token_expires_at: now + Days::hours(1),
                    family_expires_at: now + Days::days(1),
                    user_agent: None,
                    ip: None,
                    password_generation: 0,
                    opened_by: AuditEvent::new(now, AuditKind::LoginSucceeded, "ok"),
                    forgives: None,
                    settles: Some(lease.id),
                })
                .expect("family")
        );
        count("create_family", 1, 1);
        store
            .record_audit(AuditEvent::new(now, AuditKind::LoginSucceeded, "ok"))
            .expect("audit");
        count("record_audit", 1, 1);
        store.find_refresh_token(token).expect("find");
        count("find_refresh_token", 1, 1);
        assert!(
            store
                .spend_refresh_token(Spend {
                    presented: token,
                    child,
                    family_id: family,
                    now,
                    child_expires_at: now + Days::hours(1),
                })
                .expect("spend")
        );
        count("spend_refresh_token", 1, 1);
        store
            .account_for_session(user.id, family, now)
            .expect("session");
        count("account_for_session", 1, 1);
        let failing = LeaseId::random();
        let failed = Settle::Failed {
            keys: &keys,
            window_secs: 600,
            now,
        };
        store.settle_attempt(failing, failed).expect("settle");
        count("settle_attempt", 1, 1);
    }
}

/// A store on `db` with a pool of one connection, so that every statement it runs and
/// every look at the session (`with_pooled_client`) share one server session.
fn one_connection(db: &TestDatabase, prepared: bool) -> gatehouse::storage::postgres::PgStore {
    use gatehouse::storage::Store as _;
    let store = gatehouse::storage::postgres::PgStore::connect(
        &db.url(),
        1,
        Duration::from_secs(5),
        Duration::ZERO,
    )
    .expect("connect")
    .prepared_statements(prepared);
    store.migrate().expect("migrate");
    store
}

/// The session's prepared statements: (text, when prepared), by text.
fn prepared_in_session(
    store: &gatehouse::storage::postgres::PgStore,
) -> Vec<(String, chrono::DateTime<chrono::Utc>)> {
    store
        .with_pooled_client(|c| {
            c.query_typed(
                // Typed: the driver prepares an untyped text under a name of its own,
                // which would list this very query.
                "SELECT statement, prepare_time FROM pg_prepared_statements ORDER BY statement",
                &[],
            )
        })
        .expect("a pooled connection")
        .expect("pg_prepared_statements")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn lease_on(keys: &[&str]) -> gatehouse::storage::Lease {
    let now = chrono::Utc::now();
    gatehouse::storage::Lease {
        id: gatehouse::storage::LeaseId::random(),
        keys: keys.iter().map(|k| (*k).to_owned()).collect(),
        window_secs: 600,
        now,
        ttl: chrono::Duration::seconds(60),
    }
}

/// Each statement is prepared on its connection's first call and run by name after: one
/// prepared statement per text in the server session, prepared once whatever the calls.
/// Off, the session holds none.
#[test]
fn statements_are_prepared_once_per_connection_and_reused() {
    use gatehouse::domain::{Email, Role, UserId};
    use gatehouse::storage::{NewUser, Store as _};

    for prepared in [true, false] {
        let Some(db) = TestDatabase::new("statements_are_prepared_once") else {
            return;
        };
        let store = one_connection(&db, prepared);
        let email = Email::parse("prepared@example.com").expect("email");
        store
            .create_user(NewUser {
                id: UserId::random(),
                email: &email,
                password_hash: "x",
                role: Role::User,
                now: chrono::Utc::now(),
            })
            .expect("user");
        store
            .account_by_email(&email)
            .expect("read")
            .expect("found");
        store.find_refresh_token([7; 32]).expect("find");
        let after_first = prepared_in_session(&store);
        if !prepared {
            assert_eq!(after_first, [], "off: nothing prepared");
            continue;
        }
        assert_eq!(after_first.len(), 3, "one per text: {after_first:?}");
        for (text, _) in &after_first {
            assert!(
                text.contains("INSERT INTO users")
                    || text.contains("WHERE u.email = $1")
                    || text.contains("FROM refresh_tokens t"),
                "an unexpected statement: {text}"
            );
        }
        // Sleeps so that a statement prepared again would show a later prepare_time.
        std::thread::sleep(Duration::from_millis(20));
        for _ in 0..5 {
            store
                .account_by_email(&email)
                .expect("read")
                .expect("found");
            store.find_refresh_token([7; 32]).expect("find");
        }
        assert_eq!(
            prepared_in_session(&store),
            after_first,
            "the same statements, not prepared again"
        );
    }
}

/// A server that dropped the session's statements (`DEALLOCATE ALL`; a pooler's
/// `DISCARD ALL` does the same) costs no request an error: a statement outside a
/// transaction is prepared again and run, a transaction runs again from its start.
#[test]
fn statements_the_server_forgot_are_prepared_again() {
    use gatehouse::domain::{Email, Role, UserId};
    use gatehouse::storage::{NewUser, Store as _};

    let Some(db) = TestDatabase::new("statements_the_server_forgot") else {
        return;
    };
    let store = one_connection(&db, true);
    let forget = || {
        store
            .with_pooled_client(|c| c.batch_execute("DEALLOCATE ALL"))
            .expect("a pooled connection")
            .expect("DEALLOCATE ALL");
        assert_eq!(prepared_in_session(&store), [], "forgotten");
    };
    let email = Email::parse("forgot@example.com").expect("email");
    let user = store
        .create_user(NewUser {
            id: UserId::random(),
            email: &email,
            password_hash: "x",
            role: Role::User,
            now: chrono::Utc::now(),
        })
        .expect("user");
    store
        .account_by_email(&email)
        .expect("read")
        .expect("found");
    assert!(
        store
            .reserve_attempt(&lease_on(&["a"]), &|_| true)
            .expect("reserve")
            .leased
    );

    forget();
    let found = store
        .account_by_email(&email)
        .expect("a read after DEALLOCATE ALL");
    assert_eq!(found.map(|a| a.user.id), Some(user.id));
    assert!(
        !prepared_in_session(&store).is_empty(),
        "prepared again, not sent unnamed from now on"
    );

    // The reservation's statements were dropped with the rest: cached again first.
    assert!(
        store
            .reserve_attempt(&lease_on(&["b"]), &|_| true)
            .expect("reserve")
            .leased
    );
    forget();
    // The first statement of the reservation's transaction fails and aborts it.
    let reserved = store
        .reserve_attempt(&lease_on(&["c"]), &|_| true)
        .expect("a transaction after DEALLOCATE ALL");
    assert!(reserved.leased);
    assert_eq!(reserved.loads.len(), 1);
    assert_eq!(
        reserved.loads[0].in_flight, 0,
        "no lease from the aborted attempt"
    );
}

/// A store on `db` with room for the threads of a race.
fn store_on(db: &TestDatabase) -> std::sync::Arc<dyn gatehouse::storage::Store> {
    storage::open(&DatabaseSettings::Postgres {
        url: Box::new(db.url()),
        pool_size: 8,
        connect_timeout: Duration::from_secs(10),
        start_timeout: Duration::ZERO,
        prepared_statements: true,
    })
    .expect("open the store")
}

/// The lockout's reservation reads the leases committed while it waited for its lock,
/// whatever isolation level the role or the database would give a transaction: forty
/// guessers on one key are admitted exactly the limit, five, under both defaults that
/// would otherwise read from before the wait.
#[test]
fn reservations_hold_the_limit_whatever_the_databases_default_isolation() {
    for level in ["repeatable read", "serializable"] {
        let Some(db) = TestDatabase::new("reservations_whatever_isolation") else {
            return;
        };
        let mut admin = admin_client(&db.url()).expect("connect");
        admin
            .batch_execute(&format!(
                "ALTER DATABASE \"{}\" SET default_transaction_isolation TO '{level}'",
                db.name
            ))
            .expect("set the default");
        let mut fresh = admin_client(&db.url()).expect("connect");
        let seen: String = fresh
            .query_one("SHOW default_transaction_isolation", &[])
            .and_then(|r| r.try_get(0))
            .expect("show");
        assert_eq!(seen, level, "the database default applies to new sessions");
        let store = store_on(&db);
        crate::cases::reservation_race(&store, 40);
    }
}

/// Waits until `n` sessions of `db` wait for a lock: the sessions under test have reached
/// the statement the test holds them at.
fn until_waiting_for_locks(observer: &mut postgres::Client, db: &TestDatabase, n: i64) {
    for _ in 0..500 {
        let waiting: i64 = observer
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = $1 AND wait_event_type = 'Lock'",
                &[&db.name],
            )
            .and_then(|r| r.try_get(0))
            .expect("pg_stat_activity");
        if waiting >= n {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{n} sessions never waited for a lock");
}

/// Holds a login inside its transaction (after it locked the user's row and inserted
/// its family, at the forgiving of its email's failures, whose row the test locks),
/// runs `act` on the user while the login waits, then lets the login commit: `act`
/// waits for it and must see what it wrote.
fn with_a_login_held_open(
    test: &str,
    act: impl FnOnce(&std::sync::Arc<dyn gatehouse::storage::Store>, &gatehouse::domain::User) + Send,
    check: impl FnOnce(
        &std::sync::Arc<dyn gatehouse::storage::Store>,
        &gatehouse::domain::User,
        (
            gatehouse::domain::FamilyId,
            gatehouse::storage::TokenHashBytes,
        ),
    ),
) {
    use gatehouse::storage::{LeaseId, Settle, email_attempt_key};
    let Some(db) = TestDatabase::new(test) else {
        return;
    };
    let store = store_on(&db);
    let u = crate::cases::user(&store, "held@example.com");
    let key = email_attempt_key(&u.email);
    let failed = Settle::Failed {
        keys: std::slice::from_ref(&key),
        window_secs: 600,
        now: chrono::Utc::now(),
    };
    store
        .settle_attempt(LeaseId::random(), failed)
        .expect("a failure to forgive");
    let family = gatehouse::storage::NewFamily {
        forgives: Some(key.clone()),
        ..crate::cases::new_family(u.id, crate::cases::token(7), 0, chrono::Utc::now())
    };
    let opened = (family.id, family.first_token);

    let mut holder = admin_client(&db.url()).expect("connect");
    let mut observer = admin_client(&db.url()).expect("connect");
    let mut hold = holder.transaction().expect("begin");
    hold.query(
        "SELECT 1 FROM login_attempts WHERE key = $1 FOR UPDATE",
        &[&key],
    )
    .expect("lock the row the login forgives");
    std::thread::scope(|scope| {
        let store = &store;
        let login = scope.spawn(move || store.create_family(family).expect("login"));
        until_waiting_for_locks(&mut observer, &db, 1);
        let u = &u;
        let acting = scope.spawn(move || act(store, u));
        until_waiting_for_locks(&mut observer, &db, 2);
        hold.rollback().expect("let the login go");
        assert!(
            login.join().expect("login thread"),
            "the login held the row first"
        );
        acting.join().expect("act thread");
    });
    check(&store, &u, opened);
}

#[test]
fn a_disable_waiting_for_a_login_revokes_the_family_it_opened() {
    with_a_login_held_open(
        "disable_waits_for_login",
        |store, u| {
            store
                .update_user(u.id, None, Some(true), chrono::Utc::now())
                .expect("disable")
                .expect("found");
        },
        |store, u, (_, first)| {
            let token = store
                .find_refresh_token(first)
                .expect("read")
                .expect("the login's token");
            assert!(token.family_revoked, "the login's family stayed live");
            assert!(
                store
                    .list_sessions(u.id, false, chrono::Utc::now())
                    .expect("sessions")
                    .is_empty()
            );
        },
    );
}

#[test]
fn a_deletion_waiting_for_a_login_scrubs_the_event_it_wrote() {
    with_a_login_held_open(
        "delete_waits_for_login",
        |store, u| assert!(store.delete_user(u.id, &u.email).expect("delete")),
        |store, u, (family, first)| {
            let events = crate::cases::audit_of(store, u.id);
            let opened: Vec<_> = events
                .iter()
                .filter(|e| e.family_id == Some(family))
                .collect();
            assert_eq!(opened.len(), 1, "the login's event is kept: {events:?}");
            assert_eq!(
                (&opened[0].ip, &opened[0].user_agent, &opened[0].detail),
                (&None, &None, &None),
                "the login's event keeps what identifies the person"
            );
            assert!(store.find_refresh_token(first).expect("read").is_none());
        },
    );
}

/// A lease's life is the server's to measure: a replica whose clock runs an hour ahead
/// or behind sees the lease of another as live, and neither its start-up release nor
/// its pruning deletes it.
#[test]
fn leases_live_by_the_servers_clock_whatever_a_replicas_clock_says() {
    use chrono::Duration as Days;
    use gatehouse::storage::{Lease, LeaseId};
    let Some(db) = TestDatabase::new("leases_by_the_servers_clock") else {
        return;
    };
    let store = store_on(&db);
    let keys = vec!["email:skewed@example.com".to_owned()];
    let now = chrono::Utc::now();
    let lease = |at| Lease {
        id: LeaseId::random(),
        keys: keys.clone(),
        window_secs: 600,
        now: at,
        ttl: Days::seconds(60),
    };
    assert!(
        store
            .reserve_attempt(&lease(now), &|_| true)
            .expect("reserve")
            .leased
    );
    let in_flight = |at| {
        store
            .reserve_attempt(&lease(at), &|_| false)
            .expect("probe")
            .loads[0]
            .in_flight
    };
    for skew in [Days::hours(1), Days::hours(-1), Days::days(3)] {
        assert_eq!(
            in_flight(now + skew),
            1,
            "a replica {skew} off sees the lease"
        );
    }
    store.release_orphaned_leases().expect("a replica's start");
    store
        .prune(now + Days::days(3), 600, now - Days::days(90))
        .expect("a skewed replica's prune");
    assert_eq!(in_flight(now + Days::hours(1)), 1, "the lease survived");
}
