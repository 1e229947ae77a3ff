//! The `/api/v1/analytics/alerts` routes: active alerts, history,
//! acknowledgements, silences, rules CRUD, channels and dead letters.
//! Writes need the `admin` role (the auth middleware refuses any non-GET
//! request from a viewer). Bad input is a 400 in the API's one error shape.

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::{Value as Json_, json};

use super::{
    config::{Dur, RuleConfig},
    engine::{Engine, expand},
    store::{Ack, HistoryFilter, Matcher, Phase, Silence},
};
use crate::{
    api::{
        error::ApiError,
        params::{Params, clip},
    },
    plugin::{Shared, now_us},
    time::{format_rfc3339, parse_rfc3339},
};

pub const PREFIX: &str = "/api/v1/analytics/alerts";

pub fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route(PREFIX, get(active))
        .route(&format!("{PREFIX}/history"), get(history))
        .route(&format!("{PREFIX}/{{fingerprint}}/ack"), post(acknowledge))
        .route(&format!("{PREFIX}/silences"), get(silences).post(create_silence))
        .route(&format!("{PREFIX}/silences/{{id}}"), axum::routing::delete(expire_silence))
        .route(&format!("{PREFIX}/rules"), get(rules).post(create_rule))
        .route(&format!("{PREFIX}/rules/{{name}}"), get(rule).put(put_rule).delete(delete_rule))
        .route(&format!("{PREFIX}/channels"), get(channels))
        .route(&format!("{PREFIX}/dead-letters"), get(dead_letters))
}

fn engine(shared: &Shared) -> Result<&Arc<Engine>, ApiError> {
    let engine = shared.alerting.engine.as_ref().ok_or_else(|| {
        ApiError::not_found("alerting is switched off ([plugins.analytics.config.alerting] enabled = false)")
    })?;
    if !shared.pipeline.storage_health.lock().ready {
        return Err(ApiError::unavailable("analytics database unreachable: alerting state cannot be read"));
    }
    Ok(engine)
}

fn storage(shared: &Shared, e: crate::storage::StorageError) -> ApiError {
    let error = ApiError::from_storage(&e);
    if error.status == StatusCode::INTERNAL_SERVER_ERROR {
        shared.logger.error(&format!("alerts API: {e}"));
    }
    error
}

/// Parses a JSON body into `T`, or says what is wrong with it.
fn body<T: for<'de> Deserialize<'de>>(bytes: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_parameter("body", format!("invalid JSON body: {e}")))
}

fn text(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.trim().is_empty() || value.chars().count() > max {
        return Err(ApiError::bad_parameter(
            field,
            format!("'{field}' must be 1 to {max} characters (got '{}')", clip(value)),
        ));
    }
    Ok(())
}

/// `GET /alerts`: pending and firing alerts, with their rule's annotations
/// filled in, acknowledgement and silence.
async fn active(State(shared): State<Arc<Shared>>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let params = Params::parse(q.as_deref(), &["state", "severity", "project", "fingerprint"])?;
    let state = params.choice("state", &["any", "pending", "firing"], "any")?;
    let severity = params.choice("severity", &["any", "info", "warning", "error", "critical"], "any")?;
    let project = params.project()?;
    let fp = params.get("fingerprint").map(str::to_owned);
    let engine = engine(&shared)?;
    let now = now_us();
    let (states, silences, rules) =
        match (engine.store.load_state().await, engine.store.silences().await, engine.rules().await) {
            (Ok(a), Ok(b), Ok(c)) => (a, b, c),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return Err(storage(&shared, e)),
        };
    let rules: BTreeMap<&str, &RuleConfig> = rules.iter().map(|r| (r.rule.name.as_str(), &r.rule)).collect();
    let alerts: Vec<Json_> = states
        .iter()
        .filter(|a| state == "any" || (state == "firing") == (a.phase == Phase::Firing))
        .filter(|a| severity == "any" || a.severity.as_str() == severity)
        .filter(|a| project.is_none() || a.labels.get("project") == project.as_ref())
        .filter(|a| fp.is_none() || fp.as_ref() == Some(&a.fingerprint))
        .map(|a| {
            let rule = rules.get(a.rule.as_str());
            let threshold = rule.and_then(|r| r.threshold);
            let annotations: BTreeMap<&String, String> = rule
                .map(|r| r.annotations.iter().map(|(k, v)| (k, expand(v, a.value, threshold, &a.labels))).collect())
                .unwrap_or_default();
            json!({
                "fingerprint": a.fingerprint,
                "rule": a.rule,
                "severity": a.severity,
                "state": a.phase,
                "labels": a.labels,
                "annotations": annotations,
                "value": a.value,
                "threshold": threshold,
                "active_since": format_rfc3339(a.active_since_us),
                "fired_at": a.fired_at_us.map(format_rfc3339),
                "last_notified_at": a.last_notified_at_us.map(format_rfc3339),
                "repeats": a.repeats,
                "acknowledgement": a.ack.as_ref().map(|k| json!({"by": k.by, "at": format_rfc3339(k.at_us), "comment": k.comment})),
                "silenced_by": silences.iter().filter(|s| s.silences(&a.labels, now)).map(|s| s.id.clone()).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(json!({
        "alerts": alerts,
        "leader": engine.leading(),
        "last_evaluation": *engine.last.lock(),
    }))
    .into_response())
}

/// `GET /alerts/history`
async fn history(State(shared): State<Arc<Shared>>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let params =
        Params::parse(q.as_deref(), &["rule", "severity", "project", "timerange", "from", "to", "limit"])?;
    let range = params.range(now_us())?;
    let severity = params.choice("severity", &["any", "info", "warning", "error", "critical"], "any")?;
    let filter = HistoryFilter {
        rule: params.get("rule").map(str::to_owned),
        severity: (severity != "any").then(|| severity.to_owned()),
        project: params.project()?,
        from_us: range.from_us,
        to_us: range.to_us,
        limit: params.integer("limit", 1, 10_000, 500)?,
    };
    if let Some(rule) = &filter.rule {
        text("rule", rule, 128).map_err(|e| ApiError::bad_parameter("rule", e.message))?;
    }
    let engine = engine(&shared)?;
    let events = engine.store.history(&filter).await.map_err(|e| storage(&shared, e))?;
    Ok(Json(json!({"range": range.json(), "events": events})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    by: String,
    #[serde(default)]
    comment: String,
}

/// `POST /alerts/{fingerprint}/ack`: acknowledges a firing alert (no
/// repeats until it resolves; the resolution still notifies and clears it).
async fn acknowledge(
    State(shared): State<Arc<Shared>>,
    Path(fp): Path<String>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let b: AckBody = body(&bytes)?;
    text("by", &b.by, 128)?;
    if b.comment.chars().count() > 1000 {
        return Err(ApiError::bad_parameter("comment", "'comment' is at most 1000 characters"));
    }
    let engine = engine(&shared)?;
    let ack = Ack { by: b.by, at_us: now_us(), comment: b.comment };
    if !engine.store.acknowledge(&fp, &ack).await.map_err(|e| storage(&shared, e))? {
        return Err(ApiError::not_found(format!("no firing alert with fingerprint '{}'", clip(&fp))));
    }
    let state = engine.store.load_state().await.map_err(|e| storage(&shared, e))?;
    if let Some(a) = state.iter().find(|a| a.fingerprint == fp) {
        let detail = format!("acknowledged by {}: {}", ack.by, ack.comment);
        let event = super::store::HistoryEvent {
            time_us: ack.at_us,
            alert: a,
            event: "acknowledged",
            detail: Some(detail),
        };
        engine.store.record(&event).await.map_err(|e| storage(&shared, e))?;
    }
    Ok(Json(json!({"fingerprint": fp, "acknowledgement": {"by": ack.by, "at": format_rfc3339(ack.at_us), "comment": ack.comment}}))
        .into_response())
}

fn silence_json(s: &Silence, now: i64) -> Json_ {
    let status = if now < s.starts_at_us {
        "pending"
    } else if s.active(now) {
        "active"
    } else {
        "expired"
    };
    json!({
        "id": s.id, "matchers": s.matchers, "status": status,
        "starts_at": format_rfc3339(s.starts_at_us), "ends_at": format_rfc3339(s.ends_at_us),
        "created_by": s.created_by, "comment": s.comment, "created_at": format_rfc3339(s.created_at_us),
    })
}

/// `GET /alerts/silences`
async fn silences(State(shared): State<Arc<Shared>>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let params = Params::parse(q.as_deref(), &["status"])?;
    let status = params.choice("status", &["any", "active", "pending", "expired"], "any")?;
    let engine = engine(&shared)?;
    let now = now_us();
    let list: Vec<Json_> = engine
        .store
        .silences()
        .await
        .map_err(|e| storage(&shared, e))?
        .iter()
        .map(|s| silence_json(s, now))
        .filter(|s| status == "any" || s["status"] == status)
        .collect();
    Ok(Json(json!({"silences": list})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SilenceBody {
    matchers: Vec<Matcher>,
    #[serde(default)]
    starts_at: Option<String>,
    #[serde(default)]
    ends_at: Option<String>,
    /// Instead of `ends_at`: how long from `starts_at` (e.g. `2h`).
    #[serde(default)]
    duration: Option<String>,
    created_by: String,
    #[serde(default)]
    comment: String,
}

/// `POST /alerts/silences`
async fn create_silence(State(shared): State<Arc<Shared>>, bytes: Bytes) -> Result<Response, ApiError> {
    let b: SilenceBody = body(&bytes)?;
    if b.matchers.is_empty() || b.matchers.len() > 32 {
        return Err(ApiError::bad_parameter(
            "matchers",
            "give 1 to 32 matchers ({\"name\", \"value\", \"op\"})",
        ));
    }
    for m in &b.matchers {
        text("matchers.name", &m.name, 128)?;
        m.validate().map_err(|e| ApiError::bad_parameter("matchers", e))?;
    }
    text("created_by", &b.created_by, 128)?;
    let now = now_us();
    let time = |key: &str, v: &str| {
        parse_rfc3339(v).ok_or_else(|| {
            ApiError::bad_parameter(key, format!("invalid {key} '{}' (expected an RFC 3339 time)", clip(v)))
        })
    };
    let starts = match &b.starts_at {
        Some(v) => time("starts_at", v)?,
        None => now,
    };
    let ends = match (&b.ends_at, &b.duration) {
        (Some(v), None) => time("ends_at", v)?,
        (None, Some(d)) => {
            starts
                + Dur::parse(d)
                    .map_err(|e| ApiError::bad_parameter("duration", format!("invalid duration: {e}")))?
                    .as_us()
        }
        _ => {
            return Err(ApiError::bad_parameter(
                "ends_at",
                "give exactly one of 'ends_at' (RFC 3339) or 'duration' (e.g. 2h)",
            ));
        }
    };
    if ends <= starts || ends <= now {
        return Err(ApiError::bad_parameter(
            "ends_at",
            "the silence must end after it starts and in the future",
        ));
    }
    let engine = engine(&shared)?;
    let id = {
        use sha2::Digest as _;
        let h = sha2::Sha256::digest(format!("{now}-{}-{:?}", b.created_by, std::thread::current().id()));
        h.iter().take(8).map(|x| format!("{x:02x}")).collect::<String>()
    };
    let s = Silence {
        id,
        matchers: b.matchers,
        starts_at_us: starts,
        ends_at_us: ends,
        created_by: b.created_by,
        comment: b.comment,
        created_at_us: now,
    };
    engine.store.add_silence(&s).await.map_err(|e| storage(&shared, e))?;
    Ok((StatusCode::CREATED, Json(silence_json(&s, now))).into_response())
}

/// `DELETE /alerts/silences/{id}`: expires the silence now.
async fn expire_silence(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let engine = engine(&shared)?;
    if !engine.store.expire_silence(&id, now_us()).await.map_err(|e| storage(&shared, e))? {
        return Err(ApiError::not_found(format!("no active or pending silence '{}'", clip(&id))));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /alerts/rules`
async fn rules(State(shared): State<Arc<Shared>>) -> Result<Response, ApiError> {
    let engine = engine(&shared)?;
    let rules = engine.rules().await.map_err(|e| storage(&shared, e))?;
    Ok(Json(json!({"rules": rules})).into_response())
}

async fn rule(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let engine = engine(&shared)?;
    let rules = engine.rules().await.map_err(|e| storage(&shared, e))?;
    match rules.into_iter().find(|r| r.rule.name == name) {
        Some(r) => Ok(Json(json!(r)).into_response()),
        None => Err(ApiError::not_found(format!("no rule '{}'", clip(&name)))),
    }
}

fn actor(headers: &HeaderMap) -> String {
    headers
        .get("x-context-user")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .unwrap_or("api")
        .to_owned()
}

fn parse_rule(bytes: &Bytes) -> Result<RuleConfig, ApiError> {
    let rule: RuleConfig = body(bytes)?;
    rule.validate().map_err(|e| ApiError::bad_parameter("body", e))?;
    Ok(rule)
}

/// `POST /alerts/rules`: creates a rule; 409 when the name is taken.
async fn create_rule(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let rule = parse_rule(&bytes)?;
    let engine = engine(&shared)?;
    let existing = engine.rules().await.map_err(|e| storage(&shared, e))?;
    if existing.iter().any(|r| r.rule.name == rule.name) {
        return Err(ApiError {
            status: StatusCode::CONFLICT,
            code: "conflict",
            message: format!("rule '{}' exists: change it with PUT {PREFIX}/rules/{}", rule.name, rule.name),
            parameter: Some("name".to_owned()),
        });
    }
    engine
        .store
        .put_rule(&rule.name, Some(&rule), &actor(&headers), now_us())
        .await
        .map_err(|e| storage(&shared, e))?;
    Ok((StatusCode::CREATED, Json(json!(rule))).into_response())
}

/// `PUT /alerts/rules/{name}`: creates or replaces (config rules too).
async fn put_rule(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let rule = parse_rule(&bytes)?;
    if rule.name != name {
        return Err(ApiError::bad_parameter(
            "name",
            format!("the body's name '{}' differs from the path's '{}'", clip(&rule.name), clip(&name)),
        ));
    }
    let engine = engine(&shared)?;
    engine
        .store
        .put_rule(&name, Some(&rule), &actor(&headers), now_us())
        .await
        .map_err(|e| storage(&shared, e))?;
    Ok(Json(json!(rule)).into_response())
}

/// `DELETE /alerts/rules/{name}`: deletes (a config rule stays deleted
/// until the API puts it back); its alerts resolve at the next evaluation.
async fn delete_rule(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let engine = engine(&shared)?;
    let existing = engine.rules().await.map_err(|e| storage(&shared, e))?;
    if !existing.iter().any(|r| r.rule.name == name) {
        return Err(ApiError::not_found(format!("no rule '{}'", clip(&name))));
    }
    engine.store.put_rule(&name, None, &actor(&headers), now_us()).await.map_err(|e| storage(&shared, e))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /alerts/channels`: every kind that can be configured (built-in and
/// external), the configured channels with their queues, refused libraries.
async fn channels(State(shared): State<Arc<Shared>>) -> Result<Response, ApiError> {
    let alerting = &shared.alerting;
    let mut configured = Vec::new();
    if let Some(engine) = &alerting.engine {
        for ch in &engine.channels {
            let depth = if shared.pipeline.storage_health.lock().ready {
                engine.store.pending_count(&ch.config.name).await.ok()
            } else {
                None
            };
            configured.push(json!({
                "name": ch.config.name, "kind": ch.config.kind, "severities": ch.config.severities,
                "match": ch.config.matchers, "send_resolved": ch.config.send_resolved, "pending": depth,
            }));
        }
    }
    Ok(Json(json!({"kinds": alerting.kinds, "channels": configured, "refused": alerting.refused}))
        .into_response())
}

/// `GET /alerts/dead-letters`: notifications given up on, newest first.
async fn dead_letters(
    State(shared): State<Arc<Shared>>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(q.as_deref(), &["limit"])?;
    let limit = params.integer("limit", 1, 10_000, 100)?;
    let engine = engine(&shared)?;
    let dead = engine.store.deliveries("dead", limit).await.map_err(|e| storage(&shared, e))?;
    let list: Vec<Json_> = dead
        .iter()
        .map(|d| {
            json!({
                "notification_id": d.notification_id, "channel": d.channel, "attempts": d.attempts,
                "created_at": format_rfc3339(d.created_at_us), "finished_at": d.finished_at_us.map(format_rfc3339),
                "last_error": d.last_error,
                "notification": serde_json::from_str::<Json_>(&d.payload).ok(),
            })
        })
        .collect();
    Ok(Json(json!({"dead_letters": list})).into_response())
}
