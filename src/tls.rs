//! rustls configurations built from files: the public listener's certificate and the client
//! trust store for an `https://` upstream. Always the ring provider; no OpenSSL anywhere.
//!
//! The listener's certificate is read again on demand ([`Certificate::reload`]: on SIGHUP and
//! when its files change, `reload`), so a certificate renewed in place (cert-manager) is served
//! without a restart.
//!
//! Owns PEM loading and rustls set-up only; no HTTP logic.

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// The scheme a client uses: `https` on a TLS listener (or when a trusted proxy says so).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The public listener's certificate and key, as last read from their files.
pub struct Certificate {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("cert_file", &self.cert_file)
            .finish_non_exhaustive()
    }
}

impl rustls::server::ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

impl Certificate {
    /// Reads the files again and serves what they hold from the next handshake on; a pair that
    /// cannot be used (half written, a key for another certificate) is refused, and the one
    /// served so far kept. Whether the certificate changed.
    pub fn reload(&self) -> Result<bool, String> {
        let next = certified(&self.cert_file, &self.key_file)?;
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        if current.cert == next.cert {
            return Ok(false);
        }
        *current = Arc::new(next);
        Ok(true)
    }
}

/// A certificate chain and its key, read and checked to match.
fn certified(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, String> {
    let certs = CertificateDer::pem_file_iter(cert_file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("tls.cert_file {}: {e}", cert_file.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "tls.cert_file {}: no certificate found",
            cert_file.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| format!("tls.key_file {}: {e}", key_file.display()))?;
    CertifiedKey::from_der(certs, key, &provider())
        .map_err(|e| format!("tls: certificate and key do not match or are unusable: {e}"))
}

/// Server config for the public listener, offering HTTP/2 and HTTP/1.1 by ALPN, with the
/// certificate it serves (which [`Certificate::reload`] replaces).
pub fn server_config(
    cert_file: &Path,
    key_file: &Path,
) -> Result<(rustls::ServerConfig, Arc<Certificate>), String> {
    let certificate = Arc::new(Certificate {
        current: RwLock::new(Arc::new(certified(cert_file, key_file)?)),
        cert_file: cert_file.to_owned(),
        key_file: key_file.to_owned(),
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(certificate.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((config, certificate))
}

/// Client config trusting `ca_file` when given, else the system's roots.
pub fn client_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!("{}: no usable CA certificate", path.display()));
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A connector for `http://` and `https://` (HTTP/1.1 over rustls with `tls`), with TCP_NODELAY
/// and a connect timeout. Shared by the upstream, IdP and admin-API clients.
pub fn connector(
    tls: rustls::ClientConfig,
    connect_timeout: std::time::Duration,
) -> hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector> {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http)
}
