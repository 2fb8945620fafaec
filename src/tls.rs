//! TLS termination: certificates loaded at config load and picked per handshake by SNI.
//! Each certificate serves the host names in its subject alternative names (or, lacking
//! those, its common name); the first certificate is the default.

use async_trait::async_trait;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use pingora_core::listeners::TlsAccept;
use pingora_core::protocols::tls::TlsRef;
use std::collections::HashMap;
use std::path::Path;

use crate::config::model::CertificatePair;

struct Certified {
    chain: Vec<X509>,
    key: PKey<Private>,
}

/// The certificates of one https listener, indexed by host name.
pub struct CertificateStore {
    certs: Vec<Certified>,
    exact: HashMap<String, usize>,
    /// `.example.com` → certificate, for `*.example.com` names.
    wildcard: HashMap<String, usize>,
}

fn read(base_dir: &Path, file: &str) -> Result<Vec<u8>, String> {
    let p = if Path::new(file).is_absolute() {
        Path::new(file).to_path_buf()
    } else {
        base_dir.join(file)
    };
    std::fs::read(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))
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

impl CertificateStore {
    /// Loads and checks every pair. The error carries the index of the bad pair.
    pub fn load(pairs: &[CertificatePair], base_dir: &Path) -> Result<Self, (usize, String)> {
        if pairs.is_empty() {
            return Err((0, "at least one certificate is needed".into()));
        }
        let mut store = CertificateStore {
            certs: Vec::new(),
            exact: HashMap::new(),
            wildcard: HashMap::new(),
        };
        for (i, pair) in pairs.iter().enumerate() {
            let chain = X509::stack_from_pem(&read(base_dir, &pair.cert).map_err(|m| (i, m))?)
                .map_err(|e| (i, format!("{} is not a PEM certificate: {e}", pair.cert)))?;
            let key = PKey::private_key_from_pem(&read(base_dir, &pair.key).map_err(|m| (i, m))?)
                .map_err(|e| (i, format!("{} is not a PEM private key: {e}", pair.key)))?;
            let Some(leaf) = chain.first() else {
                return Err((i, format!("{} holds no certificate", pair.cert)));
            };
            let matches = leaf
                .public_key()
                .map(|pk| pk.public_eq(&key))
                .unwrap_or(false);
            if !matches {
                return Err((i, format!("{} is not the key of {}", pair.key, pair.cert)));
            }
            for name in names_of(leaf) {
                match name.strip_prefix('*') {
                    Some(suffix) => store.wildcard.entry(suffix.to_string()).or_insert(i),
                    None => store.exact.entry(name).or_insert(i),
                };
            }
            store.certs.push(Certified { chain, key });
        }
        Ok(store)
    }

    fn pick(&self, server_name: Option<&str>) -> &Certified {
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
}

#[async_trait]
impl TlsAccept for CertificateStore {
    async fn certificate_callback(&self, ssl: &mut TlsRef) {
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
