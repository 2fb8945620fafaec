//! What `jwt-auth` and `openid-connect` share once a token's key is chosen: decoding it with
//! the key's validation, and the category a refusal falls in.

use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::{Map, Value};

/// Why a token was refused; the client learns only this category.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    Invalid,
    Expired,
    NotYetValid,
    Claims,
}

/// Checks `token`'s signature with `key` and its registered claims (`exp`, `nbf`, `iss`,
/// `aud`, `sub`, required claims) with `validation`, and returns its claims. A failure comes
/// with its category and jsonwebtoken's error, for the log.
pub(super) fn decode_claims(
    token: &str,
    key: &DecodingKey,
    validation: &Validation,
) -> Result<Map<String, Value>, (Refusal, Error)> {
    match jsonwebtoken::decode::<Map<String, Value>>(token, key, validation) {
        Ok(data) => Ok(data.claims),
        Err(e) => {
            let refusal = match e.kind() {
                ErrorKind::ExpiredSignature => Refusal::Expired,
                ErrorKind::ImmatureSignature => Refusal::NotYetValid,
                ErrorKind::InvalidIssuer
                | ErrorKind::InvalidAudience
                | ErrorKind::InvalidSubject
                | ErrorKind::MissingRequiredClaim(_)
                | ErrorKind::InvalidClaimFormat(_) => Refusal::Claims,
                _ => Refusal::Invalid,
            };
            Err((refusal, e))
        }
    }
}
