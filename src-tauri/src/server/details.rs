//! `GET /api/hosts/{server_id}/processes/{pid}/details`: one process in depth, read when
//! someone opens its details.
//!
//! On the collector's own machine the sampler module reads it ([`crate::sample::details`]);
//! on an agent's host the request goes over that agent's channel as a read-only request
//! (answered whatever the agent's `--allow-control` says; an agent too old to answer
//! gets a clear 501). Reading costs the monitored machine a little each time, so each
//! user may ask [`PER_MINUTE`] times a minute, and every request is written to the audit
//! log like an action (who looked at which process).
//!
//! What an agent answers is not trusted: its lists are capped and its text made
//! printable again ([`ProcessDetails::bounded`]), and an answer about another pid is
//! refused.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::Method;
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::AppState;
use super::auth::CurrentUser;
use super::error::ApiError;
use super::query::ApiQuery;
use super::rest::ApiPath;
use super::routes::{Access, Route};
use crate::model::api::{AuditAction, ErrorBody, HostSummary};
use crate::model::details::ProcessDetails;
use crate::model::{ActionError, ActionErrorCode};
use crate::store::NewAuditEntry;

/// Details requests one user may make in a minute.
pub const PER_MINUTE: usize = 60;

/// How long a relayed request waits for the agent's answer.
const RELAY_TIMEOUT: Duration = Duration::from_secs(15);

/// The details route.
pub fn routes() -> Vec<Route> {
    vec![Route::new(Method::GET, "/api/hosts/{server_id}/processes/{pid}/details", Access::Viewer, get(details))]
}

/// Recent details requests per user, for the rate limit.
#[derive(Default)]
pub struct DetailsGate {
    asked: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl DetailsGate {
    /// Notes a request of `username`; `Err(seconds to wait)` when they made
    /// [`PER_MINUTE`] in the last minute already.
    fn admit(&self, username: &str) -> Result<(), u64> {
        let minute = Duration::from_secs(60);
        let mut asked = self.asked.lock().unwrap_or_else(|p| p.into_inner());
        if asked.len() >= 10_000 {
            asked.retain(|_, times| times.back().is_some_and(|t| t.elapsed() < minute));
        }
        let times = asked.entry(username.to_owned()).or_default();
        while times.front().is_some_and(|t| t.elapsed() >= minute) {
            times.pop_front();
        }
        if times.len() >= PER_MINUTE {
            let oldest = times.front().map_or(minute, |t| minute.saturating_sub(t.elapsed()));
            return Err(oldest.as_secs().max(1));
        }
        times.push_back(Instant::now());
        Ok(())
    }
}

/// `?start_time=` of the details route.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct DetailsQuery {
    /// The process's start time as the caller saw it (RFC 3339): a pid reused since is
    /// then refused (409) instead of answered with another process's details.
    start_time: Option<DateTime<Utc>>,
}

#[utoipa::path(get, path = "/api/hosts/{server_id}/processes/{pid}/details", tag = "hosts",
    summary = "One process in depth",
    description = "Threads (with CPU over a quarter second), open descriptors (sockets with their addresses), \
        memory maps summed up, limits, control groups, container, program, working directory and environment \
        variable names (never values) of one process, read now: on the collector's machine directly, on an \
        agent's host through its agent. Lists are capped, with totals. A part the monitor may not read is null \
        and named in `unavailable`. Rate-limited per user and audited.",
    params(super::openapi::ServerId,
        ("pid" = u32, Path, description = "Process id"),
        DetailsQuery),
    responses(
        (status = 200, description = "The details", body = ProcessDetails),
        (status = 404, description = "No such host, or no such process (it exited)", body = ErrorBody),
        (status = 409, description = "The pid names another process now (`pid_reused`)", body = ErrorBody),
        (status = 429, description = "Too many details requests this minute", body = ErrorBody),
        (status = 501, description = "The host's agent is too old to read details", body = ErrorBody),
        (status = 503, description = "The host's agent is offline", body = ErrorBody),
        (status = 504, description = "The agent gave no answer in time", body = ErrorBody)))]
pub(super) async fn details(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath((server_id, pid)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<DetailsQuery>,
) -> Result<Json<ProcessDetails>, ApiError> {
    let pid: u32 = pid.parse().map_err(|_| ApiError::NotFound(format!("`{pid}` is not a process id.")))?;
    let host = state.resolve_host(&server_id).await?;
    if let Err(wait) = state.details.admit(&user.username) {
        return Err(ApiError::OverLimit {
            retry_after_secs: wait,
            message: format!("At most {PER_MINUTE} process details a minute per user; try again in {wait} s."),
        });
    }
    let result = read(&state, &host, &user, pid, query.start_time).await;
    audit(&state, &user, &host, pid, &result).await;
    match result {
        Ok(details) => Ok(Json(details)),
        Err(Failure::Action(e)) => Err(ApiError::Action(e)),
        Err(Failure::Api(e)) => Err(e),
    }
}

/// Why no details came back.
enum Failure {
    /// The process or the platform said no (404, 409, 501, ...).
    Action(ActionError),
    /// The agent could not be asked (offline: 503; silent: 504).
    Api(ApiError),
}

/// Reads the details on this machine or asks the host's agent.
async fn read(
    state: &AppState,
    host: &HostSummary,
    user: &CurrentUser,
    pid: u32,
    start_time: Option<DateTime<Utc>>,
) -> Result<ProcessDetails, Failure> {
    use super::agents::RelayError;
    if host.local {
        return match tokio::task::spawn_blocking(move || crate::sample::details(pid, start_time)).await {
            Ok(read) => read.map_err(Failure::Action),
            Err(e) => Err(Failure::Api(ApiError::Internal(format!("the details task failed: {e}")))),
        };
    }
    let hostname = &host.hostname;
    let request = crate::model::agent::DetailsRequest { request_id: 0, pid, start_time, actor: user.username.clone() };
    // An agent connected to another collector of the database is asked through it.
    let answer = if !state.agents.is_connected(hostname) && state.store.is_shared() {
        super::fleet::relay_details(state, hostname, &request, RELAY_TIMEOUT).await
    } else {
        state.agents.relay_details(hostname, request, RELAY_TIMEOUT).await
    };
    match answer {
        Ok(reply) => match (reply.details, reply.error) {
            (_, Some(error)) => Err(Failure::Action(ActionError { message: bounded_message(&error.message), ..error })),
            (Some(details), None) if details.pid == pid => Ok(details.bounded()),
            (Some(_), None) => Err(Failure::Action(ActionError {
                code: ActionErrorCode::Failed,
                message: format!("The agent on `{hostname}` answered about another process than {pid}."),
            })),
            (None, None) => Err(Failure::Action(ActionError {
                code: ActionErrorCode::Failed,
                message: "The agent gave an empty answer.".into(),
            })),
        },
        Err(RelayError::Offline) => Err(Failure::Api(ApiError::Unavailable(format!(
            "Host `{hostname}` has no agent connected now, so the details of its processes cannot be read. \
             Start `procyon-agent` there."
        )))),
        Err(RelayError::Unsupported | RelayError::ControlOff) => Err(Failure::Action(ActionError {
            code: ActionErrorCode::Unsupported,
            message: format!(
                "Process details are not supported by this agent: the one on `{hostname}` is older than this \
                 collector. Upgrade `procyon-agent` there to see them."
            ),
        })),
        Err(RelayError::Timeout) => Err(Failure::Api(ApiError::Timeout(format!(
            "No answer from the agent on `{hostname}` within {} s.",
            RELAY_TIMEOUT.as_secs()
        )))),
    }
}

/// An agent's error message as it may be shown: printable and bounded.
fn bounded_message(message: &str) -> String {
    crate::sample::redact::printable(&message.chars().take(500).collect::<String>())
}

/// One audit row per request: who looked at which process, and what came of it.
async fn audit(
    state: &AppState,
    user: &CurrentUser,
    host: &HostSummary,
    pid: u32,
    result: &Result<ProcessDetails, Failure>,
) {
    let (result, message, name) = match result {
        Ok(d) => ("success".to_owned(), format!("Details of process {pid} read"), Some(d.name.clone())),
        Err(Failure::Action(e)) => (
            serde_json::to_value(e.code).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
            e.message.clone(),
            None,
        ),
        Err(Failure::Api(e)) => {
            let body = e.parts().1;
            (body.error, body.message, None)
        }
    };
    let entry = NewAuditEntry {
        actor: user.username.clone(),
        hostname: host.hostname.clone(),
        pid: Some(pid),
        process_name: name,
        action: AuditAction::Details,
        tree: false,
        result,
        message,
    };
    if let Err(e) = state.store.audit(entry).await {
        tracing::error!("cannot write the audit log: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_user_gets_their_own_minute() {
        let gate = DetailsGate::default();
        for _ in 0..PER_MINUTE {
            gate.admit("ann").unwrap();
        }
        let wait = gate.admit("ann").unwrap_err();
        assert!((1..=60).contains(&wait), "{wait}");
        gate.admit("bob").unwrap();
    }
}
