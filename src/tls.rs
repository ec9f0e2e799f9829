//! HTTPS and WSS: a rustls server configuration (the `ring` provider) built from PEM files.
//!
//! The certificate is re-read when its files change on disk (checked at most every
//! [`RELOAD_CHECK`] during handshakes), so a renewal by certbot or acme.sh takes effect
//! without a restart. A renewal that fails to load keeps the previous certificate, logs why,
//! and is tried again at the next check.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ServerConfig};

/// How often a handshake may re-read the certificate files to look for a renewal.
pub const RELOAD_CHECK: Duration = Duration::from_secs(60);

/// How long a client may take to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the acceptor for the certificate chain and private key in these PEM files.
pub fn acceptor(cert: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    acceptor_reloading_every(cert, key, RELOAD_CHECK)
}

/// [`acceptor`], looking for changed files at most once per `check`.
pub fn acceptor_reloading_every(
    cert: &Path,
    key: &Path,
    check: Duration,
) -> anyhow::Result<TlsAcceptor> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let resolver = ReloadingCert::load(cert, key, provider.clone(), check)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    // HTTP/1.1 only: it carries the WebSocket upgrade.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn load_key(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> anyhow::Result<Arc<CertifiedKey>> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("cannot read certificates from {}: {e}", cert.display()))?;
    if chain.is_empty() {
        anyhow::bail!("no certificate found in {}", cert.display());
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("cannot read a private key from {}: {e}", key.display()))?;
    let certified = CertifiedKey::from_der(chain, private, provider).map_err(|e| {
        anyhow::anyhow!(
            "the key in {} does not fit the certificate in {}: {e}",
            key.display(),
            cert.display()
        )
    })?;
    Ok(Arc::new(certified))
}

/// What the files hold now: a change of content, however quick, means a renewal.
fn contents(cert: &Path, key: &Path) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    (std::fs::read(cert).ok(), std::fs::read(key).ok())
}

/// Serves one certificate and reloads it when its files change.
struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    check: Duration,
    current: Mutex<Current>,
}

struct Current {
    key: Arc<CertifiedKey>,
    files: (Option<Vec<u8>>, Option<Vec<u8>>),
    checked: Instant,
}

impl ReloadingCert {
    fn load(
        cert: &Path,
        key: &Path,
        provider: Arc<CryptoProvider>,
        check: Duration,
    ) -> anyhow::Result<Self> {
        let files = contents(cert, key);
        let certified = load_key(cert, key, &provider)?;
        Ok(ReloadingCert {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            provider,
            check,
            current: Mutex::new(Current {
                key: certified,
                files,
                checked: Instant::now(),
            }),
        })
    }
}

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.checked.elapsed() >= self.check {
            current.checked = Instant::now();
            let files = contents(&self.cert, &self.key);
            if files != current.files {
                match load_key(&self.cert, &self.key, &self.provider) {
                    Ok(key) => {
                        tracing::info!(cert = %self.cert.display(), "reloaded TLS certificate");
                        current.key = key;
                        current.files = files;
                    }
                    // Often a renewal caught half-written: try again at the next check.
                    Err(e) => tracing::warn!(error = %e, "keeping the previous TLS certificate"),
                }
            }
        }
        Some(current.key.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn write_pair(dir: &Path) -> CertificateDer<'static> {
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(dir.join("cert.pem"), generated.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), generated.signing_key.serialize_pem()).unwrap();
        generated.cert.der().clone()
    }

    /// Handshakes with a client that trusts only `trusted`; true if it succeeded.
    async fn handshake(acceptor: &TlsAcceptor, trusted: &CertificateDer<'static>) -> bool {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = acceptor.clone();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            if let Ok(mut tls) = acceptor.accept(tcp).await {
                let _ = tls.write_all(b"hi").await;
                let _ = tls.shutdown().await;
            }
        });
        let mut roots = rustls::RootCertStore::empty();
        roots.add(trusted.clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let ok = match connector.connect(name, tcp).await {
            Ok(mut tls) => {
                let mut buf = Vec::new();
                tls.read_to_end(&mut buf).await.is_ok() && buf == b"hi"
            }
            Err(_) => false,
        };
        server.await.unwrap();
        ok
    }

    #[tokio::test]
    async fn a_renewed_certificate_is_served_without_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let first = write_pair(dir.path());
        let acceptor = acceptor_reloading_every(&cert, &key, Duration::ZERO).unwrap();
        assert!(handshake(&acceptor, &first).await);

        let second = write_pair(dir.path());
        assert!(
            handshake(&acceptor, &second).await,
            "the new certificate is served"
        );
        assert!(!handshake(&acceptor, &first).await, "the old one is not");

        // A renewal caught half-written keeps the working certificate.
        std::fs::write(&key, "not a key").unwrap();
        assert!(handshake(&acceptor, &second).await);
    }
}
