//! Keys and the refresh secret in the database (PostgreSQL): replicas with no shared
//! file system share one ring, `gatehouse keys …` acts on the database, a wrong or
//! exposed key-encryption key stops the start, `keys import` moves a keys directory in,
//! and no private byte is stored in the clear.
//!
//! Real processes on a database of the test's own; PostgreSQL only whatever the suite's
//! backend, so these are plain tests that run once.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse::clock::SystemClock;
use gatehouse::config::{Database, Settings};
use gatehouse::crypto::keystore::{FileKeyStore, KeyStore};
use gatehouse::crypto::password::PasswordHasher;
use gatehouse::crypto::refresh::{RefreshSecret, RefreshToken};
use gatehouse::domain::{Email, NewPassword};
use gatehouse::service::keystore::DatabaseKeyStore;
use gatehouse::service::{AppState, ClientMeta, accounts};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, unique_email, write_kek};
use crate::kit::jwt::{jwks_kids, kid_of, verify_with_jwks};
use crate::kit::pgdb::{TestDatabase, admin_client};
use crate::kit::process::{Binary, Server};

const ISSUER: &str = "http://127.0.0.1";
const AUDIENCE: &str = "gatehouse";

/// A replica of its own directory (so nothing is shared through files) on `db`, with
/// fast reloads and a short JWKS max-age, so that rotation's wait is 3 s.
fn replica(db: &TestDatabase, root: &Path, name: &str, kek: &Path) -> Binary {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("replica dir");
    Binary::in_dir(&dir)
        .with("GATEHOUSE_DATABASE", &db.url_text())
        .with(
            "GATEHOUSE_KEY_ENCRYPTION_KEY_FILE",
            &kek.display().to_string(),
        )
        .with("GATEHOUSE_JWKS_MAX_AGE", "2")
        .with("GATEHOUSE_KEYS_RELOAD_INTERVAL", "1")
}

async fn post(server: &Server, path: &str, body: Value) -> (StatusCode, Value) {
    server.post_json(path, &body).await
}

async fn jwks(server: &Server) -> Value {
    let r = server
        .client
        .get(server.url("/.well-known/jwks.json"))
        .send()
        .await
        .expect("jwks");
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.expect("jwks json")
}

/// Polls until `server`'s JWKS satisfies `ok`.
async fn until_jwks(server: &Server, what: &str, ok: impl Fn(&[String]) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let set = jwks(server).await;
        if ok(&jwks_kids(&set)) {
            return set;
        }
        assert!(Instant::now() < deadline, "{what}: JWKS still {set}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn hangup(server: &Server) {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// Runs `job` with a client on the test database (off the async runtime).
fn sql<T: Send>(db: &TestDatabase, job: impl FnOnce(&mut postgres::Client) -> T + Send) -> T {
    let url = db.url();
    std::thread::scope(|s| {
        s.spawn(move || {
            let mut client = admin_client(&url).expect("connect");
            job(&mut client)
        })
        .join()
        .expect("sql thread")
    })
}

/// Every byte the key tables hold.
fn stored_bytes(db: &TestDatabase) -> Vec<Vec<u8>> {
    sql(db, |c| {
        let mut out = Vec::new();
        for row in c
            .query("SELECT sealed_key FROM signing_keys", &[])
            .expect("keys")
        {
            out.push(row.get::<_, Vec<u8>>(0));
        }
        for row in c
            .query("SELECT sealed FROM sealed_secrets", &[])
            .expect("secrets")
        {
            out.push(row.get::<_, Vec<u8>>(0));
        }
        out
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The private key material never reaches the database in the clear: no PEM text, and
/// not even the key's modulus (public, but inside every PKCS#8 encoding of the key).
fn assert_nothing_in_the_clear(db: &TestDatabase, jwks: &Value, secret: Option<&[u8]>) {
    let stored = stored_bytes(db);
    assert!(!stored.is_empty());
    let moduli: Vec<Vec<u8>> = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| crate::helpers::b64url_decode(k["n"].as_str().expect("n")))
        .collect();
    for bytes in &stored {
        assert!(!contains(bytes, b"BEGIN"), "PEM text stored");
        assert!(!contains(bytes, b"PRIVATE KEY"), "PEM text stored");
        for n in &moduli {
            assert!(
                !contains(bytes, &n[..32]),
                "key material stored in the clear"
            );
        }
        if let Some(secret) = secret {
            assert!(
                !contains(bytes, secret),
                "the refresh secret stored in the clear"
            );
        }
    }
    let dump = sql(db, |c| {
        c.query_one(
            "SELECT coalesce(string_agg(t::text, ' '), '') FROM \
             (SELECT kid, name, stage FROM signing_keys) t",
            &[],
        )
        .expect("text")
        .get::<_, String>(0)
    });
    assert!(!dump.contains("BEGIN"), "{dump}");
}

#[tokio::test]
async fn replicas_share_one_ring_through_the_database_and_rotate_together() {
    let Some(db) = TestDatabase::new("replicas_share_one_ring") else {
        return;
    };
    let root = tempfile::tempdir().expect("tmp");
    let kek = write_kek(root.path());
    // A reloads every second; B only on SIGHUP (an hour between reloads).
    let a_bin = replica(&db, root.path(), "a", &kek);
    let b_bin = replica(&db, root.path(), "b", &kek).with("GATEHOUSE_KEYS_RELOAD_INTERVAL", "1h");

    // Both start at once on an empty database: one key, one refresh secret between them.
    let (a, b) = tokio::join!(a_bin.start(), b_bin.start());
    let (set_a, set_b) = (jwks(&a).await, jwks(&b).await);
    assert_eq!(jwks_kids(&set_a).len(), 1, "{set_a}");
    assert_eq!(
        jwks_kids(&set_a),
        jwks_kids(&set_b),
        "the replicas made different keys"
    );
    let first = jwks_kids(&set_a)[0].clone();
    let (keys, secrets, current) = sql(&db, |c| {
        let mut n = |q: &str| c.query_one(q, &[]).expect("count").get::<_, i64>(0);
        (
            n("SELECT count(*) FROM signing_keys"),
            n("SELECT count(*) FROM sealed_secrets WHERE purpose = 'refresh'"),
            n("SELECT count(*) FROM signing_keys WHERE stage = 'current'"),
        )
    });
    assert_eq!((keys, secrets, current), (1, 1, 1));
    assert!(
        !root.path().join("a/keys").exists() && !root.path().join("b/keys").exists(),
        "no keys directory on PostgreSQL"
    );

    // One refresh secret: a replay within the grace window on the other replica gets
    // the same child, which only the same secret derives.
    let email = unique_email("ring");
    let (s, signup) = post(
        &a,
        "/v1/signup",
        json!({"email": email, "password": PASSWORD}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{signup}");
    let refresh = signup["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();
    let (s, on_a) = post(&a, "/v1/refresh", json!({"refresh_token": refresh})).await;
    assert_eq!(s, StatusCode::OK, "{on_a}");
    let (s, on_b) = post(&b, "/v1/refresh", json!({"refresh_token": refresh})).await;
    assert_eq!(s, StatusCode::OK, "{on_b}");
    assert_eq!(on_a["refresh_token"], on_b["refresh_token"]);

    // A next key made by the CLI: A publishes it by itself, B on SIGHUP.
    let out = a_bin.cli_ok(&["keys", "generate"], None).await;
    assert!(
        out.contains("next: running servers publish it within"),
        "{out}"
    );
    assert!(out.contains("in the database"), "{out}");
    let set_a = until_jwks(&a, "A after generate", |k| k.len() == 2).await;
    let next = jwks_kids(&set_a)
        .into_iter()
        .find(|k| *k != first)
        .expect("next kid");
    assert_eq!(
        jwks_kids(&jwks(&b).await),
        vec![first.clone()],
        "B reloaded unasked"
    );
    hangup(&b);
    until_jwks(&b, "B after SIGHUP", |k| k.len() == 2).await;
    let listed = b_bin.cli_ok(&["keys", "list"], None).await;
    assert!(
        listed.contains(&format!("{first}\t2048 bits\tcurrent (signing)")),
        "{listed}"
    );
    assert!(
        listed.contains(&format!("{next}\t2048 bits\tnext")),
        "{listed}"
    );

    // Not before the next key has been published for max-age + reload interval (3 s).
    let (code, text) = a_bin.cli(&["keys", "rotate"]).await;
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("wait"), "{text}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (code, text) = a_bin.cli(&["keys", "rotate"]).await;
        if code == 0 {
            assert!(text.contains(&format!("{next} signs now")), "{text}");
            break;
        }
        assert!(text.contains("wait"), "{text}");
        assert!(Instant::now() < deadline, "rotation still refused: {text}");
    }
    hangup(&b);

    // Logins on either replica are signed by the new key, and verify with the JWKS of
    // both; the token signed before the rotation still verifies with both.
    let old_access = signup["access_token"].as_str().expect("access").to_owned();
    let login = json!({"email": email, "password": PASSWORD});
    for (name, server) in [("A", &a), ("B", &b)] {
        let deadline = Instant::now() + Duration::from_secs(30);
        let access = loop {
            let (s, body) = post(server, "/v1/login", login.clone()).await;
            assert_eq!(s, StatusCode::OK, "{name}: {body}");
            let access = body["access_token"].as_str().expect("access").to_owned();
            if kid_of(&access) == next {
                break access;
            }
            assert!(
                Instant::now() < deadline,
                "{name} still signs with the old key"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        for (other, verifier) in [("A", &a), ("B", &b)] {
            let set = jwks(verifier).await;
            verify_with_jwks(&set, &access)
                .unwrap_or_else(|e| panic!("{name}'s token on {other}'s JWKS: {e}"));
            verify_with_jwks(&set, &old_access)
                .unwrap_or_else(|e| panic!("the old token on {other}'s JWKS: {e}"));
        }
    }
    assert_nothing_in_the_clear(&db, &jwks(&a).await, None);
    a.stop_and_collect().await;
    b.stop_and_collect().await;
}

#[tokio::test]
async fn a_wrong_or_exposed_key_encryption_key_stops_the_start() {
    let Some(db) = TestDatabase::new("a_wrong_kek_stops_the_start") else {
        return;
    };
    let root = tempfile::tempdir().expect("tmp");
    let kek = write_kek(root.path());
    let good = replica(&db, root.path(), "good", &kek);

    // Before any key exists: the first run stores the check value, a wrong KEK fails it.
    let (code, text) = good.cli(&["keys", "list"]).await;
    assert_eq!(code, 0, "{text}");
    let other = write_kek(root.path());
    let wrong = replica(&db, root.path(), "wrong", &other);
    let refused = wrong
        .try_start()
        .await
        .err()
        .expect("started with a wrong KEK");
    assert!(
        refused.contains("the key-encryption key does not open the stored keys"),
        "{refused}"
    );

    // With keys stored, too; and the CLI says the same.
    let server = good.start().await;
    let refused = wrong
        .try_start()
        .await
        .err()
        .expect("started with a wrong KEK");
    assert!(
        refused.contains("the key-encryption key does not open the stored keys"),
        "{refused}"
    );
    let (code, text) = wrong.cli(&["keys", "generate"]).await;
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("does not open the stored keys"), "{text}");

    // A KEK file others may read, one of the wrong length, or none at all.
    use std::os::unix::fs::PermissionsExt as _;
    let loose = root.path().join("loose-kek");
    std::fs::copy(&kek, &loose).expect("copy");
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let refused = replica(&db, root.path(), "loose", &loose)
        .try_start()
        .await
        .err()
        .expect("started with a world-readable KEK");
    assert!(
        refused.contains("readable by other users (mode 644)"),
        "{refused}"
    );
    let short = root.path().join("short-kek");
    std::fs::write(&short, b"0123456789abcdef0123456789abcdef\n").expect("write");
    std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let refused = replica(&db, root.path(), "short", &short)
        .try_start()
        .await
        .err()
        .expect("started with a 33-byte KEK");
    assert!(refused.contains("holds 33 bytes"), "{refused}");
    let (code, text) = Binary::in_dir(root.path())
        .with("GATEHOUSE_DATABASE", &db.url_text())
        .cli(&["serve"])
        .await;
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(
            "GATEHOUSE_KEY_ENCRYPTION_KEY_FILE: required when GATEHOUSE_DATABASE is PostgreSQL"
        ),
        "{text}"
    );
    // The refusals logged no key material: the KEK bytes are nowhere in the logs.
    let kek_bytes = std::fs::read(&kek).expect("kek");
    for log in ["wrong", "loose", "short"] {
        let text = std::fs::read(root.path().join(log).join("server.log")).unwrap_or_default();
        assert!(!contains(&text, &kek_bytes[..16]));
    }
    server.stop_and_collect().await;
}

#[tokio::test]
async fn retire_acts_on_the_database_and_an_altered_or_swapped_row_is_refused() {
    let Some(db) = TestDatabase::new("a_row_swapped_is_refused") else {
        return;
    };
    let root = tempfile::tempdir().expect("tmp");
    let kek = write_kek(root.path());
    let bin = replica(&db, root.path(), "r", &kek);
    let signer = bin.cli_ok(&["keys", "generate"], None).await;
    let out = bin.cli_ok(&["keys", "generate"], None).await;
    let kid = |out: &str| {
        out.split("kid=")
            .nth(1)
            .expect("kid=")
            .split(' ')
            .next()
            .expect("kid")
            .to_owned()
    };
    let (signer, next) = (kid(&signer), kid(&out));

    // The rules are those of the keys directory: the signer cannot be retired; a retired
    // key stays published until its tokens expire, or leaves at once with --now.
    let (code, text) = bin.cli(&["keys", "retire", &signer]).await;
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("is the signing key"), "{text}");
    bin.cli_ok(&["keys", "retire", &next], None).await;
    let listed = bin.cli_ok(&["keys", "list"], None).await;
    assert!(
        listed.contains(&format!("{next}\t2048 bits\tretired (published for")),
        "{listed}"
    );
    bin.cli_ok(&["keys", "retire", &next, "--now"], None).await;
    let listed = bin.cli_ok(&["keys", "list"], None).await;
    assert!(
        listed.contains(&format!("{next}\t2048 bits\tretired (unpublished")),
        "{listed}"
    );

    // Each sealed key is bound to its kid: exchanged between two rows, neither opens.
    sql(&db, |c| {
        c.batch_execute(
            "WITH k AS (SELECT kid, sealed_key, row_number() OVER (ORDER BY kid) AS i \
                        FROM signing_keys) \
             UPDATE signing_keys s SET sealed_key = o.sealed_key \
             FROM k mine JOIN k o ON o.i = 3 - mine.i \
             WHERE s.kid = mine.kid",
        )
        .expect("swap")
    });
    let (code, text) = bin.cli(&["keys", "list"]).await;
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("does not open"), "{text}");
    let refused = bin
        .try_start()
        .await
        .err()
        .expect("started on swapped keys");
    assert!(refused.contains("does not open"), "{refused}");
}

/// Replicas racing on an empty database (threads here, each with its own connection):
/// one key, one refresh secret, whoever wins.
#[test]
fn concurrent_first_starts_make_one_key_and_one_secret() {
    let Some(db) = TestDatabase::new("concurrent_first_starts") else {
        return;
    };
    let root = tempfile::tempdir().expect("tmp");
    let kek = write_kek(root.path());
    let url = db.url();
    let secrets: Vec<RefreshSecret> = std::thread::scope(|s| {
        let racers: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let keys = DatabaseKeyStore::open(
                        &url,
                        Duration::from_secs(10),
                        Duration::from_secs(10),
                        &kek,
                    )
                    .expect("open");
                    keys.ensure_signing_key(chrono::Utc::now()).expect("ensure");
                    keys.refresh_secret().expect("secret").0
                })
            })
            .collect();
        racers
            .into_iter()
            .map(|r| r.join().expect("racer"))
            .collect()
    });
    let probe = RefreshToken::generate();
    for secret in &secrets[1..] {
        assert_eq!(probe.child(secret), probe.child(&secrets[0]));
    }
    let counts = sql(&db, |c| {
        let mut n = |q: &str| c.query_one(q, &[]).expect("count").get::<_, i64>(0);
        (
            n("SELECT count(*) FROM signing_keys"),
            n("SELECT count(*) FROM sealed_secrets WHERE purpose = 'refresh'"),
        )
    });
    assert_eq!(counts, (1, 1));
}

/// An install as it ran before keys moved into the database: PostgreSQL data, keys in a
/// directory made by the (SQLite-mode) CLI. Issues tokens through the service layer.
async fn tokens_from_the_file_layout(db: &TestDatabase, keys_dir: &Path) -> (String, String) {
    let mut settings = Settings::for_tests(keys_dir);
    settings.server.keys_dir = keys_dir.to_owned();
    settings.storage.database = Database::Postgres(db.url().into());
    settings.tokens.issuer = ISSUER.into();
    settings.tokens.audience = AUDIENCE.into();
    let job = move || {
        let store = gatehouse::storage::open(&settings.database_settings()).expect("store");
        let files = FileKeyStore::new(&settings.server.keys_dir, &settings.refresh_secret_path());
        let (ring, _) = files
            .load(chrono::Utc::now(), settings.key_timing())
            .expect("file keys");
        let (secret, _) = files.refresh_secret().expect("secret");
        let hasher = PasswordHasher::new(settings.password_cost, 1).expect("hasher");
        let source: Arc<dyn KeyStore> = Arc::new(files);
        AppState::new(
            settings.policy(),
            store,
            ring,
            source,
            hasher,
            secret,
            Arc::new(SystemClock),
        )
    };
    let state = std::thread::scope(|s| s.spawn(job).join().expect("state"));
    let pair = accounts::signup(
        &state,
        Email::parse("before-import@example.com").expect("email"),
        NewPassword::parse(PASSWORD).expect("password"),
        &ClientMeta::default(),
    )
    .await
    .expect("signup");
    let out = (pair.access_token, pair.refresh_token.expose().to_owned());
    // The store's pool must close off the runtime (see `PgStore`'s Drop).
    std::thread::scope(|s| s.spawn(move || drop(state)).join().expect("drop"));
    out
}

#[tokio::test]
async fn keys_import_moves_a_keys_directory_in_and_old_tokens_keep_working() {
    let Some(db) = TestDatabase::new("keys_import") else {
        return;
    };
    let root = tempfile::tempdir().expect("tmp");
    // The keys directory, made by the CLI of a SQLite install: a signing key, a next
    // key, and (first use) the refresh secret.
    let sqlite = Binary::in_dir(&root.path().join("sqlite"));
    let keys_dir = sqlite.keys_dir.clone();
    sqlite.cli_ok(&["keys", "generate"], None).await;
    let (access, refresh) = tokens_from_the_file_layout(&db, &keys_dir).await;
    sqlite.cli_ok(&["keys", "generate"], None).await;
    let file_secret = std::fs::read(keys_dir.join("refresh.secret")).expect("refresh.secret");
    let listed = sqlite.cli_ok(&["keys", "list"], None).await;

    let kek = write_kek(root.path());
    let pg = replica(&db, root.path(), "pg", &kek);
    let out = pg
        .cli_ok(
            &["keys", "import", "--from", &keys_dir.display().to_string()],
            None,
        )
        .await;
    assert!(out.contains("(current)") && out.contains("(next)"), "{out}");
    assert!(out.contains("imported the refresh secret"), "{out}");
    assert!(out.contains("2 key(s) sealed into the database"), "{out}");
    // The same kids, the same stages.
    let after = pg.cli_ok(&["keys", "list"], None).await;
    for line in listed.lines() {
        let mut cols = line.split('\t');
        let (kid, bits, state) = (cols.next(), cols.next(), cols.next());
        let (kid, bits, state) = (
            kid.expect("kid"),
            bits.expect("bits"),
            state.expect("state"),
        );
        let stage = state.split(' ').next().expect("stage");
        assert!(
            after.contains(&format!("{kid}\t{bits}\t{stage}")),
            "{kid} {stage} not imported: {after}"
        );
    }

    // Again: refused, since the database now holds keys; --replace is the way.
    let (code, text) = pg
        .cli(&["keys", "import", "--from", &keys_dir.display().to_string()])
        .await;
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("already holds 2 key(s) and a refresh secret"),
        "{text}"
    );

    let server = pg.start().await;
    let set = jwks(&server).await;
    verify_with_jwks(&set, &access).expect("a token signed before the import");
    let r = server
        .client
        .get(server.url("/v1/me"))
        .bearer_auth(&access)
        .send()
        .await
        .expect("me");
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "the server accepts the old token"
    );
    // The refresh token from before refreshes, and its child is the one the file's
    // secret derives: the secret came along.
    let (s, body) = post(&server, "/v1/refresh", json!({"refresh_token": refresh})).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let expected = RefreshToken::from_presented(&refresh)
        .expect("token")
        .child(&RefreshSecret::from_bytes(&file_secret));
    assert_eq!(body["refresh_token"], expected.expose());
    assert_eq!(
        kid_of(body["access_token"].as_str().expect("access")),
        kid_of(&access)
    );

    assert_nothing_in_the_clear(&db, &set, Some(&file_secret));
    server.stop_and_collect().await;

    // --replace is the explicit way over the refusal: the same directory again gives the
    // same ring, and says what it replaced.
    let out = pg
        .cli_ok(
            &[
                "keys",
                "import",
                "--from",
                &keys_dir.display().to_string(),
                "--replace",
            ],
            None,
        )
        .await;
    assert!(out.contains("replaced 3 key(s) and secret(s)"), "{out}");
    // (kid, bits, stage) of each line: the rest says how long ago, which moves on.
    let stages = |list: &str| -> Vec<String> {
        list.lines()
            .map(|l| l.split(' ').take(3).collect::<Vec<_>>().join(" "))
            .collect()
    };
    assert_eq!(
        stages(&pg.cli_ok(&["keys", "list"], None).await),
        stages(&after)
    );

    // On SQLite there is nothing to import into: the keys directory is where keys live.
    let (code, text) = sqlite
        .cli(&["keys", "import", "--from", &keys_dir.display().to_string()])
        .await;
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("PostgreSQL"), "{text}");
}
