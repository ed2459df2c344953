//! The OpenAPI 3.1 document of the collector's API, served at `/api/openapi.json`.
//!
//! Written out by hand, next to the routes it describes; a test sends a request to
//! every path listed here and fails if the router does not know it.

use axum::Json;
use serde_json::{Value, json};

fn op(summary: &str, auth: &str, params: &[(&str, &str, &str)], ok: &str) -> Value {
    let parameters: Vec<Value> = params
        .iter()
        .map(|(name, place, description)| {
            json!({ "name": name, "in": place, "required": *place == "path", "description": description,
                    "schema": { "type": "string" } })
        })
        .collect();
    let security = match auth {
        "none" => json!([]),
        "key" => json!([{ "apiKey": [] }]),
        _ => json!([{ "bearer": [] }]),
    };
    json!({
        "summary": summary,
        "security": security,
        "parameters": parameters,
        "responses": {
            "200": { "description": ok },
            "4XX": { "description": "Client error", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ErrorBody" } } } }
        }
    })
}

/// The document.
pub fn spec() -> Value {
    let host = ("server_id", "path", "Host id, host name, or `local` for the collector's own machine");
    let range = [("from", "query", "Start (RFC 3339)"), ("to", "query", "End (RFC 3339)")];
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Procyon collector API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Processes and network of a fleet of machines, live and over time. Users sign in at /api/auth/login and send `Authorization: Bearer <token>`; agents upload with `Authorization: Api-Key <key>`. Errors are JSON: {error, message, field}."
        },
        "components": {
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" },
                "apiKey": { "type": "apiKey", "in": "header", "name": "Authorization", "description": "`Api-Key <key>`" }
            },
            "schemas": {
                "ErrorBody": { "type": "object", "required": ["error", "message"], "properties": {
                    "error": { "type": "string" }, "message": { "type": "string" }, "field": { "type": ["string", "null"] } } }
            }
        },
        "paths": {
            "/api/auth/login": { "post": op("Sign in with {username, password}; returns {token, expires_at, role, username}", "none", &[], "A token") },
            "/api/auth/me": { "get": op("The signed-in user", "bearer", &[], "{username, role}") },
            "/api/auth/refresh": { "post": op("A new token for the caller's session, until 12 hours after sign-in", "bearer", &[], "A token") },
            "/api/auth/ws-ticket": { "post": op("A single-use ticket (30 s) to open a WebSocket with ?ticket=", "bearer", &[], "{ticket, expires_in_secs}") },
            "/api/health": { "get": op("Liveness", "none", &[], "{status, version}") },
            "/api/openapi.json": { "get": op("This document", "bearer", &[], "OpenAPI document") },
            "/api/process-snapshots/": { "post": op("Upload a snapshot: the full format or the short one ({hostname, snapshot_time, processes with children})", "key", &[], "201 {message, snapshot_id, snapshot_time, duplicate}; 200 for a duplicate") },
            "/api/hosts/": { "get": op("Hosts that have reported, with online state", "bearer", &[], "HostSummary[]") },
            "/api/hosts/{server_id}/top-processes": { "get": op("Processes that peaked highest in a range", "bearer", &[host, range[0], range[1], ("n", "query", "How many (default 10)")], "TopProcess[]") },
            "/api/hosts/{server_id}/process-history": { "get": op("One process's CPU and memory in each stored snapshot of a range (default the last 30 minutes)", "bearer", &[host, ("pid", "query", "Process id (required)"), ("start_time", "query", "Only the process with this start time"), range[0], range[1]], "ProcessHistoryPoint[]") },
            "/api/hosts/{server_id}/export": { "get": op("Export a range: CSV of figures per point or JSON of snapshots", "bearer", &[host, range[0], range[1], ("format", "query", "csv or json"), ("limit", "query", "Most snapshots (JSON)")], "A file") },
            "/api/process-snapshots/latest/": { "get": op("Latest snapshot of each host, or of one", "bearer", &[("hostname", "query", "One host"), ("tree", "query", "Nest processes under children"), ("from_hostname", "query", "Hosts from this name on (after a list cut short)"), ("max_bytes", "query", "A smaller byte budget")], "Snapshot(s)") },
            "/api/process-snapshots/list/": { "get": op("Stored snapshots, newest first (X-Total-Count header)", "bearer", &[("hostname", "query", "One host"), ("limit", "query", "Page size (max 1000)"), ("offset", "query", "Rows to skip")], "SnapshotSummary[]") },
            "/api/process-snapshots/series/": { "get": op("CPU, memory, process count and network over time; the tier fits the range", "bearer", &[("hostname", "query", "Host (required)"), ("limit", "query", "Most points (also `limt`)"), range[0], range[1]], "Series") },
            "/api/process-snapshots/{id}/": { "get": op("One stored snapshot", "bearer", &[("id", "path", "snapshot_id"), ("tree", "query", "Nest processes under children")], "Snapshot") },
            "/api/process-snapshots/{id}/export": { "get": op("One snapshot's processes as CSV, or the snapshot as JSON", "bearer", &[("id", "path", "snapshot_id"), ("format", "query", "csv or json")], "A file") },
            "/api/monitoring/{server_id}/snapshot": { "get": op("Newest snapshot in the monitoring shape: processes, network_connections, network_stats, cpu_per_core, port_usage", "bearer", &[host], "Monitoring snapshot") },
            "/api/monitoring/{server_id}/process/{pid}/{action}": { "post": op("Suspend, resume, terminate or kill a process (operator or admin); optional start_time guards against pid reuse, tree=true acts on the subtree", "bearer", &[host, ("pid", "path", "Process id"), ("action", "path", "terminate, kill, suspend or resume"), ("start_time", "query", "Start time seen (RFC 3339)"), ("tree", "query", "Whole subtree, children first")], "{status, message}") },
            "/api/audit": { "get": op("Process actions attempted and hosts deleted, newest first", "bearer", &[("host", "query", "One host"), ("limit", "query", "Page size"), ("offset", "query", "Rows to skip")], "AuditEntry[]") },
            "/api/users": { "get": op("Users (admin)", "bearer", &[], "UserSummary[]"), "post": op("Add a user {username, password, role} (admin)", "bearer", &[], "UserSummary") },
            "/api/users/{username}": { "delete": op("Remove a user (admin)", "bearer", &[("username", "path", "User name")], "204") },
            "/api/keys": { "get": op("Agent API keys (admin)", "bearer", &[], "ApiKeySummary[]"), "post": op("Make a key {name, hostname?}; the key is in the answer only (admin)", "bearer", &[], "{key, summary}") },
            "/api/keys/{key}": { "delete": op("Revoke a key by name or prefix (admin)", "bearer", &[("key", "path", "Name or prefix")], "ApiKeySummary") },
            "/ws/process-snapshots/": { "get": op("WebSocket: every new snapshot of every host, or of one with ?hostname= (token as ?token= or header)", "bearer", &[("token", "query", "Bearer token"), ("hostname", "query", "Only this host")], "101 Switching Protocols") },
            "/ws/monitoring/{server_id}": { "get": op("WebSocket: one host's monitoring snapshot at each interval", "bearer", &[host, ("token", "query", "Bearer token")], "101 Switching Protocols") }
        }
    })
}

/// `GET /api/openapi.json` (signed-in users only, like everything but sign-in and health).
pub async fn document(_user: super::auth::CurrentUser) -> Json<Value> {
    Json(spec())
}
