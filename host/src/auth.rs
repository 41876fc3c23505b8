//! Who may use the daemon's API: bearer tokens with scopes. The daemon
//! keeps only each token's SHA-256 (a leaked tokens file or config gives
//! no one a token); a client presents the token itself in
//! `Authorization: Bearer …`. Tasks belong to the token that submitted
//! them: another token (without `admin`) cannot read, cancel or reuse the
//! idempotency keys of them.

use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The environment variable that may hold the tokens file's text instead
/// of `[auth] tokens_file`.
pub const TOKENS_ENV: &str = "CHIMERA_TOKENS";

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Submit tasks.
    Submit,
    /// Read its own tasks, and the agents (without their policies).
    Read,
    /// Cancel its own tasks.
    Cancel,
    /// Everything: every task, the agents' policies, the metrics.
    Admin,
}

impl Scope {
    fn name(self) -> &'static str {
        match self {
            Scope::Submit => "submit",
            Scope::Read => "read",
            Scope::Cancel => "cancel",
            Scope::Admin => "admin",
        }
    }
}

/// `[auth]` of `chimera.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// A TOML file of `[[tokens]]` (name, sha256, scopes), relative to the
    /// config file. Without it (and without `CHIMERA_TOKENS`) the API has no
    /// authentication, which only a loopback listen address allows.
    pub tokens_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    tokens: Vec<TokenEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    /// SHA-256 of the token, 64 hex digits (`chimera token` prints it).
    sha256: String,
    scopes: Vec<Scope>,
}

/// A caller the daemon knows: a token's name and scopes, or (without
/// authentication) anyone, with every scope.
#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    /// The token's name; `None` without authentication.
    pub name: Option<String>,
    scopes: Vec<Scope>,
}

impl Caller {
    /// Anyone, when the API has no authentication.
    pub fn anyone() -> Caller {
        Caller { name: None, scopes: vec![Scope::Admin] }
    }

    /// Whether the caller holds `scope` (admin holds every one).
    pub fn may(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin)
    }

    /// [`Caller::may`], as the refusal to answer with.
    pub fn require(&self, scope: Scope) -> Result<(), String> {
        if self.may(scope) {
            return Ok(());
        }
        Err(format!("token `{}` lacks the `{}` scope", self.name.as_deref().unwrap_or("-"), scope.name()))
    }

    /// Whether the caller may see a task submitted by `owner`.
    pub fn owns(&self, owner: Option<&str>) -> bool {
        self.may(Scope::Admin) || owner == self.name.as_deref()
    }
}

/// The daemon's tokens, by hash.
#[derive(Debug)]
pub struct Tokens {
    by_hash: HashMap<[u8; 32], Arc<Caller>>,
}

/// Why a request was not authenticated.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AuthError {
    #[error("this API needs a token: send `Authorization: Bearer <token>`")]
    Missing,
    #[error("the token is not known to this daemon")]
    Unknown,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Tokens {
    /// The tokens `[auth]` names (a file, relative to `base`) or, without
    /// one, those in `CHIMERA_TOKENS`; `None` when neither is set.
    pub fn load(section: &AuthSection, base: &Path) -> Result<Option<Tokens>, String> {
        let (text, source) = match &section.tokens_file {
            Some(file) => {
                let path = base.join(file);
                let text =
                    std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                (text, path.display().to_string())
            }
            None => match std::env::var(TOKENS_ENV) {
                Ok(text) => (text, format!("${TOKENS_ENV}")),
                Err(_) => return Ok(None),
            },
        };
        Tokens::parse(&text).map(Some).map_err(|e| format!("{source}: {e}"))
    }

    /// Whether `[auth]` or the environment configures tokens.
    pub fn configured(section: &AuthSection) -> bool {
        section.tokens_file.is_some() || std::env::var_os(TOKENS_ENV).is_some()
    }

    fn parse(text: &str) -> Result<Tokens, String> {
        let file: TokensFile = toml::from_str(text).map_err(|e| format!("not a valid tokens file: {}", e.message()))?;
        if file.tokens.is_empty() {
            return Err("no [[tokens]]: with none, no one could use the API".into());
        }
        let mut by_hash = HashMap::new();
        let mut names = std::collections::HashSet::new();
        for t in file.tokens {
            let hash = decode_hex(&t.sha256).ok_or_else(|| {
                format!(
                    "token `{}`: sha256 must be the token's SHA-256 in 64 hex digits (the file keeps no token itself; `chimera token` prints both)",
                    t.name
                )
            })?;
            if t.scopes.is_empty() {
                return Err(format!("token `{}` has no scopes; give it some of submit, read, cancel, admin", t.name));
            }
            if !names.insert(t.name.clone()) {
                return Err(format!("token `{}` is named twice", t.name));
            }
            by_hash.insert(hash, Arc::new(Caller { name: Some(t.name), scopes: t.scopes }));
        }
        Ok(Tokens { by_hash })
    }

    /// The caller an `Authorization` header's value names.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Arc<Caller>, AuthError> {
        let token = authorization.and_then(|v| v.strip_prefix("Bearer ")).ok_or(AuthError::Missing)?;
        self.by_hash.get(&digest(token.trim())).cloned().ok_or(AuthError::Unknown)
    }
}

fn decode_hex(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

/// A new random token (256 bits) and its SHA-256 in hex.
pub fn new_token() -> (String, String) {
    use rand::RngCore;
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let token = format!("chm_{}", hex::encode(raw));
    let hash = hex::encode(digest(&token));
    (token, hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_known_by_hash_with_their_scopes() {
        let (token, hash) = new_token();
        let text = format!("[[tokens]]\nname = \"ci\"\nsha256 = \"{hash}\"\nscopes = [\"submit\", \"read\"]\n");
        let tokens = Tokens::parse(&text).unwrap();
        let caller = tokens.authenticate(Some(&format!("Bearer {token}"))).unwrap();
        assert_eq!(caller.name.as_deref(), Some("ci"));
        assert!(caller.may(Scope::Submit) && caller.may(Scope::Read) && !caller.may(Scope::Cancel));
        assert_eq!(caller.require(Scope::Admin).unwrap_err(), "token `ci` lacks the `admin` scope");
        assert!(caller.owns(Some("ci")) && !caller.owns(Some("other")) && !caller.owns(None));
        assert_eq!(tokens.authenticate(None).unwrap_err(), AuthError::Missing);
        assert_eq!(tokens.authenticate(Some(&token)).unwrap_err(), AuthError::Missing);
        assert_eq!(tokens.authenticate(Some("Bearer chm_nope")).unwrap_err(), AuthError::Unknown);
        // The hash is not the token.
        assert_eq!(tokens.authenticate(Some(&format!("Bearer {hash}"))).unwrap_err(), AuthError::Unknown);
    }

    #[test]
    fn a_token_written_in_the_clear_or_without_scopes_is_refused() {
        let clear = "[[tokens]]\nname = \"ci\"\nsha256 = \"chm_secret\"\nscopes = [\"read\"]\n";
        assert!(Tokens::parse(clear).unwrap_err().starts_with("token `ci`: sha256 must be the token's SHA-256"));
        let (_, hash) = new_token();
        let none = format!("[[tokens]]\nname = \"ci\"\nsha256 = \"{hash}\"\nscopes = []\n");
        assert!(Tokens::parse(&none).unwrap_err().contains("has no scopes"));
        assert!(Tokens::parse("").unwrap_err().starts_with("no [[tokens]]"));
        let bad = format!("[[tokens]]\nname = \"ci\"\nsha256 = \"{hash}\"\nscopes = [\"root\"]\n");
        assert!(Tokens::parse(&bad).unwrap_err().contains("unknown variant `root`"));
    }
}
