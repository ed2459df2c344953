//! `--metrics-listen`: this machine's Prometheus metrics at `http://ADDR/metrics`.
//!
//! The figures are those the collector serves for this host (the same families, from
//! `procyon::metrics`), made from the newest snapshot the sampler took, at scrape time.
//! No key is asked for: the address is loopback unless the operator said otherwise
//! (`--metrics-listen-public`, see config.rs).
//!
//! The server is small on purpose: HTTP/1.1 only, headers within a few seconds, a few
//! connections at once, and one path.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ACCEPT, ALLOW, CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use procyon::metrics::{DEFAULT_GROUPS, Format, GroupBy, HostState, render_host};
use procyon::model::Snapshot;
use tokio::sync::{Semaphore, watch};

/// Connections served at once; more wait in the kernel's backlog.
const CONNECTIONS: usize = 16;
/// Time a client has to send its request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a connection is kept, whatever it does.
const CONNECTION_LIMIT: Duration = Duration::from_secs(60);

/// The newest snapshot, as the sampler publishes it (`None` before the first).
pub type Latest = watch::Receiver<Option<Arc<Snapshot>>>;

/// Serves `/metrics` on `listener` until `stop` turns true.
pub async fn serve(listener: tokio::net::TcpListener, latest: Latest, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(CONNECTIONS));
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = stop.changed() => return,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: wait a moment, then go on.
                tracing::warn!("metrics: cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let latest = latest.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let latest = latest.clone();
                async move { Ok::<_, Infallible>(answer(&request, &latest)) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            // A timed-out or broken connection is the client's business, not an error here.
            let _ = tokio::time::timeout(CONNECTION_LIMIT, connection).await;
            drop(permit);
        });
    }
}

/// The answer to one request.
fn answer(request: &Request<Incoming>, latest: &Latest) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: &str| {
        let mut r = Response::new(Full::new(Bytes::from(body.to_owned())));
        *r.status_mut() = status;
        r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        r
    };
    if request.uri().path() != "/metrics" {
        return text(StatusCode::NOT_FOUND, "Not found: this agent serves /metrics only.\n");
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "Use GET.\n");
        r.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let Some(snapshot) = latest.borrow().clone() else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "No snapshot taken yet; try again in a moment.\n");
    };
    let format = Format::from_accept(request.headers().get(ACCEPT).and_then(|v| v.to_str().ok()));
    let age = (crate::clock::adjust(chrono::Utc::now()) - snapshot.taken_at).num_milliseconds() as f64 / 1000.0;
    // The agent is up and sampling, so its host is online as far as it can tell.
    let state = HostState {
        online: true,
        age_seconds: age,
        max_groups: DEFAULT_GROUPS,
        group_by: GroupBy::Name,
        named: Vec::new().into(),
    };
    let body = render_host(&snapshot, &state, "procyon-agent", format);
    let mut r =
        Response::new(Full::new(Bytes::from(if request.method() == Method::HEAD { String::new() } else { body })));
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
