//! Tokens: `syt_<id>_<secret>`, an opaque random secret with a public id.
//!
//! Why opaque rather than signed (JWT): a token must stop working on every node the moment it
//! is revoked, and the cluster already agrees on state through Raft, so a lookup in replicated
//! state gives instant, consistent revocation with no signing keys to distribute or rotate and
//! no revocation lists. Verifying costs one SHA-256 and a map lookup. The secret is 256 random
//! bits, so a fast hash is enough (a slow password hash protects low-entropy secrets); only the
//! hash is stored, so the replicated state, snapshots and backups hold nothing a caller can use.

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{Error, Result};

const PREFIX: &str = "syt_";
const ID_BYTES: usize = 6;
const SECRET_BYTES: usize = 32;

/// A token split into its public id and its secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// Public: names the token in lists and revocations.
    pub id: String,
    secret: String,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token({PREFIX}{}_…)", self.id)
    }
}

impl Token {
    /// A new random token.
    pub fn generate() -> Token {
        let mut id = [0u8; ID_BYTES];
        let mut secret = [0u8; SECRET_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut id);
        rand::rngs::OsRng.fill_bytes(&mut secret);
        Token {
            id: hex::encode(id),
            secret: hex::encode(secret),
        }
    }

    /// Parses a token as a client sends it. The error says what is wrong, never echoing it.
    pub fn parse(text: &str) -> Result<Token> {
        let malformed = || {
            Error::Unauthenticated(
                "malformed token: expected syt_<id>_<secret> as `switchyard auth token create` prints it"
                    .into(),
            )
        };
        let rest = text.trim().strip_prefix(PREFIX).ok_or_else(malformed)?;
        let (id, secret) = rest.split_once('_').ok_or_else(malformed)?;
        let hex_of = |s: &str, n: usize| s.len() == n * 2 && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex_of(id, ID_BYTES) || !hex_of(secret, SECRET_BYTES) {
            return Err(malformed());
        }
        Ok(Token {
            id: id.to_ascii_lowercase(),
            secret: secret.to_ascii_lowercase(),
        })
    }

    /// The SHA-256 of the secret, hex: what the cluster stores.
    pub fn secret_hash(&self) -> String {
        hex::encode(Sha256::digest(self.secret.as_bytes()))
    }

    /// Whether this token's secret hashes to `stored` (compared in constant time).
    pub fn matches(&self, stored: &str) -> bool {
        self.secret_hash().as_bytes().ct_eq(stored.as_bytes()).into()
    }

    /// The whole token, to show its holder once.
    pub fn expose(&self) -> String {
        format!("{PREFIX}{}_{}", self.id, self.secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_parses_back_and_matches_its_hash() {
        let t = Token::generate();
        let back = Token::parse(&t.expose()).unwrap();
        assert_eq!(back, t);
        assert!(back.matches(&t.secret_hash()));
        assert!(!Token::generate().matches(&t.secret_hash()));
    }

    #[test]
    fn tokens_differ_and_debug_hides_the_secret() {
        let (a, b) = (Token::generate(), Token::generate());
        assert_ne!(a.id, b.id);
        assert!(!format!("{a:?}").contains(&a.secret));
    }

    #[test]
    fn malformed_tokens_are_refused_without_echoing_them() {
        for bad in [
            "",
            "syt_",
            "syt_abc_def",
            "Bearer x",
            "syt_zzzzzzzzzzzz_00",
            &"a".repeat(5000),
        ] {
            let e = Token::parse(bad).unwrap_err();
            assert!(matches!(e, Error::Unauthenticated(_)));
            assert!(bad.len() < 8 || !e.to_string().contains(bad), "{bad:?} echoed");
        }
    }
}
