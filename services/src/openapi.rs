//! `GET /openapi.json`: the OpenAPI 3.1 description of every endpoint.

use serde_json::{Value, json};

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    })
}

fn json_response(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

/// The OpenAPI document.
pub fn document() -> Value {
    let code_param = json!([{
        "name": "code", "in": "path", "required": true,
        "description": "住民票コード (11 digits with check digit)",
        "schema": {"type": "string", "pattern": "^[0-9]{11}$"}
    }]);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "juki-node",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The jukinet node service (national, prefectural or CS server)."
        },
        "paths": {
            "/v1/updates": {"post": {
                "summary": "Accept one update or a batch (all-or-nothing) from the existing system (CS only)",
                "parameters": [
                    {"name": "Idempotency-Key", "in": "header", "required": true,
                     "schema": {"type": "string", "minLength": 1, "maxLength": 255}},
                    {"name": "traceparent", "in": "header", "required": false,
                     "description": "W3C trace context; each update becomes a child span",
                     "schema": {"type": "string"}}
                ],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/Update"},
                        {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/Update"}}
                    ]}}}},
                "responses": {
                    "201": json_response("Accepted (replayed with header Idempotent-Replayed: true)",
                        json!({"oneOf": [
                            {"$ref": "#/components/schemas/Accepted"},
                            {"type": "object", "properties": {"results": {"type": "array",
                                "items": {"$ref": "#/components/schemas/Accepted"}}}}
                        ]})),
                    "400": error_response("Malformed request"),
                    "403": error_response("Another municipality, or not a CS"),
                    "409": error_response("Conflicts with the resident's current state"),
                    "422": error_response("A field breaks a rule"),
                    "503": error_response("Database unavailable")
                }
            }},
            "/v1/residents/{code}": {"get": {
                "summary": "The current record of one of this CS's residents",
                "parameters": code_param,
                "responses": {
                    "200": json_response("The record", json!({"type": "object"})),
                    "404": error_response("Unknown resident")
                }
            }},
            "/v1/residents/{code}/history": {"get": {
                "summary": "The resident's change history, oldest first",
                "parameters": code_param,
                "responses": {
                    "200": json_response("The history", json!({"type": "object"})),
                    "404": error_response("Unknown resident")
                }
            }},
            "/v1/relay": {"post": {
                "summary": "A batch of updates from the node below, applied idempotently by (sender, seq)",
                "requestBody": {"required": true, "content": {"application/json": {"schema":
                    {"$ref": "#/components/schemas/RelayBatch"}}}},
                "responses": {
                    "200": json_response("Applied up to acked", json!({"type": "object", "properties": {
                        "acked": {"type": "integer"}, "applied": {"type": "integer"},
                        "duplicates": {"type": "integer"}}})),
                    "400": error_response("Malformed batch"),
                    "403": error_response("A CS takes no relays"),
                    "503": error_response("final_request_in_progress, or database unavailable")
                }
            }},
            "/admin/v1/final-request": {"post": {
                "summary": "Final request: stop taking relays from below, flush the outbox, wait for the upstream's confirmation",
                "parameters": [{"name": "timeoutSeconds", "in": "query", "required": false,
                    "schema": {"type": "integer", "minimum": 0}}],
                "responses": {"200": json_response("The final answer",
                    json!({"$ref": "#/components/schemas/FinalAnswer"}))}
            }},
            "/admin/v1/resume": {"post": {
                "summary": "Take relays from below again",
                "responses": {"200": json_response("Resumed", json!({"type": "object"}))}
            }},
            "/admin/v1/relay": {"get": {
                "summary": "The relay's state and the outbox",
                "responses": {"200": json_response("State", json!({"type": "object"}))}
            }},
            "/metrics": {"get": {
                "summary": "Prometheus metrics",
                "responses": {"200": {"description": "Prometheus text format",
                    "content": {"text/plain": {"schema": {"type": "string"}}}}}
            }},
            "/healthz": {"get": {
                "summary": "Liveness",
                "responses": {"200": json_response("Alive", json!({"type": "object"}))}
            }},
            "/readyz": {"get": {
                "summary": "Readiness: database reachable, migrations applied",
                "responses": {
                    "200": json_response("Ready", json!({"type": "object"})),
                    "503": error_response("Not ready")
                }
            }},
            "/openapi.json": {"get": {
                "summary": "This document",
                "responses": {"200": json_response("OpenAPI 3.1", json!({"type": "object"}))}
            }}
        },
        "components": {"schemas": {
            "Error": {"type": "object", "required": ["error", "message", "field"], "properties": {
                "error": {"type": "string", "description": "stable tag"},
                "message": {"type": "string"},
                "field": {"type": ["string", "null"]},
                "index": {"type": "integer", "description": "failing item of a batch"}
            }},
            "Update": {"type": "object",
                "required": ["resident_code", "name", "name_kana", "birth_date", "sex", "address",
                             "municipality_code", "reason", "change_date"],
                "properties": {
                    "resident_code": {"type": "string", "pattern": "^[0-9]{11}$"},
                    "individual_number": {"type": ["string", "null"], "pattern": "^[0-9]{12}$"},
                    "name": {"type": "string"},
                    "name_kana": {"type": "string"},
                    "former_surname": {"type": ["string", "null"]},
                    "alias": {"type": ["string", "null"]},
                    "birth_date": {"type": "string", "format": "date"},
                    "sex": {"enum": ["男", "女", "male", "female"]},
                    "address": {"type": "string"},
                    "municipality_code": {"type": "string", "pattern": "^[0-9]{6}$"},
                    "reason": {"enum": ["転入", "転出", "転居", "出生", "死亡", "職権修正",
                        "move_in", "move_out", "relocation", "birth", "death", "correction"]},
                    "change_date": {"type": "string", "format": "date"}
                }},
            "Accepted": {"type": "object", "properties": {
                "resident_code": {"type": "string"}, "reason": {"type": "string"},
                "status": {"enum": ["active", "moved_out", "deceased"]},
                "history_id": {"type": "integer"}, "outbox_seq": {"type": "integer"}
            }},
            "RelayBatch": {"type": "object", "required": ["sender", "items"], "properties": {
                "sender": {"type": "string", "maxLength": 64},
                "items": {"type": "array", "minItems": 1, "items": {"type": "object",
                    "required": ["seq", "payload"], "properties": {
                        "seq": {"type": "integer", "description": "the sender's outbox seq, strictly increasing"},
                        "payload": {"type": "object", "description": "envelope: origin sender and seq, update, traceparent"}
                    }}}
            }},
            "FinalAnswer": {"type": "object",
                "required": ["done", "lastSeq", "confirmedSeq", "heldForTomorrow"],
                "properties": {
                    "done": {"type": "boolean"},
                    "lastSeq": {"type": "integer"},
                    "confirmedSeq": {"type": "integer"},
                    "heldForTomorrow": {"type": "integer"},
                    "reason": {"type": "string"}
                }}
        }}
    })
}
