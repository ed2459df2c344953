//! Dashboards people arrange themselves: a name, who may see it, and widgets on a grid.
//!
//! The one definition of a dashboard and its widgets: the collector reads and stores
//! them (`/api/dashboards`), the dashboard's TypeScript is generated from them, and the
//! desktop app keeps its own in the same shape. A widget is `{"kind", "x", "y", "w", "h",
//! ...the kind's settings}`; unknown kinds and unknown fields are refused, and
//! [`DashboardInput::validate`] holds the grid numbers and sizes to their limits, naming
//! the field at fault (`widgets[2].w`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use ts_rs::TS;
use utoipa::ToSchema;

/// Columns of the grid: `x + w` is at most this.
pub const GRID_COLUMNS: u32 = 12;
/// The lowest row a widget may start on (`y`), so a layout stays something a person
/// can scroll through.
pub const GRID_MAX_Y: u32 = 1000;
/// The most rows one widget may span (`h`).
pub const GRID_MAX_H: u32 = 48;
/// The most widgets on one dashboard.
pub const MAX_WIDGETS: usize = 64;
/// The longest name, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// The longest text setting (a title, a host pattern, a process name, a filter), in
/// characters.
pub const MAX_TEXT_CHARS: usize = 500;
/// The most users one dashboard is shared with by name.
pub const MAX_SHARED_WITH: usize = 100;
/// The most a dashboard's JSON body may be, in bytes.
pub const MAX_BODY_BYTES: usize = 64 << 10;
/// The most dashboards one user may own.
pub const MAX_PER_USER: usize = 200;
/// The most top ports a widget shows.
pub const MAX_TOP_PORTS: u32 = 100;
/// The most rows a process table widget shows.
pub const MAX_TABLE_ROWS: u32 = 500;

/// Who besides its owner may see a dashboard. Nobody but the owner may change it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, TS, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Sharing {
    /// Only the owner.
    #[default]
    Private,
    /// The users named in `shared_with`, read-only.
    Users,
    /// Every signed-in user, read-only. Only admins may share this way.
    Everyone,
}

impl Sharing {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Private => "private",
            Self::Users => "users",
            Self::Everyone => "everyone",
        }
    }

    /// The stored spelling read back; `None` for anything else.
    pub fn parse(s: &str) -> Option<Sharing> {
        match s {
            "private" => Some(Self::Private),
            "users" => Some(Self::Users),
            "everyone" => Some(Self::Everyone),
            _ => None,
        }
    }
}

/// A host figure a chart can draw (those of the history series).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, TS, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HostMetric {
    /// CPU in total, percent.
    CpuPercent,
    /// Memory in use, bytes.
    MemoryUsedBytes,
    /// Processes.
    ProcessCount,
    /// Bytes sent per second.
    SentBytesPerSec,
    /// Bytes received per second.
    ReceivedBytesPerSec,
}

/// A process figure a chart can draw (those of the process history).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, TS, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProcessMetric {
    /// CPU, percent of one core.
    CpuPercent,
    /// Resident memory, bytes.
    RssBytes,
}

/// The `kind` of every [`Widget`] variant (a test holds the two together).
pub const WIDGET_KINDS: [&str; 6] =
    ["host_chart", "process_chart", "process_table", "top_ports", "alerts", "network_map"];

/// One widget: where it sits on the grid (`x`, `y` in cells from the top left, `w`, `h`
/// in cells; the grid is [`GRID_COLUMNS`] wide) and what it shows, by `kind`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Widget {
    /// A host figure over time, one line per host matching `hosts` (a name, or a pattern
    /// with `*` such as `web-*`).
    HostChart {
        /// Column.
        x: u32,
        /// Row.
        y: u32,
        /// Width in columns.
        w: u32,
        /// Height in rows.
        h: u32,
        /// Heading; the figure's name when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[ts(optional)]
        title: Option<String>,
        /// Host name or pattern (`*` matches any run of characters).
        hosts: String,
        /// The figure.
        metric: HostMetric,
    },
    /// A process's CPU or memory over time: every process named `process` on `host`,
    /// added up (a process group).
    ProcessChart {
        /// Column.
        x: u32,
        /// Row.
        y: u32,
        /// Width in columns.
        w: u32,
        /// Height in rows.
        h: u32,
        /// Heading.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[ts(optional)]
        title: Option<String>,
        /// The host.
        host: String,
        /// The process name.
        process: String,
        /// The figure.
        metric: ProcessMetric,
    },
    /// A host's processes, filtered with the dashboard's filter language (`cpu>5
    /// user:root`).
    ProcessTable {
        /// Column.
        x: u32,
        /// Row.
        y: u32,
        /// Width in columns.
        w: u32,
        /// Height in rows.
        h: u32,
        /// Heading.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[ts(optional)]
        title: Option<String>,
        /// The host.
        host: String,
        /// The filter; empty shows every process.
        #[serde(default)]
        filter: String,
        /// The most rows shown.
        limit: u32,
    },
    /// A host's busiest local ports by connection count.
    TopPorts {
        /// Column.
        x: u32,
        /// Row.
        y: u32,
        /// Width in columns.
        w: u32,
        /// Height in rows.
        h: u32,
        /// Heading.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[ts(optional)]
        title: Option<String>,
        /// The host.
        host: String,
        /// How many ports.
        limit: u32,
    },
    /// The alerts pending and firing, optionally of the hosts matching `hosts`.
    Alerts {
        /// Column.
        x: u32,
        /// Row.
        y: u32,
        /// Width in columns.
        w: u32,
        /// Height in rows.
        h: u32,
        /// Heading.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[ts(optional)]
        title: Option<String>,
        /// Host name or pattern; every host when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[ts(optional)]
        hosts: Option<String>,
    },
    /// The live network map (as `/api/network-map` answers it) of the hosts matching
    /// `hosts`, drawn as the network map view draws it.
    NetworkMap {
        /// Column.
        x: u32,
        /// Row.
        y: u32,
        /// Width in columns.
        w: u32,
        /// Height in rows.
        h: u32,
        /// Heading.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[ts(optional)]
        title: Option<String>,
        /// Host names or patterns separated by commas (`web-*, db-1`); every host when
        /// absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[ts(optional)]
        hosts: Option<String>,
        /// One node per host instead of one per process: a large fleet stays legible.
        #[serde(default)]
        collapsed: bool,
    },
}

impl Widget {
    /// Where it sits: `(x, y, w, h)`.
    pub fn grid(&self) -> (u32, u32, u32, u32) {
        match *self {
            Self::HostChart { x, y, w, h, .. }
            | Self::ProcessChart { x, y, w, h, .. }
            | Self::ProcessTable { x, y, w, h, .. }
            | Self::TopPorts { x, y, w, h, .. }
            | Self::Alerts { x, y, w, h, .. }
            | Self::NetworkMap { x, y, w, h, .. } => (x, y, w, h),
        }
    }

    /// Its text settings with their field names, for the length checks.
    fn texts(&self) -> Vec<(&'static str, &str)> {
        let mut out = Vec::new();
        let title = match self {
            Self::HostChart { title, hosts, .. } => {
                out.push(("hosts", hosts.as_str()));
                title
            }
            Self::ProcessChart { title, host, process, .. } => {
                out.push(("host", host.as_str()));
                out.push(("process", process.as_str()));
                title
            }
            Self::ProcessTable { title, host, filter, .. } => {
                out.push(("host", host.as_str()));
                out.push(("filter", filter.as_str()));
                title
            }
            Self::TopPorts { title, host, .. } => {
                out.push(("host", host.as_str()));
                title
            }
            Self::Alerts { title, hosts, .. } | Self::NetworkMap { title, hosts, .. } => {
                if let Some(hosts) = hosts {
                    out.push(("hosts", hosts.as_str()));
                }
                title
            }
        };
        if let Some(title) = title {
            out.push(("title", title.as_str()));
        }
        out
    }
}

/// A dashboard as a client sends it (`POST` and `PUT /api/dashboards`), and as it is
/// exported and imported.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DashboardInput {
    /// Its name, 1 to 100 characters.
    pub name: String,
    /// Who else may see it (default: nobody).
    #[serde(default)]
    pub shared: Sharing,
    /// The users it is shared with when `shared` is `users`.
    #[serde(default)]
    pub shared_with: Vec<String>,
    /// The widgets; none is a valid new dashboard.
    pub widgets: Vec<Widget>,
}

/// A bad dashboard: the field at fault (`widgets[2].w`) and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    /// The field, as a path.
    pub field: String,
    /// What is wrong, for a person.
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid { field: field.into(), message: message.into() }
}

impl DashboardInput {
    /// Holds the name, the sharing and every widget to their limits: the first fault
    /// found, by field.
    pub fn validate(&self) -> Result<(), Invalid> {
        let name = self.name.trim();
        if name.is_empty() {
            return Err(invalid("name", "A dashboard needs a name."));
        }
        if self.name.chars().count() > MAX_NAME_CHARS {
            return Err(invalid("name", format!("A name is at most {MAX_NAME_CHARS} characters.")));
        }
        if self.name.chars().any(char::is_control) {
            return Err(invalid("name", "A name holds no control characters."));
        }
        if self.shared_with.len() > MAX_SHARED_WITH {
            return Err(invalid("shared_with", format!("A dashboard is shared with at most {MAX_SHARED_WITH} users.")));
        }
        if self.shared != Sharing::Users && !self.shared_with.is_empty() {
            return Err(invalid("shared_with", "Users are named only when `shared` is `users`."));
        }
        for (i, user) in self.shared_with.iter().enumerate() {
            if user.is_empty() || user.len() > 256 {
                return Err(invalid(format!("shared_with[{i}]"), "Not a user name."));
            }
        }
        if self.widgets.len() > MAX_WIDGETS {
            return Err(invalid("widgets", format!("A dashboard holds at most {MAX_WIDGETS} widgets.")));
        }
        for (i, widget) in self.widgets.iter().enumerate() {
            let at = |field: &str| format!("widgets[{i}].{field}");
            let (x, y, w, h) = widget.grid();
            if w == 0 || w > GRID_COLUMNS {
                return Err(invalid(at("w"), format!("A widget is 1 to {GRID_COLUMNS} columns wide.")));
            }
            if x > GRID_COLUMNS - w {
                return Err(invalid(at("x"), format!("A widget ends by column {GRID_COLUMNS} (x + w).")));
            }
            if h == 0 || h > GRID_MAX_H {
                return Err(invalid(at("h"), format!("A widget is 1 to {GRID_MAX_H} rows high.")));
            }
            if y > GRID_MAX_Y {
                return Err(invalid(at("y"), format!("A widget starts by row {GRID_MAX_Y}.")));
            }
            for (field, text) in widget.texts() {
                if text.chars().count() > MAX_TEXT_CHARS {
                    return Err(invalid(at(field), format!("At most {MAX_TEXT_CHARS} characters.")));
                }
                if text.chars().any(char::is_control) {
                    return Err(invalid(at(field), "No control characters."));
                }
                if field != "title" && field != "filter" && text.trim().is_empty() {
                    return Err(invalid(at(field), "Name a host or process."));
                }
            }
            match *widget {
                Widget::ProcessTable { limit, .. } if limit == 0 || limit > MAX_TABLE_ROWS => {
                    return Err(invalid(at("limit"), format!("1 to {MAX_TABLE_ROWS} rows.")));
                }
                Widget::TopPorts { limit, .. } if limit == 0 || limit > MAX_TOP_PORTS => {
                    return Err(invalid(at("limit"), format!("1 to {MAX_TOP_PORTS} ports.")));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// A stored dashboard, as `/api/dashboards` answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct Dashboard {
    /// Its id.
    #[ts(type = "number")]
    pub id: i64,
    /// Its name.
    pub name: String,
    /// Who made it; only they may change it.
    pub owner: String,
    /// Who else may see it.
    pub shared: Sharing,
    /// The users it is shared with when `shared` is `users`.
    pub shared_with: Vec<String>,
    /// The widgets.
    pub widgets: Vec<Widget>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// Whether the one asking may only look (it is someone else's).
    #[serde(default)]
    pub read_only: bool,
}

impl Dashboard {
    /// Whether `username` may see it: its owner, the users it is shared with, or anyone
    /// when shared with everyone. Only the owner may change it.
    pub fn visible_to(&self, username: &str) -> bool {
        self.owner == username
            || match self.shared {
                Sharing::Private => false,
                Sharing::Users => self.shared_with.iter().any(|u| u == username),
                Sharing::Everyone => true,
            }
    }

    /// What a client sends to store this dashboard again (an export).
    pub fn input(&self) -> DashboardInput {
        DashboardInput {
            name: self.name.clone(),
            shared: self.shared,
            shared_with: self.shared_with.clone(),
            widgets: self.widgets.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn chart(x: u32, y: u32, w: u32, h: u32) -> serde_json::Value {
        serde_json::json!({"kind": "host_chart", "x": x, "y": y, "w": w, "h": h, "hosts": "web-*", "metric": "cpu_percent"})
    }

    fn read(v: serde_json::Value) -> Result<DashboardInput, String> {
        let d: DashboardInput = serde_json::from_value(v).map_err(|e| e.to_string())?;
        d.validate().map_err(|e| e.field)?;
        Ok(d)
    }

    #[test]
    fn a_widget_is_its_kind_grid_and_settings_in_one_object() {
        let d = read(serde_json::json!({"name": "Web", "widgets": [chart(0, 0, 6, 4)]})).unwrap();
        assert_eq!(d.shared, Sharing::Private);
        assert_eq!(
            serde_json::to_value(&d.widgets[0]).unwrap(),
            serde_json::json!({"kind": "host_chart", "x": 0, "y": 0, "w": 6, "h": 4, "hosts": "web-*", "metric": "cpu_percent"})
        );
        assert!(read(serde_json::json!({"name": "Empty", "widgets": []})).is_ok());
    }

    #[test]
    fn the_list_of_kinds_is_the_enums() {
        let seed = read(serde_json::json!({"name": "a", "widgets": [
            {"kind": "host_chart", "x": 0, "y": 0, "w": 1, "h": 1, "hosts": "a", "metric": "cpu_percent"},
            {"kind": "process_chart", "x": 0, "y": 0, "w": 1, "h": 1, "host": "a", "process": "b", "metric": "rss_bytes"},
            {"kind": "process_table", "x": 0, "y": 0, "w": 1, "h": 1, "host": "a", "limit": 1},
            {"kind": "top_ports", "x": 0, "y": 0, "w": 1, "h": 1, "host": "a", "limit": 1},
            {"kind": "alerts", "x": 0, "y": 0, "w": 1, "h": 1},
            {"kind": "network_map", "x": 0, "y": 0, "w": 1, "h": 1}
        ]}))
        .unwrap();
        let kinds: Vec<String> = seed
            .widgets
            .iter()
            .map(|w| serde_json::to_value(w).unwrap()["kind"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(kinds, WIDGET_KINDS);
        // Every variant is in the list: a new one fails to compile here until added.
        for w in &seed.widgets {
            match w {
                Widget::HostChart { .. }
                | Widget::ProcessChart { .. }
                | Widget::ProcessTable { .. }
                | Widget::TopPorts { .. }
                | Widget::Alerts { .. }
                | Widget::NetworkMap { .. } => {}
            }
        }
    }

    #[test]
    fn unknown_kinds_and_fields_are_refused() {
        assert!(
            read(serde_json::json!({"name": "a", "widgets": [{"kind": "pie", "x": 0, "y": 0, "w": 1, "h": 1}]}))
                .is_err()
        );
        let mut extra = chart(0, 0, 1, 1);
        extra["colour"] = "red".into();
        assert!(read(serde_json::json!({"name": "a", "widgets": [extra]})).is_err());
        assert!(read(serde_json::json!({"name": "a", "widgets": [], "layout": 1})).is_err());
        assert!(read(serde_json::json!({"name": "a", "widgets": [chart(0, 0, 1, 1)], "shared": "world"})).is_err());
    }

    #[test]
    fn a_network_map_takes_hosts_and_collapsed_and_nothing_else() {
        let map = |extra: serde_json::Value| {
            let mut w = serde_json::json!({"kind": "network_map", "x": 0, "y": 0, "w": 12, "h": 8});
            for (k, v) in extra.as_object().unwrap() {
                w[k] = v.clone();
            }
            read(serde_json::json!({"name": "a", "widgets": [w]}))
        };
        let d = map(serde_json::json!({"hosts": "web-*, db-1", "collapsed": true})).unwrap();
        assert_eq!(
            d.widgets[0],
            Widget::NetworkMap {
                x: 0,
                y: 0,
                w: 12,
                h: 8,
                title: None,
                hosts: Some("web-*, db-1".into()),
                collapsed: true
            }
        );
        assert_eq!(
            map(serde_json::json!({})).unwrap().widgets[0],
            Widget::NetworkMap { x: 0, y: 0, w: 12, h: 8, title: None, hosts: None, collapsed: false }
        );
        assert_eq!(map(serde_json::json!({"hosts": " "})).unwrap_err(), "widgets[0].hosts");
        assert_eq!(map(serde_json::json!({"hosts": "w".repeat(501)})).unwrap_err(), "widgets[0].hosts");
        assert!(map(serde_json::json!({"collapsed": "yes"})).unwrap_err().contains("invalid type"));
        assert!(map(serde_json::json!({"layout": "circle"})).unwrap_err().contains("layout"));
        assert!(map(serde_json::json!({"host": "a"})).unwrap_err().contains("host"));
    }

    #[test]
    fn grid_numbers_and_sizes_are_held_to_their_limits() {
        let bad = |v: serde_json::Value| read(v).unwrap_err();
        let one = |w: serde_json::Value| serde_json::json!({"name": "a", "widgets": [chart(0, 0, 1, 1), w]});
        assert_eq!(bad(one(chart(0, 0, 0, 1))), "widgets[1].w");
        assert_eq!(bad(one(chart(0, 0, 13, 1))), "widgets[1].w");
        assert_eq!(bad(one(chart(7, 0, 6, 1))), "widgets[1].x");
        assert_eq!(bad(one(chart(0, 0, 1, 0))), "widgets[1].h");
        assert_eq!(bad(one(chart(0, 1001, 1, 1))), "widgets[1].y");
        assert!(read(one(chart(6, 1000, 6, 48))).is_ok());
        assert_eq!(bad(serde_json::json!({"name": " ", "widgets": []})), "name");
        assert_eq!(bad(serde_json::json!({"name": "x".repeat(101), "widgets": []})), "name");
        let many: Vec<_> = (0..=MAX_WIDGETS as u32).map(|i| chart(0, i, 1, 1)).collect();
        assert_eq!(bad(serde_json::json!({"name": "a", "widgets": many})), "widgets");
        let mut long = chart(0, 0, 1, 1);
        long["hosts"] = "w".repeat(501).into();
        assert_eq!(bad(one(long)), "widgets[1].hosts");
        assert_eq!(bad(serde_json::json!({"name": "a", "widgets": [], "shared_with": ["bob"]})), "shared_with");
    }
}
