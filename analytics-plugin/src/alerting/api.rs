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

/// How far ahead a silence may reach.
const MAX_SILENCE_US: i64 = 366 * 86_400_000_000;

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

/// The alert routes for the host, each with its methods (the host answers
/// 405 with `Allow` from them); a prefix ending in `/` covers the paths
/// below it (`/alerts/{fingerprint}/ack`, `/rules/{name}`, `/silences/{id}`).
pub fn route_specs() -> Vec<plugin_api::RouteSpec> {
    [
        ("", &["GET"][..]),
        ("/", &["POST"][..]),
        ("/history", &["GET"][..]),
        ("/channels", &["GET"][..]),
        ("/dead-letters", &["GET"][..]),
        ("/silences", &["GET", "POST"][..]),
        ("/silences/", &["DELETE"][..]),
        ("/rules", &["GET", "POST"][..]),
        ("/rules/", &["GET", "PUT", "DELETE"][..]),
    ]
    .iter()
    .map(|(path, methods)| plugin_api::RouteSpec::new(&format!("{PREFIX}{path}"), methods))
    .collect()
}

async fn engine(shared: &Shared) -> Result<&Arc<Engine>, ApiError> {
    let engine = shared.alerting.engine.as_ref().ok_or_else(|| {
        ApiError::not_found("alerting is switched off ([plugins.analytics.config.alerting] enabled = false)")
    })?;
    crate::api::routes::storage_ready(shared).await?;
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
    let engine = engine(&shared).await?;
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
        text("rule", rule, 128)?;
    }
    let engine = engine(&shared).await?;
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
    let engine = engine(&shared).await?;
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
    let engine = engine(&shared).await?;
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
    if ends - now > MAX_SILENCE_US || starts - now > MAX_SILENCE_US {
        return Err(ApiError::bad_parameter("ends_at", "a silence starts and ends within a year from now"));
    }
    let engine = engine(&shared).await?;
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
    let engine = engine(&shared).await?;
    if !engine.store.expire_silence(&id, now_us()).await.map_err(|e| storage(&shared, e))? {
        return Err(ApiError::not_found(format!("no active or pending silence '{}'", clip(&id))));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /alerts/rules`
async fn rules(State(shared): State<Arc<Shared>>) -> Result<Response, ApiError> {
    let engine = engine(&shared).await?;
    let rules = engine.rules().await.map_err(|e| storage(&shared, e))?;
    Ok(Json(json!({"rules": rules})).into_response())
}

async fn rule(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let engine = engine(&shared).await?;
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
    let engine = engine(&shared).await?;
    let existing = engine.rules().await.map_err(|e| storage(&shared, e))?;
    if existing.iter().any(|r| r.rule.name == rule.name) {
        return Err(ApiError::conflict(
            "name",
            format!("rule '{}' exists: change it with PUT {PREFIX}/rules/{}", rule.name, rule.name),
        ));
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
    let engine = engine(&shared).await?;
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
    let engine = engine(&shared).await?;
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
    let engine = engine(&shared).await?;
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

/// The alert routes' part of the OpenAPI document.
pub fn openapi_paths() -> serde_json::Map<String, Json_> {
    use super::{channel::Severity, config::Measure};
    let severities: Vec<&str> = Severity::ALL.iter().map(|s| s.as_str()).collect();
    let measures: Vec<&str> = Measure::ALL.iter().map(|m| m.name()).collect();
    let duration = json!({"type": "string", "pattern": "^([0-9]+(ms|s|m|h|d|w))+$", "description": "e.g. 30s, 5m, 1h30m"});
    let time = json!({"type": "string", "format": "date-time"});
    let labels = json!({"type": "object", "additionalProperties": {"type": "string"}});
    let name = json!({"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,128}$"});
    let rule = json!({
        "type": "object", "additionalProperties": false,
        "description": "An alert rule. Between fields: percentile is for search_latency only; op anomalous is for request_rate only and takes no threshold, other ops need one; window is 1s to 7d, for, keep_firing_for and repeat_interval at most 365d; per_project is not for cpu and resident_memory; label and annotation keys are A-Z a-z 0-9 _, and labels do not set alertname, severity or project.",
        "required": ["name", "measure", "op", "severity"],
        "properties": {
            "name": name, "measure": {"type": "string", "enum": measures},
            "percentile": {"type": "number", "exclusiveMinimum": true, "minimum": 0, "exclusiveMaximum": true, "maximum": 100,
                "description": "search_latency only; default 95"},
            "window": duration, "op": {"type": "string", "enum": [">", ">=", "<", "<=", "anomalous"]},
            "threshold": {"type": "number", "description": "required unless op is anomalous (request_rate only)"},
            "for": duration, "keep_firing_for": duration, "severity": {"type": "string", "enum": severities},
            "min_samples": {"type": "integer", "minimum": 0}, "per_project": {"type": "boolean"},
            "labels": labels, "annotations": labels, "repeat_interval": duration, "enabled": {"type": "boolean"},
        },
    });
    let mut listed_rule = rule.clone();
    listed_rule["additionalProperties"] = json!(true);
    listed_rule["properties"]["source"] = json!({"type": "string", "enum": ["config", "api"]});
    let nullable = |t: &str| json!({"type": t, "nullable": true});
    let alert = json!({
        "type": "object",
        "required": ["fingerprint", "rule", "severity", "state", "labels", "annotations", "value", "threshold", "active_since", "acknowledgement", "silenced_by"],
        "properties": {
            "fingerprint": {"type": "string"}, "rule": {"type": "string"},
            "severity": {"type": "string", "enum": severities}, "state": {"type": "string", "enum": ["pending", "firing"]},
            "labels": labels, "annotations": labels, "value": nullable("number"), "threshold": nullable("number"),
            "active_since": time, "fired_at": {"type": "string", "format": "date-time", "nullable": true},
            "last_notified_at": {"type": "string", "format": "date-time", "nullable": true},
            "repeats": {"type": "integer", "minimum": 0},
            "acknowledgement": {"type": "object", "nullable": true, "properties": {"by": {"type": "string"}, "at": time, "comment": {"type": "string"}}},
            "silenced_by": {"type": "array", "items": {"type": "string"}},
        },
    });
    let matcher = json!({
        "type": "object", "additionalProperties": false, "required": ["name", "value"],
        "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "\\S"}, "value": {"type": "string", "description": "a regular expression matching the whole value with =~ and !~"},
            "op": {"type": "string", "enum": ["=", "!=", "=~", "!~"], "default": "="}},
    });
    let silence = json!({
        "type": "object", "required": ["id", "matchers", "status", "starts_at", "ends_at", "created_by", "comment", "created_at"],
        "properties": {"id": {"type": "string"}, "matchers": {"type": "array", "items": matcher},
            "status": {"type": "string", "enum": ["pending", "active", "expired"]}, "starts_at": time, "ends_at": time,
            "created_by": {"type": "string"}, "comment": {"type": "string"}, "created_at": time},
    });
    let err = |r: &str| json!({"$ref": format!("#/components/responses/{r}")});
    let error_schema = json!({"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}});
    let not_found = json!({"description": "no such alert, rule or silence, or alerting is switched off", "content": error_schema});
    let conflict = json!({"description": "a rule of that name exists", "content": error_schema});
    let ok = |d: &str, schema: Json_| json!({"description": d, "content": {"application/json": {"schema": schema}}});
    let query = |n: &str, d: &str, s: Json_| json!({"name": n, "in": "query", "required": false, "description": d, "schema": s});
    let path = |n: &str| json!({"name": n, "in": "path", "required": true, "schema": {"type": "string", "minLength": 1}});
    let rule_name = json!({"name": "name", "in": "path", "required": true, "schema": name.clone()});
    let op = |summary: &str, params: Vec<Json_>, body: Option<Json_>, responses: Json_| {
        let mut o = json!({"summary": summary, "parameters": params, "security": [{"bearer": []}, {}], "responses": responses});
        if let Some(b) = body {
            o["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": b}}});
        }
        o
    };
    let sev_param = query(
        "severity",
        "only this severity",
        json!({"type": "string", "enum": ["any", "info", "warning", "error", "critical"], "default": "any"}),
    );
    let mut paths = serde_json::Map::new();
    paths.insert(PREFIX.into(), json!({"get": op(
        "Pending and firing alerts",
        vec![
            query("state", "only this state", json!({"type": "string", "enum": ["any", "pending", "firing"], "default": "any"})),
            sev_param.clone(),
            json!({"$ref": "#/components/parameters/project"}),
            query("fingerprint", "one alert", json!({"type": "string"})),
        ],
        None,
        json!({"200": ok("alerts", json!({"type": "object", "required": ["alerts", "leader"], "properties": {
            "alerts": {"type": "array", "items": alert}, "leader": {"type": "boolean"}, "last_evaluation": {}}})),
            "400": err("BadRequest"), "401": err("Unauthorized"), "404": not_found.clone(), "503": err("Unavailable")}),
    )}));
    paths.insert(format!("{PREFIX}/history"), json!({"get": op(
        "Alert history: pending, firing, notified, repeat, silenced, acknowledged, resolved, inactive",
        vec![
            query("rule", "one rule", json!({"type": "string", "minLength": 1, "maxLength": 128})),
            sev_param,
            json!({"$ref": "#/components/parameters/project"}),
            json!({"$ref": "#/components/parameters/timerange"}),
            json!({"$ref": "#/components/parameters/from"}),
            json!({"$ref": "#/components/parameters/to"}),
            query("limit", "newest first", json!({"type": "integer", "minimum": 1, "maximum": 10000, "default": 500})),
        ],
        None,
        json!({"200": ok("events", json!({"type": "object", "required": ["range", "events"], "properties": {
            "range": {"type": "object"}, "events": {"type": "array", "items": {"type": "object", "required": ["time", "fingerprint", "rule", "severity", "event"]}}}})),
            "400": err("BadRequest"), "401": err("Unauthorized"), "404": not_found.clone(), "503": err("Unavailable")}),
    )}));
    paths.insert(format!("{PREFIX}/{{fingerprint}}/ack"), json!({"post": op(
        "Acknowledge a firing alert (admin): no repeats until it resolves",
        vec![path("fingerprint")],
        Some(json!({"type": "object", "additionalProperties": false, "required": ["by"], "properties": {
            "by": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "\\S"}, "comment": {"type": "string", "maxLength": 1000}}})),
        json!({"200": ok("the acknowledgement", json!({"type": "object", "required": ["fingerprint", "acknowledgement"]})),
            "400": err("BadRequest"), "401": err("Unauthorized"), "403": err("Forbidden"), "404": not_found.clone(), "503": err("Unavailable")}),
    )}));
    paths.insert(format!("{PREFIX}/silences"), json!({
        "get": op("Silences", vec![query("status", "only this status", json!({"type": "string", "enum": ["any", "active", "pending", "expired"], "default": "any"}))], None,
            json!({"200": ok("silences", json!({"type": "object", "required": ["silences"], "properties": {"silences": {"type": "array", "items": silence}}})),
                "400": err("BadRequest"), "401": err("Unauthorized"), "404": not_found.clone(), "503": err("Unavailable")})),
        "post": op("Create a silence (admin): matching alerts are not notified while it is active. Give exactly one of ends_at or duration; it ends after it starts, in the future and within a year", vec![],
            Some(json!({"type": "object", "additionalProperties": false, "required": ["matchers", "created_by"], "properties": {
                "matchers": {"type": "array", "minItems": 1, "maxItems": 32, "items": matcher},
                "starts_at": time, "ends_at": time, "duration": duration,
                "created_by": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "\\S"}, "comment": {"type": "string"}}})),
            json!({"201": ok("the silence", silence), "400": err("BadRequest"), "401": err("Unauthorized"), "403": err("Forbidden"),
                "404": not_found.clone(), "503": err("Unavailable")})),
    }));
    paths.insert(format!("{PREFIX}/silences/{{id}}"), json!({"delete": op(
        "Expire a silence now (admin)", vec![path("id")], None,
        json!({"204": {"description": "expired"}, "401": err("Unauthorized"), "403": err("Forbidden"), "404": not_found.clone(), "503": err("Unavailable")}),
    )}));
    let rule_responses = |code: &str| {
        let mut r = json!({"400": err("BadRequest"), "401": err("Unauthorized"), "403": err("Forbidden"), "404": not_found.clone(), "503": err("Unavailable")});
        r[code] = ok("the rule", rule.clone());
        r
    };
    let mut create = rule_responses("201");
    create["409"] = conflict;
    paths.insert(format!("{PREFIX}/rules"), json!({
        "get": op("Rules in force (config rules with API changes applied)", vec![], None,
            json!({"200": ok("rules", json!({"type": "object", "required": ["rules"], "properties": {"rules": {"type": "array", "items": listed_rule}}})),
                "401": err("Unauthorized"), "404": not_found.clone(), "503": err("Unavailable")})),
        "post": op("Create a rule (admin); stored, survives restarts", vec![], Some(rule.clone()), create),
    }));
    paths.insert(format!("{PREFIX}/rules/{{name}}"), json!({
        "get": op("One rule", vec![rule_name.clone()], None,
            json!({"200": ok("the rule", listed_rule), "401": err("Unauthorized"), "404": not_found.clone(), "503": err("Unavailable")})),
        "put": op("Create or replace a rule (admin), config rules included; the body's name is the path's", vec![rule_name.clone()], Some(rule.clone()), rule_responses("200")),
        "delete": op("Delete a rule (admin); its alerts resolve at the next evaluation", vec![rule_name], None,
            json!({"204": {"description": "deleted"}, "401": err("Unauthorized"), "403": err("Forbidden"), "404": not_found.clone(), "503": err("Unavailable")})),
    }));
    paths.insert(format!("{PREFIX}/channels"), json!({"get": op(
        "Channel kinds (built-in and external .so), configured channels and their queues, refused libraries", vec![], None,
        json!({"200": ok("channels", json!({"type": "object", "required": ["kinds", "channels", "refused"], "properties": {
            "kinds": {"type": "array", "items": {"type": "object", "required": ["kind", "description", "source"], "properties": {
                "kind": {"type": "string"}, "description": {"type": "string"}, "source": {"type": "string", "enum": ["builtin", "external"]}, "path": {"type": "string"}}}},
            "channels": {"type": "array", "items": {"type": "object"}}, "refused": {"type": "array", "items": {"type": "string"}}}})),
            "401": err("Unauthorized")}),
    )}));
    paths.insert(format!("{PREFIX}/dead-letters"), json!({"get": op(
        "Notifications given up on, newest first",
        vec![query("limit", "at most", json!({"type": "integer", "minimum": 1, "maximum": 10000, "default": 100}))], None,
        json!({"200": ok("dead letters", json!({"type": "object", "required": ["dead_letters"], "properties": {"dead_letters": {"type": "array", "items": {"type": "object"}}}})),
            "400": err("BadRequest"), "401": err("Unauthorized"), "404": not_found, "503": err("Unavailable")}),
    )}));
    paths
}
