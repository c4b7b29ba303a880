//! Encryption of secure environment variables at rest: AES-256-GCM with a
//! random 96-bit nonce per value, stored as `v1.<key id>.<nonce>.<ciphertext>`
//! (base64). The key comes from the coordinator's configuration
//! (`encryption_key`, 32 bytes in base64) and is never stored beside the data.
//!
//! Rotation: set the new key as `encryption_key` and list the old one in
//! `previous_encryption_keys`; at start the coordinator re-encrypts every value
//! under the new key (the key id says which key sealed a value), after which
//! the old key can be dropped.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CryptoError {
    #[error("no encryption_key is configured; secure variables are unavailable")]
    NoKey,
    #[error(
        "encryption key {0}: must be 32 bytes, base64-encoded (e.g. `openssl rand -base64 32`)"
    )]
    BadKey(&'static str),
    #[error("stored value was sealed with key {0}, which is not configured")]
    UnknownKey(String),
    #[error("stored value is corrupt or was tampered with")]
    Corrupt,
}

struct Key {
    id: String,
    cipher: Aes256Gcm,
}

fn parse_key(b64: &str, which: &'static str) -> Result<Key, CryptoError> {
    let bytes = B64
        .decode(b64.trim())
        .map_err(|_| CryptoError::BadKey(which))?;
    if bytes.len() != 32 {
        return Err(CryptoError::BadKey(which));
    }
    let id = hex::encode(&Sha256::digest(&bytes)[..4]);
    let cipher = Aes256Gcm::new_from_slice(&bytes).map_err(|_| CryptoError::BadKey(which))?;
    Ok(Key { id, cipher })
}

pub struct Crypto {
    current: Option<Key>,
    previous: Vec<Key>,
}

impl Crypto {
    /// From the configured keys; an empty `current` means no secure variables.
    pub fn new(current: &str, previous: &[String]) -> Result<Crypto, CryptoError> {
        let current = if current.trim().is_empty() {
            None
        } else {
            Some(parse_key(current, "encryption_key")?)
        };
        let previous = previous
            .iter()
            .map(|k| parse_key(k, "previous_encryption_keys"))
            .collect::<Result<_, _>>()?;
        Ok(Crypto { current, previous })
    }

    pub fn available(&self) -> bool {
        self.current.is_some()
    }

    pub fn encrypt(&self, plain: &str) -> Result<String, CryptoError> {
        let key = self.current.as_ref().ok_or(CryptoError::NoKey)?;
        let nonce_bytes: [u8; 12] = rand::random();
        let ct = key
            .cipher
            .encrypt(Nonce::from_slice(&nonce_bytes), plain.as_bytes())
            .map_err(|_| CryptoError::Corrupt)?;
        Ok(format!(
            "v1.{}.{}.{}",
            key.id,
            B64.encode(nonce_bytes),
            B64.encode(ct)
        ))
    }

    pub fn decrypt(&self, stored: &str) -> Result<String, CryptoError> {
        let mut parts = stored.splitn(4, '.');
        let (Some("v1"), Some(id), Some(nonce), Some(ct)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(CryptoError::Corrupt);
        };
        let key = self
            .current
            .iter()
            .chain(&self.previous)
            .find(|k| k.id == id)
            .ok_or_else(|| CryptoError::UnknownKey(id.to_string()))?;
        let nonce = B64.decode(nonce).map_err(|_| CryptoError::Corrupt)?;
        let ct = B64.decode(ct).map_err(|_| CryptoError::Corrupt)?;
        if nonce.len() != 12 {
            return Err(CryptoError::Corrupt);
        }
        let plain = key
            .cipher
            .decrypt(Nonce::from_slice(&nonce), ct.as_ref())
            .map_err(|_| CryptoError::Corrupt)?;
        String::from_utf8(plain).map_err(|_| CryptoError::Corrupt)
    }

    /// Whether a stored value was sealed with a key other than the current one.
    pub fn needs_rotation(&self, stored: &str) -> bool {
        match (&self.current, stored.split('.').nth(1)) {
            (Some(k), Some(id)) => k.id != id,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> String {
        B64.encode([7u8; 32])
    }

    #[test]
    fn round_trips_and_detects_tampering() {
        let c = Crypto::new(&key(), &[]).unwrap();
        let sealed = c.encrypt("sk-live-123").unwrap();
        assert!(!sealed.contains("sk-live"));
        assert_ne!(
            sealed,
            c.encrypt("sk-live-123").unwrap(),
            "fresh nonce each time"
        );
        assert_eq!(c.decrypt(&sealed).unwrap(), "sk-live-123");
        let mut bad = sealed.clone();
        bad.pop();
        bad.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(c.decrypt(&bad), Err(CryptoError::Corrupt));
    }

    #[test]
    fn rotation_reads_old_values_and_flags_them() {
        let old = Crypto::new(&key(), &[]).unwrap();
        let sealed = old.encrypt("v").unwrap();
        let new_key = B64.encode([9u8; 32]);
        let rotated = Crypto::new(&new_key, &[key()]).unwrap();
        assert!(rotated.needs_rotation(&sealed));
        assert_eq!(rotated.decrypt(&sealed).unwrap(), "v");
        assert!(!rotated.needs_rotation(&rotated.encrypt("v").unwrap()));
        let without_old = Crypto::new(&new_key, &[]).unwrap();
        assert!(matches!(
            without_old.decrypt(&sealed),
            Err(CryptoError::UnknownKey(_))
        ));
    }

    #[test]
    fn bad_keys_and_no_key() {
        assert!(matches!(
            Crypto::new("short", &[]),
            Err(CryptoError::BadKey(_))
        ));
        let none = Crypto::new("", &[]).unwrap();
        assert!(!none.available());
        assert_eq!(none.encrypt("x"), Err(CryptoError::NoKey));
    }
}
