//! TLS termination: certificates loaded with each config and picked per handshake by SNI.
//! Each certificate serves the host names in its subject alternative names (or, lacking
//! those, its common name) unless `snis` names them; a listener's first certificate is its
//! default. The handshake callback reads the live snapshot, so certificates added, removed
//! or rotated by a reload or the admin API serve the next handshake without a restart.

use async_trait::async_trait;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use pingora_core::listeners::TlsAccept;
use pingora_core::protocols::tls::TlsRef;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::config::model::CertificatePair;
use crate::state::LiveState;

/// A checked certificate chain, its private key and the host names it serves.
pub struct Certificate {
    chain: Vec<X509>,
    key: PKey<Private>,
    names: Vec<String>,
}

/// `cert`/`key` values holding PEM text rather than a file name.
pub fn is_inline_pem(value: &str) -> bool {
    value.trim_start().starts_with("-----BEGIN")
}

fn read(base_dir: &Path, value: &str) -> Result<Vec<u8>, String> {
    if is_inline_pem(value) {
        return Ok(value.as_bytes().to_vec());
    }
    if value == crate::admin::resources::REDACTED {
        return Err(format!(
            "`{value}` stands for a key the gateway does not have under this id: send the PEM key"
        ));
    }
    let p = if Path::new(value).is_absolute() {
        Path::new(value).to_path_buf()
    } else {
        base_dir.join(value)
    };
    std::fs::read(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))
}

/// How a `cert`/`key` value is named in errors: the file, or "the inline PEM".
fn shown(value: &str) -> &str {
    if is_inline_pem(value) {
        "the inline PEM"
    } else {
        value
    }
}

fn names_of(cert: &X509) -> Vec<String> {
    let mut names: Vec<String> = cert
        .subject_alt_names()
        .map(|sans| {
            sans.iter()
                .filter_map(|n| n.dnsname().map(|d| d.to_ascii_lowercase()))
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        names = cert
            .subject_name()
            .entries_by_nid(openssl::nid::Nid::COMMONNAME)
            .filter_map(|e| e.data().to_string().ok().map(|s| s.to_ascii_lowercase()))
            .collect();
    }
    names
}

impl Certificate {
    /// Reads and checks a pair: both parse, and the key is the certificate's. `snis`, when
    /// not empty, replaces the names taken from the certificate.
    pub fn load(pair: &CertificatePair, snis: &[String], base_dir: &Path) -> Result<Self, String> {
        let chain = X509::stack_from_pem(&read(base_dir, &pair.cert)?)
            .map_err(|e| format!("{} is not a PEM certificate: {e}", shown(&pair.cert)))?;
        let key = PKey::private_key_from_pem(&read(base_dir, &pair.key)?)
            .map_err(|e| format!("{} is not a PEM private key: {e}", shown(&pair.key)))?;
        let Some(leaf) = chain.first() else {
            return Err(format!("{} holds no certificate", shown(&pair.cert)));
        };
        let matches = leaf
            .public_key()
            .map(|pk| pk.public_eq(&key))
            .unwrap_or(false);
        if !matches {
            return Err(format!(
                "{} is not the key of {}",
                shown(&pair.key),
                shown(&pair.cert)
            ));
        }
        let names = if snis.is_empty() {
            names_of(leaf)
        } else {
            snis.iter().map(|n| n.to_ascii_lowercase()).collect()
        };
        Ok(Certificate { chain, key, names })
    }
}

/// The certificates of one https listener, indexed by host name.
pub struct CertificateStore {
    certs: Vec<Arc<Certificate>>,
    exact: HashMap<String, usize>,
    /// `.example.com` → certificate, for `*.example.com` names.
    wildcard: HashMap<String, usize>,
}

impl CertificateStore {
    /// A store serving `certs`; on a name served by several, the earlier wins, and the first
    /// is the default for unknown names. `None` when `certs` is empty.
    pub fn new(certs: Vec<Arc<Certificate>>) -> Option<Self> {
        if certs.is_empty() {
            return None;
        }
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (i, cert) in certs.iter().enumerate() {
            for name in &cert.names {
                match name.strip_prefix('*') {
                    Some(suffix) => wildcard.entry(suffix.to_string()).or_insert(i),
                    None => exact.entry(name.clone()).or_insert(i),
                };
            }
        }
        Some(CertificateStore {
            certs,
            exact,
            wildcard,
        })
    }

    fn pick(&self, server_name: Option<&str>) -> &Certificate {
        let idx = server_name
            .map(|n| n.to_ascii_lowercase())
            .and_then(|n| {
                self.exact.get(&n).copied().or_else(|| {
                    n.find('.')
                        .and_then(|dot| self.wildcard.get(&n[dot..]).copied())
                })
            })
            .unwrap_or(0);
        &self.certs[idx]
    }

    fn present(&self, ssl: &mut TlsRef) {
        use pingora_core::tls::ext;
        let name = ssl
            .servername(openssl::ssl::NameType::HOST_NAME)
            .map(str::to_string);
        let cert = self.pick(name.as_deref());
        let Some(leaf) = cert.chain.first() else {
            return;
        };
        if let Err(e) = ext::ssl_use_certificate(ssl, leaf) {
            log::error!("TLS: cannot use certificate: {e}");
            return;
        }
        if let Err(e) = ext::ssl_use_private_key(ssl, &cert.key) {
            log::error!("TLS: cannot use private key: {e}");
            return;
        }
        for extra in cert.chain.iter().skip(1) {
            if let Err(e) = ext::ssl_add_chain_cert(ssl, extra) {
                log::error!("TLS: cannot add chain certificate: {e}");
            }
        }
    }
}

/// The handshake callback of one https listener: serves the certificates the live snapshot
/// holds for the listener's address. A reload that dropped the listener (it stays bound
/// until a binary upgrade) leaves it the store it started with.
pub struct LiveCertificates {
    state: LiveState,
    address: String,
    started_with: Arc<CertificateStore>,
}

impl LiveCertificates {
    /// The callback of the listener bound to `address`; the live snapshot must hold its store.
    pub fn new(state: LiveState, address: &str) -> Option<Self> {
        let started_with = state.load().certificates.get(address).cloned()?;
        Some(LiveCertificates {
            state,
            address: address.to_string(),
            started_with,
        })
    }
}

#[async_trait]
impl TlsAccept for LiveCertificates {
    async fn certificate_callback(&self, ssl: &mut TlsRef) {
        let snapshot = self.state.load();
        snapshot
            .certificates
            .get(&self.address)
            .unwrap_or(&self.started_with)
            .present(ssl);
    }
}
