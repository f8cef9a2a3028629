//! Password hashing: Argon2id with a random salt per hash (PHC string format), and the
//! rules for new passwords and user names.

use std::sync::OnceLock;

use argon2::{Argon2, PasswordHasher, PasswordVerifier};

pub const MIN_PASSWORD_CHARS: usize = 10;
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Hashes a password (slow on purpose: call it on a blocking thread).
pub fn hash(password: &str) -> anyhow::Result<String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing password: {e}"))
}

/// Whether `password` matches `phc_hash`. Malformed hashes never match.
pub fn verify(password: &str, phc_hash: &str) -> bool {
    password.len() <= MAX_PASSWORD_BYTES
        && Argon2::default()
            .verify_password(password.as_bytes(), phc_hash)
            .is_ok()
}

/// Spends the same work as a real verification, for unknown user names, so response
/// time does not tell which user names exist.
pub fn verify_dummy(password: &str) {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let dummy = DUMMY.get_or_init(|| hash("dummy password for timing").unwrap_or_default());
    let _ = verify(password, dummy);
}

/// Rules for a new admin password.
pub fn check_new_password(password: &str) -> Result<(), String> {
    if password.trim().is_empty() {
        return Err("the password is empty".into());
    }
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(format!(
            "the password must be at least {MIN_PASSWORD_CHARS} characters"
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(format!(
            "the password must be at most {MAX_PASSWORD_BYTES} bytes"
        ));
    }
    Ok(())
}

/// Rules for an admin user name: 1–150 of letters, digits and `@ . + - _`.
pub fn check_username(username: &str) -> Result<(), String> {
    let ok_chars = username
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '@' | '.' | '+' | '-' | '_'));
    if username.is_empty() || username.chars().count() > 150 || !ok_chars {
        return Err("the user name must be 1–150 letters, digits or @ . + - _ characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_only_its_own_password_and_is_salted() {
        let a = hash("correct horse battery").unwrap();
        let b = hash("correct horse battery").unwrap();
        assert!(a.starts_with("$argon2id$"));
        assert_ne!(a, b, "each hash has its own salt");
        assert!(verify("correct horse battery", &a));
        assert!(!verify("wrong horse battery", &a));
        assert!(!verify("anything", "not a hash"));
    }

    #[test]
    fn short_or_empty_passwords_are_refused() {
        assert!(check_new_password("").is_err());
        assert!(check_new_password("short").is_err());
        assert!(check_new_password("long enough pw").is_ok());
    }

    #[test]
    fn user_names_are_restricted() {
        assert!(check_username("alice@example.com").is_ok());
        assert!(check_username("").is_err());
        assert!(check_username("has space").is_err());
    }
}
