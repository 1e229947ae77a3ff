//! Converts requests forwarded by the host into `http` requests for the
//! plugin's axum router, and its responses back.

use axum::{Router, body::Body, http};
use http_body_util::BodyExt;
use plugin_api::{Header, HttpRequest, HttpResponse};
use tower::ServiceExt;

/// Runs one forwarded request through the router.
pub async fn call(router: Router, request: HttpRequest) -> HttpResponse {
    let uri = if request.query.is_empty() {
        request.path.to_string()
    } else {
        format!("{}?{}", request.path, request.query)
    };
    let mut builder = http::Request::builder().method(request.method.as_str()).uri(uri);
    for header in request.headers.iter() {
        builder = builder.header(header.name.as_str(), header.value.as_str());
    }
    let request = match builder.body(Body::from(request.body.into_vec())) {
        Ok(request) => request,
        Err(e) => {
            let body =
                format!("{{\"error\":{{\"code\":\"bad_request\",\"message\":\"malformed request: {e}\"}}}}");
            return HttpResponse::new(400, "application/json", body);
        }
    };
    let response = match router.oneshot(request).await {
        Ok(response) => response,
        Err(infallible) => match infallible {},
    };
    let (parts, body) = response.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes().to_vec(),
        Err(e) => format!("response body failed: {e}").into_bytes(),
    };
    HttpResponse {
        status: parts.status.as_u16(),
        headers: parts
            .headers
            .iter()
            .filter_map(|(n, v)| Some(Header::new(n.as_str(), v.to_str().ok()?)))
            .collect(),
        body: body.into(),
    }
}
