//! The dashboard, served by the collector itself from files built into the binary.
//!
//! `ui/dist` (the output of `npm run build` in `ui/`) is embedded at compile time in
//! release builds; debug builds read the same folder from disk at run time, so the
//! dashboard can be rebuilt without recompiling Rust. When it has not been built at all,
//! the build still succeeds and `/` answers with a page that says how to build it.
//!
//! Every response carries a strict Content-Security-Policy: scripts, styles and
//! connections only from this origin, no inline code, no framing. Process names and
//! command lines come from monitored machines and are hostile until shown otherwise; the
//! dashboard renders them as text, and this policy is the second line: even markup that
//! slipped through could not run a script or load anything from elsewhere.
//!
//! Caching: file names under `assets/` carry a content hash, so they are cached for a
//! year and marked immutable; everything else (`index.html`) is revalidated on every
//! load (`no-cache` with an ETag), so a new collector version shows its new dashboard at
//! once. Where the build left a `.gz` beside a file and the client accepts gzip, the
//! compressed bytes are sent as they are.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use rust_embed::Embed;

use super::error::ApiError;

/// The built dashboard.
#[derive(Embed)]
#[folder = "ui/dist/"]
#[allow_missing = true]
struct Dashboard;

/// The policy sent with the dashboard. `img-src data:` is for images the stylesheet may
/// inline; `connect-src 'self'` covers the API and the WebSockets (same host and port).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; font-src 'self'; connect-src 'self'; object-src 'none'; worker-src 'none'; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// Hashed file names: safe to keep for a year.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Everything else: ask every time (a 304 costs little).
const REVALIDATE: &str = "no-cache";

/// Shown at `/` when `ui/dist` was not built before the binary.
const NOT_BUILT: &str = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Procyon</title></head>\n<body><h1>The dashboard has not been built</h1>\n<p>This collector was compiled without its dashboard. Run <code>make run</code> (or\n<code>npm ci &amp;&amp; npm run build</code> in <code>ui/</code>, then rebuild) to include it.\nThe API is available under <a href=\"/api/openapi.json\">/api/</a>.</p></body></html>\n";

/// Whether the dashboard is in this binary (or, in debug builds, on disk).
pub fn is_built() -> bool {
    Dashboard::get("index.html").is_some()
}

/// The router's fallback: a dashboard file, the dashboard's `index.html` for any other
/// page (its own routes), or the JSON 404 for unknown `/api/`, `/ws/` and `/metrics`
/// paths: a client of those must never get a page with 200 (a scraper would take it for
/// metrics).
pub async fn fallback(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path();
    if is_api(path) {
        return super::error::not_found().await.into_response();
    }
    if method != Method::GET && method != Method::HEAD {
        return ApiError::NotFound(format!("No {method} handler for {path}.")).into_response();
    }
    let mut response = serve(path, &headers);
    if method == Method::HEAD {
        *response.body_mut() = Body::empty();
    }
    response
}

fn is_api(path: &str) -> bool {
    ["/api", "/ws", "/metrics"]
        .iter()
        .any(|prefix| path.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('/')))
}

/// The response for a GET of `path`.
fn serve(path: &str, headers: &HeaderMap) -> Response {
    let relative = path.trim_start_matches('/');
    // Nothing outside the folder, whatever the path says.
    if relative.split('/').any(|s| s == ".." || s.contains('\\')) || relative.contains('\0') {
        return not_found();
    }
    let name = if relative.is_empty() { "index.html" } else { relative };
    if let Some(response) = file(name, headers) {
        return response;
    }
    // A path with a file extension, or under assets/, names a file that is not there;
    // anything else is one of the dashboard's pages.
    let last = name.rsplit('/').next().unwrap_or_default();
    if name != "index.html" && (name.starts_with("assets/") || last.contains('.')) {
        return not_found();
    }
    file("index.html", headers).unwrap_or_else(not_built)
}

/// One embedded file with its headers, or `None` if there is no such file.
fn file(name: &str, request: &HeaderMap) -> Option<Response> {
    let plain = Dashboard::get(name)?;
    let gzip = accepts_gzip(request).then(|| Dashboard::get(&format!("{name}.gz"))).flatten();
    let compressible = gzip.is_some() || is_text(plain.metadata.mimetype());
    let (body, encoding) = match gzip {
        Some(gz) => (gz, Some("gzip")),
        None => (plain.clone(), None),
    };
    let etag =
        format!("\"{}{}\"", hex(&body.metadata.sha256_hash()[..12]), if encoding.is_some() { "-gz" } else { "" });

    let mut response = if request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = Response::new(Body::from(body.data.into_owned()));
        if let Some(enc) = encoding {
            r.headers_mut().insert(header::CONTENT_ENCODING, HeaderValue::from_static(enc));
        }
        r
    };
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&content_type(plain.metadata.mimetype())) {
        h.insert(header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if name.starts_with("assets/") { IMMUTABLE } else { REVALIDATE }),
    );
    if compressible {
        h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
    security_headers(h);
    Some(response)
}

fn not_found() -> Response {
    let mut r = (StatusCode::NOT_FOUND, "Not found\n").into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static(REVALIDATE));
    security_headers(r.headers_mut());
    r
}

fn not_built() -> Response {
    let mut r = (StatusCode::SERVICE_UNAVAILABLE, NOT_BUILT).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(REVALIDATE));
    security_headers(h);
    r
}

fn security_headers(h: &mut HeaderMap) {
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    h.insert("cross-origin-resource-policy", HeaderValue::from_static("same-origin"));
    h.insert("permissions-policy", HeaderValue::from_static("camera=(), microphone=(), geolocation=()"));
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()).any(|v| {
        v.split(',').any(|part| {
            let mut it = part.split(';');
            let coding = it.next().unwrap_or_default().trim();
            // `gzip;q=0` means "not gzip".
            let refused = it.any(|p| matches!(p.trim(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
            coding.eq_ignore_ascii_case("gzip") && !refused
        })
    })
}

fn is_text(mime: &str) -> bool {
    mime.starts_with("text/") || mime.ends_with("javascript") || mime.ends_with("json") || mime.ends_with("+xml")
}

fn content_type(mime: &str) -> String {
    if is_text(mime) && !mime.contains("charset") { format!("{mime}; charset=utf-8") } else { mime.to_owned() }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str, accept_gzip: bool) -> Response {
        let mut headers = HeaderMap::new();
        if accept_gzip {
            headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip, deflate, br"));
        }
        serve(path, &headers)
    }

    #[test]
    fn index_and_app_pages_carry_the_policy_and_are_revalidated() {
        for path in ["/", "/index.html", "/some/page"] {
            let r = get(path, false);
            let csp = r.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
            assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe"), "{path}: {csp}");
            assert!(csp.contains("frame-ancestors 'none'"));
            assert_eq!(r.headers()[header::CACHE_CONTROL], REVALIDATE, "{path}");
            if is_built() {
                assert_eq!(r.status(), StatusCode::OK, "{path}");
                assert!(r.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
            } else {
                assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
            }
        }
    }

    #[test]
    fn hashed_assets_are_immutable_and_gzipped_when_accepted() {
        let Some(js) = Dashboard::iter().find(|f| f.starts_with("assets/") && f.ends_with(".js")) else {
            return; // dashboard not built: nothing to check
        };
        let plain = get(&format!("/{js}"), false);
        assert_eq!(plain.status(), StatusCode::OK);
        assert_eq!(plain.headers()[header::CACHE_CONTROL], IMMUTABLE);
        assert!(plain.headers()[header::CONTENT_TYPE].to_str().unwrap().contains("javascript"));
        assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
        if Dashboard::get(&format!("{js}.gz")).is_some() {
            let gz = get(&format!("/{js}"), true);
            assert_eq!(gz.headers()[header::CONTENT_ENCODING], "gzip");
            assert_ne!(gz.headers()[header::ETAG], plain.headers()[header::ETAG]);
        }
    }

    #[test]
    fn a_matching_etag_gets_not_modified() {
        if !is_built() {
            return;
        }
        let first = get("/", false);
        let etag = first.headers()[header::ETAG].clone();
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_NONE_MATCH, etag);
        assert_eq!(serve("/", &headers).status(), StatusCode::NOT_MODIFIED);
    }

    #[test]
    fn missing_files_and_traversal_are_not_found() {
        assert_eq!(get("/assets/nope-123.js", false).status(), StatusCode::NOT_FOUND);
        assert_eq!(get("/missing.png", false).status(), StatusCode::NOT_FOUND);
        assert_eq!(get("/../Cargo.toml", false).status(), StatusCode::NOT_FOUND);
        assert_eq!(get("/assets/..%2f..%2fCargo.toml", false).status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn api_paths_are_left_to_the_api() {
        assert!(is_api("/api/nope") && is_api("/ws/nope") && is_api("/api"));
        assert!(!is_api("/apiary") && !is_api("/") && !is_api("/assets/x.js"));
        // A scraper that gets a page with 200 takes it for metrics.
        assert!(is_api("/metrics") && is_api("/metrics/") && is_api("/metrics/job/x"));
        assert!(!is_api("/metricsboard"));
    }

    #[test]
    fn gzip_refused_with_q_zero() {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip;q=0, br"));
        assert!(!accepts_gzip(&h));
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("br, GZIP;q=0.5"));
        assert!(accepts_gzip(&h));
    }
}
