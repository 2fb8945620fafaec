//! Credentials recently proven valid, so that a returning client does not pay for a password
//! hash or a signature check on every request.
//!
//! Entries are keyed by an HMAC-SHA256 tag of the credential under a key drawn when the cache
//! is built (with the plugin instance, so a config reload starts empty): the map holds nothing
//! an attacker could replay or attack offline. Only successes are kept; a failure is checked
//! in full every time. The map is bounded: when it is full, expired entries are dropped, and
//! if none has expired the new entry is simply not kept.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// The tag a credential is kept under.
pub(super) type Tag = [u8; 32];

/// Recently verified credentials and what they proved (`V`), each until its own deadline.
pub(super) struct VerifiedCache<V> {
    key: [u8; 32],
    max: usize,
    entries: Mutex<HashMap<Tag, (V, Instant)>>,
}

impl<V: Clone> VerifiedCache<V> {
    /// An empty cache holding at most `max` entries.
    pub fn new(max: usize) -> Self {
        let mut key = [0u8; 32];
        key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        key[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        VerifiedCache {
            key,
            max,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The tag of a credential made of `parts` (each followed by a separator, so that
    /// `("ab", "c")` and `("a", "bc")` differ).
    pub fn tag(&self, parts: &[&[u8]]) -> Tag {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            return [0; 32];
        };
        for part in parts {
            mac.update(&(part.len() as u64).to_le_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// What `tag` proved, while its deadline has not passed.
    pub fn get(&self, tag: &Tag) -> Option<V> {
        let mut map = self.entries.lock().ok()?;
        match map.get(tag) {
            Some((v, until)) if *until > Instant::now() => Some(v.clone()),
            Some(_) => {
                map.remove(tag);
                None
            }
            None => None,
        }
    }

    /// Keeps `value` for `tag` until `until`.
    pub fn insert(&self, tag: Tag, value: V, until: Instant) {
        let Ok(mut map) = self.entries.lock() else {
            return;
        };
        let now = Instant::now();
        if until <= now {
            return;
        }
        if map.len() >= self.max && !map.contains_key(&tag) {
            map.retain(|_, (_, u)| *u > now);
        }
        if map.len() < self.max || map.contains_key(&tag) {
            map.insert(tag, (value, until));
        }
    }

    /// Forgets `tag`.
    pub fn remove(&self, tag: &Tag) {
        if let Ok(mut map) = self.entries.lock() {
            map.remove(tag);
        }
    }

    /// How many entries are held (expired ones included until they are dropped).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.lock().map_or(0, |m| m.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn keeps_successes_until_their_deadline() {
        let cache = VerifiedCache::new(8);
        let later = Instant::now() + Duration::from_secs(60);
        let tag = cache.tag(&[b"alice", b"secret"]);
        cache.insert(tag, 7, later);
        assert_eq!(cache.get(&tag), Some(7));
        assert_eq!(cache.get(&cache.tag(&[b"alice", b"other"])), None);
        cache.insert(cache.tag(&[b"bob"]), 1, Instant::now());
        assert_eq!(cache.get(&cache.tag(&[b"bob"])), None, "already expired");
        cache.remove(&tag);
        assert_eq!(cache.get(&tag), None);
    }

    #[test]
    fn tags_separate_parts_and_instances() {
        let cache = VerifiedCache::<()>::new(1);
        assert_ne!(cache.tag(&[b"ab", b"c"]), cache.tag(&[b"a", b"bc"]));
        let other = VerifiedCache::<()>::new(1);
        assert_ne!(cache.tag(&[b"x"]), other.tag(&[b"x"]));
    }

    #[test]
    fn bounded_and_expired_entries_make_room() {
        let cache = VerifiedCache::new(2);
        let later = Instant::now() + Duration::from_secs(60);
        let soon = Instant::now() + Duration::from_millis(20);
        cache.insert(cache.tag(&[b"1"]), 1, later);
        cache.insert(cache.tag(&[b"2"]), 2, soon);
        cache.insert(cache.tag(&[b"3"]), 3, later);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&cache.tag(&[b"3"])), None, "full: not kept");
        std::thread::sleep(Duration::from_millis(30));
        cache.insert(cache.tag(&[b"3"]), 3, later);
        assert_eq!(
            cache.get(&cache.tag(&[b"3"])),
            Some(3),
            "the expired one made room"
        );
        assert_eq!(cache.get(&cache.tag(&[b"1"])), Some(1));
    }
}
