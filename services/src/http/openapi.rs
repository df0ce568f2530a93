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
    let mut doc = base_document();
    for more in [provision_paths(), delivery_paths()] {
        if let (Some(paths), Value::Object(more)) = (doc["paths"].as_object_mut(), more) {
            paths.extend(more);
        }
    }
    doc
}

/// The provision endpoints (a separate literal: one `json!` of every path exceeds the macro
/// recursion limit).
fn provision_paths() -> Value {
    json!({
            "/v1/agency/queries": {"post": {
                "summary": "An agency's identity query by resident-record code or by the four items (national and prefectural servers); only (agency, affair) pairs on the allow-list, only the items the affair allows; every query is in the provision log",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["affair", "reason", "by"], "additionalProperties": false,
                    "properties": {
                        "affair": {"type": "string", "minLength": 1, "maxLength": 128},
                        "reason": {"type": "string", "minLength": 1, "maxLength": 500},
                        "by": {"oneOf": [
                            {"type": "object", "required": ["resident_code"], "additionalProperties": false,
                             "properties": {"resident_code": {"type": "string", "pattern": "^[0-9]{11}$"}}},
                            {"type": "object", "required": ["name", "birth_date", "sex", "address"], "additionalProperties": false,
                             "properties": {"name": {"type": "string"}, "birth_date": {"type": "string", "format": "date"},
                                "sex": {"enum": ["male", "female", "男", "女"]}, "address": {"type": "string"}}}
                        ]}
                    }}}}},
                "responses": {
                    "200": json_response("Provided: {provision_id, affair, record} with the allowed items only",
                        json!({"type": "object"})),
                    "400": error_response("Malformed request"),
                    "401": error_response("No agency certificate"),
                    "403": error_response("Not an agency, or the (agency, affair) pair is not on the allow-list (logged)"),
                    "404": error_response("No resident matches (logged)"),
                    "409": error_response("The four items match more than one resident (logged)"),
                    "422": error_response("A field breaks a rule")
                }
            }},
            "/v1/disclosures": {"post": {
                "summary": "開示: a resident's own record here and every provision about them, asked at a municipality (national and prefectural servers; logged)",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["resident_code"], "additionalProperties": false,
                    "properties": {"resident_code": {"type": "string", "pattern": "^[0-9]{11}$"}}}}}},
                "responses": {
                    "200": json_response("{disclosure_id, record, provisions}", json!({"type": "object"})),
                    "400": error_response("Malformed request"),
                    "401": error_response("No municipality certificate"),
                    "403": error_response("Not a municipality (of this prefecture)"),
                    "404": error_response("No such resident here"),
                    "422": error_response("A field breaks a rule")
                }
            }}
    })
}

/// The file delivery endpoints.
fn delivery_paths() -> Value {
    let sha_param = json!({
        "name": "sha256", "in": "path", "required": true,
        "description": "The content's sha256 (64 lowercase hex digits)",
        "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"}
    });
    let range_param = json!({
        "name": "Range", "in": "header", "required": false,
        "description": "bytes=FIRST-[LAST] or bytes=-SUFFIX; other forms are ignored",
        "schema": {"type": "string"}
    });
    let held = json!({"type": "array", "items": {"type": "object", "properties": {
        "sha256": {"type": "string"}, "bytes": {"type": "integer"}}}});
    json!({
        "/v1/deliveries/content/{sha256}": {"get": {
            "summary": "Delivered content, for the tier below (a prefecture's CSs, the national server's prefectures) and the operator; supports a single Range",
            "parameters": [sha_param.clone(), range_param],
            "responses": {
                "200": {"description": "The whole content", "content": {"application/octet-stream": {}}},
                "206": {"description": "The range asked for, with Content-Range", "content": {"application/octet-stream": {}}},
                "400": error_response("Malformed sha256"),
                "404": error_response("This node does not hold the content"),
                "416": error_response("The range starts past the end (Content-Range: bytes */SIZE)")
            }
        }},
        "/admin/v1/deliveries/content/{sha256}": {"put": {
            "summary": "Give this node (the national server) content; kept only when its sha256 is the one in the path (operator only)",
            "parameters": [sha_param],
            "requestBody": {"required": true, "content": {"application/octet-stream": {}}},
            "responses": {
                "200": json_response("Held already: {sha256, bytes, alreadyPresent: true}", json!({"type": "object"})),
                "201": json_response("Stored and verified: {sha256, bytes, alreadyPresent: false}", json!({"type": "object"})),
                "400": error_response("Malformed sha256, or the content is too large"),
                "422": error_response("The body's sha256 is another; nothing was kept")
            }
        }},
        "/admin/v1/deliveries/fetch": {"post": {
            "summary": "Fetch content from the upstream node (resuming a partial download), verify it, and stage it as a named file for the next start; the national server stages content uploaded to it (operator only)",
            "requestBody": {"required": true, "content": {"application/json": {"schema": {
                "type": "object", "required": ["sha256"], "additionalProperties": false,
                "properties": {
                    "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                    "file": {"type": ["string", "null"], "pattern": "^[a-z0-9_-][a-z0-9._-]{0,63}$",
                             "description": "Stage as the next version of this file (e.g. allow-list)"},
                    "signature": {"type": ["string", "null"], "pattern": "^[0-9a-f]{128}$",
                                  "description": "Ed25519 signature of `jukinet-delivery-v1\\n<file>\\n<sha256>` by a trusted key (needed to stage on a node with delivery keys)"}
                }}}}},
            "responses": {
                "200": json_response("{sha256, bytes, alreadyPresent, resumedFrom, staged}", json!({"type": "object"})),
                "400": error_response("Malformed request; bad_signature: the node has delivery keys and the signature is missing or not by one of them (nothing fetched)"),
                "404": error_response("At the national server: the content was not uploaded"),
                "409": error_response("The same content is being fetched already"),
                "502": error_response("The upstream failed: upstream_unavailable, upstream_missing, upstream_refused, truncated (kept to resume) or digest_mismatch (removed)"),
                "503": error_response("No upstream or no delivery directory")
            }
        }},
        "/admin/v1/deliveries": {"get": {
            "summary": "What this node holds: content, partial downloads, staged files, applied files with current and previous versions (operator only)",
            "responses": {
                "200": json_response("{content, partial, staged, files}", json!({"type": "object", "properties": {
                    "content": held, "partial": held,
                    "staged": {"type": "array", "items": {"type": "object"}},
                    "files": {"type": "array", "items": {"type": "object"}}}}))
            }
        }},
        "/admin/v1/deliveries/files/{file}/rollback": {"post": {
            "summary": "Stage the previous version of a file, applied at the next start (operator only)",
            "parameters": [{"name": "file", "in": "path", "required": true, "schema": {"type": "string"}}],
            "responses": {
                "200": json_response("{file, staged}", json!({"type": "object"})),
                "400": error_response("Malformed file name"),
                "409": error_response("No previous version")
            }
        }},
        "/admin/v1/deliveries/files/{file}/withdraw": {"post": {
            "summary": "Take back a halted delivery of a file: unstage it, or stage the previous version if it was applied, or the file's removal if it was its first (operator only; idempotent)",
            "parameters": [{"name": "file", "in": "path", "required": true, "schema": {"type": "string"}}],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {
                "type": "object", "required": ["sha256"], "additionalProperties": false,
                "properties": {"sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}}}}},
            "responses": {
                "200": json_response("{file, withdrawn: unstaged|rolledBack|removed|nothing, staged?}", json!({"type": "object"})),
                "400": error_response("Malformed file name or digest")
            }
        }}
    })
}

fn base_document() -> Value {
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
            "/v1/transfers": {"post": {
                "summary": "File a move-out under the special transfer procedure (転入転出の特例) at the source CS: stores the move-out information and sends it to the destination",
                "requestBody": {"required": true, "content": {"application/json": {"schema":
                    {"$ref": "#/components/schemas/MoveOut"}}}},
                "responses": {
                    "201": json_response("Filed (state move_out_filed)", json!({"$ref": "#/components/schemas/Transfer"})),
                    "200": json_response("The same request again (header Idempotent-Replayed: true)", json!({"$ref": "#/components/schemas/Transfer"})),
                    "400": error_response("Malformed request"),
                    "403": error_response("Not a CS"),
                    "404": error_response("Unknown resident"),
                    "409": error_response("transfer_in_progress, not_active, resident_deceased, outside_window_service"),
                    "422": error_response("A field breaks a rule")
                }
            }},
            "/v1/transfers/{id}": {"get": {
                "summary": "A transfer's state at this end (source: move_out_filed → completed; destination: received → moved_in)",
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": {
                    "200": json_response("The transfer", json!({"$ref": "#/components/schemas/Transfer"})),
                    "404": error_response("Unknown transfer")
                }
            }},
            "/v1/transfers/{id}/cancel": {"post": {
                "summary": "Cancel a move-out at the source (転出取消) before the move-in: both ends become cancelled",
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": {
                    "200": json_response("Cancelled (again: Idempotent-Replayed: true)", json!({"$ref": "#/components/schemas/Transfer"})),
                    "404": error_response("Unknown transfer, or not a source transfer"),
                    "409": error_response("already_completed: the person moved in")
                }
            }},
            "/v1/move-ins": {"post": {
                "summary": "Move in at the destination CS with the card and its PIN; registers the person (転入) and sends the move-in notice (転入通知) to the source",
                "requestBody": {"required": true, "content": {"application/json": {"schema":
                    {"$ref": "#/components/schemas/MoveIn"}}}},
                "responses": {
                    "201": json_response("Moved in (state moved_in)", json!({"$ref": "#/components/schemas/Transfer"})),
                    "200": json_response("The same request again (header Idempotent-Replayed: true)", json!({"$ref": "#/components/schemas/Transfer"})),
                    "400": error_response("Malformed request"),
                    "409": error_response("no_move_out_information, transfer_cancelled, already_moved_in, pin_locked, already_active, outside_window_service"),
                    "422": error_response("A field breaks a rule: pin_mismatch, move_in_deadline (14 days), planned_date_deadline (30 days), future_date")
                }
            }},
            "/v1/issuances": {"post": {
                "summary": "Wide-area issuance of a resident-record copy (住民票の写しの広域交付): asks the home CS and waits for its answer",
                "parameters": [
                    {"name": "Idempotency-Key", "in": "header", "required": true,
                     "schema": {"type": "string", "minLength": 1, "maxLength": 255}},
                    {"name": "wait", "in": "query", "required": false,
                     "description": "seconds to wait for the answer (default 10, at most 60)",
                     "schema": {"type": "integer", "minimum": 0}}
                ],
                "requestBody": {"required": true, "content": {"application/json": {"schema":
                    {"$ref": "#/components/schemas/IssuanceRequest"}}}},
                "responses": {
                    "200": json_response("Issued: the copy data (no 本籍, no 筆頭者)", json!({"$ref": "#/components/schemas/Issuance"})),
                    "202": json_response("Still waiting for the home CS (GET /v1/issuances/{id})", json!({"$ref": "#/components/schemas/Issuance"})),
                    "400": error_response("Malformed request"),
                    "404": error_response("unknown_resident at the home CS"),
                    "409": error_response("resident_moved_out, resident_deceased, outside_window_service (either end)"),
                    "422": error_response("A field breaks a rule")
                }
            }},
            "/v1/issuances/{id}": {"get": {
                "summary": "An issuance at this end (issuing: requested → issued | refused; home: issued | refused)",
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": {
                    "200": json_response("The issuance", json!({"$ref": "#/components/schemas/Issuance"})),
                    "404": error_response("Unknown issuance")
                }
            }},
            "/v1/mailbox": {"get": {
                "summary": "A child's messages (prefecture and national): long poll, after= acknowledges the earlier ones",
                "parameters": [
                    {"name": "recipient", "in": "query", "required": true, "schema": {"type": "string"},
                     "description": "cs-<municipality> at a prefecture, pref-<code> at the national server"},
                    {"name": "after", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 0}},
                    {"name": "wait", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 0, "maximum": 30}}
                ],
                "responses": {
                    "200": json_response("Messages", json!({"type": "object", "properties": {"messages": {"type": "array"}}})),
                    "400": error_response("Malformed query"),
                    "403": error_response("A CS has no mailbox"),
                    "422": error_response("Not a child of this node")
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
        "security": [{"mutualTLS": []}],
        "components": {"securitySchemes": {"mutualTLS": {"type": "mutualTLS",
            "description": "Client certificate of the project CA; its CN is the caller's identity (national, pref-PP, cs-MMMMMM, muni-MMMMMM, agency-NAME, operator). /healthz, /readyz, /metrics and /openapi.json need none. Without TLS the node is open (local use) and an x-juki-identity header is checked instead."}},
        "schemas": {
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
            "MoveOut": {"type": "object",
                "required": ["resident_code", "destination_municipality", "planned_date", "planned_address", "pin"],
                "properties": {
                    "resident_code": {"type": "string", "pattern": "^[0-9]{11}$"},
                    "destination_municipality": {"type": "string", "pattern": "^[0-9]{6}$"},
                    "planned_date": {"type": "string", "format": "date", "description": "not more than 14 days ago"},
                    "planned_address": {"type": "string"},
                    "pin": {"type": "string", "pattern": "^[0-9]{4}$", "description": "the card's PIN; only a PBKDF2 hash is stored"}
                }},
            "MoveIn": {"type": "object", "required": ["resident_code", "pin", "move_date"],
                "properties": {
                    "resident_code": {"type": "string", "pattern": "^[0-9]{11}$"},
                    "pin": {"type": "string", "pattern": "^[0-9]{4}$"},
                    "move_date": {"type": "string", "format": "date", "description": "at most 14 days ago; the filing at most 30 days after the planned date"},
                    "address": {"type": "string", "description": "default: the planned address"}
                }},
            "Transfer": {"type": "object", "properties": {
                "transfer_id": {"type": "string"}, "side": {"enum": ["source", "destination"]},
                "state": {"enum": ["move_out_filed", "completed", "received", "moved_in", "cancelled"]},
                "resident_code": {"type": "string"}, "from_municipality": {"type": "string"},
                "to_municipality": {"type": "string"}, "planned_date": {"type": "string"},
                "planned_address": {"type": "string"}, "move_date": {"type": ["string", "null"]},
                "new_address": {"type": ["string", "null"]}, "note": {"type": ["string", "null"]}
            }},
            "IssuanceRequest": {"type": "object", "required": ["resident_code", "home_municipality"],
                "properties": {
                    "resident_code": {"type": "string", "pattern": "^[0-9]{11}$"},
                    "home_municipality": {"type": "string", "pattern": "^[0-9]{6}$"},
                    "requested_by": {"type": "string"}
                }},
            "Issuance": {"type": "object", "properties": {
                "issuance_id": {"type": "string"}, "side": {"enum": ["issuing", "home"]},
                "state": {"enum": ["requested", "issued", "refused"]},
                "resident_code": {"type": "string"}, "issuing_municipality": {"type": "string"},
                "home_municipality": {"type": "string"},
                "answer": {"type": ["object", "null"], "description": "{outcome: issued, copy} or {outcome: refused, status, error, message, field}"}
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
