//! `GET /metrics`: the collector's Prometheus endpoint, a thin adapter.
//!
//! Each scrape builds a fresh registry: the host families (crate `metrics`) filled
//! from the hub's newest snapshot of every host, and the collector's own figures. Only
//! the collector's counters and its ingest histogram ([`Counters`]) live between
//! scrapes; host figures are read from the hub, never kept a second time.
//!
//! Who may read it is [`MetricsReader`]: a key of scope `metrics` or an admin.
//!
//! Building the text is CPU work that grows with the fleet, so scrapes share it
//! ([`Scrapes`]): at most one is built at a time, and one built less than
//! [`REUSED_FOR`] ago is answered again (per format) rather than built anew. Many
//! scrapers at once, or one scraping in a loop, cost at most one build a second.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::Utc;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::AppState;
use super::auth::MetricsReader;
use super::error::ApiError;
use super::routes::{Access, Route};
use crate::metrics::{Format, HostFamilies, HostState, encode, register_build_info};
use crate::model::agent::CollectorMessage;

/// The label of a refusal.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: String,
}

/// What the collector counts between scrapes. Cheap to update from any task.
#[derive(Debug)]
pub struct Counters {
    ingested: Counter,
    ingest_seconds: Histogram,
    refused: Family<Reason, Counter>,
    frames_refused: Family<Reason, Counter>,
    read_back: Counter,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            ingested: Counter::default(),
            // 0.5 ms to about 4 s: a stored snapshot takes around a millisecond; seconds
            // mean the disk or the writer is the bottleneck.
            ingest_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            refused: Family::default(),
            frames_refused: Family::default(),
            read_back: Counter::default(),
        }
    }
}

impl Counters {
    /// A snapshot stored (or found a duplicate) after `took`.
    pub fn ingested(&self, took: Duration) {
        self.ingested.inc();
        self.ingest_seconds.observe(took.as_secs_f64());
    }

    /// The collector answered a frame of the agent channel with `reply`: a refusal is
    /// counted under its kind (`rejected`, `resync`, or an error's code).
    pub fn frame_answered(&self, reply: &CollectorMessage) {
        let reason = match reply {
            CollectorMessage::Rejected { .. } => "rejected",
            CollectorMessage::Resync { .. } => "resync",
            CollectorMessage::Error { code, .. } => code.as_str(),
            _ => return,
        };
        self.frames_refused.get_or_create(&Reason { reason: reason.to_owned() }).inc();
    }

    /// A snapshot another collector stored was read back (for a host followed here).
    pub fn read_back(&self) {
        self.read_back.inc();
    }

    /// A snapshot refused with `error`; its error code is the reason.
    pub fn refused(&self, error: &ApiError) {
        let reason = error.parts().1.error;
        self.refused.get_or_create(&Reason { reason }).inc();
    }
}

/// The metrics route, with who may read it (see `routes.rs`). No trailing-slash twin:
/// scrapers are configured with the one path.
pub fn routes() -> Vec<Route> {
    vec![Route::new(Method::GET, "/metrics", Access::Metrics, get(metrics)).exact()]
}

/// `GET /metrics`.
#[utoipa::path(get, path = "/metrics", tag = "meta",
    summary = "Prometheus metrics",
    description = "Every host's figures and the collector's own, in the Prometheus text format, or in OpenMetrics \
        when the scraper asks for it (`Accept: application/openmetrics-text`). Read with a key of scope `metrics` \
        (`Authorization: Bearer KEY` or `Api-Key KEY`) or as an admin.",
    responses((status = 200, description = "The metrics", content(
        (String = "text/plain"),
        (String = "application/openmetrics-text")))))]
pub async fn metrics(
    State(state): State<AppState>,
    _: MetricsReader,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let format = Format::from_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let text = scrape(&state, format).await?;
    let mut response = text.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// How long a built scrape is answered again.
pub const REUSED_FOR: Duration = Duration::from_secs(1);

/// The scrapes built lately, one per format, and the lock that lets one build at a time.
#[derive(Debug, Default)]
pub struct Scrapes {
    /// Held while a scrape is built: a scraper that waited for it finds the text fresh.
    built: tokio::sync::Mutex<Vec<(Format, Instant, Bytes)>>,
    /// Scrapes built since the collector started.
    builds: AtomicU64,
}

impl Scrapes {
    /// How many scrapes were built (not answered from what was built).
    pub fn builds(&self) -> u64 {
        self.builds.load(Ordering::Relaxed)
    }
}

/// The text of a scrape in `format`: the one built within [`REUSED_FOR`], or a new one,
/// built while no other is.
async fn scrape(state: &AppState, format: Format) -> Result<Bytes, ApiError> {
    let mut built = state.scrapes.built.lock().await;
    if let Some((_, _, text)) = built.iter().find(|(f, at, _)| *f == format && at.elapsed() < REUSED_FOR) {
        return Ok(text.clone());
    }
    state.scrapes.builds.fetch_add(1, Ordering::Relaxed);
    let text = Bytes::from(build(state, format).await?);
    built.retain(|(f, _, _)| *f != format);
    built.push((format, Instant::now(), text.clone()));
    Ok(text)
}

/// Builds a scrape: every host's families and the collector's own, encoded.
async fn build(state: &AppState, format: Format) -> Result<String, ApiError> {
    let mut registry = Registry::default();
    register_collector(&mut registry, state).await;
    register_build_info(&mut registry, "procyon");
    let now = Utc::now();
    // Snapshots read back from another collector are that collector's to serve: each
    // snapshot becomes metrics once, where it arrived, whoever follows it here.
    let hosts: Vec<_> = state
        .hub
        .latest_all()
        .into_iter()
        .filter(|published| !published.remote)
        .map(|published| {
            let age = (now - published.received_at).num_milliseconds() as f64 / 1000.0;
            let online = state.is_online(&published.snapshot.host.hostname);
            let host = HostState {
                online,
                age_seconds: age,
                max_groups: state.settings.metrics_groups,
                group_by: state.settings.metrics_group_by,
                named: state.settings.metrics_named_groups.clone(),
            };
            (published, host)
        })
        .collect();
    // Grouping every host's processes and writing the text is CPU work that grows with
    // the fleet (about 85,000 samples for 1,000 hosts): off the async workers.
    let text = tokio::task::spawn_blocking(move || {
        let families = HostFamilies::register(&mut registry);
        for (published, host) in &hosts {
            families.add(&published.snapshot, host);
        }
        encode(&registry, format)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("building the metrics: {e}")))?
    .map_err(|e| ApiError::Internal(format!("encoding the metrics: {e}")))?;
    Ok(text)
}

/// The collector's own families.
async fn register_collector(registry: &mut Registry, state: &AppState) {
    let gauge = |value: usize| {
        let g = Gauge::<i64>::default();
        g.set(i64::try_from(value).unwrap_or(i64::MAX));
        g
    };
    registry.register(
        "procyon_agents_connected",
        "Agent sessions open on the agent channel",
        gauge(state.agents.session_count()),
    );
    registry.register(
        "procyon_hosts_live",
        "Hosts whose newest snapshot, or its figures alone, is held in memory",
        gauge(state.hub.host_count()),
    );
    registry.register(
        "procyon_websocket_clients",
        "Live streams (dashboards' WebSockets) open",
        gauge(state.streams.total()),
    );
    // A database that cannot say its size leaves the family out rather than claim zero.
    if let Ok(size) = state.store.db_size_bytes().await {
        registry.register(
            "procyon_database_size_bytes",
            "Size of the database file (pages in use and free)",
            gauge(usize::try_from(size).unwrap_or(usize::MAX)),
        );
    }
    let counters = &state.counters;
    registry.register(
        "procyon_snapshots_ingested",
        "Snapshots from agents, uploads and this machine that reached the store",
        counters.ingested.clone(),
    );
    registry.register(
        "procyon_ingest_duration_seconds",
        "Time to check and store one snapshot",
        counters.ingest_seconds.clone(),
    );
    registry.register(
        "procyon_snapshots_refused",
        "Snapshots refused at ingest, by the error code they were refused with",
        counters.refused.clone(),
    );
    registry.register(
        "procyon_agent_frames_refused",
        "Frames of the agent channel answered with a refusal, by kind (rejected, resync, or the error's code)",
        counters.frames_refused.clone(),
    );
    if state.store.is_shared() {
        registry.register(
            "procyon_snapshots_read_back",
            "Snapshots other collectors of the database stored, read back for hosts followed here",
            counters.read_back.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(counters: &Counters) -> String {
        let mut registry = Registry::default();
        registry.register("procyon_snapshots_refused", "refused", counters.refused.clone());
        registry.register("procyon_agent_frames_refused", "frames", counters.frames_refused.clone());
        registry.register("procyon_snapshots_ingested", "ingested", counters.ingested.clone());
        encode(&registry, Format::Prometheus).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_scrapes_build_once_and_reuse_it_for_a_second() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(&dir.path().join("procyon.db")).await.unwrap();
        let auth = super::super::auth::Auth::new(b"a test signing key of 32 bytes!!", Duration::from_secs(60));
        let state = AppState::new(store, crate::hub::Hub::new(), auth, super::super::Settings::default());
        // Two at once: one builds, the other waits for it and gets the same text.
        let (a, b) = tokio::join!(scrape(&state, Format::Prometheus), scrape(&state, Format::Prometheus));
        assert_eq!(a.unwrap(), b.unwrap());
        assert_eq!(state.scrapes.builds(), 1);
        // Reused within the second, per format.
        scrape(&state, Format::Prometheus).await.unwrap();
        assert_eq!(state.scrapes.builds(), 1);
        let open = scrape(&state, Format::OpenMetrics).await.unwrap();
        assert!(open.ends_with(b"# EOF\n"), "{open:?}");
        assert_eq!(state.scrapes.builds(), 2);
        // Built again once it is older than that.
        tokio::time::sleep(REUSED_FOR + Duration::from_millis(50)).await;
        scrape(&state, Format::Prometheus).await.unwrap();
        assert_eq!(state.scrapes.builds(), 3);
    }

    #[test]
    fn refusals_are_counted_by_reason_and_answers_that_accept_are_not() {
        let counters = Counters::default();
        counters.frame_answered(&CollectorMessage::Ack { seq: 1 });
        counters.frame_answered(&CollectorMessage::Rejected { seq: 2, message: "bad".into() });
        counters.frame_answered(&CollectorMessage::Rejected { seq: 3, message: "bad".into() });
        counters.frame_answered(&CollectorMessage::Resync { seq: 4, message: "no base".into() });
        counters.frame_answered(&CollectorMessage::Error { code: "bad_frame".into(), message: "x".into() });
        counters.refused(&ApiError::invalid("seq", "too far ahead"));
        counters.ingested(Duration::from_millis(2));
        let text = text(&counters);
        for line in [
            "procyon_agent_frames_refused_total{reason=\"rejected\"} 2",
            "procyon_agent_frames_refused_total{reason=\"resync\"} 1",
            "procyon_agent_frames_refused_total{reason=\"bad_frame\"} 1",
            "procyon_snapshots_refused_total{reason=\"invalid\"} 1",
            "procyon_snapshots_ingested_total 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        assert_eq!(text.matches("procyon_agent_frames_refused_total{").count(), 3, "{text}");
    }
}
