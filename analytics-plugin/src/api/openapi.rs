//! The OpenAPI 3 document of the analytics API, served at
//! `/api/v1/analytics/openapi.json`. It is written beside the routes and
//! checked against them by a fuzzer (schemathesis) in the test command.

use serde_json::{Value, json};

use super::{
    export::{FORMATS, RAW_DATASETS},
    params::{AGGREGATIONS, TIMERANGES},
    routes::DATASETS,
};

fn param(name: &str, description: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema})
}

fn range_params() -> Vec<Value> {
    vec![
        json!({"$ref": "#/components/parameters/timerange"}),
        json!({"$ref": "#/components/parameters/from"}),
        json!({"$ref": "#/components/parameters/to"}),
        json!({"$ref": "#/components/parameters/step"}),
        json!({"$ref": "#/components/parameters/project"}),
    ]
}

fn num() -> Value {
    json!({"type": "number", "nullable": true})
}

fn int() -> Value {
    json!({"type": "integer", "minimum": 0})
}

fn obj(required: &[&str], properties: Value) -> Value {
    json!({"type": "object", "required": required, "properties": properties})
}

/// The hooks' crash-safe queue, as health reports it.
fn queue_schema() -> Value {
    let count = |d: &str| json!({"type": "integer", "minimum": 0, "description": d});
    obj(
        &[
            "depth",
            "capacity",
            "file",
            "file_bytes",
            "used_bytes",
            "recovered_events",
            "torn_records",
            "corrupt_records",
            "header_reset",
            "survived",
            "journal_events",
            "journal_skipped",
        ],
        json!({
            "depth": count("events waiting for the writer"),
            "capacity": count("events the queue holds at most (pipeline.queue_capacity)"),
            "file": {"type": "string", "description": "the shared mapping that holds the queue (pipeline.queue_dir)"},
            "file_bytes": count("size of that file"),
            "used_bytes": count("bytes of it holding events not yet committed"),
            "recovered_events": count("events an earlier run left in the file, found at start"),
            "torn_records": count("records an earlier run died writing, skipped at start"),
            "corrupt_records": count("records whose checksum or encoding was wrong, skipped at start"),
            "header_reset": {"type": "boolean", "description": "the file's header was unreadable at start: it was set aside as *.corrupt"},
            "survived": {"type": "boolean", "description": "the queue found at start was kept (same machine boot)"},
            "journal_events": count("events recovered from the on-disk journal at start (the queue was lost with a reboot)"),
            "journal_skipped": count("torn or corrupt journal records skipped at start"),
        }),
    )
}

fn range_schema() -> Value {
    obj(
        &["from", "to", "step_seconds", "source"],
        json!({
            "from": {"type": "string", "format": "date-time"},
            "to": {"type": "string", "format": "date-time"},
            "step_seconds": {"type": "integer", "minimum": 60},
            "source": {"type": "string", "enum": ["raw", "1m", "1h", "1d"]},
        }),
    )
}

fn get(summary: &str, description: &str, params: Vec<Value>, schema: Value) -> Value {
    json!({"get": {
        "summary": summary,
        "description": description,
        "parameters": params,
        "security": [{"bearer": []}, {}],
        "responses": {
            "200": {"description": "the dataset", "content": {"application/json": {"schema": schema}}},
            "400": {"$ref": "#/components/responses/BadRequest"},
            "401": {"$ref": "#/components/responses/Unauthorized"},
            "503": {"$ref": "#/components/responses/Unavailable"},
        },
    }})
}

fn layer() -> Value {
    obj(&["hits", "lookups", "hit_rate"], json!({"hits": int(), "lookups": int(), "hit_rate": num()}))
}

fn layers() -> Value {
    obj(&["l1", "l2", "l3", "any"], json!({"l1": layer(), "l2": layer(), "l3": layer(), "any": layer()}))
}

fn files() -> Value {
    obj(
        &["files", "errors", "skipped", "error_rate", "files_per_second", "bytes", "duration_ms"],
        json!({
            "files": int(), "errors": int(), "skipped": int(), "error_rate": num(),
            "files_per_second": {"type": "number"}, "bytes": int(),
            "duration_ms": obj(&["avg", "max"], json!({"avg": num(), "max": num()})),
        }),
    )
}

fn with(mut schema: Value, key: &str, property: Value) -> Value {
    schema["required"].as_array_mut().expect("an object schema").push(json!(key));
    schema["properties"][key] = property;
    schema
}

fn project_field() -> Value {
    json!({"type": "string", "nullable": true})
}

pub fn document() -> Value {
    let latency_all = obj(
        &["avg", "min", "max", "p50", "p95", "p99", "count", "sum"],
        json!({"avg": num(), "min": num(), "max": num(), "p50": num(), "p95": num(), "p99": num(), "count": int(), "sum": num()}),
    );
    let search_performance = obj(
        &["range", "project", "aggregation", "buckets", "summary"],
        json!({
            "range": range_schema(),
            "project": project_field(),
            "aggregation": {"type": "string", "enum": AGGREGATIONS},
            "buckets": {"type": "array", "items": obj(
                &["time", "requests", "errors", "zero_results", "avg_results", "latency_ms"],
                json!({
                    "time": {"type": "string", "format": "date-time"},
                    "requests": int(), "errors": int(), "zero_results": int(), "avg_results": num(),
                    "latency_ms": num(),
                }),
            )},
            "summary": obj(
                &["requests", "errors", "error_rate", "zero_results", "zero_result_rate", "avg_results", "latency_ms"],
                json!({
                    "requests": int(), "errors": int(), "error_rate": num(), "zero_results": int(),
                    "zero_result_rate": num(), "avg_results": num(), "latency_ms": latency_all,
                }),
            ),
        }),
    );
    let cache_performance = obj(
        &["range", "project", "buckets", "overall", "projects"],
        json!({
            "range": range_schema(),
            "project": project_field(),
            "buckets": {"type": "array", "items": obj(&["time", "layers"], json!({"time": {"type": "string", "format": "date-time"}, "layers": layers()}))},
            "overall": layers(),
            "projects": {"type": "array", "items": obj(&["project", "layers"], json!({"project": {"type": "string"}, "layers": layers()}))},
        }),
    );
    let index_performance = obj(
        &["range", "project", "buckets", "summary", "by_file_type", "projects"],
        json!({
            "range": range_schema(),
            "project": project_field(),
            "buckets": {"type": "array", "items": with(files(), "time", json!({"type": "string", "format": "date-time"}))},
            "summary": files(),
            "by_file_type": {"type": "array", "items": with(files(), "file_type", json!({"type": "string"}))},
            "projects": {"type": "array", "items": with(files(), "project", json!({"type": "string"}))},
        }),
    );
    let path_count = |key: &str| json!({"type": "array", "items": obj(&["path", key], json!({"path": {"type": "string"}, key: int()}))});
    let usage = obj(
        &[
            "range",
            "project",
            "active_users",
            "buckets",
            "queries_per_user",
            "top_users",
            "top_returned_files",
            "top_opened_files",
            "heatmap",
        ],
        json!({
            "range": range_schema(),
            "project": project_field(),
            "active_users": int(),
            "buckets": {"type": "array", "items": obj(&["time", "active_users"], json!({"time": {"type": "string", "format": "date-time"}, "active_users": int()}))},
            "queries_per_user": {"type": "array", "items": obj(&["min_queries", "max_queries", "users"], json!({"min_queries": int(), "max_queries": {"type": "integer", "nullable": true}, "users": int()}))},
            "top_users": {"type": "array", "items": obj(&["user", "queries"], json!({"user": {"type": "string", "description": "as stored: an HMAC hash when privacy.user_ids = hashed"}, "queries": int()}))},
            "top_returned_files": path_count("returned"),
            "top_opened_files": path_count("opens"),
            "heatmap": obj(&["rows", "columns", "searches"], json!({
                "rows": {"type": "string"}, "columns": {"type": "string"},
                "searches": {"type": "array", "minItems": 7, "maxItems": 7, "items": {"type": "array", "minItems": 24, "maxItems": 24, "items": int()}},
            })),
        }),
    );
    let top_queries = obj(
        &["range", "project", "zero_results", "limit", "queries"],
        json!({
            "range": range_schema(),
            "project": project_field(),
            "zero_results": {"type": "boolean"},
            "limit": {"type": "integer", "minimum": 1, "maximum": 1000},
            "queries": {"type": "array", "items": obj(
                &["query", "count", "avg_latency_ms", "avg_results", "zero_result_rate", "click_through_rate"],
                json!({
                    "query": {"type": "string", "description": "as stored: an HMAC hash when privacy.queries = hashed"},
                    "count": int(), "avg_latency_ms": num(), "avg_results": num(),
                    "zero_result_rate": num(), "click_through_rate": num(),
                }),
            )},
        }),
    );
    let code_health = obj(
        &["range", "project", "projects"],
        json!({
            "range": range_schema(),
            "project": project_field(),
            "projects": {"type": "array", "items": {"type": "object", "required": ["project", "trend"], "properties": {
                "project": {"type": "string"},
                "total_files": int(), "indexed_files": int(), "index_coverage": num(), "duplication_ratio": num(),
                "files_seen": int(),
                "dead_code": obj(&["files", "ratio", "page", "page_size", "paths"], json!({
                    "files": int(), "ratio": num(), "page": {"type": "integer", "minimum": 1},
                    "page_size": {"type": "integer", "minimum": 1}, "paths": {"type": "array", "items": {"type": "string"}},
                })),
                "hot_spots": obj(&["factor", "average_accesses", "files"], json!({
                    "factor": {"type": "number"}, "average_accesses": num(),
                    "files": {"type": "array", "items": obj(&["path", "accesses"], json!({"path": {"type": "string"}, "accesses": int()}))},
                })),
                "trend": {"type": "array", "items": obj(
                    &["time", "index_coverage", "dead_files", "dead_code_ratio", "hot_spots"],
                    json!({"time": {"type": "string", "format": "date-time"}, "index_coverage": num(), "dead_files": int(), "dead_code_ratio": num(), "hot_spots": int()}),
                )},
            }}},
        }),
    );
    let mut export_datasets: Vec<&str> = DATASETS.to_vec();
    export_datasets.extend(RAW_DATASETS);
    let limit = json!({"$ref": "#/components/parameters/limit"});
    let mut paths = serde_json::Map::new();
    let routes = [
        (
            "search-performance",
            "Search latency, throughput, errors and zero-result searches",
            search_performance,
            vec![json!({"$ref": "#/components/parameters/aggregation"})],
        ),
        (
            "cache-performance",
            "Hit rate per cache layer over time, overall and per project",
            cache_performance,
            vec![],
        ),
        (
            "index-performance",
            "Files indexed, errors, throughput and duration, by file type and project",
            index_performance,
            vec![],
        ),
        (
            "usage",
            "Active users, queries per user, top users and files, hour-of-week heatmap",
            usage,
            vec![limit.clone()],
        ),
        (
            "top-queries",
            "Most frequent queries, or the most frequent that found nothing",
            top_queries,
            vec![
                limit.clone(),
                param(
                    "zero_results",
                    "only searches that found nothing",
                    json!({"type": "boolean", "default": false}),
                ),
            ],
        ),
        (
            "code-health",
            "Coverage, dead code, hot spots and duplication per project",
            code_health,
            vec![
                param(
                    "hot_spot_factor",
                    "a hot spot is accessed more than this many times the project average",
                    json!({"type": "number", "minimum": 1, "maximum": 1000}),
                ),
                param(
                    "page",
                    "page of the dead-code list",
                    json!({"type": "integer", "minimum": 1, "maximum": 1_000_000, "default": 1}),
                ),
                param(
                    "page_size",
                    "dead-code paths per page",
                    json!({"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}),
                ),
            ],
        ),
    ];
    for (name, summary, schema, extra) in routes {
        let mut params = range_params();
        params.extend(extra);
        paths.insert(format!("/api/v1/analytics/{name}"), get(summary, summary, params, schema));
    }
    let mut export_params = vec![
        param(
            "dataset",
            "what to export; raw-* need the admin role when tokens are configured",
            json!({"type": "string", "enum": export_datasets}),
        ),
        param("format", "file format", json!({"type": "string", "enum": FORMATS, "default": "csv"})),
    ];
    export_params[0]["required"] = json!(true);
    export_params.extend(range_params());
    export_params.push(json!({"$ref": "#/components/parameters/aggregation"}));
    export_params.push(limit);
    export_params.push(param(
        "zero_results",
        "top-queries only",
        json!({"type": "boolean", "default": false}),
    ));
    export_params.push(param(
        "hot_spot_factor",
        "code-health only",
        json!({"type": "number", "minimum": 1, "maximum": 1000}),
    ));
    export_params.push(param(
        "page",
        "code-health only",
        json!({"type": "integer", "minimum": 1, "maximum": 1_000_000, "default": 1}),
    ));
    export_params.push(param(
        "page_size",
        "code-health only",
        json!({"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}),
    ));
    paths.insert("/api/v1/analytics/export".into(), json!({"get": {
        "summary": "Export a dataset or raw events",
        "description": "Streams the rows of a dataset, or raw events page by page in constant memory, with a Content-Disposition file name. Dataset parameters apply only to their dataset.",
        "parameters": export_params,
        "security": [{"bearer": []}, {}],
        "responses": {
            "200": {
                "description": "the file",
                "headers": {"Content-Disposition": {"schema": {"type": "string"}}},
                "content": {
                    "text/csv": {"schema": {"type": "string"}},
                    "application/x-ndjson": {"schema": {"type": "string"}},
                    "application/json": {"schema": {}},
                },
            },
            "400": {"$ref": "#/components/responses/BadRequest"},
            "401": {"$ref": "#/components/responses/Unauthorized"},
            "403": {"$ref": "#/components/responses/Forbidden"},
            "503": {"$ref": "#/components/responses/Unavailable"},
        },
    }}));
    paths.insert("/api/v1/analytics/health".into(), json!({"get": {
        "summary": "Plugin and storage health",
        "security": [{"bearer": []}, {}],
        "responses": {
            "200": {"description": "health", "content": {"application/json": {"schema": obj(
                &["status", "version", "interface_version", "instance_id", "uptime_seconds", "events", "queue", "storage"],
                json!({
                    "status": {"type": "string", "enum": ["starting", "ok", "degraded"]},
                    "reason": {"type": "string", "nullable": true},
                    "version": {"type": "string"}, "interface_version": {"type": "string"},
                    "instance_id": {"type": "string"}, "uptime_seconds": {"type": "number"},
                    "events": {"type": "object"}, "queue": queue_schema(), "storage": {"type": "object"},
                }),
            )}}},
            "401": {"$ref": "#/components/responses/Unauthorized"},
        },
    }}));
    paths.insert("/api/v1/analytics/openapi.json".into(), json!({"get": {
        "summary": "This document",
        "security": [{"bearer": []}, {}],
        "responses": {
            "200": {"description": "OpenAPI 3 document", "content": {"application/json": {"schema": {"type": "object"}}}},
            "401": {"$ref": "#/components/responses/Unauthorized"},
        },
    }}));
    paths.extend(crate::alerting::api::openapi_paths());
    paths.insert(super::live::LIVE_PATH.into(), super::live::openapi());
    let error_response = |description: &str| json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let mut unavailable = error_response(
        "the analytics database is still opening at start-up (code `starting`, Retry-After: 1) or unreachable (code `storage_unavailable`, Retry-After: 5; the message says why)",
    );
    unavailable["headers"] = json!({"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}});
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "context-analytics",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Search analytics of the Context code-search server. Times are RFC 3339 (UTC); ranges are aligned to whole steps. Every error has the shape {\"error\": {\"code\", \"message\", \"parameter\"}}.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "only when [auth] tokens are configured"}},
            "parameters": {
                "timerange": param("timerange", "a range ending now; default 24h; not with from/to", json!({"type": "string", "enum": TIMERANGES.map(|t| t.0)})),
                "from": param("from", "start (RFC 3339), with to", json!({"type": "string", "format": "date-time"})),
                "to": param("to", "end (RFC 3339), after from", json!({"type": "string", "format": "date-time"})),
                "step": param("step", "bucket length: whole minutes, hours or days (1m, 5m, 1h, 6h, 1d); at most 5000 buckets; default by range", json!({"type": "string", "pattern": "^[1-9][0-9]{0,3}[mhd]$"})),
                "project": param("project", "one project; default all", json!({"type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]+$"})),
                "aggregation": param("aggregation", "latency per bucket", json!({"type": "string", "enum": AGGREGATIONS, "default": "avg"})),
                "limit": param("limit", "rows in each top list", json!({"type": "integer", "minimum": 1, "maximum": 1000, "default": 20})),
            },
            "schemas": {
                "Error": obj(&["error"], json!({"error": obj(&["code", "message", "parameter"], json!({
                    "code": {"type": "string"}, "message": {"type": "string"},
                    "parameter": {"type": "string", "nullable": true},
                }))})),
            },
            "responses": {
                "BadRequest": error_response("a parameter is wrong: the message quotes it and lists what is allowed"),
                "Unauthorized": error_response("a bearer token is needed, or the one sent is unknown"),
                "Forbidden": error_response("the token's role is not enough (raw exports need admin)"),
                "Unavailable": unavailable,
            },
        },
    })
}
