//! The OpenAPI 3.1 description of the JSON API (`GET /openapi.json`). A test checks that its
//! paths are exactly the API routes of `configure`.

use serde_json::{Value, json};

fn error_responses(codes: &[&str]) -> Value {
    let mut map = serde_json::Map::new();
    for code in codes {
        map.insert(
            (*code).to_owned(),
            json!({ "description": "error", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } }),
        );
    }
    Value::Object(map)
}

fn with(mut base: Value, extra: Value) -> Value {
    if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
        b.extend(e);
    }
    base
}

fn ok(schema: Value) -> Value {
    json!({ "description": "ok", "content": { "application/json": { "schema": schema } } })
}

fn id_param() -> Value {
    json!({ "name": "id", "in": "path", "required": true, "schema": { "type": "integer", "minimum": 1 } })
}

fn body(schema: &str) -> Value {
    json!({ "required": true, "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } })
}

/// The document.
pub fn document() -> Value {
    let ticket = json!({ "$ref": "#/components/schemas/Ticket" });
    let hits = json!({ "type": "object", "properties": { "results": { "type": "array", "items": { "$ref": "#/components/schemas/Hit" } } } });
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "jukinet call center",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Inquiries (問合せ) and fault reports (障害連絡) from municipalities and prefectures. Callers are identified by their client certificate (mutual TLS); errors are {\"error\", \"message\", \"field\"}."
        },
        "paths": {
            "/healthz": { "get": { "responses": { "200": ok(json!({"type": "object"})) } } },
            "/readyz": { "get": { "responses": with(json!({ "200": ok(json!({"type": "object"})) }), error_responses(&["503"])) } },
            "/metrics": { "get": { "responses": { "200": { "description": "Prometheus text format" } } } },
            "/openapi.json": { "get": { "responses": { "200": ok(json!({"type": "object"})) } } },
            "/v1/tickets": {
                "post": {
                    "summary": "File a ticket (201 with its id)",
                    "requestBody": body("TicketInput"),
                    "responses": with(json!({ "201": ok(ticket.clone()) }), error_responses(&["400", "401", "403", "413", "422"]))
                },
                "get": {
                    "summary": "List tickets the caller may read, newest first",
                    "parameters": [
                        { "name": "org", "in": "query", "schema": { "type": "string", "pattern": "^[0-9]{6}$" } },
                        { "name": "state", "in": "query", "schema": { "$ref": "#/components/schemas/State" } },
                        { "name": "kind", "in": "query", "schema": { "enum": ["inquiry", "fault"] } },
                        { "name": "before", "in": "query", "schema": { "type": "integer" } },
                        { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 500 } }
                    ],
                    "responses": with(json!({ "200": ok(json!({ "type": "object", "properties": { "tickets": { "type": "array", "items": ticket.clone() } } })) }), error_responses(&["400", "401", "403", "422"]))
                }
            },
            "/v1/tickets/{id}": { "get": {
                "summary": "A ticket with its history and service level",
                "parameters": [id_param()],
                "responses": with(json!({ "200": ok(ticket.clone()) }), error_responses(&["401", "403", "404"]))
            } },
            "/v1/tickets/{id}/answer": { "post": {
                "summary": "Answer (staff only); an inquiry becomes answered",
                "parameters": [id_param()],
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "required": ["answer"], "properties": { "answer": { "type": "string" } } } } } },
                "responses": with(json!({ "200": ok(ticket.clone()) }), error_responses(&["400", "401", "403", "404", "409", "422"]))
            } },
            "/v1/tickets/{id}/state": { "post": {
                "summary": "Move a ticket along its state machine (staff only)",
                "parameters": [id_param()],
                "requestBody": body("StateInput"),
                "responses": with(json!({ "200": ok(ticket) }), error_responses(&["400", "401", "403", "404", "409", "422"]))
            } },
            "/v1/tickets/{id}/context": { "get": {
                "summary": "The ticket's nodes from the Kubernetes API: JukiNode phase, conditions, last batch, recent batch Jobs",
                "parameters": [id_param()],
                "responses": with(json!({ "200": ok(json!({ "type": "object", "properties": { "ticket_id": { "type": "integer" }, "nodes": { "type": "array" } } })) }), error_responses(&["401", "403", "404", "503"]))
            } },
            "/v1/search": { "get": {
                "summary": "Full-text search over past tickets and answers (Japanese bigrams, NFKC and kana folded)",
                "parameters": [
                    { "name": "q", "in": "query", "required": true, "schema": { "type": "string", "maxLength": 2000 } },
                    { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 100 } }
                ],
                "responses": with(json!({ "200": ok(hits.clone()) }), error_responses(&["400", "401", "403", "422"]))
            } },
            "/v1/suggestions": { "get": {
                "summary": "Answered past tickets most like a draft",
                "parameters": [
                    { "name": "text", "in": "query", "required": true, "schema": { "type": "string" } },
                    { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 100 } },
                    { "name": "exclude", "in": "query", "schema": { "type": "integer" } }
                ],
                "responses": with(json!({ "200": ok(hits) }), error_responses(&["400", "401", "403", "422"]))
            } },
            "/v1/alerts": { "post": {
                "summary": "Alertmanager webhook (version 4): a fault ticket per alert group, deduplicated by fingerprint",
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "required": ["version", "alerts"] } } } },
                "responses": with(json!({ "200": ok(json!({ "type": "object", "properties": {
                    "opened": { "type": "array", "items": { "type": "integer" } },
                    "attached": { "type": "integer" }, "duplicates": { "type": "integer" }, "resolved": { "type": "integer" } } })) }),
                    error_responses(&["400", "401", "403", "413", "422"]))
            } }
        },
        "components": { "schemas": {
            "Error": { "type": "object", "required": ["error", "message", "field"], "properties": {
                "error": { "type": "string" }, "message": { "type": "string" }, "field": { "type": ["string", "null"] } } },
            "State": { "enum": ["received", "answered", "isolating", "recovery_arranged", "recovered", "closed"] },
            "TicketInput": { "type": "object", "additionalProperties": false,
                "required": ["kind", "org", "reporter", "channel", "subject", "body"],
                "properties": {
                    "kind": { "enum": ["inquiry", "fault"] },
                    "org": { "type": "string", "description": "地方公共団体コード (6 digits, check digit verified)" },
                    "reporter": { "type": "string", "maxLength": 100 },
                    "channel": { "enum": ["phone", "fax", "terminal"] },
                    "subject": { "type": "string", "maxLength": 200 },
                    "body": { "type": "string", "maxLength": 20000 },
                    "nodes": { "type": "array", "items": { "type": "string" }, "maxItems": 50 },
                    "category": { "type": "string", "maxLength": 100 } } },
            "StateInput": { "type": "object", "additionalProperties": false, "required": ["state"], "properties": {
                "state": { "enum": ["isolating", "recovery_arranged", "recovered", "closed"] },
                "vendor": { "type": "string" }, "expected_at": { "type": "string", "format": "date-time" } } },
            "Ticket": { "type": "object", "required": ["id", "kind", "state", "subject"], "properties": {
                "id": { "type": "integer" }, "kind": { "enum": ["inquiry", "fault"] },
                "state": { "$ref": "#/components/schemas/State" }, "org": { "type": ["string", "null"] },
                "subject": { "type": "string" }, "body": { "type": "string" }, "answer": { "type": ["string", "null"] },
                "sla": { "type": "object" }, "history": { "type": "array" } } },
            "Hit": { "type": "object", "required": ["ticket_id", "score", "subject"], "properties": {
                "ticket_id": { "type": "integer" }, "score": { "type": "number" }, "subject": { "type": "string" },
                "answer": { "type": ["string", "null"] },
                "highlights": { "type": "object", "properties": { "subject": { "type": "string" }, "body": { "type": "string" }, "answer": { "type": "string" } } } } }
        } }
    })
}
