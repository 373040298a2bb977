//! `GATEHOUSE_DATABASE=postgres://…`: the URL, its TLS mode, and a printable form.
//!
//! The URL is libpq's, so operators can paste what their provider gives them. Two of
//! libpq's parameters are not `tokio-postgres`'s and are taken out here: `sslmode`
//! (libpq also has `verify-ca` and `verify-full`) and `sslrootcert`.

use std::path::PathBuf;
use std::sync::Arc;

use percent_encoding::percent_decode_str;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

/// Where the server's NOTICE and WARNING messages go. The driver's default logs every
/// one at INFO, so each start printed `relation "schema_migrations" already exists,
/// skipping` (every `CREATE … IF NOT EXISTS` the migrations run says so) as if it
/// mattered. A WARNING may (a setting the server ignores, say): it stays visible.
fn log_notice(notice: ::postgres::error::DbError) {
    use ::postgres::error::Severity;
    match notice.parsed_severity() {
        Some(Severity::Warning) => {
            tracing::warn!(
                code = notice.code().code(),
                "PostgreSQL: {}",
                notice.message()
            )
        }
        _ => tracing::debug!(
            code = notice.code().code(),
            severity = notice.severity(),
            "PostgreSQL: {}",
            notice.message()
        ),
    }
}

/// libpq's `sslmode`, with libpq's meaning for each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it (libpq's default), unverified.
    Prefer,
    /// TLS or no connection; the certificate is not checked (libpq's `require`): it
    /// stops eavesdroppers, not an impostor.
    Require,
    /// TLS with a certificate signed by a trusted root, whatever name it carries.
    VerifyCa,
    /// TLS with a trusted certificate for the host connected to.
    VerifyFull,
}

impl TlsMode {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "disable" => Self::Disable,
            // libpq's `allow` tries plain first; TLS-when-offered is at least as safe.
            "allow" | "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            _ => return None,
        })
    }
}

/// A PostgreSQL URL, parsed. Holds the password: `Debug` and `Display` print the
/// redacted form only.
#[derive(Clone)]
pub struct PostgresUrl {
    config: ::postgres::Config,
    tls: TlsMode,
    root_cert: Option<PathBuf>,
    redacted: String,
}

impl PostgresUrl {
    /// Parses `postgres://` or `postgresql://` URLs. The error never repeats the URL (it
    /// may hold a password).
    pub fn parse(url: &str) -> Result<Self, String> {
        let url = url.trim();
        let (scheme, rest) = url
            .split_once("://")
            .filter(|(s, _)| matches!(*s, "postgres" | "postgresql"))
            .ok_or("a PostgreSQL URL starts with postgres:// or postgresql://")?;
        let (base, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut tls = TlsMode::Prefer;
        let mut root_cert = None;
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decoded = percent_decode_str(value)
                .decode_utf8()
                .map_err(|_| format!("the URL parameter {key} is not UTF-8"))?;
            match key {
                "sslmode" => {
                    tls = TlsMode::parse(&decoded).ok_or_else(|| {
                        format!(
                            "sslmode={decoded} is not one of disable, allow, prefer, require, \
                             verify-ca, verify-full"
                        )
                    })?;
                }
                "sslrootcert" => root_cert = Some(PathBuf::from(decoded.as_ref())),
                _ => kept.push(pair),
            }
        }
        let for_driver = if kept.is_empty() {
            format!("{scheme}://{base}")
        } else {
            format!("{scheme}://{base}?{}", kept.join("&"))
        };
        let mut config: ::postgres::Config = for_driver.parse().map_err(|e| {
            // The driver's messages name the option, never its value.
            format!("not a valid PostgreSQL URL: {e}")
        })?;
        config.ssl_mode(match tls {
            TlsMode::Disable => ::postgres::config::SslMode::Disable,
            TlsMode::Prefer => ::postgres::config::SslMode::Prefer,
            TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull => {
                ::postgres::config::SslMode::Require
            }
        });
        config.notice_callback(log_notice);
        if root_cert.is_some() && !matches!(tls, TlsMode::VerifyCa | TlsMode::VerifyFull) {
            return Err("sslrootcert is used only with sslmode=verify-ca or verify-full".into());
        }
        Ok(Self {
            config,
            tls,
            root_cert,
            redacted: redact(url),
        })
    }

    pub fn tls_mode(&self) -> TlsMode {
        self.tls
    }

    /// The driver's configuration (TLS mode set, password included).
    pub fn config(&self) -> &::postgres::Config {
        &self.config
    }

    /// The same URL with another database name (tests create one database each).
    pub fn with_dbname(&self, dbname: &str) -> Self {
        let mut other = self.clone();
        other.config.dbname(dbname);
        other.redacted = format!("{} (database {dbname})", self.redacted);
        other
    }

    /// The connector for this URL's TLS mode (unused, but required, for `disable`).
    pub fn connector(&self) -> anyhow::Result<MakeRustlsConnect> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()?;
        let verifier: Arc<dyn ServerCertVerifier> = match self.tls {
            TlsMode::Disable | TlsMode::Prefer | TlsMode::Require => {
                Arc::new(EncryptOnly(provider))
            }
            TlsMode::VerifyCa | TlsMode::VerifyFull => {
                let roots = self.roots()?;
                let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()?;
                if self.tls == TlsMode::VerifyCa {
                    Arc::new(AnyName(webpki))
                } else {
                    webpki
                }
            }
        };
        let config = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(MakeRustlsConnect::new(config))
    }

    /// `sslrootcert` when given, else the system's trusted roots.
    fn roots(&self) -> anyhow::Result<rustls::RootCertStore> {
        use anyhow::Context as _;
        let mut roots = rustls::RootCertStore::empty();
        match &self.root_cert {
            Some(path) => {
                for cert in CertificateDer::pem_file_iter(path)
                    .with_context(|| format!("cannot read sslrootcert {}", path.display()))?
                {
                    let cert = cert.with_context(|| {
                        format!("sslrootcert {} holds a bad certificate", path.display())
                    })?;
                    roots.add(cert)?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
            }
        }
        anyhow::ensure!(
            !roots.is_empty(),
            "no trusted root certificate for sslmode=verify-ca/verify-full (set sslrootcert)"
        );
        Ok(roots)
    }
}

impl std::fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl std::fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted)
    }
}

/// The URL with its password (in the user info or a `password=` parameter) replaced.
pub fn redact(url: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (url, None),
    };
    let head = match head.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let authority = match authority.rsplit_once('@') {
                Some((userinfo, host)) => match userinfo.split_once(':') {
                    Some((user, _)) => format!("{user}:***@{host}"),
                    None => format!("{userinfo}@{host}"),
                },
                None => authority.to_owned(),
            };
            format!("{scheme}://{authority}{path}")
        }
        None => "***".to_owned(),
    };
    match query {
        Some(q) => {
            let pairs: Vec<String> = q
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some(("password", _)) => "password=***".to_owned(),
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{head}?{}", pairs.join("&"))
        }
        None => head,
    }
}

/// libpq's `prefer`/`require`: encrypts, and checks the handshake's signatures, but
/// trusts whatever certificate the server shows.
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// libpq's `verify-ca`: the chain must lead to a trusted root; the name may differ
/// (servers reached by an address their certificate does not list).
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::CertificateError::{NotValidForName, NotValidForNameContext};
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                NotValidForName | NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_print() {
        for (url, shown) in [
            (
                "postgres://gh:s3cret@db.example.com:5432/gatehouse?sslmode=require",
                "postgres://gh:***@db.example.com:5432/gatehouse?sslmode=require",
            ),
            (
                "postgresql://gh@db/gatehouse?password=s3cret&sslmode=disable",
                "postgresql://gh@db/gatehouse?password=***&sslmode=disable",
            ),
            ("postgres://db/gatehouse", "postgres://db/gatehouse"),
        ] {
            assert_eq!(redact(url), shown);
            let parsed = PostgresUrl::parse(url).expect(url);
            assert_eq!(parsed.to_string(), shown);
            assert!(!format!("{parsed:?}").contains("s3cret"));
        }
    }

    #[test]
    fn libpq_tls_modes_parse_and_errors_do_not_echo_the_url() {
        for (mode, want) in [
            ("disable", TlsMode::Disable),
            ("prefer", TlsMode::Prefer),
            ("require", TlsMode::Require),
            ("verify-ca", TlsMode::VerifyCa),
            ("verify-full", TlsMode::VerifyFull),
        ] {
            let url = format!("postgres://u:pw@h/db?sslmode={mode}");
            assert_eq!(PostgresUrl::parse(&url).expect(mode).tls_mode(), want);
        }
        assert_eq!(
            PostgresUrl::parse("postgres://h/db")
                .expect("plain")
                .tls_mode(),
            TlsMode::Prefer
        );
        for bad in [
            "postgres://u:s3cret@h/db?sslmode=sometimes",
            "postgres://u:s3cret@h/db?nonsense=1",
            "postgres://u:s3cret@h:notaport/db",
            "mysql://u:s3cret@h/db",
            "postgres://u:s3cret@h/db?sslrootcert=/x.pem",
        ] {
            let e = PostgresUrl::parse(bad).expect_err(bad);
            assert!(!e.contains("s3cret"), "{e}");
        }
    }
}
