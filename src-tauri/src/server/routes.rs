//! Every route of the collector in one table, with who may call it.
//!
//! The router is built from this table, and the authorisation matrix test
//! (`tests/authz.rs`) calls every entry with every kind of credential and holds it to
//! its [`Access`]: a route added here cannot be forgotten by that test, and a route
//! cannot be added anywhere else.

use axum::Router;
use axum::http::Method;
use axum::routing::MethodRouter;

use super::AppState;

/// Who may call a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone (sign-in, health).
    Public,
    /// An agent with a live API key (uploads, the agent channel).
    Agent,
    /// Any signed-in user.
    Viewer,
    /// Operators and admins (process actions).
    Operator,
    /// Admins only (users, keys, host bindings).
    Admin,
    /// `/metrics`: keys of scope `metrics`, and admins.
    Metrics,
}

/// One route: a method on a path, its handler, and who may call it.
pub struct Route {
    /// The HTTP method.
    pub method: Method,
    /// The path, with `{params}`.
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
    /// Also answer with (or without) a trailing slash: the original documents' paths
    /// end in one, and clients differ.
    pub slash_twin: bool,
    handler: MethodRouter<AppState>,
}

impl Route {
    /// A route answering `method` on `path` (and on its trailing-slash twin).
    pub(crate) fn new(method: Method, path: &'static str, access: Access, handler: MethodRouter<AppState>) -> Route {
        Route { method, path, access, slash_twin: true, handler }
    }

    /// The same route without a trailing-slash twin.
    pub(crate) fn exact(mut self) -> Route {
        self.slash_twin = false;
        self
    }
}

/// Every route of the collector.
pub fn all() -> Vec<Route> {
    let mut routes = super::rest::routes();
    routes.extend(super::ws::routes());
    routes.extend(super::agents::routes());
    routes.extend(super::metrics::routes());
    routes.extend(super::alerts::routes());
    routes.extend(super::details::routes());
    routes.extend(super::dashboards::routes());
    routes
}

/// The router of [`all`] routes (method routers on one path are merged).
pub fn router() -> Router<AppState> {
    let mut r = Router::new();
    for route in all() {
        r = r.route(route.path, route.handler.clone());
        if route.slash_twin {
            let twin = match route.path.strip_suffix('/') {
                Some(bare) => bare.to_owned(),
                None => format!("{}/", route.path),
            };
            r = r.route(&twin, route.handler);
        }
    }
    r
}
