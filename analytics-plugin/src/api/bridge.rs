//! Converts requests forwarded by the host into `http` requests for the
//! plugin's axum router, and its responses back: small bodies in one
//! `respond`, large or unbounded ones (exports) streamed chunk by chunk
//! through the sink, so an export of any size runs in constant memory.

use axum::{Router, body::Body, http};
use http_body_util::BodyExt;
use plugin_api::{Header, HttpRequest, HttpResponse, ReplySinkBox};
use tower::ServiceExt;

/// Bodies up to this size are sent whole.
const WHOLE_BODY_MAX: u64 = 1 << 20;

fn request(request: HttpRequest) -> Result<http::Request<Body>, HttpResponse> {
    let uri = if request.query.is_empty() {
        request.path.to_string()
    } else {
        format!("{}?{}", request.path, request.query)
    };
    let mut builder = http::Request::builder().method(request.method.as_str()).uri(uri);
    for header in request.headers.iter() {
        builder = builder.header(header.name.as_str(), header.value.as_str());
    }
    builder.body(Body::from(request.body.into_vec())).map_err(|e| {
        let body = serde_json::json!({"error": {"code": "bad_request", "message": format!("malformed request: {e}"), "parameter": null}});
        HttpResponse::new(400, "application/json", body.to_string())
    })
}

fn headers(map: &http::HeaderMap) -> abi_stable::std_types::RVec<Header> {
    map.iter().filter_map(|(n, v)| Some(Header::new(n.as_str(), v.to_str().ok()?))).collect()
}

/// Runs one forwarded request through the router and answers through the
/// sink. Runs on the plugin's runtime; blocking sends happen inside
/// `block_in_place`, off the async workers' duties.
pub async fn serve(router: Router, forwarded: HttpRequest, mut reply: ReplySinkBox) {
    let request = match request(forwarded) {
        Ok(request) => request,
        Err(response) => return reply.respond(response),
    };
    let response = match router.oneshot(request).await {
        Ok(response) => response,
        Err(infallible) => match infallible {},
    };
    let (parts, mut body) = response.into_parts();
    let whole = http_body::Body::size_hint(&body).upper().is_some_and(|n| n <= WHOLE_BODY_MAX);
    if whole {
        let bytes = match body.collect().await {
            Ok(collected) => collected.to_bytes().to_vec(),
            Err(e) => format!("response body failed: {e}").into_bytes(),
        };
        return reply.respond(HttpResponse {
            status: parts.status.as_u16(),
            headers: headers(&parts.headers),
            body: bytes.into(),
        });
    }
    let status = parts.status.as_u16();
    let head = headers(&parts.headers);
    if !tokio::task::block_in_place(|| reply.start_stream(status, head)) {
        return;
    }
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        let Ok(data) = frame.into_data() else { continue };
        if data.is_empty() {
            continue;
        }
        // Blocks while the client is slower: the producer waits with it.
        if !tokio::task::block_in_place(|| reply.send_chunk(data.to_vec().into())) {
            break; // the client is gone: stop producing
        }
    }
    tokio::task::block_in_place(|| reply.finish());
}
