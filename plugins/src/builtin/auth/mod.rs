//! Authentication and authorization: consumers' credentials checked, the consumer put in the
//! request context.
//!
//! Each auth plugin looks for one kind of credential. On a route with several, they run by
//! priority (`hmac-auth` 2530, `basic-auth` 2520, `jwt-auth` 2510, `key-auth` 2500) and the
//! first that identifies a consumer wins: the later ones see [`crate::RequestContext::consumer`]
//! set and step aside. A plugin that finds no credential of its kind answers 401, unless it is
//! `optional: true`, in which case it leaves the decision to the plugins after it. A
//! credential that is present but wrong is always refused. `acl` (2400) runs after all of
//! them and checks the consumer they found.

pub mod acl;
pub mod basic_auth;
mod credentials;
pub mod hmac_auth;
mod jwks;
pub mod jwt_auth;
mod jwt_claims;
mod jwt_crypto;
pub mod key_auth;
pub mod openid_connect;
mod verified;

use crate::factory::PluginRegistry;

/// Registers this group's plugins.
pub fn register(registry: &mut PluginRegistry) {
    registry
        .register(acl::factory())
        .register(basic_auth::factory())
        .register(hmac_auth::factory())
        .register(jwt_auth::factory())
        .register(key_auth::factory())
        .register(openid_connect::factory());
}
