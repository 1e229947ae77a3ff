//! What of users and queries is stored: as-is, as a keyed hash (HMAC-SHA256
//! with a secret from the environment), or (queries only) not at all.
//! Applied before an event reaches the spool or the database.

use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum UserIds {
    #[default]
    Plain,
    Hashed,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Queries {
    #[default]
    Full,
    Hashed,
    None,
}

/// `[plugins.analytics.config.privacy]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacyConfig {
    /// `plain` or `hashed`.
    pub user_ids: UserIds,
    /// `full`, `hashed` or `none`.
    pub queries: Queries,
    /// Environment variable holding the hashing secret (needed when anything
    /// is hashed). Hashes are stable while the secret is.
    pub hash_secret_env: String,
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        Self {
            user_ids: UserIds::Plain,
            queries: Queries::Full,
            hash_secret_env: "CONTEXT_ANALYTICS_HASH_SECRET".to_owned(),
        }
    }
}

#[derive(Clone)]
pub struct Privacy {
    user_ids: UserIds,
    queries: Queries,
    key: Option<Hmac<Sha256>>,
}

impl std::fmt::Debug for Privacy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Privacy").field("user_ids", &self.user_ids).field("queries", &self.queries).finish()
    }
}

impl Privacy {
    pub fn from_config(config: &PrivacyConfig) -> Result<Self, String> {
        let needs_key = config.user_ids == UserIds::Hashed || config.queries == Queries::Hashed;
        let key = if needs_key {
            let secret = std::env::var(&config.hash_secret_env).unwrap_or_default();
            if secret.len() < 16 {
                return Err(format!(
                    "privacy hashing needs a secret of at least 16 bytes in the environment variable '{}' (privacy.hash_secret_env)",
                    config.hash_secret_env
                ));
            }
            Some(Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(|e| e.to_string())?)
        } else {
            None
        };
        Ok(Self { user_ids: config.user_ids, queries: config.queries, key })
    }

    pub fn plain() -> Self {
        Self { user_ids: UserIds::Plain, queries: Queries::Full, key: None }
    }

    fn hash(&self, value: &str) -> String {
        let mut mac = self.key.clone().expect("a key exists whenever hashing is configured");
        mac.update(value.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut out = String::with_capacity(64);
        for byte in digest {
            out.push_str(&format!("{byte:02x}"));
        }
        out
    }

    pub fn user(&self, user: &str) -> String {
        match self.user_ids {
            UserIds::Plain => user.to_owned(),
            UserIds::Hashed => self.hash(user),
        }
    }

    pub fn query(&self, query: &str) -> Option<String> {
        match self.queries {
            Queries::Full => Some(query.to_owned()),
            Queries::Hashed => Some(self.hash(query)),
            Queries::None => None,
        }
    }
}
