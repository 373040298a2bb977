//! Micro benchmarks of what an auth request spends: RS256 signatures, RS256
//! verification, Argon2id, and the refresh-rotation transaction on a file database.
//!
//! `cargo bench --bench primitives` (all), or with a filter: `cargo bench --bench
//! primitives -- rs256`. See BENCHMARKS.md for what each number means.
//!
//! - `rs256_sign/gatehouse_mint`: the service's own signer (`jwt::mint`, aws-lc-rs, key
//!   parsed once at start, header encoded once).
//! - `rs256_sign/jsonwebtoken_encode`: `jsonwebtoken::encode` with an `EncodingKey`
//!   built once from the same PEM: ring re-parses the private key on every call.
//! - `rs256_sign/jsonwebtoken_encode_from_pem`: the same with the PEM parsed per call, as
//!   code that keeps only the PEM string does.
//! - `rs256_sign/ring_parsed_once`: ring's signer with the key parsed once, to compare the
//!   two RSA backends on equal terms.
//! - `rs256_verify/gatehouse_verify`: `jwt::verify` (header, kid lookup, signature,
//!   claims).
//! - `argon2id/verify_production`: `PasswordHasher::verify` with `PasswordCost::PRODUCTION`
//!   (m=19456 KiB, t=2, p=1), on its blocking pool.
//! - `refresh_rotation/{normal,full}`: one `find_refresh_token` + `spend_refresh_token`
//!   transaction (look up, spend, insert child, touch family, commit) in WAL mode.

use std::hint::black_box;
use std::time::Duration;

use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};
use uuid::Uuid;

use gatehouse::crypto::jwt::{self, AccessClaims};
use gatehouse::crypto::keys::{KeyRing, generate_into, load_dir};
use gatehouse::crypto::password::{PasswordCost, PasswordHasher};
use gatehouse::crypto::refresh::{RefreshSecret, RefreshToken};
use gatehouse::domain::{AuditKind, Email, Role};
use gatehouse::storage::sqlite::{SqliteStore, Synchronous};
use gatehouse::storage::{AuditEvent, NewFamily, NewUser, Spend, Store};

const ISSUER: &str = "http://127.0.0.1:8080";
const AUDIENCE: &str = "gatehouse";

fn claims() -> AccessClaims {
    let now = Utc::now().timestamp();
    AccessClaims {
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
        sub: Uuid::new_v4().into(),
        iat: now,
        nbf: now,
        exp: now + 900,
        jti: Uuid::new_v4(),
        sid: Uuid::new_v4().into(),
        role: Role::User,
        amr: vec!["pwd".into()],
    }
}

/// A generated RSA-2048 key: the key ring, and the PEM file's bytes.
fn key() -> (tempfile::TempDir, KeyRing, Vec<u8>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = generate_into(dir.path(), Utc::now()).expect("generate key");
    let pem = std::fs::read(&path).expect("read key");
    let ring = KeyRing::new(load_dir(dir.path()).expect("load")).expect("ring");
    (dir, ring, pem)
}

fn rs256(c: &mut Criterion) {
    let (_dir, ring, pem) = key();
    let kid = ring.signer().kid.clone();
    let c0 = claims();

    let mut g = c.benchmark_group("rs256_sign");
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("gatehouse_mint", |b| {
        b.iter(|| jwt::mint(&ring, black_box(&c0)).expect("mint"));
    });

    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(kid);
    let encoding = jsonwebtoken::EncodingKey::from_rsa_pem(&pem).expect("encoding key");
    // Same claims, same key: the token verifies with gatehouse's verifier.
    let t = jsonwebtoken::encode(&header, &c0, &encoding).expect("encode");
    jwt::verify(&ring, &t, ISSUER, AUDIENCE, Utc::now()).expect("jsonwebtoken token verifies");
    g.bench_function("jsonwebtoken_encode", |b| {
        b.iter(|| jsonwebtoken::encode(&header, black_box(&c0), &encoding).expect("encode"));
    });
    g.bench_function("jsonwebtoken_encode_from_pem", |b| {
        b.iter(|| {
            let key = jsonwebtoken::EncodingKey::from_rsa_pem(black_box(&pem)).expect("key");
            jsonwebtoken::encode(&header, black_box(&c0), &key).expect("encode")
        });
    });

    let der = pem::parse(&pem).expect("pem").into_contents();
    let ring_pair = ring::signature::RsaKeyPair::from_pkcs8(&der).expect("ring key");
    let rng = ring::rand::SystemRandom::new();
    let message = t.rsplit_once('.').expect("token").0.as_bytes().to_vec();
    g.bench_function("ring_parsed_once", |b| {
        let mut sig = vec![0u8; ring_pair.public().modulus_len()];
        b.iter(|| {
            ring_pair
                .sign(
                    &ring::signature::RSA_PKCS1_SHA256,
                    &rng,
                    black_box(&message),
                    &mut sig,
                )
                .expect("sign");
        });
    });
    g.finish();

    let token = jwt::mint(&ring, &c0).expect("mint");
    let mut g = c.benchmark_group("rs256_verify");
    g.bench_function("gatehouse_verify", |b| {
        let now = Utc::now();
        b.iter(|| jwt::verify(&ring, black_box(&token), ISSUER, AUDIENCE, now).expect("verify"));
    });
    g.finish();
}

fn argon2id(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let hasher = PasswordHasher::new(PasswordCost::PRODUCTION, 1).expect("hasher");
    let phc = rt
        .block_on(hasher.hash("Correct-Horse-9!".into()))
        .expect("hash");
    assert!(phc.contains("m=19456,t=2,p=1"), "{phc}");
    let mut g = c.benchmark_group("argon2id");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("verify_production", |b| {
        b.iter(|| {
            let ok = rt
                .block_on(hasher.verify("Correct-Horse-9!".into(), Some(phc.clone())))
                .expect("verify");
            assert!(ok);
        });
    });
    g.finish();
}

fn rotation(c: &mut Criterion) {
    let mut g = c.benchmark_group("refresh_rotation");
    g.measurement_time(Duration::from_secs(5));
    for (name, sync) in [("normal", Synchronous::Normal), ("full", Synchronous::Full)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("bench.db"), sync, 2).expect("open");
        let secret = RefreshSecret::from_bytes(&[7u8; 32]);
        let now = Utc::now();
        let email = Email::parse("bench@example.com").expect("email");
        let user = store
            .create_user(NewUser {
                id: Uuid::new_v4().into(),
                email: &email,
                password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaA",
                role: Role::User,
                now,
            })
            .expect("user");
        let first = RefreshToken::generate();
        store
            .create_family(NewFamily {
                id: Uuid::new_v4().into(),
                user_id: user.id,
                first_token: first.hash().0,
                now,
                token_expires_at: now + chrono::Duration::hours(12),
                family_expires_at: now + chrono::Duration::days(7),
                user_agent: Some("bench".into()),
                ip: Some("127.0.0.1".into()),
                password_generation: 0,
                opened_by: AuditEvent::new(now, AuditKind::LoginSucceeded, "ok"),
                forgives: None,
                settles: None,
                amr: gatehouse::domain::Amr::Pwd,
            })
            .expect("family");
        // Each iteration presents the previous iteration's child: a real chain.
        let mut current = first;
        g.bench_function(name, |b| {
            b.iter(|| {
                let child = current.child(&secret);
                let now = Utc::now();
                let stored = store
                    .find_refresh_token(current.hash().0)
                    .expect("read")
                    .expect("known");
                let claimed = store
                    .spend_refresh_token(Spend {
                        presented: current.hash().0,
                        child: child.hash().0,
                        family_id: stored.family_id,
                        now,
                        child_expires_at: now + chrono::Duration::hours(12),
                    })
                    .expect("spend");
                assert!(claimed && stored.spent_at.is_none());
                current = child;
            });
        });
    }
    g.finish();
}

criterion_group!(benches, rs256, argon2id, rotation);
criterion_main!(benches);
