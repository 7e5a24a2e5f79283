//! Who may use the console: on loopback, whoever can reach it (the machine's
//! users); on any other address, only with the password (HTTP Basic, over
//! TLS in front), checked against an Argon2 hash — the console never holds
//! the password itself. Actions carry a CSRF token (a random per-process
//! secret, double-submitted in a cookie and the form).

use std::net::SocketAddr;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

/// Is the address only reachable from this machine?
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// A PHC string (`$argon2id$...`) for `password`.
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt).map_err(|e| format!("no randomness: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
}

/// Is `hash` a PHC string we can check passwords against?
pub fn check_hash(hash: &str) -> Result<(), String> {
    PasswordHash::new(hash)
        .map(|_| ())
        .map_err(|e| format!("not an Argon2 PHC string ({e}); make one with `automation-console hash-password`"))
}

/// Does `password` match `hash`?
pub fn verify(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// The password of an `Authorization: Basic ...` header (the user name is
/// not checked: there is one password).
pub fn basic_password(header: &str) -> Option<String> {
    let encoded = header.strip_prefix("Basic ")?.trim();
    let decoded = base64_decode(encoded)?;
    let text = String::from_utf8(decoded).ok()?;
    text.split_once(':').map(|(_, p)| p.to_owned())
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut buf = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        if c == b'=' {
            break;
        }
        let v = TABLE.iter().position(|&t| t == c)? as u32;
        buf = (buf << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
            buf &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// A random token (hex), for the CSRF secret.
pub fn random_token() -> String {
    let mut bytes = [0u8; 24];
    getrandom::getrandom(&mut bytes).expect("the OS has randomness");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compare two tokens in time independent of where they differ.
pub fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The value of cookie `name` in a Cookie header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').map(str::trim).find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_checked_against_their_hash_only() {
        let h = hash_password("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(check_hash(&h).is_ok());
        assert!(verify(&h, "s3cret"));
        assert!(!verify(&h, "s3cret "));
        assert!(!verify("not a hash", "s3cret"));
        assert!(check_hash("plaintext").is_err());
    }

    #[test]
    fn basic_auth_and_cookies_parse() {
        // "ops:open sesame"
        assert_eq!(basic_password("Basic b3BzOm9wZW4gc2VzYW1l").as_deref(), Some("open sesame"));
        assert_eq!(basic_password("Bearer x"), None);
        assert_eq!(basic_password("Basic !!!"), None);
        assert_eq!(cookie("a=1; csrf=abc; b=2", "csrf"), Some("abc"));
        assert_eq!(cookie("a=1; xcsrf=abc", "csrf"), None);
    }

    #[test]
    fn tokens_compare_whole() {
        let t = random_token();
        assert_eq!(t.len(), 48);
        assert!(same_token(&t, &t.clone()));
        assert!(!same_token(&t, &t[..47]));
        assert!(!same_token("abc", "abd"));
        assert!(is_loopback(&"127.0.0.1:1".parse().unwrap()));
        assert!(is_loopback(&"[::1]:1".parse().unwrap()));
        assert!(!is_loopback(&"0.0.0.0:1".parse().unwrap()));
    }
}
