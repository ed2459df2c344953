//! One error type for every REST failure, and one JSON shape for it ([`ErrorBody`]).
//!
//! Handlers return `Result<_, ApiError>`. Client mistakes map to 4xx with a message that
//! says what was wrong; server faults map to 500 with a generic message, while their
//! cause goes to the log only (it may hold paths or SQL that are nobody else's business).

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::model::api::ErrorBody;
use crate::model::{ActionError, ActionErrorCode};
use crate::store::StoreError;

/// How long a sender is told to wait when the disk is full: freeing space takes an
/// operator, so retrying sooner only costs both sides work.
pub const STORAGE_FULL_RETRY_SECS: u64 = 10;

/// `Retry-After` while the database is unreachable.
pub const DATABASE_RETRY_SECS: u64 = 5;

/// A failed request.
#[derive(Debug)]
pub enum ApiError {
    /// 400: the body is not JSON, or a parameter is malformed.
    BadRequest(String),
    /// 401: no credentials, or bad ones.
    Unauthorized(String),
    /// 403: the credentials are good but may not do this.
    Forbidden(String),
    /// 404: no such host, snapshot or route.
    NotFound(String),
    /// 409: a conflict, e.g. a name already taken or a pid reused.
    Conflict {
        /// Machine-readable kind.
        code: &'static str,
        /// Message.
        message: String,
    },
    /// 413: the body is over the limit.
    TooLarge(String),
    /// 422: well-formed JSON with a wrong or missing field.
    Invalid {
        /// The field, as a path (`processes[3].pid`).
        field: Option<String>,
        /// Message.
        message: String,
    },
    /// 429: too many attempts; retry after this many seconds.
    TooManyRequests(u64),
    /// 503: the service needed is not available (an agent offline, say).
    Unavailable(String),
    /// 503: every slot for some heavy work (large reads, uploads, password hashing)
    /// stayed taken; retry after `retry_after_secs`.
    Busy {
        /// When trying again is likely to succeed.
        retry_after_secs: u64,
        /// What is busy, in words.
        message: String,
    },
    /// 503: the disk holding the database is full; nothing was stored. Retry after
    /// `retry_after_secs` (senders keep what they could not store).
    StorageFull {
        /// When trying again may succeed.
        retry_after_secs: u64,
    },
    /// 503: the database server cannot be reached; nothing was read or stored. Retry
    /// after `retry_after_secs` (senders keep what they could not store).
    DatabaseUnreachable {
        /// When trying again may succeed.
        retry_after_secs: u64,
    },
    /// 429: the caller holds as much of something as one client or principal may
    /// (connections, live streams, agent sessions, upload bytes).
    OverLimit {
        /// When trying again may succeed.
        retry_after_secs: u64,
        /// Which limit, and what to do.
        message: String,
    },
    /// 504: a relayed action got no answer in time.
    Timeout(String),
    /// 500: our fault. The cause is logged, not shown.
    Internal(String),
    /// A process action failed: mapped by its code.
    Action(ActionError),
}

impl ApiError {
    /// The status and the body this error is sent as.
    pub fn parts(&self) -> (StatusCode, ErrorBody) {
        let body = |error: &str, message: &str, field: Option<String>| ErrorBody {
            error: error.to_owned(),
            message: message.to_owned(),
            field,
        };
        match self {
            Self::BadRequest(m) => (StatusCode::BAD_REQUEST, body("bad_request", m, None)),
            Self::Unauthorized(m) => (StatusCode::UNAUTHORIZED, body("unauthorized", m, None)),
            Self::Forbidden(m) => (StatusCode::FORBIDDEN, body("forbidden", m, None)),
            Self::NotFound(m) => (StatusCode::NOT_FOUND, body("not_found", m, None)),
            Self::Conflict { code, message } => (StatusCode::CONFLICT, body(code, message, None)),
            Self::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, body("payload_too_large", m, None)),
            Self::Invalid { field, message } => {
                (StatusCode::UNPROCESSABLE_ENTITY, body("invalid", message, field.clone()))
            }
            Self::TooManyRequests(secs) => (
                StatusCode::TOO_MANY_REQUESTS,
                body("too_many_requests", &format!("Too many attempts in a short time; try again in {secs} s."), None),
            ),
            Self::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, body("unavailable", m, None)),
            Self::Busy { message, .. } => (StatusCode::SERVICE_UNAVAILABLE, body("busy", message, None)),
            Self::StorageFull { retry_after_secs } => (
                StatusCode::SERVICE_UNAVAILABLE,
                body(
                    "storage_full",
                    &format!(
                        "The collector's storage is full: nothing was stored. Keep it and try again in \
                         {retry_after_secs} s; the collector accepts it again once space is freed on its disk."
                    ),
                    None,
                ),
            ),
            Self::DatabaseUnreachable { retry_after_secs } => (
                StatusCode::SERVICE_UNAVAILABLE,
                body(
                    "database_unreachable",
                    &format!(
                        "The collector's database is unreachable: nothing was read or stored. Try again in \
                         {retry_after_secs} s; the collector answers again as soon as its database is back."
                    ),
                    None,
                ),
            ),
            Self::OverLimit { message, .. } => (StatusCode::TOO_MANY_REQUESTS, body("limit", message, None)),
            Self::Timeout(m) => (StatusCode::GATEWAY_TIMEOUT, body("timeout", m, None)),
            Self::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                body("internal", "Something went wrong on the server; the details are in its log.", None),
            ),
            Self::Action(e) => {
                let status = match e.code {
                    ActionErrorCode::NotFound => StatusCode::NOT_FOUND,
                    ActionErrorCode::PermissionDenied | ActionErrorCode::Protected => StatusCode::FORBIDDEN,
                    ActionErrorCode::PidReused => StatusCode::CONFLICT,
                    ActionErrorCode::Unsupported => StatusCode::NOT_IMPLEMENTED,
                    ActionErrorCode::Failed => StatusCode::INTERNAL_SERVER_ERROR,
                };
                let code = serde_json::to_value(e.code)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_else(|| "failed".into());
                (status, body(&code, &e.message, None))
            }
        }
    }

    /// A 422 for one field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::Invalid { field: Some(field.into()), message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(cause) = &self {
            tracing::error!(%cause, "request failed");
        }
        let (status, body) = self.parts();
        let mut response = (status, Json(body)).into_response();
        if let Self::TooManyRequests(secs)
        | Self::Busy { retry_after_secs: secs, .. }
        | Self::OverLimit { retry_after_secs: secs, .. }
        | Self::StorageFull { retry_after_secs: secs }
        | Self::DatabaseUnreachable { retry_after_secs: secs } = self
            && let Ok(value) = secs.to_string().parse()
        {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, value);
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => {
                ApiError::Conflict { code: "conflict", message: format!("{what} already exists.") }
            }
            StoreError::NotFound(what) => ApiError::NotFound(format!("{what} not found.")),
            StoreError::HostTaken(message) => ApiError::Conflict { code: "host_bound", message },
            e @ StoreError::LastAdmin(_) => ApiError::Conflict { code: "last_admin", message: format!("{e}.") },
            StoreError::Busy { retry_after_secs } => ApiError::Busy {
                retry_after_secs,
                message: format!(
                    "The collector is busy with other large reads (exports, history); try again in {retry_after_secs} s."
                ),
            },
            // Not logged per request: the store logs a full disk once a minute.
            StoreError::Full => ApiError::StorageFull { retry_after_secs: STORAGE_FULL_RETRY_SECS },
            // A line per refused request: an outage of the database is worth seeing.
            StoreError::Unreachable(why) => {
                tracing::warn!("the database is unreachable: {why}");
                ApiError::DatabaseUnreachable { retry_after_secs: DATABASE_RETRY_SECS }
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<ActionError> for ApiError {
    fn from(e: ActionError) -> Self {
        ApiError::Action(e)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::JsonDataError(e) => ApiError::Invalid { field: None, message: e.body_text() },
            JsonRejection::JsonSyntaxError(e) => ApiError::BadRequest(e.body_text()),
            JsonRejection::MissingJsonContentType(_) => {
                ApiError::BadRequest("Send the body as JSON with `Content-Type: application/json`.".into())
            }
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::TooLarge("The request body is over the size limit.".into())
            }
            other => ApiError::BadRequest(other.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::NotFound(r.body_text())
    }
}

/// The answer for a route that does not exist, in the same shape as every error.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("No such endpoint; see /api/openapi.json for the ones there are.".into())
}
