//! `GET /analytics/`: the built-in live page, one HTML shell and its
//! scripts and styles, all embedded in the library (no CDN, no request
//! beyond this host; the Content-Security-Policy says so to the browser).
//!
//! The shell holds no data: every figure comes from the API routes, which
//! need a bearer token when tokens are configured. A browser cannot send a
//! header when it navigates, so the shell is public and asks for the token
//! when the API answers 401, keeps it in `sessionStorage`, and sends it as
//! `Authorization: Bearer` on every request and on the event stream.

use std::sync::OnceLock;

use axum::{
    Router,
    extract::Path,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use sha2::{Digest, Sha256};

use super::{error::ApiError, params::clip};

pub const PAGE_PREFIX: &str = "/analytics";

/// The page's files: (name, content type, bytes). `uPlot` is vendored from
/// the npm registry; its version and licence are in `web/vendor/uplot/`.
const ASSETS: [(&str, &str, &[u8]); 5] = [
    ("index.html", "text/html; charset=utf-8", include_bytes!("../../web/index.html")),
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("../../web/app.js")),
    ("app.css", "text/css; charset=utf-8", include_bytes!("../../web/app.css")),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/vendor/uplot/uPlot.iife.min.js"),
    ),
    ("uPlot.min.css", "text/css; charset=utf-8", include_bytes!("../../web/vendor/uplot/uPlot.min.css")),
];

/// Only this host, only these files: no inline script, no other origin.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

pub fn router() -> Router {
    Router::new()
        .route(PAGE_PREFIX, get(|| async { redirect() }))
        .route("/analytics/", get(|headers: HeaderMap| async move { asset("index.html", &headers) }))
        .route(
            "/analytics/{file}",
            get(|Path(file): Path<String>, headers: HeaderMap| async move { asset(&file, &headers) }),
        )
}

fn redirect() -> Response {
    (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, "/analytics/")]).into_response()
}

/// Strong validators, computed once: the files only change with the library.
fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|(_, _, bytes)| {
                let digest = Sha256::digest(bytes);
                format!("\"{}\"", digest.iter().take(12).map(|b| format!("{b:02x}")).collect::<String>())
            })
            .collect()
    })
}

fn asset(name: &str, headers: &HeaderMap) -> Response {
    let Some(i) = ASSETS.iter().position(|(n, _, _)| *n == name) else {
        return ApiError::not_found(format!("no file '{}' in the analytics page", clip(name)))
            .into_response();
    };
    let (_, content_type, bytes) = ASSETS[i];
    let etag = etags()[i].as_str();
    let common = [
        (header::CACHE_CONTROL, "no-cache"),
        (header::ETAG, etag),
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
    ];
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    if fresh {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (StatusCode::OK, common, [(header::CONTENT_TYPE, content_type)], bytes).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_there_and_the_shell_loads_only_its_own_files() {
        for (name, _, bytes) in ASSETS {
            assert!(!bytes.is_empty(), "{name}");
        }
        let html = std::str::from_utf8(ASSETS[0].2).unwrap();
        for src in ["app.js", "app.css", "uPlot.iife.min.js", "uPlot.min.css"] {
            assert!(html.contains(&format!("\"{src}\"")), "index.html loads {src}");
        }
        assert!(!html.contains("http://") && !html.contains("https://"), "no other origin in the shell");
        assert_eq!(asset("nope.js", &HeaderMap::new()).status(), StatusCode::NOT_FOUND);
        let etag = etags()[1].clone();
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, etag.parse().unwrap());
        assert_eq!(asset("app.js", &h).status(), StatusCode::NOT_MODIFIED);
    }
}
