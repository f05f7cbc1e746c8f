//! Encrypted passwords (`encrypted_password` in drainer.toml, `binlogctl -cmd encrypt`), compatible
//! with upstream's `pkg/encrypt`.
//!
//! # Scheme (facts of upstream's scheme; the spec only says "AES", so they are written down here)
//! - Cipher: AES in full-block CFB mode (CFB-128, NIST SP 800-38A); AES-128/192/256 by key length.
//! - Key: hex in the environment variable `BINLOG_SECRET_KEY` (16, 24 or 32 bytes), else the built-in
//!   default key [`DEFAULT_SECRET_KEY_HEX`] (so the default gives obfuscation, not secrecy).
//! - Output: standard base64 (with padding) of `iv (16 random bytes) | "@" | ciphertext`.

use aes::cipher::{AsyncStreamCipher, KeyIvInit};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// The key used when `BINLOG_SECRET_KEY` is not set (upstream's default, 32 bytes).
pub const DEFAULT_SECRET_KEY_HEX: &str = "a529b7665997f043a30ac8fadcb51d6aa032c226ab5b7750530b12b8c1a16a48";
/// The environment variable that overrides the key (hex).
pub const SECRET_KEY_ENV: &str = "BINLOG_SECRET_KEY";
/// AES block and IV size.
const IV_LEN: usize = 16;
/// Separates the IV from the ciphertext.
const IV_SEP: u8 = b'@';

/// Why encrypting or decrypting failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncryptError {
    /// `BINLOG_SECRET_KEY` is not hex.
    #[error("{SECRET_KEY_ENV} is not a hex string")]
    KeyNotHex,
    /// The key is not 16, 24 or 32 bytes.
    #[error("secret key must be 16, 24 or 32 bytes, got {len}")]
    KeyLength {
        /// The length given.
        len: usize,
    },
    /// The ciphertext is not base64.
    #[error("encrypted password is not base64")]
    NotBase64,
    /// The ciphertext is too short or lacks the `@` after the IV.
    #[error("encrypted password is malformed (expected 16-byte IV, '@', ciphertext)")]
    Malformed,
    /// The decrypted bytes are not UTF-8 (wrong key, most likely).
    #[error("decrypted password is not UTF-8 (wrong secret key?)")]
    NotUtf8,
}

/// The key from `BINLOG_SECRET_KEY`, or the default key.
pub fn secret_key() -> Result<Vec<u8>, EncryptError> {
    match std::env::var(SECRET_KEY_ENV) {
        Ok(h) if !h.is_empty() => {
            let key = hex::decode(h.trim()).map_err(|_| EncryptError::KeyNotHex)?;
            check_key(&key)?;
            Ok(key)
        }
        _ => Ok(hex::decode(DEFAULT_SECRET_KEY_HEX).expect("default key is hex")),
    }
}

fn check_key(key: &[u8]) -> Result<(), EncryptError> {
    match key.len() {
        16 | 24 | 32 => Ok(()),
        len => Err(EncryptError::KeyLength { len }),
    }
}

/// Encrypts `plaintext` with the key from [`secret_key`].
pub fn encrypt(plaintext: &str) -> Result<String, EncryptError> {
    encrypt_with(&secret_key()?, plaintext)
}

/// Decrypts a base64 `encrypted_password` with the key from [`secret_key`].
pub fn decrypt(encoded: &str) -> Result<String, EncryptError> {
    decrypt_with(&secret_key()?, encoded)
}

/// Encrypts with `key` and a random IV.
pub fn encrypt_with(key: &[u8], plaintext: &str) -> Result<String, EncryptError> {
    let iv: [u8; IV_LEN] = rand::random();
    encrypt_with_iv(key, &iv, plaintext)
}

fn encrypt_with_iv(key: &[u8], iv: &[u8; IV_LEN], plaintext: &str) -> Result<String, EncryptError> {
    check_key(key)?;
    let mut out = Vec::with_capacity(IV_LEN + 1 + plaintext.len());
    out.extend_from_slice(iv);
    out.push(IV_SEP);
    out.extend_from_slice(plaintext.as_bytes());
    cfb(key, iv, &mut out[IV_LEN + 1..], true);
    Ok(STANDARD.encode(out))
}

/// Decrypts a base64 `iv | '@' | ciphertext` with `key`.
pub fn decrypt_with(key: &[u8], encoded: &str) -> Result<String, EncryptError> {
    check_key(key)?;
    let mut raw = STANDARD.decode(encoded.trim()).map_err(|_| EncryptError::NotBase64)?;
    if raw.len() < IV_LEN + 1 || raw[IV_LEN] != IV_SEP {
        return Err(EncryptError::Malformed);
    }
    let iv: [u8; IV_LEN] = raw[..IV_LEN].try_into().expect("length checked");
    cfb(key, &iv, &mut raw[IV_LEN + 1..], false);
    String::from_utf8(raw.split_off(IV_LEN + 1)).map_err(|_| EncryptError::NotUtf8)
}

/// AES-CFB128 in place; the key length (checked by the callers) picks AES-128/192/256.
fn cfb(key: &[u8], iv: &[u8; IV_LEN], buf: &mut [u8], encrypt: bool) {
    macro_rules! run {
        ($aes:ty) => {{
            if encrypt {
                cfb_mode::Encryptor::<$aes>::new_from_slices(key, iv).expect("key and iv sizes checked").encrypt(buf)
            } else {
                cfb_mode::Decryptor::<$aes>::new_from_slices(key, iv).expect("key and iv sizes checked").decrypt(buf)
            }
        }};
    }
    match key.len() {
        16 => run!(aes::Aes128),
        24 => run!(aes::Aes192),
        _ => run!(aes::Aes256),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_nist_cfb128_vector() {
        // NIST SP 800-38A F.3.13 (CFB128-AES128.Encrypt), first block.
        let key = hex::decode("2b7e151628aed2a6abf7158809cf4f3c").unwrap();
        let iv: [u8; 16] = hex::decode("000102030405060708090a0b0c0d0e0f").unwrap().try_into().unwrap();
        let mut block = hex::decode("6bc1bee22e409f96e93d7e117393172a").unwrap();
        cfb(&key, &iv, &mut block, true);
        assert_eq!(hex::encode(&block), "3b3fd92eb72dad20333449f8e83cfb4a");
    }

    #[test]
    fn layout_is_iv_at_ciphertext_in_base64() {
        let key = hex::decode(DEFAULT_SECRET_KEY_HEX).unwrap();
        let iv = [7u8; 16];
        let enc = encrypt_with_iv(&key, &iv, "secret").unwrap();
        let raw = STANDARD.decode(&enc).unwrap();
        assert_eq!(&raw[..16], &iv);
        assert_eq!(raw[16], b'@');
        assert_eq!(raw.len(), 16 + 1 + 6);
        assert_ne!(&raw[17..], b"secret");
        assert_eq!(decrypt_with(&key, &enc).unwrap(), "secret");
    }

    #[test]
    fn round_trips_with_every_key_size_and_random_iv() {
        for len in [16, 24, 32] {
            let key = vec![0x42; len];
            let a = encrypt_with(&key, "pässword").unwrap();
            let b = encrypt_with(&key, "pässword").unwrap();
            assert_ne!(a, b, "a fresh IV every time");
            assert_eq!(decrypt_with(&key, &a).unwrap(), "pässword");
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        let key = vec![1u8; 16];
        assert_eq!(encrypt_with(&[1u8; 10], "x"), Err(EncryptError::KeyLength { len: 10 }));
        assert_eq!(decrypt_with(&key, "%%%"), Err(EncryptError::NotBase64));
        assert_eq!(decrypt_with(&key, &STANDARD.encode([0u8; 20])), Err(EncryptError::Malformed));
    }
}
