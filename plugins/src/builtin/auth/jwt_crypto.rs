//! Signature checks for `jwt-auth` and `openid-connect` on OpenSSL, installed as
//! jsonwebtoken's process-wide crypto provider.
//!
//! jsonwebtoken builds a verifier from the raw key bytes for every token it checks. With its
//! pure-Rust backend that means parsing the RSA key and running a slow big-number
//! exponentiation per request (about 0.2 ms for RS256 on a server core). Here the parsed
//! OpenSSL key is kept per key (a small map keyed by the key's bytes), and the check itself
//! runs in OpenSSL, which the gateway links for TLS anyway. Signing and HMAC stay with the
//! pure-Rust backend: signing is not on the request path, and HMAC is already fast there.

use jsonwebtoken::crypto::{rust_crypto, CryptoProvider, JwkUtils, JwtVerifier};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::signature::{self, Verifier};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind};
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey, EcPoint};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Public};
use openssl::rsa::{Padding, Rsa};
use std::collections::HashMap;
use std::sync::{Arc, Once, RwLock};

/// Parsed keys kept at most; past this the map starts over (keys rotate rarely, and a JWKS
/// holds a handful).
const MAX_CACHED_KEYS: usize = 256;

static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: rust_crypto::DEFAULT_PROVIDER.signer_factory,
    verifier_factory: new_verifier,
    jwk_utils: JwkUtils {
        extract_rsa_public_key_components: rust_crypto::DEFAULT_PROVIDER
            .jwk_utils
            .extract_rsa_public_key_components,
        extract_ec_public_key_coordinates: rust_crypto::DEFAULT_PROVIDER
            .jwk_utils
            .extract_ec_public_key_coordinates,
        compute_digest: rust_crypto::DEFAULT_PROVIDER.jwk_utils.compute_digest,
    },
};

/// Makes OpenSSL check JWT signatures in this process. Called when the JWT plugins are
/// registered; a process that installed its own provider before keeps it.
pub fn install() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        if PROVIDER.install_default().is_err() {
            log::debug!("a JWT crypto provider was installed already; keeping it");
        }
    });
}

fn new_verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    let digest = match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            return (rust_crypto::DEFAULT_PROVIDER.verifier_factory)(alg, key)
        }
        Algorithm::RS256 | Algorithm::PS256 | Algorithm::ES256 => Some(MessageDigest::sha256()),
        Algorithm::RS384 | Algorithm::PS384 | Algorithm::ES384 => Some(MessageDigest::sha384()),
        Algorithm::RS512 | Algorithm::PS512 => Some(MessageDigest::sha512()),
        Algorithm::EdDSA => None,
    };
    Ok(Box::new(OpensslVerifier {
        alg: *alg,
        digest,
        key: cached_key(alg, key)?,
    }))
}

/// The OpenSSL form of `key`, parsed once per distinct key.
fn cached_key(alg: &Algorithm, key: &DecodingKey) -> Result<Arc<PKey<Public>>, Error> {
    let id = cache_id(alg, key);
    if let Some(found) = KEYS
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(&id)
        .cloned()
    {
        return Ok(found);
    }
    let parsed = Arc::new(parse_key(alg, key)?);
    let mut keys = KEYS.write().unwrap_or_else(|p| p.into_inner());
    if keys.len() >= MAX_CACHED_KEYS {
        keys.clear();
    }
    keys.insert(id, parsed.clone());
    Ok(parsed)
}

/// Parsed keys by [`cache_id`].
type KeyCache = RwLock<HashMap<Vec<u8>, Arc<PKey<Public>>>>;

static KEYS: std::sync::LazyLock<KeyCache> = std::sync::LazyLock::new(Default::default);

/// The algorithm's curve/family tag and the key's bytes: the same bytes read as another
/// kind of key are another entry.
fn cache_id(alg: &Algorithm, key: &DecodingKey) -> Vec<u8> {
    let tag = match alg {
        Algorithm::ES256 => b'p',
        Algorithm::ES384 => b'q',
        Algorithm::EdDSA => b'e',
        _ => b'r',
    };
    let mut id = vec![tag];
    match key.kind() {
        DecodingKeyKind::SecretOrDer(bytes) => {
            id.push(0);
            id.extend_from_slice(bytes);
        }
        DecodingKeyKind::RsaModulusExponent { n, e } => {
            id.push(1);
            id.extend_from_slice(&(n.len() as u64).to_be_bytes());
            id.extend_from_slice(n);
            id.extend_from_slice(e);
        }
    }
    id
}

fn invalid(kind: ErrorKind) -> impl FnOnce(openssl::error::ErrorStack) -> Error {
    move |_| kind.into()
}

fn parse_key(alg: &Algorithm, key: &DecodingKey) -> Result<PKey<Public>, Error> {
    let bytes = match key.kind() {
        DecodingKeyKind::RsaModulusExponent { n, e } => {
            let rsa = BigNum::from_slice(n)
                .and_then(|n| Rsa::from_public_components(n, BigNum::from_slice(e)?))
                .map_err(invalid(ErrorKind::InvalidRsaKey(
                    "bad modulus or exponent".into(),
                )))?;
            return PKey::from_rsa(rsa)
                .map_err(invalid(ErrorKind::InvalidRsaKey("bad RSA key".into())));
        }
        DecodingKeyKind::SecretOrDer(bytes) => bytes,
    };
    match alg {
        Algorithm::ES256 | Algorithm::ES384 => {
            let nid = if *alg == Algorithm::ES256 {
                Nid::X9_62_PRIME256V1
            } else {
                Nid::SECP384R1
            };
            let ec = EcGroup::from_curve_name(nid).and_then(|group| {
                let mut ctx = BigNumContext::new()?;
                let point = EcPoint::from_bytes(&group, bytes, &mut ctx)?;
                EcKey::from_public_key(&group, &point)
            });
            let ec = ec.map_err(invalid(ErrorKind::InvalidEcdsaKey))?;
            PKey::from_ec_key(ec).map_err(invalid(ErrorKind::InvalidEcdsaKey))
        }
        Algorithm::EdDSA => PKey::public_key_from_raw_bytes(bytes, Id::ED25519)
            .map_err(invalid(ErrorKind::InvalidEddsaKey)),
        _ => {
            let rsa = Rsa::public_key_from_der_pkcs1(bytes).map_err(invalid(
                ErrorKind::InvalidRsaKey("not a PKCS#1 RSA key".into()),
            ))?;
            PKey::from_rsa(rsa).map_err(invalid(ErrorKind::InvalidRsaKey("bad RSA key".into())))
        }
    }
}

struct OpensslVerifier {
    alg: Algorithm,
    digest: Option<MessageDigest>,
    key: Arc<PKey<Public>>,
}

impl OpensslVerifier {
    fn check(&self, msg: &[u8], sig: &[u8]) -> Result<bool, openssl::error::ErrorStack> {
        let Some(digest) = self.digest else {
            let mut v = openssl::sign::Verifier::new_without_digest(&self.key)?;
            return v.verify_oneshot(sig, msg);
        };
        let mut v = openssl::sign::Verifier::new(digest, &self.key)?;
        match self.alg {
            Algorithm::PS256 | Algorithm::PS384 | Algorithm::PS512 => {
                v.set_rsa_padding(Padding::PKCS1_PSS)?;
                v.set_rsa_pss_saltlen(openssl::sign::RsaPssSaltlen::DIGEST_LENGTH)?;
                v.set_rsa_mgf1_md(digest)?;
            }
            Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 => {
                v.set_rsa_padding(Padding::PKCS1)?;
            }
            _ => {}
        }
        v.update(msg)?;
        match self.alg {
            // JWS carries ECDSA signatures as the raw r ‖ s; OpenSSL wants DER.
            Algorithm::ES256 | Algorithm::ES384 => {
                if sig.is_empty() || sig.len() % 2 != 0 {
                    return Ok(false);
                }
                let (r, s) = sig.split_at(sig.len() / 2);
                let der = EcdsaSig::from_private_components(
                    BigNum::from_slice(r)?,
                    BigNum::from_slice(s)?,
                )?
                .to_der()?;
                v.verify(&der)
            }
            _ => v.verify(sig),
        }
    }
}

impl Verifier<Vec<u8>> for OpensslVerifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        match self.check(msg, signature) {
            Ok(true) => Ok(()),
            _ => Err(signature::Error::new()),
        }
    }
}

impl JwtVerifier for OpensslVerifier {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, Validation};

    /// Tokens signed by the pure-Rust backend verify here, and a tampered one does not, for
    /// every asymmetric algorithm family.
    #[test]
    fn verifies_what_the_reference_backend_signs() {
        install();
        let rsa = Rsa::generate(2048).unwrap();
        let rsa_private = rsa.private_key_to_pem().unwrap();
        let rsa_public = rsa.public_key_to_pem().unwrap();
        let ec =
            EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap();
        let ec_private = PKey::from_ec_key(ec.clone())
            .unwrap()
            .private_key_to_pem_pkcs8()
            .unwrap();
        let ec_public =
            PKey::from_ec_key(EcKey::from_public_key(ec.group(), ec.public_key()).unwrap())
                .unwrap()
                .public_key_to_pem()
                .unwrap();
        let ed = PKey::generate_ed25519().unwrap();
        let ed_private = ed.private_key_to_pem_pkcs8().unwrap();
        let ed_public = ed.public_key_to_pem().unwrap();
        let cases = [
            (
                Algorithm::RS256,
                EncodingKey::from_rsa_pem(&rsa_private).unwrap(),
                DecodingKey::from_rsa_pem(&rsa_public).unwrap(),
            ),
            (
                Algorithm::RS512,
                EncodingKey::from_rsa_pem(&rsa_private).unwrap(),
                DecodingKey::from_rsa_pem(&rsa_public).unwrap(),
            ),
            (
                Algorithm::PS256,
                EncodingKey::from_rsa_pem(&rsa_private).unwrap(),
                DecodingKey::from_rsa_pem(&rsa_public).unwrap(),
            ),
            (
                Algorithm::ES256,
                EncodingKey::from_ec_pem(&ec_private).unwrap(),
                DecodingKey::from_ec_pem(&ec_public).unwrap(),
            ),
            (
                Algorithm::EdDSA,
                EncodingKey::from_ed_pem(&ed_private).unwrap(),
                DecodingKey::from_ed_pem(&ed_public).unwrap(),
            ),
        ];
        let claims = serde_json::json!({ "sub": "alice", "exp": 4_000_000_000u64 });
        for (alg, enc, dec) in cases {
            let token = jsonwebtoken::encode(&Header::new(alg), &claims, &enc).unwrap();
            let validation = Validation::new(alg);
            // This module's verifier itself (the process may hold another provider).
            let (message, sig) = token.rsplit_once('.').unwrap();
            let sig =
                base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sig)
                    .unwrap();
            let direct = new_verifier(&alg, &dec).unwrap();
            assert!(direct.verify(message.as_bytes(), &sig).is_ok(), "{alg:?}");
            let mut wrong = sig.clone();
            wrong[0] ^= 1;
            assert!(
                direct.verify(message.as_bytes(), &wrong).is_err(),
                "{alg:?}"
            );
            let ok = jsonwebtoken::decode::<serde_json::Value>(&token, &dec, &validation);
            assert_eq!(ok.unwrap().claims["sub"], "alice", "{alg:?}");
            // Flip one character of the signature.
            let mut bad = token.clone().into_bytes();
            let last = bad.len() - 2;
            bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
            let bad = String::from_utf8(bad).unwrap();
            assert!(
                jsonwebtoken::decode::<serde_json::Value>(&bad, &dec, &validation).is_err(),
                "{alg:?} accepted a tampered signature"
            );
        }
        // RSA keys given as JWK components (n, e), as JWKS documents do.
        let n = rsa.n().to_vec();
        let e = rsa.e().to_vec();
        let dec = DecodingKey::from_rsa_raw_components(&n, &e);
        let enc = EncodingKey::from_rsa_pem(&rsa_private).unwrap();
        let token = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &enc).unwrap();
        assert!(jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &dec,
            &Validation::new(Algorithm::RS256)
        )
        .is_ok());
    }
}
