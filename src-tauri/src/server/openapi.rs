//! The OpenAPI 3.1 document of the collector's API, served at `/api/openapi.json`.
//!
//! Generated, not written: the schemas come from the API types themselves (`ToSchema`
//! next to ts-rs's `TS` on the model), the operations from the `#[utoipa::path]`
//! annotations on the handlers, and what every operation shares is added here from the
//! route table ([`routes::all`]): its security requirement (from its [`Access`]) and the
//! error answers ([`ErrorBody`]) every route can give. A test holds the document and the
//! route table to each other, both ways.
//!
//! The shapes that handlers build as JSON rather than from one type (the stored and
//! monitoring views of a snapshot, which add the seed documents' field names to ours,
//! and a few small answers) are described by the types of this module, which exist for
//! the document only; `tests/openapi.rs` runs schemathesis against a live collector to
//! hold them to what is really sent.

use std::sync::OnceLock;

use axum::Json;
use chrono::{DateTime, Utc};
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{OpenApi, ToSchema};

use super::routes::{self, Access};
use crate::model::api::{ApiKeySummary, ErrorBody, Role};
use crate::model::{
    ConnectionSample, CpuSample, DomainError, HostInfo, InterfaceSample, MemorySample, PortUsage, ProcessSample,
    Snapshot,
};

/// What the document says before its operations: how to sign in, the error shape, the
/// two vocabularies of snapshots and the time forms of query parameters.
const DESCRIPTION: &str = "Processes and network of a fleet of machines, live and over time.

**Credentials.** Users sign in at `POST /api/auth/login` and send `Authorization: Bearer <token>` \
(scheme `bearer`); WebSockets also take `?ticket=` (from `POST /api/auth/ws-ticket`) or `?token=`. \
Agents upload with an API key, `Authorization: Api-Key <key>` (scheme `apiKey`).

**Errors** are JSON, `{\"error\", \"message\", \"field\"}` (`ErrorBody`): `error` is a machine-readable kind, \
`message` says what went wrong and what to do, `field` names the offending parameter or body field of a 422. \
429 and 503 answers carry `Retry-After`.

**Two vocabularies.** Snapshots are stored and served in Procyon's own field names, which are canonical: \
`cpu_percent`, `rss_bytes`, `ppid`, `taken_at`. The two documents this API started from (a snapshot upload \
API and a monitoring API) named some of the same things differently, and clients written against them must \
keep working, so every snapshot a route returns also carries their names as aliases with the same values: \
`cpu` (= `cpu_percent`), `memory` (= `rss_bytes`, bytes), `parent_pid` (= `ppid`), `username` (= `user`), and \
`snapshot_time` and `timestamp` (= `taken_at`). New clients should read the canonical names. \
`GET /api/process-snapshots/latest/` is a list (the newest snapshot of every host), while \
`latest/?hostname=NAME` is one object, as in the original document.

**Times** in query parameters (`from`, `to`) are read as people type them: RFC 3339 (`2026-01-02T03:04:05Z`; \
without a zone, UTC), a date (`2026-01-02`), seconds since the epoch, `now`, or relative to now (`-15m`, `-2h`, \
`-7d`). Times in answers are RFC 3339 in UTC.";

/// The document's operations (the annotated handlers) and the schemas they name.
#[derive(OpenApi)]
#[openapi(
    info(title = "Procyon collector API", description = DESCRIPTION),
    paths(
        super::rest::login,
        super::rest::me,
        super::rest::ws_ticket,
        super::rest::refresh,
        super::rest::health,
        document,
        super::rest::upload_snapshot,
        super::rest::hosts,
        super::fleet_search::search_processes,
        super::network_map::network_map,
        super::rest::delete_host,
        super::rest::top_processes,
        super::rest::export_range,
        super::rest::process_history,
        super::details::details,
        super::rest::host_binding,
        super::rest::bind_host,
        super::rest::reset_host_binding,
        super::rest::set_host_labels,
        super::rest::latest,
        super::rest::list,
        super::rest::series,
        super::rest::snapshot_detail,
        super::rest::export_snapshot,
        super::rest::monitoring_snapshot,
        super::rest::process_action,
        super::rest::bulk_process_action,
        super::rest::audit,
        super::rest::users,
        super::rest::create_user,
        super::rest::remove_user,
        super::rest::keys,
        super::rest::create_key,
        super::rest::revoke_key,
        super::ws::all_snapshots,
        super::ws::monitoring,
        super::ws::fleet,
        super::agents::upgrade,
        super::metrics::metrics,
        super::alerts::rules,
        super::alerts::create_rule,
        super::alerts::update_rule,
        super::alerts::delete_rule,
        super::alerts::channels,
        super::alerts::create_channel,
        super::alerts::update_channel,
        super::alerts::delete_channel,
        super::alerts::test_channel,
        super::alerts::alerts,
        super::alerts::history,
        super::alerts::deliveries,
        super::alerts::silences,
        super::alerts::create_silence,
        super::alerts::delete_silence,
        super::dashboards::list,
        super::dashboards::create,
        super::dashboards::read,
        super::dashboards::update,
        super::dashboards::remove,
    ),
    // Named here: schemas that only parameters refer to are not collected by themselves.
    components(schemas(ErrorBody, crate::model::ProcessAction, crate::model::api::FleetUpdate)),
    tags(
        (name = "auth", description = "Signing in, tokens and WebSocket tickets"),
        (name = "snapshots", description = "Uploads and reads of stored snapshots (the snapshot API's paths)"),
        (name = "hosts", description = "Monitored machines, their history and bindings"),
        (name = "monitoring", description = "The monitoring API: newest snapshot and process actions"),
        (name = "admin", description = "Users, API keys and the audit log"),
        (name = "live", description = "WebSockets (HTTP GET answered with 101 Switching Protocols)"),
        (name = "meta", description = "Health and this document"),
        (name = "alerts", description = "Alert rules, channels, alerts and their history, silences"),
        (name = "dashboards", description = "Dashboards each user arranges, and shares read-only"),
    )
)]
struct ApiDoc;

/// The document, built once.
pub fn spec() -> &'static serde_json::Value {
    static SPEC: OnceLock<serde_json::Value> = OnceLock::new();
    SPEC.get_or_init(|| {
        let mut doc = serde_json::to_value(build()).unwrap_or_default();
        plain_links(&mut doc);
        doc
    })
}

/// The descriptions come from doc comments, whose links to other items (`` [`Snapshot`] ``)
/// mean nothing outside rustdoc: they become plain code (`` `Snapshot` ``).
fn plain_links(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                match v {
                    Value::String(text) if key == "description" && text.contains("[`") => {
                        *text = text.replace("[`", "`").replace("`]", "`");
                    }
                    _ => plain_links(v),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(plain_links),
        _ => {}
    }
}

/// `GET /api/openapi.json` (signed-in users only, like everything but sign-in and health).
#[utoipa::path(get, path = "/api/openapi.json", tag = "meta",
    summary = "This document",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object)))]
pub async fn document(_user: super::auth::CurrentUser) -> Json<&'static serde_json::Value> {
    Json(spec())
}

/// Security scheme of signed-in users.
pub const BEARER: &str = "bearer";
/// Security scheme of agents' API keys.
pub const API_KEY: &str = "apiKey";
/// Security scheme of keys of scope `metrics` sent as bearer tokens (Prometheus'
/// `authorization` setting).
pub const METRICS_KEY: &str = "metricsKey";

fn build() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        BEARER,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .description(Some("A user's token from `POST /api/auth/login`: `Authorization: Bearer <token>`."))
                .build(),
        ),
    );
    components.add_security_scheme(
        API_KEY,
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "Authorization",
            "An API key (`procyon apikey create`), sent as `Authorization: Api-Key <key>`: an agent's (scope \
             `upload`) for uploads, a scraper's (scope `metrics`) for `/metrics`.",
        ))),
    );
    components.add_security_scheme(
        METRICS_KEY,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "A key of scope `metrics` (`procyon apikey create --scope metrics`) as a bearer token, as \
                     Prometheus' `authorization` setting sends it: `Authorization: Bearer <key>`.",
                ))
                .build(),
        ),
    );
    let table = routes::all();
    for (path, item) in doc.paths.paths.iter_mut() {
        for (method, op) in operations_mut(item) {
            let access = table
                .iter()
                .find(|r| r.method.as_str().eq_ignore_ascii_case(method) && same_path(r.path, path))
                .map(|r| r.access);
            complete(op, path, access);
        }
    }
    doc
}

/// Whether two paths are the same route, a trailing slash aside (every route but the
/// WebSockets also answers on its slash twin).
pub fn same_path(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// Each operation of a path, with its method.
pub fn operations_mut(item: &mut PathItem) -> Vec<(&'static str, &mut Operation)> {
    [
        ("GET", &mut item.get),
        ("POST", &mut item.post),
        ("PUT", &mut item.put),
        ("DELETE", &mut item.delete),
        ("PATCH", &mut item.patch),
        ("HEAD", &mut item.head),
        ("OPTIONS", &mut item.options),
        ("TRACE", &mut item.trace),
    ]
    .into_iter()
    .filter_map(|(m, op)| op.as_mut().map(|op| (m, op)))
    .collect()
}

/// Adds to an operation what the route table knows: who may call it, and the errors.
fn complete(op: &mut Operation, path: &str, access: Option<Access>) {
    let requirement = |scheme: &str| Some(vec![SecurityRequirement::new(scheme, Vec::<String>::new())]);
    op.security = match access {
        Some(Access::Public) | None => Some(vec![SecurityRequirement::default()]),
        Some(Access::Agent) => requirement(API_KEY),
        // Any one of them: a metrics key either way it is sent, or an admin's token.
        Some(Access::Metrics) => Some(
            [METRICS_KEY, API_KEY, BEARER]
                .into_iter()
                .map(|scheme| SecurityRequirement::new(scheme, Vec::<String>::new()))
                .collect(),
        ),
        Some(_) => requirement(BEARER),
    };
    let who = match access {
        Some(Access::Operator) => " Operators and admins only.",
        Some(Access::Admin) => " Admins only.",
        Some(Access::Metrics) => " Keys of scope metrics and admins only.",
        _ => "",
    };
    if !who.is_empty() {
        let description = op.description.get_or_insert_with(String::new);
        if !description.contains(who.trim()) {
            description.push_str(who);
        }
    }
    let mut errors = vec![
        ("400", "Malformed request: the body is not JSON, or the WebSocket handshake is missing"),
        ("422", "A parameter or body field is wrong; `field` names it"),
        ("429", "Too many attempts, or over a per-client limit; see `Retry-After`"),
        ("500", "The collector's fault; the cause is in its log, not here"),
        ("503", "Busy (heavy reads, uploads) or stopping; see `Retry-After`"),
    ];
    if access != Some(Access::Public) {
        errors.push(("401", "No credentials, or bad or expired ones"));
        errors.push(("403", "The credentials are good but may not do this"));
    }
    if path.contains('{') {
        errors.push(("404", "Nothing by that name or id"));
    }
    for (status, description) in errors {
        if !op.responses.responses.contains_key(status) {
            op.responses.responses.insert(status.to_owned(), error_response(status, description));
        }
    }
}

/// An error answer: the [`ErrorBody`] as JSON (with `Retry-After` for 429 and 503).
pub fn error_response(status: &str, description: &str) -> RefOr<Response> {
    let mut response = ResponseBuilder::new()
        .description(description)
        .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build());
    if status == "429" || status == "503" {
        let seconds = ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0));
        response = response.header(
            "Retry-After",
            HeaderBuilder::new().schema(seconds).description(Some("Seconds to wait before trying again")).build(),
        );
    }
    RefOr::T(response.build())
}

// ---------------------------------------------------------------------------------------
// Shapes built as JSON by the handlers (see the module's documentation). Their fields are
// read by the schema derive only.

/// A stored snapshot as the process-snapshots routes return it: the [`Snapshot`] (whose
/// field names are canonical) with the snapshot API's names added.
///
/// `snapshot_time` and `timestamp` repeat `taken_at`, `hostname` repeats
/// `host.hostname`: aliases kept for clients of the original snapshot API. Each process
/// carries the aliases of [`StoredProcess`].
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct StoredSnapshot {
    #[serde(flatten)]
    snapshot: Snapshot,
    /// The collector's id of this snapshot (for `GET /api/process-snapshots/{id}/`).
    snapshot_id: i64,
    /// Alias of `host.hostname`.
    hostname: String,
    /// Alias of `taken_at` (the snapshot API's name).
    snapshot_time: DateTime<Utc>,
    /// Alias of `taken_at`.
    timestamp: DateTime<Utc>,
    /// The processes, each with the aliases; with `tree=true`, only the roots, each
    /// child under its parent's `children`.
    processes: Vec<StoredProcess>,
}

/// A process as snapshots are served: the [`ProcessSample`] (canonical names) with the
/// original documents' names added as aliases of the same values: `parent_pid` (=
/// `ppid`), `cpu` (= `cpu_percent`), `memory` (= `rss_bytes`, in bytes) and `username`
/// (= `user`). `null` in both vocabularies when the snapshot does not say.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct StoredProcess {
    #[serde(flatten)]
    process: ProcessSample,
    /// Alias of `ppid`.
    #[schema(required = true)]
    parent_pid: Option<u32>,
    /// Alias of `cpu_percent`.
    #[schema(required = true)]
    cpu: Option<f32>,
    /// Alias of `rss_bytes` (bytes).
    #[schema(required = true)]
    memory: Option<u64>,
    /// Alias of `user`.
    #[schema(required = true)]
    username: Option<String>,
    /// With `tree=true` only: the children, nested the same way.
    #[schema(no_recursion)]
    children: Option<Vec<StoredProcess>>,
}

/// The last element of a list cut short (`latest/` past its byte budget, or a range
/// export): not a snapshot. Asking again from `next_hostname` (`latest/`) or
/// `next_from` (an export) gets the rest.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Truncated {
    /// Always `true`.
    truncated: bool,
    /// `byte_budget` or `read_failed`.
    reason: String,
    /// What happened and how to get the rest.
    message: String,
    /// Snapshots sent before this marker.
    exported: u64,
    /// `latest/`: go on with `from_hostname=` this.
    next_hostname: Option<String>,
    /// A range export: go on with `from=` this.
    next_from: Option<DateTime<Utc>>,
}

/// An element of `latest/` without `hostname` or of a range export: a snapshot, or the
/// marker of a list cut short.
#[derive(ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum SnapshotOrTruncated {
    /// A snapshot.
    Snapshot(Box<StoredSnapshot>),
    /// The list's last element when it was cut short.
    Truncated(Truncated),
}

/// `GET /api/process-snapshots/latest/`: a list without `hostname` (every host's newest
/// snapshot, by host name), one object with `hostname=` (as the original document has it).
#[derive(ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum Latest {
    /// Every host's newest snapshot.
    Every(Vec<SnapshotOrTruncated>),
    /// The named host's newest snapshot.
    One(Box<StoredSnapshot>),
}

/// A snapshot in the monitoring API's shape (`GET /api/monitoring/{server_id}/snapshot`
/// and `/ws/monitoring/{server_id}`): that API's keys (`processes`,
/// `network_connections`, `network_stats` with psutil's counter names, `cpu_per_core`,
/// `port_usage`) and Procyon's (`host`, `cpu`, `memory`, `errors`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct MonitoringSnapshot {
    /// The collector's id of this snapshot.
    snapshot_id: i64,
    /// The host's name (the monitoring API's name for a host).
    server_id: String,
    /// The host's name.
    hostname: String,
    /// When it was taken (`taken_at` of the snapshot).
    timestamp: DateTime<Utc>,
    /// When the collector received it.
    received_at: DateTime<Utc>,
    /// The machine.
    host: HostInfo,
    /// The processes, with the aliases of [`StoredProcess`].
    processes: Vec<StoredProcess>,
    /// The sockets, each with `status` (the TCP state, `NONE` for UDP).
    network_connections: Vec<MonitoringConnection>,
    /// Network counters of all interfaces together (loopback excluded) and each one.
    network_stats: NetworkStats,
    /// CPU per logical core, 0-100.
    cpu_per_core: Vec<f32>,
    /// Connections per local port and the listening ports.
    port_usage: PortUsage,
    /// Processor use.
    cpu: CpuSample,
    /// Memory and swap.
    memory: MemorySample,
    /// Parts that could not be measured.
    errors: Vec<DomainError>,
}

/// A socket in the monitoring shape: the [`ConnectionSample`] and `status`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct MonitoringConnection {
    #[serde(flatten)]
    connection: ConnectionSample,
    /// The TCP state as netstat names it, `NONE` for UDP.
    status: String,
}

/// Network counters with psutil's names; each `null` when the snapshot has none (a short
/// upload).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct NetworkStats {
    /// Bytes sent since boot.
    bytes_sent: Option<u64>,
    /// Bytes received since boot.
    bytes_recv: Option<u64>,
    /// Packets sent since boot.
    packets_sent: Option<u64>,
    /// Packets received since boot.
    packets_recv: Option<u64>,
    /// Receive errors.
    errin: Option<u64>,
    /// Transmit errors.
    errout: Option<u64>,
    /// Received packets dropped.
    dropin: Option<u64>,
    /// Outgoing packets dropped.
    dropout: Option<u64>,
    /// Send rate over the last interval.
    bytes_sent_per_sec: Option<f64>,
    /// Receive rate over the last interval.
    bytes_recv_per_sec: Option<f64>,
    /// Packets sent per second.
    packets_sent_per_sec: Option<f64>,
    /// Packets received per second.
    packets_recv_per_sec: Option<f64>,
    /// Each interface, loopback included.
    interfaces: Vec<InterfaceSample>,
}

/// An upload (`POST /api/process-snapshots/`): the full format, a [`Snapshot`] as
/// `procyon snapshot` prints it (recognised by `schema_version`), or the snapshot API's
/// short format, `{hostname, snapshot_time, processes}` with children nested.
#[derive(ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum Upload {
    /// The full format.
    Full(Box<Snapshot>),
    /// The short format.
    Short(super::upload::ShortUpload),
}

/// The answer to an upload.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Uploaded {
    /// `Snapshot uploaded successfully.`
    message: String,
    /// The stored snapshot's id.
    snapshot_id: i64,
    /// The time stored (a short upload without `snapshot_time` is stamped on arrival).
    snapshot_time: DateTime<Utc>,
    /// The same snapshot (host and sequence number) was stored already: nothing new
    /// was stored, and the answer is 200 instead of 201.
    duplicate: bool,
}

/// The signed-in user.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Me {
    /// User name.
    username: String,
    /// Role.
    role: Role,
}

/// A WebSocket ticket.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct WsTicket {
    /// Single use: `?ticket=` on a WebSocket URL.
    ticket: String,
    /// Seconds it stays valid.
    expires_in_secs: u64,
}

/// Liveness.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Health {
    /// `ok`.
    status: String,
    /// The collector's version.
    version: String,
}

/// A process action that was carried out.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ActionDone {
    /// `success`.
    status: String,
    /// `Process 123 terminated`.
    message: String,
    /// Processes signalled (more than one with `tree=true`).
    signalled: u64,
}

/// A new API key: the key itself is in this answer only.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct NewApiKey {
    /// The key, for `Authorization: Api-Key <key>`; not shown again.
    key: String,
    /// What is stored about it.
    summary: ApiKeySummary,
}

/// `{server_id}`: which host.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct ServerId {
    /// The host's id, its name, or `local` for the collector's own machine.
    #[param(example = "local")]
    server_id: String,
}

/// A time range. Both ends are read as people type them: RFC 3339 (without a zone, UTC),
/// a date, seconds since the epoch, `now`, or relative to now (`-15m`, `-2h`, `-7d`).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct TimeRange {
    /// Start (default: an hour before `to`). RFC 3339, a date, epoch seconds, `now` or
    /// relative (`-15m`).
    from: Option<DateTime<Utc>>,
    /// End (default: now), in the same forms as `from`.
    to: Option<DateTime<Utc>>,
}

/// An export's format.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct Format {
    /// `csv` or `json` (default).
    #[param(inline)]
    format: Option<ExportFormat>,
}

/// The format of an export.
#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum ExportFormat {
    /// Comma-separated values.
    Csv,
    /// JSON (the default).
    Json,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;

    fn document() -> Value {
        serde_json::to_value(spec()).unwrap()
    }

    /// (method, path without a trailing slash) of each operation of `doc`.
    fn documented(doc: &Value) -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                if ["get", "post", "put", "delete", "patch", "head", "options", "trace"].contains(&method.as_str()) {
                    out.insert((method.to_uppercase(), path.trim_end_matches('/').to_owned()));
                }
            }
        }
        out
    }

    fn routed() -> BTreeSet<(String, String)> {
        routes::all().iter().map(|r| (r.method.to_string(), r.path.trim_end_matches('/').to_owned())).collect()
    }

    /// Every route is documented and every documented operation is routed (a slash twin
    /// is the same route).
    #[test]
    fn the_document_and_the_router_agree() {
        let (doc, router) = (documented(&document()), routed());
        let undocumented: Vec<_> = router.difference(&doc).collect();
        let unrouted: Vec<_> = doc.difference(&router).collect();
        assert!(
            undocumented.is_empty(),
            "routes missing from the OpenAPI document (annotate their handlers with #[utoipa::path] and list them \
             in ApiDoc's paths): {undocumented:?}"
        );
        assert!(unrouted.is_empty(), "documented operations the router lacks: {unrouted:?}");
    }

    /// Every answer with a body says what the body is; every operation has a success
    /// answer and the errors' schema.
    #[test]
    fn every_response_has_a_schema() {
        let doc = document();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let responses = op["responses"].as_object().unwrap();
                assert!(
                    responses.keys().any(|s| s.starts_with('2') || s == "101"),
                    "{method} {path} has no success answer"
                );
                for (status, response) in responses {
                    // 101 (a WebSocket) and 204 have no body by definition.
                    if status == "101" || status == "204" {
                        continue;
                    }
                    let content = response["content"].as_object();
                    assert!(
                        content.is_some_and(|c| !c.is_empty() && c.values().all(|m| m.get("schema").is_some())),
                        "{method} {path}: answer {status} has no schema"
                    );
                }
                assert_eq!(
                    responses["422"]["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/ErrorBody",
                    "{method} {path}"
                );
            }
        }
    }

    #[test]
    fn operations_state_who_may_call_them() {
        let doc = document();
        assert!(!doc.to_string().contains("[`"), "rustdoc links are left in descriptions");
        assert_eq!(doc["openapi"], "3.1.0");
        let security = |method: &str, path: &str| doc["paths"][path][method]["security"].clone();
        assert_eq!(security("post", "/api/auth/login"), serde_json::json!([{}]));
        assert_eq!(security("post", "/api/process-snapshots/"), serde_json::json!([{ "apiKey": [] }]));
        assert_eq!(security("get", "/api/hosts/"), serde_json::json!([{ "bearer": [] }]));
        assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
        assert!(doc["components"]["securitySchemes"]["apiKey"].is_object());
        // Both upload shapes, and typed parameters.
        let upload = &doc["components"]["schemas"]["Upload"];
        assert_eq!(upload["oneOf"].as_array().map(Vec::len), Some(2), "{upload}");
        let params = doc["paths"]["/api/process-snapshots/series/"]["get"]["parameters"].as_array().unwrap();
        let param = |name: &str| params.iter().find(|p| p["name"] == name).unwrap()["schema"].clone();
        assert!(param("limit")["type"].to_string().contains("integer"), "{params:?}");
        assert!(param("from").to_string().contains("date-time"), "{params:?}");
    }

    /// Every `$ref` names a schema the document has.
    #[test]
    fn every_reference_resolves() {
        fn refs(value: &Value, out: &mut Vec<String>) {
            match value {
                Value::Object(map) => {
                    if let Some(Value::String(r)) = map.get("$ref") {
                        out.push(r.clone());
                    }
                    map.values().for_each(|v| refs(v, out));
                }
                Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let doc = document();
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(!all.is_empty());
        for r in all {
            let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("{r}"));
            assert!(doc["components"]["schemas"].get(name).is_some(), "{r} names no schema");
        }
    }

    /// The property names a schema gives an object, through `$ref`s and `allOf`.
    fn properties(doc: &Value, schema: &Value) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        if let Some(name) = schema["$ref"].as_str().and_then(|r| r.strip_prefix("#/components/schemas/")) {
            out.extend(properties(doc, &doc["components"]["schemas"][name]));
        }
        for part in schema["allOf"].as_array().into_iter().flatten() {
            out.extend(properties(doc, part));
        }
        out.extend(schema["properties"].as_object().into_iter().flat_map(|p| p.keys().cloned()));
        out
    }

    fn keys(value: &Value) -> BTreeSet<String> {
        value.as_object().unwrap().keys().cloned().collect()
    }

    fn assert_described(doc: &Value, schema: &str, value: &Value) {
        let described = properties(doc, &serde_json::json!({ "$ref": format!("#/components/schemas/{schema}") }));
        let undescribed: Vec<_> = keys(value).difference(&described).cloned().collect();
        assert!(undescribed.is_empty(), "{schema} does not describe {undescribed:?}");
    }

    /// The views built as JSON (`views.rs`) have no field the document leaves out: a
    /// key added there must be added to its schema here.
    #[test]
    fn the_views_are_fully_described() {
        let doc = document();
        let snapshot = crate::sample::Sampler::new(Default::default()).sample();
        let stored = super::super::views::stored(1, &snapshot, true);
        assert_described(&doc, "StoredSnapshot", &stored);
        assert_described(&doc, "StoredProcess", &stored["processes"][0]);
        let monitoring = super::super::views::monitoring(1, Utc::now(), &snapshot);
        assert_described(&doc, "MonitoringSnapshot", &monitoring);
        assert_described(&doc, "StoredProcess", &monitoring["processes"][0]);
        assert_described(&doc, "NetworkStats", &monitoring["network_stats"]);
        if let Some(connection) = monitoring["network_connections"].get(0) {
            assert_described(&doc, "MonitoringConnection", connection);
        }
    }

    /// The enums' values in the document are the ones serde writes.
    #[test]
    fn enum_spellings_match_serde() {
        let doc = document();
        let values = |name: &str| doc["components"]["schemas"][name]["enum"].clone();
        let tcp = values("TcpState");
        assert!(tcp.as_array().unwrap().contains(&serde_json::json!("FIN_WAIT1")), "{tcp}");
        assert!(values("ProcessStatus").as_array().unwrap().contains(&serde_json::json!("disk_sleep")));
    }
}
