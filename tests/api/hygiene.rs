//! Hardening: look-alike emails are one account; the keys directory is the
//! service user's alone, and a key nobody recorded is trusted only out loud.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::*;
use crate::kit::process::Binary;

fn local_part(tag: &str) -> String {
    format!("{tag}-{}", &Uuid::new_v4().simple().to_string()[..12])
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

// ------------------------------------------------------------------- emails

/// Signs up `first`, then shows that `twin` is the same account: signup is refused as
/// taken, login with the twin logs into it.
async fn assert_one_account(app: &TestApp, first: &str, twin: &str, stored: &str) {
    let signup = app.signup_ok(first, PASSWORD).await;
    assert_eq!(
        signup["user"]["email"], stored,
        "the normalized form is returned"
    );
    let id = user_id_of(&signup).to_owned();

    let r = app.post_signup(twin, PASSWORD).await;
    assert_error(r, StatusCode::CONFLICT, "email_taken").await;

    let login = app.login_ok(twin, PASSWORD).await;
    assert_eq!(user_id_of(&login), id, "{twin} logs into {first}'s account");
    assert_eq!(login["user"]["email"], stored);
}

#[both_backends]
async fn a_full_width_domain_is_the_same_account() {
    let app = spawn_app().await;
    let local = local_part("victim");
    let plain = format!("{local}@example.com");
    assert_one_account(&app, &plain, &format!("{local}@ｅｘａｍｐｌｅ.com"), &plain).await;
}

#[both_backends]
async fn a_u_label_and_its_punycode_are_the_same_account_either_way_round() {
    let app = spawn_app().await;
    let local = local_part("a");
    let a_label = format!("{local}@xn--bcher-kva.example");
    assert_one_account(&app, &a_label, &format!("{local}@bücher.example"), &a_label).await;

    let local = local_part("b");
    let a_label = format!("{local}@xn--bcher-kva.example");
    assert_one_account(&app, &format!("{local}@BÜCHER.example"), &a_label, &a_label).await;
}

#[both_backends]
async fn admin_search_finds_an_account_by_either_spelling_of_its_domain() {
    let app = spawn_app().await;
    let admin = app.create_admin(&unique_email("searcher"), PASSWORD).await;
    let local = local_part("found");
    let signup = app
        .signup_ok(&format!("{local}@xn--bcher-kva.example"), PASSWORD)
        .await;
    let id = user_id_of(&signup);
    for query in [
        format!("{local}@bücher.example"),
        format!("{local}@ｂüｃｈｅｒ.example"),
        format!("{local}@xn--bcher-kva.example"),
        local.clone(),
    ] {
        let url = reqwest::Url::parse_with_params(
            &app.url("/v1/admin/users"),
            [("email", query.as_str())],
        )
        .expect("url");
        let r = app
            .api_client
            .get(url)
            .bearer_auth(access_of(&admin))
            .send()
            .await
            .expect("search");
        let body = expect_json(r, StatusCode::OK).await;
        let users = body["users"].as_array().expect("users");
        assert_eq!(users.len(), 1, "{query}: {body}");
        assert_eq!(users[0]["id"], id, "{query}: {body}");
    }
}

#[tokio::test]
async fn a_domain_that_does_not_normalize_is_a_validation_error() {
    let app = spawn_app().await;
    // Not decodable as punycode, so no mailbox can have it.
    let email = format!("{}@xn--55555577.example", local_part("bad"));
    let r = app.post_signup(&email, PASSWORD).await;
    let body = assert_validation_failed(r, &["email"]).await;
    assert!(
        body.to_string().contains("domain"),
        "the message says what is wrong: {body}"
    );
    let r = app.post_login(&email, PASSWORD).await;
    assert_validation_failed(r, &["email"]).await;
}

// ------------------------------------------------------------------- keys directory

#[tokio::test]
async fn a_keys_dir_others_may_write_stops_the_start_and_names_the_fix() {
    let dir = tempfile::tempdir().expect("tmp");
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).expect("mkdir");
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o770)).expect("chmod");
    // Without the check the server would start and serve: bound the wait.
    let (code, text) = Binary::in_dir(dir.path())
        .cli_within(&["serve"], Duration::from_secs(20))
        .await;
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("writable by group or others"), "{text}");
    assert!(
        text.contains(&format!("chmod 700 {}", keys.display())),
        "{text}"
    );
    assert_eq!(
        std::fs::read_dir(&keys).expect("dir").count(),
        0,
        "nothing was written into it"
    );
}

#[tokio::test]
async fn the_server_creates_its_keys_dir_private() {
    // The keys directory is SQLite's: on PostgreSQL the keys live in the database.
    let app = spawn_app_on(Backend::Sqlite, |_| {}).await;
    assert_eq!(mode_of(&app.keys_dir()), 0o700);
}

/// Writes a key into a scratch directory (so `keys.json` never hears of it), then copies
/// it into `keys` as `name`, as an operator would by hand. Returns its kid and path.
fn place_key_by_hand(keys: &Path, name: &str) -> (String, PathBuf) {
    let scratch = tempfile::tempdir().expect("tmp");
    let made = gatehouse::crypto::keys::generate_into(scratch.path(), chrono::Utc::now())
        .expect("generate");
    let kid = gatehouse::crypto::keys::load_dir(scratch.path())
        .expect("load")
        .into_iter()
        .next()
        .expect("one key")
        .kid;
    let target = keys.join(name);
    std::fs::copy(&made, &target).expect("copy");
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    (kid, target)
}

#[tokio::test]
async fn keys_generate_creates_the_keys_dir_private() {
    let dir = tempfile::tempdir().expect("tmp");
    let keys = dir.path().join("new").join("keys");
    let binary = Binary {
        keys_dir: keys.clone(),
        ..Binary::in_dir(dir.path())
    };
    let (code, text) = binary.cli(&["keys", "generate"]).await;
    assert_eq!(code, 0, "{text}");
    assert_eq!(mode_of(&keys), 0o700, "the keys dir gatehouse created");
    assert_eq!(mode_of(&dir.path().join("new")), 0o700, "and its parent");
}

#[tokio::test]
async fn a_hand_placed_key_is_logged_by_file_and_kid_without_key_material() {
    let dir = tempfile::tempdir().expect("tmp");
    let binary = Binary::in_dir(dir.path());
    let (code, text) = binary.cli(&["keys", "generate"]).await;
    assert_eq!(code, 0, "{text}");
    let (kid, placed) = place_key_by_hand(&binary.keys_dir, "dropped-in.pem");

    let server = binary.start().await;
    let logs = server.stop_and_collect().await;
    let warning = logs
        .lines()
        .find(|l| l.contains("dropped-in.pem"))
        .unwrap_or_else(|| panic!("the hand-placed key is not named in the logs:\n{logs}"));
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains(&kid), "{warning}");
    let pem = std::fs::read_to_string(&placed).expect("pem");
    for line in pem.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!logs.contains(line), "key material in the logs");
    }
}

async fn key_adopted_events(app: &TestApp, admin_token: &str) -> Vec<Value> {
    let r = app
        .get_with_token("/v1/admin/audit?type=key_adopted", admin_token)
        .await;
    let body = expect_json(r, StatusCode::OK).await;
    body["events"].as_array().expect("events").clone()
}

fn naming<'a>(events: &'a [Value], file: &str, kid: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| {
            let detail = e["detail"].as_str().unwrap_or_default();
            detail.contains(file) && detail.contains(kid)
        })
        .collect()
}

#[tokio::test]
async fn a_hand_placed_key_found_at_start_is_audited() {
    let app = spawn_app_on(Backend::Sqlite, |_| {}).await;
    let admin = app.create_admin(&unique_email("keeper"), PASSWORD).await;
    assert_eq!(
        key_adopted_events(&app, access_of(&admin)).await,
        Vec::<Value>::new()
    );

    let (kid, _) = place_key_by_hand(&app.keys_dir(), "at-start.pem");
    // Another replica starting on the same directory (or this one, restarted).
    let replica = app.spawn_replica().await;

    let events = key_adopted_events(&app, access_of(&admin)).await;
    let found = naming(&events, "at-start.pem", &kid);
    assert_eq!(found.len(), 1, "{events:?}");
    assert_eq!(found[0]["outcome"], "ok");
    assert!(found[0]["user_id"].is_null());
    // Still trusted: the replica publishes it.
    let r = app
        .api_client
        .get(format!("{replica}/.well-known/jwks.json"))
        .send()
        .await
        .expect("jwks");
    let jwks = expect_json(r, StatusCode::OK).await;
    assert!(jwks.to_string().contains(&kid), "{jwks}");
}

#[tokio::test]
async fn a_hand_placed_key_found_by_a_reload_is_audited_once() {
    let app = spawn_app_on(Backend::Sqlite, |s| {
        s.server.keys_reload_interval = Duration::from_secs(1)
    })
    .await;
    let admin = app.create_admin(&unique_email("keeper"), PASSWORD).await;
    let token = access_of(&admin).to_owned();

    let (kid, _) = place_key_by_hand(&app.keys_dir(), "at-reload.pem");
    let mut found = 0;
    for _ in 0..100 {
        let events = key_adopted_events(&app, &token).await;
        found = naming(&events, "at-reload.pem", &kid).len();
        if found > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(found, 1, "no key_adopted event after a reload");
    assert!(
        app.jwks_ok().await.to_string().contains(&kid),
        "still trusted"
    );

    // Later reloads find the same file again and stay quiet.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let events = key_adopted_events(&app, &token).await;
    assert_eq!(
        naming(&events, "at-reload.pem", &kid).len(),
        1,
        "{events:?}"
    );
}
