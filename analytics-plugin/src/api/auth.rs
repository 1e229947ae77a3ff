//! Optional bearer tokens with roles, checked by the middleware the plugin
//! registers (before the request reaches any analytics route). Tokens are
//! configured as SHA-256 hashes, compared in constant time; 401 says the
//! token is missing or unknown, 403 that its role is not enough.

use plugin_api::{Header, HttpResponse, RequestHead};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::export;

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads every route except raw-event exports.
    Viewer,
    /// Everything, including raw-event exports and changes.
    Admin,
}

/// One token: `{ name = "grafana", role = "viewer", sha256 = "<hex>" }`;
/// the hash is `printf %s TOKEN | sha256sum`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub name: String,
    pub role: Role,
    pub sha256: String,
}

/// `[plugins.analytics.config.auth]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// API tokens; none: every route is open.
    pub tokens: Vec<TokenConfig>,
    /// Whether `/metrics` needs a token too (when tokens are configured).
    pub protect_metrics: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self { tokens: Vec::new(), protect_metrics: true }
    }
}

pub struct Auth {
    tokens: Vec<(Role, [u8; 32])>,
    protect_metrics: bool,
}

impl Auth {
    pub fn from_config(config: &AuthConfig) -> Result<Self, String> {
        let mut tokens = Vec::new();
        for (i, token) in config.tokens.iter().enumerate() {
            let hash = decode_hex(&token.sha256).ok_or_else(|| {
                format!(
                    "auth.tokens[{i}] ('{}'): sha256 must be 64 hex digits (printf %s TOKEN | sha256sum)",
                    token.name
                )
            })?;
            tokens.push((token.role, hash));
        }
        Ok(Self { tokens, protect_metrics: config.protect_metrics })
    }

    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Path prefixes the middleware must see.
    pub fn prefixes(&self) -> Vec<&'static str> {
        if !self.enabled() {
            return Vec::new();
        }
        let mut prefixes = vec![super::API_PREFIX];
        if self.protect_metrics {
            prefixes.push(super::METRICS_PATH);
        }
        prefixes
    }

    /// The role of a presented token, comparing against every configured
    /// hash without stopping early.
    fn role_of(&self, token: &str) -> Option<Role> {
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for (role, hash) in &self.tokens {
            let diff = presented.iter().zip(hash).fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 && found.is_none() {
                found = Some(*role);
            }
        }
        found
    }

    /// `None` lets the request through; otherwise the 401 or 403 to send.
    pub fn check(&self, head: &RequestHead<'_>) -> Option<HttpResponse> {
        if !self.enabled() {
            return None;
        }
        let path = head.path.as_str();
        if path == super::METRICS_PATH && !self.protect_metrics {
            return None;
        }
        let token = head.header("authorization").and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
        let Some(token) = token else {
            return Some(unauthorized("missing bearer token (send Authorization: Bearer TOKEN)"));
        };
        let Some(role) = self.role_of(token) else {
            return Some(unauthorized("invalid bearer token"));
        };
        let method = head.method.as_str();
        let raw_export = path == "/api/v1/analytics/export"
            && serde_urlencoded::from_str::<Vec<(String, String)>>(head.query.as_str())
                .map(|pairs| pairs.iter().any(|(k, v)| k == "dataset" && export::needs_admin(v)))
                .unwrap_or(false);
        let needs_admin = !matches!(method, "GET" | "HEAD") || raw_export;
        if needs_admin && role != Role::Admin {
            let what = if raw_export { "exporting raw events" } else { "changing anything" };
            return Some(error(
                403,
                "forbidden",
                &format!("{what} needs the admin role; this token is a viewer"),
            ));
        }
        None
    }
}

fn error(status: u16, code: &str, message: &str) -> HttpResponse {
    let body = serde_json::json!({"error": {"code": code, "message": message, "parameter": null}});
    HttpResponse::new(status, "application/json", body.to_string())
}

fn unauthorized(message: &str) -> HttpResponse {
    let mut response = error(401, "unauthorized", message);
    response.headers.push(Header::new("www-authenticate", "Bearer realm=\"context-analytics\""));
    response
}

fn decode_hex(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use abi_stable::std_types::{RSlice, RStr};
    use plugin_api::HeaderRef;

    use super::*;

    fn sha(token: &str) -> String {
        Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
    }

    fn check(auth: &Auth, method: &str, path: &str, query: &str, authorization: Option<&str>) -> Option<u16> {
        let headers: Vec<HeaderRef<'_>> = authorization
            .map(|v| HeaderRef { name: RStr::from("Authorization"), value: RStr::from(v) })
            .into_iter()
            .collect();
        let head = RequestHead {
            method: RStr::from(method),
            path: RStr::from(path),
            query: RStr::from(query),
            headers: RSlice::from_slice(&headers),
        };
        auth.check(&head).map(|r| r.status)
    }

    #[test]
    fn tokens_roles_and_statuses() {
        let config = AuthConfig {
            tokens: vec![
                TokenConfig { name: "grafana".into(), role: Role::Viewer, sha256: sha("view-secret") },
                TokenConfig { name: "ops".into(), role: Role::Admin, sha256: sha("admin-secret") },
            ],
            protect_metrics: true,
        };
        let auth = Auth::from_config(&config).unwrap();
        let route = "/api/v1/analytics/usage";
        assert_eq!(check(&auth, "GET", route, "", None), Some(401));
        assert_eq!(check(&auth, "GET", route, "", Some("Bearer wrong")), Some(401));
        assert_eq!(check(&auth, "GET", route, "", Some("Basic dmlldy1zZWNyZXQ=")), Some(401));
        assert_eq!(check(&auth, "GET", route, "", Some("Bearer view-secret")), None);
        assert_eq!(check(&auth, "GET", "/metrics", "", None), Some(401));
        let export = "/api/v1/analytics/export";
        assert_eq!(check(&auth, "GET", export, "dataset=usage", Some("Bearer view-secret")), None);
        assert_eq!(
            check(&auth, "GET", export, "dataset=raw-searches", Some("Bearer view-secret")),
            Some(403)
        );
        assert_eq!(check(&auth, "GET", export, "dataset=raw-searches", Some("bearer admin-secret")), None);
        assert_eq!(check(&auth, "POST", route, "", Some("Bearer view-secret")), Some(403));

        let open = Auth::from_config(&AuthConfig { protect_metrics: false, ..config }).unwrap();
        assert_eq!(check(&open, "GET", "/metrics", "", None), None);
        assert_eq!(check(&Auth::from_config(&AuthConfig::default()).unwrap(), "GET", route, "", None), None);
    }

    #[test]
    fn a_malformed_hash_is_refused_naming_the_token() {
        let config = AuthConfig {
            tokens: vec![TokenConfig { name: "grafana".into(), role: Role::Viewer, sha256: "abc".into() }],
            protect_metrics: true,
        };
        let error = Auth::from_config(&config).err().unwrap();
        assert!(error.starts_with("auth.tokens[0] ('grafana'): sha256 must be 64 hex digits"), "{error}");
    }
}
