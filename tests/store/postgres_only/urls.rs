//! URLs and their TLS modes: plain, `require`, `verify-ca`, `verify-full`.

use super::*;

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
