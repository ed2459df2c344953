//! The authorisation matrix: every route of the collector (taken from the table the
//! router is built from, so a new route cannot be left out) called with every kind of
//! credential, each answer held to the route's declared access; and what every answer
//! shares, such as compression. No route may answer a
//! credential it should refuse with anything but 401 or 403, and none may refuse one it
//! should accept.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, header};
use procyon::hub::Hub;
use procyon::model::api::{KeyScope, Role};
use procyon::server::auth::{Auth, Claims, hash_api_key, new_api_key};
use procyon::server::routes::{self, Access};
use procyon::server::{AppState, Settings, app};
use procyon::store::Store;
use tower::ServiceExt;

const SECRET: &[u8] = b"an authorisation matrix secret, 32+ bytes";

/// The kinds of credential every route is tried with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cred {
    None,
    Malformed,
    Expired,
    RemovedUser,
    BeforePasswordChange,
    Viewer,
    Operator,
    Admin,
    UploadKey,
    RevokedKey,
    KeyBoundElsewhere,
    /// An admin's token in the URL (`?token=`), which only WebSockets accept.
    AdminTokenInUrl,
    /// A key of scope metrics as `Bearer KEY` (what Prometheus sends) ...
    MetricsKey,
    /// ... and as `Api-Key KEY`.
    MetricsKeyAsApiKey,
    /// A revoked key of scope metrics.
    RevokedMetricsKey,
}

const CREDS: [Cred; 15] = [
    Cred::None,
    Cred::Malformed,
    Cred::Expired,
    Cred::RemovedUser,
    Cred::BeforePasswordChange,
    Cred::Viewer,
    Cred::Operator,
    Cred::Admin,
    Cred::UploadKey,
    Cred::RevokedKey,
    Cred::KeyBoundElsewhere,
    Cred::AdminTokenInUrl,
    Cred::MetricsKey,
    Cred::MetricsKeyAsApiKey,
    Cred::RevokedMetricsKey,
];

/// Whether `access` admits `cred` on `path`.
fn admits(access: Access, cred: Cred, path: &str) -> bool {
    use Cred::*;
    match access {
        Access::Public => true,
        // A key bound to another host passes the agent channel's door (the host it
        // reports as is checked at its hello), but not an upload for this host.
        Access::Agent => cred == UploadKey || (cred == KeyBoundElsewhere && path == "/ws/agent"),
        Access::Viewer => {
            matches!(cred, Viewer | Operator | Admin) || (cred == AdminTokenInUrl && path.starts_with("/ws/"))
        }
        Access::Operator => matches!(cred, Operator | Admin),
        Access::Admin => cred == Admin,
        // Scraping keys, and admins (documented); never viewers or upload keys.
        Access::Metrics => matches!(cred, MetricsKey | MetricsKeyAsApiKey | Admin),
    }
}

/// The authorization header a credential is sent as.
struct Creds {
    headers: Vec<(Cred, Option<String>)>,
}

async fn token_for(state: &AppState, name: &str) -> String {
    let user = state.store.user_by_name(name).await.unwrap().unwrap();
    let login = state.auth.issue(&user.summary.username, user.summary.role, user.token_generation).unwrap();
    format!("Bearer {}", login.token)
}

async fn setup(dir: &std::path::Path) -> (AppState, Creds) {
    let store = Store::open(&dir.join("procyon.db")).await.unwrap();
    let state =
        AppState::new(store.clone(), Hub::new(), Auth::new(SECRET, Duration::from_secs(3600)), Settings::default());
    for (name, role) in [
        ("viewer", Role::Viewer),
        ("operator", Role::Operator),
        ("admin", Role::Admin),
        ("removed", Role::Admin),
        ("changed", Role::Admin),
    ] {
        store.create_user(name, "not a real hash", role).await.unwrap();
    }
    let removed = token_for(&state, "removed").await;
    store.remove_user("removed").await.unwrap();
    let changed = token_for(&state, "changed").await;
    store.set_password("changed", "another hash").await.unwrap();
    let expired = {
        let now = chrono::Utc::now().timestamp();
        // The admin's real generation: only the expiry is wrong with this token.
        let generation = store.user_by_name("admin").await.unwrap().unwrap().token_generation;
        let claims = Claims {
            sub: "admin".into(),
            role: Role::Admin,
            generation,
            iat: now - 7200,
            exp: now - 3600,
            auth_time: 0,
        };
        let key = jsonwebtoken::EncodingKey::from_secret(SECRET);
        format!("Bearer {}", jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap())
    };
    let key = |bound: Option<&'static str>, name: &'static str| {
        let store = store.clone();
        async move {
            let (key, prefix, _) = new_api_key().unwrap();
            store.create_api_key(name, &prefix, &hash_api_key(&key), bound).await.unwrap();
            format!("Api-Key {key}")
        }
    };
    let upload = key(None, "upload").await;
    let revoked = key(None, "revoked").await;
    store.revoke_api_key("revoked").await.unwrap();
    let elsewhere = key(Some("elsewhere"), "elsewhere").await;
    let metrics_key = |name: &'static str| {
        let store = store.clone();
        async move {
            let (key, prefix, _) = new_api_key().unwrap();
            store.create_scoped_api_key(name, &prefix, &hash_api_key(&key), None, KeyScope::Metrics).await.unwrap();
            key
        }
    };
    let metrics = metrics_key("prom").await;
    let revoked_metrics = metrics_key("prom-revoked").await;
    store.revoke_api_key("prom-revoked").await.unwrap();
    let headers = vec![
        (Cred::None, None),
        (Cred::Malformed, Some("Bearer not-a-token".into())),
        (Cred::Expired, Some(expired)),
        (Cred::RemovedUser, Some(removed)),
        (Cred::BeforePasswordChange, Some(changed)),
        (Cred::Viewer, Some(token_for(&state, "viewer").await)),
        (Cred::Operator, Some(token_for(&state, "operator").await)),
        (Cred::Admin, Some(token_for(&state, "admin").await)),
        (Cred::UploadKey, Some(upload)),
        (Cred::RevokedKey, Some(revoked)),
        (Cred::KeyBoundElsewhere, Some(elsewhere)),
        // Not a header: the token goes in the URL (see the loop).
        (Cred::AdminTokenInUrl, Some(token_for(&state, "admin").await)),
        (Cred::MetricsKey, Some(format!("Bearer {metrics}"))),
        (Cred::MetricsKeyAsApiKey, Some(format!("Api-Key {metrics}"))),
        (Cred::RevokedMetricsKey, Some(format!("Bearer {revoked_metrics}"))),
    ];
    assert_eq!(headers.iter().map(|(c, _)| *c).collect::<Vec<_>>(), CREDS);
    (state, Creds { headers })
}

/// A path with its parameters filled in (harmless values: no process is ever signalled,
/// no user or key exists under these names).
fn concrete(path: &str) -> String {
    path.replace("{server_id}", "matrix-host")
        .replace("{id}", "1")
        .replace("{pid}", "999999")
        .replace("{action}", "kill")
        .replace("{username}", "nobody")
        .replace("{key}", "no-such-key")
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_answers_every_credential_as_its_access_says() {
    let dir = tempfile::tempdir().unwrap();
    let (state, creds) = setup(dir.path()).await;
    let router = app(state);
    let upload = serde_json::json!({
        "hostname": "matrix-host",
        "snapshot_time": chrono::Utc::now(),
        "processes": [{"pid": 1, "name": "init"}],
    })
    .to_string();
    let table = routes::all();
    assert!(table.len() >= 25, "the table holds every route ({})", table.len());
    let mut failures = Vec::new();
    for route in &table {
        for (cred, value) in &creds.headers {
            let mut path = concrete(route.path);
            let body = if route.method == Method::POST { upload.clone() } else { String::new() };
            let mut header_value = value.clone();
            if *cred == Cred::AdminTokenInUrl {
                let token = header_value.take().unwrap().trim_start_matches("Bearer ").to_owned();
                path = format!("{path}?token={token}");
            }
            let mut request = Request::builder().method(route.method.clone()).uri(&path);
            if let Some(v) = header_value {
                request = request.header(header::AUTHORIZATION, v);
            }
            let request = request.header(header::CONTENT_TYPE, "application/json").body(Body::from(body)).unwrap();
            let status = router.clone().oneshot(request).await.unwrap().status().as_u16();
            let refused = matches!(status, 401 | 403);
            let expected = admits(route.access, *cred, route.path);
            if expected == refused {
                failures.push(format!(
                    "{} {path} as {cred:?}: {status} (access {:?}, expected {})",
                    route.method,
                    route.access,
                    if expected { "accepted" } else { "401/403" }
                ));
            }
            // Bad or stale tokens say "sign in again" (401); a good user without the
            // role, or an API key used to read, is told no (403).
            let exact = match (route.access, cred) {
                (Access::Public, _) => None,
                (
                    Access::Viewer | Access::Operator | Access::Admin,
                    Cred::None | Cred::Malformed | Cred::Expired | Cred::RemovedUser | Cred::BeforePasswordChange,
                ) => Some(401),
                (Access::Viewer | Access::Operator | Access::Admin, Cred::AdminTokenInUrl)
                    if !route.path.starts_with("/ws/") =>
                {
                    Some(401)
                }
                (Access::Operator, Cred::Viewer) | (Access::Admin, Cred::Viewer | Cred::Operator) => Some(403),
                (Access::Agent, Cred::RevokedKey | Cred::None) => Some(401),
                // A scraping key is known and live, but may not upload.
                (Access::Agent, Cred::MetricsKeyAsApiKey) => Some(403),
                (
                    Access::Metrics,
                    Cred::None
                    | Cred::Malformed
                    | Cred::Expired
                    | Cred::RemovedUser
                    | Cred::BeforePasswordChange
                    | Cred::RevokedKey
                    | Cred::RevokedMetricsKey
                    | Cred::AdminTokenInUrl,
                ) => Some(401),
                (Access::Metrics, Cred::Viewer | Cred::Operator | Cred::UploadKey | Cred::KeyBoundElsewhere) => {
                    Some(403)
                }
                _ => None,
            };
            if let Some(want) = exact
                && want != status
            {
                failures.push(format!("{} {path} as {cred:?}: {status}, expected exactly {want}", route.method));
            }
        }
    }
    assert!(failures.is_empty(), "{} wrong answers:\n{}", failures.len(), failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_are_compressed_when_the_client_asks() {
    let dir = tempfile::tempdir().unwrap();
    let (state, creds) = setup(dir.path()).await;
    let admin = creds.headers.iter().find(|(c, _)| *c == Cred::Admin).and_then(|(_, v)| v.clone()).unwrap();
    let router = app(state);
    for (accept, expected) in [("gzip", Some("gzip")), ("br", Some("br")), ("zstd", Some("zstd")), ("identity", None)] {
        let request = Request::builder()
            .uri("/api/openapi.json")
            .header(header::AUTHORIZATION, &admin)
            .header(header::ACCEPT_ENCODING, accept)
            .body(Body::empty())
            .unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), 200);
        let encoding = response.headers().get(header::CONTENT_ENCODING).map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(encoding.as_deref(), expected, "asked for {accept}");
    }
}
