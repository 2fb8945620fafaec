//! The admin API's resources as edits of the config document: each collection (`routes`,
//! `services`, `upstreams`, `consumers`, `certificates`) is an array of objects with an `id`, edited as JSON
//! and turned back into a typed [`Config`] with the same key-path errors as the file.

use crate::config::model::Config;
use crate::config::ConfigError;
use crate::tls::is_inline_pem;
use serde_json::Value;

/// The collections the admin API serves, as named in the config file.
pub const COLLECTIONS: [&str; 5] = [
    "routes",
    "services",
    "upstreams",
    "consumers",
    "certificates",
];

/// What an edit did.
#[derive(Debug, PartialEq, Eq)]
pub enum Edit {
    /// A new object was added.
    Created,
    /// An existing object was replaced or removed.
    Changed,
}

/// Why an edit is refused.
#[derive(Debug)]
pub enum EditError {
    /// 404: no such object.
    NotFound(String),
    /// 409: the object exists already.
    Conflict(String),
    /// 400: the request body or the resulting config is not valid.
    Invalid(String),
}

/// Written in place of secrets (the admin API key, inline private keys) in documents shown
/// to a client; a document sent back with it keeps the secret that is live.
pub const REDACTED: &str = "<redacted>";

/// Hides the admin API key and inline PEM private keys in a config document shown to a
/// client. Key file names are not secret and stay.
pub fn redact(doc: &mut Value) {
    if let Some(key) = doc.pointer_mut("/admin/api_key") {
        *key = Value::String(REDACTED.to_string());
    }
    let hide_key = |cert: &mut Value| {
        if let Some(key) = cert.get_mut("key") {
            if key.as_str().is_some_and(is_inline_pem) {
                *key = Value::String(REDACTED.to_string());
            }
        }
    };
    if let Some(certs) = doc.get_mut("certificates").and_then(Value::as_array_mut) {
        certs.iter_mut().for_each(hide_key);
    }
    if let Some(listeners) = doc.get_mut("listeners").and_then(Value::as_array_mut) {
        for l in listeners {
            if let Some(pairs) = l
                .pointer_mut("/tls/certificates")
                .and_then(Value::as_array_mut)
            {
                pairs.iter_mut().for_each(hide_key);
            }
        }
    }
}

/// Puts the live secrets back where `config` (sent by a client) holds [`REDACTED`]: the
/// admin API key, and private keys of certificates with the same id (top level) or the same
/// certificate on the same listener.
pub fn restore_redacted(config: &mut Config, live: &Config) {
    if let (Some(new), Some(old)) = (config.admin.as_mut(), live.admin.as_ref()) {
        if new.api_key == REDACTED {
            new.api_key = old.api_key.clone();
        }
    }
    for cert in config.certificates.iter_mut().filter(|c| c.key == REDACTED) {
        if let Some(old) = live.certificates.iter().find(|o| o.id == cert.id) {
            cert.key = old.key.clone();
        }
    }
    for listener in &mut config.listeners {
        let old = live
            .listeners
            .iter()
            .find(|o| o.name == listener.name)
            .and_then(|o| o.tls.as_ref());
        let (Some(tls), Some(old)) = (listener.tls.as_mut(), old) else {
            continue;
        };
        for pair in tls.certificates.iter_mut().filter(|p| p.key == REDACTED) {
            if let Some(o) = old.certificates.iter().find(|o| o.cert == pair.cert) {
                pair.key = o.key.clone();
            }
        }
    }
}

/// The config as a JSON document.
pub fn to_document(config: &Config) -> Result<Value, EditError> {
    serde_json::to_value(config).map_err(|e| EditError::Invalid(e.to_string()))
}

/// A JSON document back to a typed config, with the key path of the first error.
pub fn from_document(doc: Value) -> Result<Config, ConfigError> {
    serde_path_to_error::deserialize(doc).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        ConfigError::at(path, e.into_inner().to_string())
    })
}

fn array<'a>(doc: &'a mut Value, collection: &str) -> Result<&'a mut Vec<Value>, EditError> {
    let obj = doc
        .as_object_mut()
        .ok_or_else(|| EditError::Invalid("the config is not an object".into()))?;
    let entry = obj
        .entry(collection.to_string())
        .or_insert_with(|| Value::Array(Vec::new()));
    entry
        .as_array_mut()
        .ok_or_else(|| EditError::Invalid(format!("`{collection}` is not a list")))
}

fn id_of(v: &Value) -> Option<&str> {
    v.get("id").and_then(Value::as_str)
}

/// The object `id` of `collection`.
pub fn get(doc: &mut Value, collection: &str, id: &str) -> Result<Value, EditError> {
    array(doc, collection)?
        .iter()
        .find(|v| id_of(v) == Some(id))
        .cloned()
        .ok_or_else(|| EditError::NotFound(format!("no {} with id \"{id}\"", singular(collection))))
}

/// Creates or replaces the object `id`. The body's `id`, when given, must be `id`.
pub fn put(
    doc: &mut Value,
    collection: &str,
    id: &str,
    mut body: Value,
) -> Result<Edit, EditError> {
    let obj = body
        .as_object_mut()
        .ok_or_else(|| EditError::Invalid("the request body must be an object".into()))?;
    match obj.get("id") {
        Some(Value::String(body_id)) if body_id != id => {
            return Err(EditError::Invalid(format!(
                "id: the body's id \"{body_id}\" differs from the id in the URL \"{id}\""
            )))
        }
        Some(v) if !v.is_string() => {
            return Err(EditError::Invalid(format!(
                "id: invalid type: expected a string, found {v}"
            )))
        }
        _ => {
            obj.insert("id".into(), Value::String(id.to_string()));
        }
    }
    let items = array(doc, collection)?;
    match items.iter_mut().find(|v| id_of(v) == Some(id)) {
        Some(slot) => {
            *slot = body;
            Ok(Edit::Changed)
        }
        None => {
            items.push(body);
            Ok(Edit::Created)
        }
    }
}

/// Creates an object whose id is in the body.
pub fn post(doc: &mut Value, collection: &str, body: Value) -> Result<String, EditError> {
    let id = id_of(&body)
        .ok_or_else(|| EditError::Invalid("id: a new object needs an `id`".into()))?
        .to_string();
    if array(doc, collection)?
        .iter()
        .any(|v| id_of(v) == Some(&id))
    {
        return Err(EditError::Conflict(format!(
            "a {} with id \"{id}\" exists already (use PUT to replace it)",
            singular(collection)
        )));
    }
    array(doc, collection)?.push(body);
    Ok(id)
}

/// Removes the object `id`.
pub fn delete(doc: &mut Value, collection: &str, id: &str) -> Result<Edit, EditError> {
    let items = array(doc, collection)?;
    let before = items.len();
    items.retain(|v| id_of(v) != Some(id));
    if items.len() == before {
        return Err(EditError::NotFound(format!(
            "no {} with id \"{id}\"",
            singular(collection)
        )));
    }
    Ok(Edit::Changed)
}

fn singular(collection: &str) -> &str {
    collection.strip_suffix('s').unwrap_or(collection)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn crud_on_a_collection() {
        let mut doc = json!({"routes": [{"id": "a", "paths": ["/a"]}]});
        assert_eq!(
            put(&mut doc, "routes", "b", json!({"paths": ["/b"]})).unwrap(),
            Edit::Created
        );
        assert_eq!(
            put(&mut doc, "routes", "a", json!({"paths": ["/a2"]})).unwrap(),
            Edit::Changed
        );
        assert_eq!(get(&mut doc, "routes", "a").unwrap()["paths"][0], "/a2");
        assert!(matches!(
            post(&mut doc, "routes", json!({"id": "a"})),
            Err(EditError::Conflict(_))
        ));
        assert!(matches!(
            put(&mut doc, "routes", "a", json!({"id": "x"})),
            Err(EditError::Invalid(_))
        ));
        delete(&mut doc, "routes", "a").unwrap();
        assert!(matches!(
            get(&mut doc, "routes", "a"),
            Err(EditError::NotFound(_))
        ));
        assert!(matches!(
            delete(&mut doc, "upstreams", "z"),
            Err(EditError::NotFound(_))
        ));
    }
}
