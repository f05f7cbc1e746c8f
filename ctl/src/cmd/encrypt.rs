//! `encrypt -text T`: prints the encrypted password for `encrypted_password` (see `pump::encrypt` for the
//! scheme; the key comes from `BINLOG_SECRET_KEY` or the default key).

use anyhow::{Result, bail};

use crate::ctx::Ctx;

/// `-cmd encrypt`.
pub fn encrypt(ctx: &Ctx) -> Result<()> {
    let Some(text) = ctx.flags.text.as_deref() else {
        bail!("-cmd encrypt: -text is required (the password to encrypt)");
    };
    let enc = pump::encrypt::encrypt(text)?;
    if std::env::var_os(pump::encrypt::SECRET_KEY_ENV).is_none() {
        eprintln!(
            "note: {} is not set, so the built-in default key was used (obfuscation, not secrecy)",
            pump::encrypt::SECRET_KEY_ENV
        );
    }
    if ctx.flags.json {
        println!("{}", serde_json::json!({ "encrypted": enc }));
    } else {
        println!("{enc}");
    }
    Ok(())
}
