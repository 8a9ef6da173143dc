//! Which certificate authorities HTTPS trusts: the system bundle when there
//! is one (so that an organisation's own authority, installed system-wide,
//! is honoured), else the Mozilla roots built into the HTTP client.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ureq::tls::{parse_pem, Certificate, PemItem, RootCerts, TlsConfig};

/// Usual locations of the system CA bundle (Debian/Ubuntu, Fedora/RHEL,
/// openSUSE, Alpine/macOS).
const BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The TLS settings of every request.
pub(crate) fn tls_config() -> TlsConfig {
    TlsConfig::builder().root_certs(root_certs().clone()).build()
}

/// `$SSL_CERT_FILE` or the first system bundle that yields certificates;
/// the built-in roots otherwise. Computed once per process.
fn root_certs() -> &'static RootCerts {
    static ROOTS: OnceLock<RootCerts> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let from_env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
        from_env
            .into_iter()
            .chain(BUNDLES.iter().map(PathBuf::from))
            .map(|p| load_bundle(&p))
            .find(|certs| !certs.is_empty())
            .map(|certs| RootCerts::new_with_certs(&certs))
            .unwrap_or(RootCerts::WebPki)
    })
}

/// The certificates of a PEM bundle; empty when it is missing or unreadable.
fn load_bundle(path: &Path) -> Vec<Certificate<'static>> {
    let Ok(pem) = std::fs::read(path) else {
        return Vec::new();
    };
    parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(PemItem::Certificate(cert)) => Some(cert),
            _ => None,
        })
        .collect()
}
