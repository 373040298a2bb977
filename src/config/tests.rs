use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use super::file::read_toml;
use super::*;
use crate::declare::Fallback;
use crate::http::client_ip::ClientIpHeader;
use crate::storage::sqlite::Synchronous;

fn from(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Settings::from_lookup(|k| map.get(k).cloned())
}

#[test]
fn defaults_are_valid_and_use_production_hashing() {
    let s = from(&[]).expect("defaults");
    assert_eq!(s.password_cost, PasswordCost::PRODUCTION);
    assert_eq!(s.tokens.access_ttl, Duration::from_secs(900));
    assert_eq!(s.server.bind, "127.0.0.1:8080");
}

#[test]
fn the_database_setting_picks_the_backend_by_its_form() {
    let sqlite = |v: &str| match from(&[("GATEHOUSE_DATABASE", v)])
        .expect(v)
        .database_settings()
    {
        DatabaseSettings::Sqlite { path, .. } => path,
        other => panic!("{v}: {other}"),
    };
    assert_eq!(
        sqlite("./data/gatehouse.db"),
        PathBuf::from("./data/gatehouse.db")
    );
    assert_eq!(
        sqlite("sqlite:///var/lib/gh.db"),
        PathBuf::from("/var/lib/gh.db")
    );
    assert_eq!(sqlite("sqlite://rel.db"), PathBuf::from("rel.db"));
    match from(&[]).expect("defaults").database_settings() {
        DatabaseSettings::Sqlite { path, .. } => {
            assert_eq!(path, PathBuf::from("./data/gatehouse.db"))
        }
        other => panic!("the default is SQLite, not {other}"),
    }
    for url in [
        "postgres://gh:s3cret@db.example.com/gatehouse?sslmode=verify-full",
        "postgresql://gh:s3cret@db.example.com:6432/gatehouse",
    ] {
        let kek = ("GATEHOUSE_KEY_ENCRYPTION_KEY_FILE", "/run/secrets/kek");
        let e = from(&[("GATEHOUSE_DATABASE", url)]).expect_err("no KEK on PostgreSQL");
        assert_eq!(e.key, "GATEHOUSE_KEY_ENCRYPTION_KEY_FILE", "{e}");
        assert!(e.message.contains("required"), "{e}");
        let s = from(&[
            ("GATEHOUSE_DATABASE", url),
            ("GATEHOUSE_DB_POOL_SIZE", "3"),
            kek,
        ])
        .expect(url);
        let DatabaseSettings::Postgres {
            pool_size,
            prepared_statements,
            ..
        } = s.database_settings()
        else {
            panic!("{url} is PostgreSQL");
        };
        assert_eq!(pool_size, 3);
        assert!(prepared_statements, "prepared by default");
        let unprepared = ("GATEHOUSE_DB_PREPARED_STATEMENTS", "off");
        let off = from(&[("GATEHOUSE_DATABASE", url), unprepared, kek]).expect(url);
        let DatabaseSettings::Postgres {
            prepared_statements,
            ..
        } = off.database_settings()
        else {
            panic!("{url} is PostgreSQL");
        };
        assert!(!prepared_statements, "off for a pooler");
        let shown = s.describe();
        let printed = format!("{shown:?} {s:?} {}", s.database_settings());
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(printed.contains("gh:***@db.example.com"), "{printed}");
    }
    for bad in [
        "mysql://u:s3cret@h/db",
        "sqlite://",
        "postgres://u:s3cret@h/db?sslmode=maybe",
    ] {
        let e = from(&[("GATEHOUSE_DATABASE", bad)]).expect_err(bad);
        assert_eq!(e.key, "GATEHOUSE_DATABASE");
        assert!(!e.to_string().contains("s3cret"), "{e}");
    }
}

#[test]
fn refuses_unsafe_settings() {
    for (key, value) in [
        ("GATEHOUSE_ACCESS_TTL", "61m"),
        ("GATEHOUSE_ACCESS_TTL", "30s"),
        ("GATEHOUSE_CORS_ORIGINS", "*"),
        ("GATEHOUSE_CORS_ORIGINS", "https://*.example.com"),
        ("GATEHOUSE_CORS_ORIGINS", "https://app.example.com/path"),
        ("GATEHOUSE_ISSUER", "http://auth.example.com"),
        ("GATEHOUSE_ISSUER", "auth.example.com"),
        ("GATEHOUSE_BIND", "nonsense"),
        ("GATEHOUSE_REFRESH_REUSE_GRACE", "10m"),
        ("GATEHOUSE_FAMILY_TTL", "1h"),
        ("GATEHOUSE_SQLITE_SYNCHRONOUS", "off"),
        ("GATEHOUSE_RATE_LIMITS", "maybe"),
        ("GATEHOUSE_TRUSTED_PROXIES", "10.0.0.0/33"),
        ("GATEHOUSE_CLIENT_IP_HEADER", "x-real-ip"),
        ("GATEHOUSE_HSTS", "onn"),
        ("GATEHOUSE_RATE_LIMITS", "of"),
        ("GATEHOUSE_PRUNE_INTERVAL", "0"),
        ("GATEHOUSE_HTTP_WORKERS", "0"),
    ] {
        let e = from(&[(key, value)]).expect_err(value);
        assert_eq!(e.key, key, "{value}");
    }
}

#[test]
fn reads_every_documented_variable() {
    let s = from(&[
        ("GATEHOUSE_ISSUER", "https://auth.example.com/"),
        (
            "GATEHOUSE_CORS_ORIGINS",
            "https://a.example.com, https://b.example.com",
        ),
        ("GATEHOUSE_RATE_LIMITS", "off"),
        ("GATEHOUSE_RATE_LIMIT_AUTH", "20/4"),
        ("GATEHOUSE_TRUSTED_PROXIES", "10.0.0.0/8, ::1"),
        ("GATEHOUSE_SQLITE_SYNCHRONOUS", "full"),
    ])
    .expect("valid");
    assert_eq!(s.tokens.issuer, "https://auth.example.com");
    assert_eq!(s.http.cors_origins.len(), 2);
    assert!(!s.rate_limits.enabled);
    assert_eq!(
        s.rate_limits.auth,
        Tier {
            per_minute: 20,
            burst: 4
        }
    );
    assert_eq!(s.http.trusted_proxies.len(), 2);
    assert_eq!(s.storage.sqlite_synchronous, Synchronous::Full);
    let s = from(&[("GATEHOUSE_CLIENT_IP_HEADER", "Forwarded")]).expect("valid");
    assert_eq!(s.http.client_ip_header, ClientIpHeader::Forwarded);
    assert_eq!(
        from(&[]).expect("defaults").http.client_ip_header,
        ClientIpHeader::XForwardedFor
    );
}

#[test]
fn a_file_is_overlaid_by_the_environment_and_typos_are_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("gatehouse.toml");
    std::fs::write(
        &path,
        "access_ttl = \"10m\"\ncors_origins = [\"https://a.example.com\"]\nrate_limits = false\n\
         client_ip_header = \"forwarded\"\n",
    )
    .expect("write");
    let file = read_toml(&path).expect("toml");
    assert_eq!(file["GATEHOUSE_ACCESS_TTL"], "10m");
    assert_eq!(file["GATEHOUSE_RATE_LIMITS"], "off");
    let env: HashMap<&str, &str> = [("GATEHOUSE_ACCESS_TTL", "5m")].into();
    let s = Settings::from_lookup(|k| {
        env.get(k)
            .map(|v| v.to_string())
            .or_else(|| file.get(k).cloned())
    })
    .expect("valid");
    assert_eq!(
        s.tokens.access_ttl,
        Duration::from_secs(300),
        "environment wins"
    );
    assert_eq!(
        s.http.cors_origins,
        vec!["https://a.example.com".to_owned()]
    );
    assert!(!s.rate_limits.enabled);
    assert_eq!(s.http.client_ip_header, ClientIpHeader::Forwarded);

    std::fs::write(&path, "acess_ttl = \"10m\"\n").expect("write");
    let e = read_toml(&path).expect_err("typo");
    assert!(e.message.contains("unknown setting"), "{e}");
}

#[test]
fn trusting_a_whole_range_is_warned_about() {
    for trusted in [
        "0.0.0.0/0",
        "::/0",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "fc00::/7",
        "8.0.0.0/6",
        "10.1.2.3, 192.168.0.0/15",
    ] {
        let s = from(&[
            ("GATEHOUSE_TRUSTED_PROXIES", trusted),
            ("GATEHOUSE_RATE_LIMIT_STORE", "redis://127.0.0.1:6379"),
            ("GATEHOUSE_ADMIN_MFA", "required"),
        ])
        .expect("valid");
        let warnings = s.warnings();
        assert_eq!(warnings.len(), 1, "{trusted}: {warnings:?}");
        assert!(
            warnings[0].contains("GATEHOUSE_TRUSTED_PROXIES"),
            "{warnings:?}"
        );
    }
    for trusted in [
        "",
        "10.0.0.5",
        "10.1.0.0/16",
        "192.168.1.0/24",
        "fd00::/8",
        "::1",
    ] {
        let s = from(&[
            ("GATEHOUSE_TRUSTED_PROXIES", trusted),
            ("GATEHOUSE_RATE_LIMIT_STORE", "redis://127.0.0.1:6379"),
            ("GATEHOUSE_ADMIN_MFA", "required"),
        ])
        .expect("valid");
        assert_eq!(s.warnings(), Vec::<String>::new(), "{trusted}");
    }
}

#[test]
fn an_in_memory_limiter_is_warned_about_unless_limits_are_off() {
    let many = |w: &[String]| w.iter().any(|w| w.contains("N times the configured"));
    let postgres = [
        ("GATEHOUSE_DATABASE", "postgres://gh@db.internal/gatehouse"),
        ("GATEHOUSE_KEY_ENCRYPTION_KEY_FILE", "/run/secrets/kek"),
    ];
    assert!(many(&from(&postgres).expect("postgres").warnings()));
    // One process per SQLite file: there are no replicas to multiply the limits.
    assert!(
        !many(&from(&[]).expect("defaults").warnings()),
        "warned about replicas on SQLite"
    );
    let shared =
        from(&[("GATEHOUSE_RATE_LIMIT_STORE", "redis://:pw@10.0.0.7:6379/1")]).expect("redis");
    assert!(!many(&shared.warnings()));
    let shown = shared.describe();
    let store = shown
        .iter()
        .find(|(k, _)| *k == "GATEHOUSE_RATE_LIMIT_STORE")
        .expect("described");
    assert_eq!(store.1, "redis://:***@10.0.0.7:6379/1");
    let off = from(&[postgres[0], postgres[1], ("GATEHOUSE_RATE_LIMITS", "off")]).expect("off");
    assert!(!many(&off.warnings()));
    for bad in ["10.0.0.7:6379", "redis://h:port", "https://h"] {
        let e = from(&[("GATEHOUSE_RATE_LIMIT_STORE", bad)]).expect_err(bad);
        assert_eq!(e.key, "GATEHOUSE_RATE_LIMIT_STORE", "{bad}");
    }
    let e = from(&[("GATEHOUSE_RATE_LIMIT_ON_STORE_ERROR", "fail-open")]).expect_err("bad");
    assert_eq!(e.key, "GATEHOUSE_RATE_LIMIT_ON_STORE_ERROR");
    let e = from(&[("GATEHOUSE_RATE_LIMIT_KEY_PREFIX", "a b")]).expect_err("bad");
    assert_eq!(e.key, "GATEHOUSE_RATE_LIMIT_KEY_PREFIX");
}

#[test]
fn every_setting_is_declared_once() {
    let mut envs = std::collections::HashSet::new();
    let mut keys = std::collections::HashSet::new();
    for setting in settings() {
        assert!(setting.env.starts_with("GATEHOUSE_"), "{}", setting.env);
        assert!(envs.insert(setting.env), "{} declared twice", setting.env);
        assert!(
            keys.insert(setting.file_key()),
            "{} declared twice",
            setting.env
        );
    }
}

#[test]
fn each_variable_is_read_once() {
    let reads = std::cell::RefCell::new(HashMap::<String, usize>::new());
    Settings::from_lookup(|key| {
        *reads.borrow_mut().entry(key.to_owned()).or_default() += 1;
        None
    })
    .expect("defaults");
    let reads = reads.into_inner();
    assert_eq!(reads.len(), settings().count());
    for setting in settings() {
        assert_eq!(reads.get(setting.env), Some(&1), "{}", setting.env);
    }
}

#[test]
fn every_declared_default_parses_and_is_valid() {
    let s = Settings::overlay(|_| None).expect("every default parses");
    s.validate().expect("the defaults are valid");
    assert_eq!(Settings::default().describe(), s.describe());
}

#[test]
fn a_misspelt_switch_stops_the_start_naming_its_variable() {
    for key in ["GATEHOUSE_HSTS", "GATEHOUSE_RATE_LIMITS"] {
        for value in ["onn", "of", "yes", "enabled"] {
            let e = from(&[(key, value)]).expect_err(value);
            assert_eq!(e.key, key, "{value}");
            assert!(e.message.contains("is not on or off"), "{e}");
        }
        for (value, on) in [
            ("on", true),
            ("ON", true),
            (" true ", true),
            ("1", true),
            ("off", false),
            ("False", false),
            ("0", false),
        ] {
            let s = from(&[(key, value)]).expect(value);
            let got = if key == "GATEHOUSE_HSTS" {
                s.http.hsts
            } else {
                s.rate_limits.enabled
            };
            assert_eq!(got, on, "{key}={value}");
        }
    }
}

#[test]
fn every_error_names_its_own_variable() {
    for setting in settings() {
        for value in ["0", "nonsense", "-1", "*"] {
            if let Err(e) = from(&[(setting.env, value)]) {
                assert_eq!(e.key, setting.env, "{}={value}: {e}", setting.env);
            }
        }
    }
    // Settings built in code reach only `validate()`.
    let dir = tempfile::tempdir().expect("tmp");
    type Change = fn(&mut Settings);
    let zeroed: [(&str, Change); 4] = [
        ("GATEHOUSE_HASH_WORKERS", |s| s.server.hash_workers = 0),
        ("GATEHOUSE_HTTP_WORKERS", |s| s.server.http_workers = 0),
        ("GATEHOUSE_PRUNE_INTERVAL", |s| {
            s.server.prune_interval = Duration::ZERO
        }),
        ("GATEHOUSE_KEYS_RELOAD_INTERVAL", |s| {
            s.server.keys_reload_interval = Duration::ZERO
        }),
    ];
    for (key, zero) in zeroed {
        let mut s = Settings::for_tests(dir.path());
        zero(&mut s);
        let e = s.validate().expect_err(key);
        assert_eq!(e.key, key);
    }
}

#[test]
fn config_check_prints_every_setting() {
    let lines = from(&[]).expect("defaults").describe();
    let names: Vec<&str> = lines.iter().map(|(name, _)| *name).collect();
    let declared: Vec<&str> = settings().map(|s| s.env).collect();
    assert_eq!(names, declared);
    assert!(
        lines.contains(&("GATEHOUSE_BODY_TIMEOUT", "10s".to_owned())),
        "{lines:?}"
    );
}

#[test]
fn every_setting_can_be_set_in_a_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("gatehouse.toml");
    let text: String = settings()
        .map(|s| format!("{} = {:?}\n", s.file_key(), s.default_value()))
        .collect();
    std::fs::write(&path, text).expect("write");
    let file = read_toml(&path).expect("every key is known");
    assert_eq!(file.len(), settings().count());
    Settings::from_lookup(|k| file.get(k).cloned()).expect("valid");
}

/// The README's table, as the declarations say it must read.
fn readme_table() -> String {
    let mut table = "| variable | default | meaning |\n|---|---|---|\n".to_owned();
    for s in settings() {
        let default = match s.default {
            Fallback::Value("") => "*(none)*".to_owned(),
            Fallback::Value(v) => format!("`{v}`"),
            Fallback::Cores => "cores".to_owned(),
        };
        table.push_str(&format!("| `{}` | {default} | {} |\n", s.env, s.meaning));
    }
    table
}

#[test]
fn a_key_encryption_key_on_sqlite_is_a_warning() {
    let kek = ("GATEHOUSE_KEY_ENCRYPTION_KEY_FILE", "/run/secrets/kek");
    let s = from(&[kek]).expect("allowed on SQLite");
    assert!(
        s.warnings()
            .iter()
            .any(|w| w
                .contains("GATEHOUSE_KEY_ENCRYPTION_KEY_FILE is set but the database is SQLite")),
        "{:?}",
        s.warnings()
    );
    let unrelated: Vec<String> = from(&[])
        .expect("defaults")
        .warnings()
        .into_iter()
        .filter(|w| !w.starts_with("GATEHOUSE_RATE_LIMIT_STORE is unset"))
        .filter(|w| !w.starts_with("GATEHOUSE_ADMIN_MFA is off"))
        .collect();
    assert!(unrelated.is_empty(), "{unrelated:?}");
}

#[test]
fn the_readme_documents_exactly_the_declared_settings() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let section = readme
        .split_once("\n## Configuration\n")
        .map(|(_, rest)| rest)
        .expect("a Configuration section");
    let documented: String = section
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .map(|l| format!("{l}\n"))
        .collect();
    let expected = readme_table();
    assert!(
        documented == expected,
        "README.md's configuration table differs from the declared settings (config::settings()); \
         it should read:\n\n{expected}"
    );
}

#[test]
fn the_k8s_configmap_names_only_declared_settings() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/k8s/configmap.yaml");
    let text = std::fs::read_to_string(path).expect("configmap.yaml");
    // Read before the settings, by clap and by the log setup.
    let early = ["GATEHOUSE_CONFIG", "GATEHOUSE_LOG_FORMAT"];
    for line in text.lines() {
        let entry = line.trim_start().trim_start_matches(['#', ' ']);
        let Some((name, _)) = entry.split_once(':') else {
            continue;
        };
        if name.starts_with("GATEHOUSE_") {
            assert!(
                settings().any(|s| s.env == name) || early.contains(&name),
                "configmap.yaml sets {name}, which no setting declares"
            );
        }
    }
}

#[test]
fn an_unknown_gatehouse_variable_is_named_with_the_closest_setting() {
    let names = [
        "GATEHOUSE_ACESS_TTL",
        "GATEHOUSE_ACCESS_TTL",
        "GATEHOUSE_CONFIG",
        "GATEHOUSE_LOG_FORMAT",
        "GATEHOUSE_SOMETHING_ELSE",
        "PATH",
    ]
    .map(String::from);
    let warnings = Settings::unknown_variables(names);
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings[0].starts_with("GATEHOUSE_ACESS_TTL ")
            && warnings[0].ends_with("did you mean GATEHOUSE_ACCESS_TTL?"),
        "{warnings:?}"
    );
    assert!(
        warnings[1].starts_with("GATEHOUSE_SOMETHING_ELSE ") && !warnings[1].contains("mean"),
        "{warnings:?}"
    );
}

#[test]
fn a_redis_ca_file_goes_with_rediss_and_must_hold_a_certificate() {
    let dir = tempfile::tempdir().expect("tmp");
    let pem = dir.path().join("ca.pem");
    std::fs::write(
        &pem,
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").expect("write");
    let (pem, empty) = (pem.to_str().expect("utf-8"), empty.to_str().expect("utf-8"));
    let tls = from(&[
        (
            "GATEHOUSE_RATE_LIMIT_STORE",
            "rediss://:pw@cache.example.com:6380",
        ),
        ("GATEHOUSE_RATE_LIMIT_STORE_CA_FILE", pem),
    ])
    .expect("rediss with a CA file");
    assert!(tls.rate_limits.store.as_ref().is_some_and(|u| u.tls()));
    for (store, ca, why) in [
        ("redis://cache.example.com", pem, "rediss://"),
        ("rediss://cache.example.com", empty, "no PEM certificate"),
        (
            "rediss://cache.example.com",
            "/nonexistent/ca.pem",
            "cannot read",
        ),
    ] {
        let e = from(&[
            ("GATEHOUSE_RATE_LIMIT_STORE", store),
            ("GATEHOUSE_RATE_LIMIT_STORE_CA_FILE", ca),
        ])
        .expect_err(why);
        assert_eq!(e.key, "GATEHOUSE_RATE_LIMIT_STORE_CA_FILE");
        assert!(e.to_string().contains(why), "{e}");
    }
}

#[test]
fn a_refused_value_from_the_file_is_named_by_its_toml_key_and_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("gatehouse.toml");
    std::fs::write(&path, "access_ttl = \"5 fortnights\"\n").expect("write");
    let e = Settings::load_with(Some(&path), |_| None).expect_err("refused");
    let text = e.to_string();
    assert!(
        text.starts_with(&format!("{}: access_ttl: ", path.display())),
        "{text}"
    );
    assert!(!text.contains("GATEHOUSE_ACCESS_TTL"), "{text}");
    // The same value from the environment is named by its variable.
    let e = Settings::load_with(Some(&path), |k| {
        (k == "GATEHOUSE_ACCESS_TTL").then(|| "5 fortnights".to_owned())
    })
    .expect_err("refused");
    assert_eq!(e.key, "GATEHOUSE_ACCESS_TTL");
}

#[test]
fn admin_mfa_off_is_a_warning_and_required_is_not() {
    let off = from(&[]).expect("defaults");
    assert!(!off.mfa.admin_mfa_required);
    assert!(
        off.warnings()
            .iter()
            .any(|w| w.starts_with("GATEHOUSE_ADMIN_MFA is off")),
        "{:?}",
        off.warnings()
    );
    let on = from(&[("GATEHOUSE_ADMIN_MFA", "required")]).expect("required");
    assert!(on.mfa.admin_mfa_required);
    assert!(
        !on.warnings()
            .iter()
            .any(|w| w.contains("GATEHOUSE_ADMIN_MFA"))
    );
    let e = from(&[("GATEHOUSE_ADMIN_MFA", "yes")]).expect_err("bad");
    assert_eq!(e.key, "GATEHOUSE_ADMIN_MFA");
    let e = from(&[("GATEHOUSE_MFA_TOKEN_TTL", "1h")]).expect_err("too long");
    assert_eq!(e.key, "GATEHOUSE_MFA_TOKEN_TTL");
}

#[test]
fn passkeys_start_only_on_a_relying_party_browsers_would_accept() {
    let off = from(&[]).expect("defaults");
    assert!(!off.webauthn.enabled());
    let on = from(&[
        ("GATEHOUSE_WEBAUTHN_RP_ID", "Example.com"),
        (
            "GATEHOUSE_WEBAUTHN_ORIGINS",
            "https://app.example.com, https://example.com",
        ),
    ])
    .expect("a registrable domain over its origins");
    assert!(on.webauthn.enabled());
    assert_eq!(on.webauthn.rp_id.as_deref(), Some("example.com"));
    assert!(on.describe().contains(&(
        "GATEHOUSE_WEBAUTHN_ORIGINS",
        "https://app.example.com,https://example.com".to_owned()
    )));
    for (pairs, key) in [
        (
            &[("GATEHOUSE_WEBAUTHN_RP_ID", "example.com")][..],
            "GATEHOUSE_WEBAUTHN_ORIGINS",
        ),
        (
            &[("GATEHOUSE_WEBAUTHN_ORIGINS", "https://example.com")][..],
            "GATEHOUSE_WEBAUTHN_ORIGINS",
        ),
        (
            &[
                ("GATEHOUSE_WEBAUTHN_RP_ID", "co.uk"),
                ("GATEHOUSE_WEBAUTHN_ORIGINS", "https://shop.co.uk"),
            ][..],
            "GATEHOUSE_WEBAUTHN_RP_ID",
        ),
        (
            &[
                ("GATEHOUSE_WEBAUTHN_RP_ID", "auth.internal"),
                ("GATEHOUSE_WEBAUTHN_ORIGINS", "https://app.example.com"),
            ][..],
            "GATEHOUSE_WEBAUTHN_ORIGINS",
        ),
        (
            &[
                ("GATEHOUSE_WEBAUTHN_RP_ID", "example.com"),
                ("GATEHOUSE_WEBAUTHN_ORIGINS", "http://app.example.com"),
            ][..],
            "GATEHOUSE_WEBAUTHN_ORIGINS",
        ),
    ] {
        let e = from(pairs).expect_err("refused");
        assert_eq!(e.key, key, "{pairs:?}: {e:?}");
    }
}
