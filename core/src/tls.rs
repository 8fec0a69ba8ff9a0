//! The serving certificate, read from files and re-read when they change on disk, so a rotated
//! certificate (cert-manager, a Secret volume update, `certs/`) is served without a restart.
//! A broken pair on disk is logged and the previous certificate kept.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path}: not a PEM private key: {source}")]
    BadKey {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{path}: bad PEM certificate: {source}")]
    BadCertificate {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("the key in {key} does not fit the certificate in {cert}: {source}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
}

/// A certificate resolver that serves the latest valid pair found at two paths.
#[derive(Debug)]
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    state: RwLock<Loaded>,
    counts: Counts,
}

/// How [`ReloadingCert::reload`] has fared so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReloadCounts {
    /// Files read and compared (each call of `reload`).
    pub checks: u64,
    /// A changed, valid pair swapped in.
    pub loaded: u64,
    /// A pair that could not be read or was invalid; the previous one kept.
    pub failed: u64,
}

#[derive(Debug, Default)]
struct Counts {
    checks: AtomicU64,
    loaded: AtomicU64,
    failed: AtomicU64,
}

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    /// The file contents the key was built from, to notice changes.
    raw: (Vec<u8>, Vec<u8>),
}

impl ReloadingCert {
    /// Loads the pair; fails (before anything listens) when it is missing or invalid.
    pub fn load(
        cert_path: &Path,
        key_path: &Path,
        provider: Arc<CryptoProvider>,
    ) -> Result<Arc<Self>, TlsError> {
        let raw = read_pair(cert_path, key_path)?;
        let key = build(cert_path, key_path, &raw, &provider)?;
        Ok(Arc::new(Self {
            cert_path: cert_path.into(),
            key_path: key_path.into(),
            provider,
            state: RwLock::new(Loaded { key, raw }),
            counts: Counts::default(),
        }))
    }

    /// Re-reads the files; swaps in the new pair when they changed and are valid.
    /// Returns `Ok(true)` when a new certificate was loaded.
    pub fn reload(&self) -> Result<bool, TlsError> {
        self.counts.checks.fetch_add(1, Ordering::Relaxed);
        let result = self.try_reload();
        match result {
            Ok(true) => self.counts.loaded.fetch_add(1, Ordering::Relaxed),
            Ok(false) => 0,
            Err(_) => self.counts.failed.fetch_add(1, Ordering::Relaxed),
        };
        result
    }

    fn try_reload(&self) -> Result<bool, TlsError> {
        let raw = read_pair(&self.cert_path, &self.key_path)?;
        if self.state.read().expect("lock").raw == raw {
            return Ok(false);
        }
        let key = build(&self.cert_path, &self.key_path, &raw, &self.provider)?;
        *self.state.write().expect("lock") = Loaded { key, raw };
        Ok(true)
    }

    /// How reloading has fared so far.
    pub fn counts(&self) -> ReloadCounts {
        ReloadCounts {
            checks: self.counts.checks.load(Ordering::Relaxed),
            loaded: self.counts.loaded.load(Ordering::Relaxed),
            failed: self.counts.failed.load(Ordering::Relaxed),
        }
    }

    /// Re-reads the files every `interval` until the task is dropped.
    pub fn spawn_watcher(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match this.reload() {
                    Ok(true) => {
                        tracing::info!(cert = %this.cert_path.display(), "serving certificate reloaded")
                    }
                    Ok(false) => {}
                    Err(error) => {
                        tracing::warn!(%error, "serving certificate not reloaded; keeping the previous one")
                    }
                }
            }
        })
    }

    /// A rustls server configuration that resolves through this certificate.
    pub fn server_config(self: &Arc<Self>) -> rustls::ServerConfig {
        let mut cfg = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .expect("the provider supports the default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        cfg
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.state.read().expect("lock").key.clone())
    }
}

fn read_pair(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| TlsError::Read {
            path: p.into(),
            source,
        })
    };
    Ok((read(cert)?, read(key)?))
}

fn build(
    cert_path: &Path,
    key_path: &Path,
    raw: &(Vec<u8>, Vec<u8>),
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(&raw.0)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::BadCertificate {
            path: cert_path.into(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.into(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(&raw.1).map_err(|source| TlsError::BadKey {
        path: key_path.into(),
        source,
    })?;
    let certified =
        CertifiedKey::from_der(chain, key, provider).map_err(|source| TlsError::Mismatch {
            cert: cert_path.into(),
            key: key_path.into(),
            source,
        })?;
    Ok(Arc::new(certified))
}
