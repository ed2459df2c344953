//! The terminal UI's state and what each key does to it: the rows shown (filtered,
//! sorted, or as a tree), the selection, the prompts. No drawing and no I/O happens
//! here: a key either changes the state or asks the caller for an [`Effect`] (quit, act
//! on a process, follow another host), so all of it is tested without a terminal.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::filter::{ProcessQuery, status_name};
use crate::model::{ProcessAction, ProcessSample, Snapshot};

/// A column of the process table, which is also what it can be sorted by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Column {
    /// Process id.
    Pid,
    /// Owner.
    User,
    /// CPU share.
    Cpu,
    /// Memory share.
    Mem,
    /// Resident memory.
    Rss,
    /// Scheduler state.
    Status,
    /// Name (and command line).
    Name,
}

impl Column {
    /// Every column, left to right.
    pub const ALL: [Column; 7] =
        [Column::Pid, Column::User, Column::Cpu, Column::Mem, Column::Rss, Column::Status, Column::Name];

    /// The heading.
    pub fn title(self) -> &'static str {
        match self {
            Column::Pid => "PID",
            Column::User => "USER",
            Column::Cpu => "CPU%",
            Column::Mem => "MEM%",
            Column::Rss => "RSS",
            Column::Status => "STATUS",
            Column::Name => "COMMAND",
        }
    }

    /// Figures are wanted biggest first, words from A.
    fn descending_by_default(self) -> bool {
        matches!(self, Column::Cpu | Column::Mem | Column::Rss)
    }

    fn step(self, by: isize) -> Column {
        let i = Column::ALL.iter().position(|c| *c == self).unwrap_or(0) as isize;
        let n = Column::ALL.len() as isize;
        Column::ALL[(i + by).rem_euclid(n) as usize]
    }

    fn compare(self, a: &ProcessSample, b: &ProcessSample) -> std::cmp::Ordering {
        match self {
            Column::Pid => a.pid.cmp(&b.pid),
            Column::User => a.user.cmp(&b.user),
            Column::Cpu => super::compare_known(a.cpu_percent, b.cpu_percent),
            Column::Mem => super::compare_known(a.memory_percent, b.memory_percent),
            Column::Rss => a.rss_bytes.cmp(&b.rss_bytes),
            Column::Status => status_name(a.status).cmp(status_name(b.status)),
            Column::Name => a.name.to_lowercase().cmp(&b.name.to_lowercase()),
        }
    }
}

/// One line of the process table.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Index into the snapshot's processes.
    pub index: usize,
    /// In tree view, the branch drawn before the name (`│  ├─ `); else empty.
    pub branch: String,
    /// Shown only because a process under it matches the filter (tree view).
    pub context: bool,
}

/// An action waiting for the person to confirm it.
#[derive(Clone, Debug, PartialEq)]
pub struct Pending {
    /// What to do.
    pub action: ProcessAction,
    /// To which process: its pid...
    pub pid: u32,
    /// ...and start time, so that a pid reused meanwhile is refused (`None` when the
    /// snapshot does not know it: a collector then refuses to act).
    pub start_time: Option<DateTime<Utc>>,
    /// Its name, cleaned for display.
    pub name: String,
}

/// What the person is doing.
#[derive(Clone, Debug, PartialEq)]
pub enum Mode {
    /// Looking at the table.
    Normal,
    /// Typing a filter.
    Filter,
    /// Choosing an action for the selected process (F9).
    Menu,
    /// Asked to confirm an action.
    Confirm(Pending),
    /// Reading the list of keys.
    Help,
    /// Choosing a host of the collector (`--collector` only).
    Hosts {
        /// The highlighted entry.
        selected: usize,
    },
}

/// What a key asks of the caller.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Nothing beyond the state change.
    None,
    /// Leave.
    Quit,
    /// Carry out a confirmed action.
    Act(Pending),
    /// Follow another host of the collector.
    Follow(String),
}

/// A host the picker offers.
#[derive(Clone, Debug, PartialEq)]
pub struct HostChoice {
    /// Its name.
    pub hostname: String,
    /// Reporting now.
    pub online: bool,
}

/// The terminal UI's state.
#[derive(Debug)]
pub struct App {
    /// The snapshot shown (the newest, unless paused).
    pub snapshot: Option<Arc<Snapshot>>,
    /// Where the snapshots come from, for the header ("this machine", a collector).
    pub source: String,
    /// New snapshots are not shown.
    pub paused: bool,
    /// Sort column.
    pub sort: Column,
    /// Biggest (or last) first.
    pub descending: bool,
    /// Children under their parents.
    pub tree: bool,
    /// The filter in force, as typed.
    pub filter: String,
    /// The filter compiled.
    pub query: ProcessQuery,
    /// Prompt, menu or popup open, if any.
    pub mode: Mode,
    /// The table's rows, in order.
    pub rows: Vec<Row>,
    /// Index of the selected row.
    pub selected: usize,
    /// First row shown (the table scrolls to keep the selection in view).
    pub offset: usize,
    /// Rows the table last had room for (a page, for PgUp and PgDn).
    pub page: usize,
    /// The last thing to report (an action's result, a connection problem).
    pub message: Option<String>,
    /// The hosts the picker offers (empty on this machine: no picker).
    pub hosts: Vec<HostChoice>,
    /// The selected process, followed across new snapshots by pid and start time.
    selected_key: Option<(u32, Option<DateTime<Utc>>)>,
}

impl App {
    /// A UI over snapshots from `source`, sorted by CPU, with no filter.
    pub fn new(source: impl Into<String>) -> App {
        App {
            snapshot: None,
            source: source.into(),
            paused: false,
            sort: Column::Cpu,
            descending: true,
            tree: false,
            filter: String::new(),
            query: ProcessQuery::default(),
            mode: Mode::Normal,
            rows: Vec::new(),
            selected: 0,
            offset: 0,
            page: 20,
            message: None,
            hosts: Vec::new(),
            selected_key: None,
        }
    }

    /// Takes a new snapshot, unless paused.
    pub fn update(&mut self, snapshot: Arc<Snapshot>) {
        if self.paused {
            return;
        }
        self.snapshot = Some(snapshot);
        self.rebuild();
    }

    /// Shows `text` in the status line.
    pub fn report(&mut self, text: impl Into<String>) {
        self.message = Some(text.into());
    }

    /// The selected process, if any.
    pub fn selected_process(&self) -> Option<&ProcessSample> {
        let row = self.rows.get(self.selected)?;
        self.snapshot.as_ref()?.processes.get(row.index)
    }

    /// Sets the filter and rebuilds the rows.
    pub fn set_filter(&mut self, text: &str) {
        self.filter = text.to_owned();
        self.query = ProcessQuery::compile(text);
        self.rebuild();
    }

    /// Recomputes the rows from the snapshot, filter, sort and view, keeping the
    /// selected process selected if it is still shown.
    pub fn rebuild(&mut self) {
        let Some(snapshot) = self.snapshot.clone() else {
            self.rows.clear();
            return;
        };
        let procs = &snapshot.processes;
        self.rows = if self.tree { self.tree_rows(procs) } else { self.flat_rows(procs) };
        if let Some(key) = self.selected_key
            && let Some(i) = self.rows.iter().position(|r| {
                let p = &procs[r.index];
                (p.pid, p.start_time) == key
            })
        {
            self.selected = i;
        }
        self.select(self.selected as isize);
    }

    fn order(&self, procs: &[ProcessSample], a: usize, b: usize) -> std::cmp::Ordering {
        let by = self.sort.compare(&procs[a], &procs[b]);
        let by = if self.descending { by.reverse() } else { by };
        by.then(procs[a].pid.cmp(&procs[b].pid))
    }

    fn flat_rows(&self, procs: &[ProcessSample]) -> Vec<Row> {
        let mut shown: Vec<usize> = (0..procs.len()).filter(|&i| self.query.matches(&procs[i])).collect();
        shown.sort_by(|&a, &b| self.order(procs, a, b));
        shown.into_iter().map(|index| Row { index, branch: String::new(), context: false }).collect()
    }

    /// Parents before their children, siblings in sort order. With a filter, the
    /// ancestors of each match are kept (marked as context), as in the dashboard, so a
    /// match is seen where it sits. Inconsistent data (a missing parent, a cycle) makes
    /// roots, never a loss or a loop, and nothing recurses.
    fn tree_rows(&self, procs: &[ProcessSample]) -> Vec<Row> {
        let mut by_pid: HashMap<u32, usize> = HashMap::with_capacity(procs.len());
        for (i, p) in procs.iter().enumerate() {
            by_pid.entry(p.pid).or_insert(i);
        }
        let matched: Vec<bool> = procs.iter().map(|p| self.query.matches(p)).collect();
        let mut shown = matched.clone();
        if !self.query.is_empty() {
            for i in (0..procs.len()).filter(|&i| matched[i]) {
                let mut at = i;
                // At most one step per process: a cycle cannot keep this going.
                for _ in 0..procs.len() {
                    let Some(parent) = procs[at].ppid.and_then(|pp| by_pid.get(&pp).copied()) else { break };
                    if parent == at || shown[parent] {
                        break;
                    }
                    shown[parent] = true;
                    at = parent;
                }
            }
        }
        let parent_of = |i: usize| {
            procs[i]
                .ppid
                .and_then(|pp| by_pid.get(&pp).copied())
                .filter(|&p| p != i && shown[p] && by_pid[&procs[i].pid] == i)
        };
        let mut children: HashMap<usize, Vec<usize>> = HashMap::new();
        let mut roots = Vec::new();
        for i in (0..procs.len()).filter(|&i| shown[i]) {
            match parent_of(i) {
                Some(p) => children.entry(p).or_default().push(i),
                None => roots.push(i),
            }
        }
        for list in children.values_mut() {
            list.sort_by(|&a, &b| self.order(procs, a, b));
        }
        roots.sort_by(|&a, &b| self.order(procs, a, b));

        let mut rows = Vec::with_capacity(roots.len());
        let mut visited = vec![false; procs.len()];
        let walk = |root: usize, rows: &mut Vec<Row>, visited: &mut Vec<bool>| {
            // (process, branch before its name, what its children's branches start with)
            let mut stack = vec![(root, String::new(), String::new())];
            while let Some((i, branch, indent)) = stack.pop() {
                if std::mem::replace(&mut visited[i], true) {
                    continue;
                }
                rows.push(Row { index: i, branch, context: !matched[i] });
                let kids = children.get(&i).map(Vec::as_slice).unwrap_or_default();
                // Deep chains stop indenting: the name must stay on screen.
                let deep = indent.chars().count() >= MAX_INDENT;
                for (n, &child) in kids.iter().enumerate().rev() {
                    let last = n + 1 == kids.len();
                    let branch = format!("{indent}{}", if last { "└─ " } else { "├─ " });
                    let below =
                        if deep { indent.clone() } else { format!("{indent}{}", if last { "   " } else { "│  " }) };
                    stack.push((child, branch, below));
                }
            }
        };
        for root in roots {
            walk(root, &mut rows, &mut visited);
        }
        // Whatever was not reached sits on a cycle: shown as roots rather than lost.
        for i in 0..procs.len() {
            if shown[i] && !visited[i] {
                walk(i, &mut rows, &mut visited);
            }
        }
        rows
    }

    /// Moves the selection to row `to` (clamped).
    fn select(&mut self, to: isize) {
        let last = self.rows.len().saturating_sub(1) as isize;
        self.selected = to.clamp(0, last.max(0)) as usize;
        self.selected_key = self.selected_process().map(|p| (p.pid, p.start_time));
    }

    /// Scrolls so that the selection is among the `height` rows shown.
    pub fn scroll(&mut self, height: usize) {
        self.page = height.max(1);
        if self.selected < self.offset {
            self.offset = self.selected;
        } else if self.selected >= self.offset + self.page {
            self.offset = self.selected + 1 - self.page;
        }
        self.offset = self.offset.min(self.rows.len().saturating_sub(self.page));
    }

    fn ask(&mut self, action: ProcessAction) {
        self.mode = Mode::Normal;
        match self.selected_process() {
            Some(p) => {
                self.mode = Mode::Confirm(Pending {
                    action,
                    pid: p.pid,
                    start_time: p.start_time,
                    name: super::printable(&p.name),
                })
            }
            None => self.report("No process is selected."),
        }
    }

    /// What `key` does.
    pub fn key(&mut self, key: KeyEvent) -> Effect {
        if key.kind == KeyEventKind::Release {
            return Effect::None;
        }
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Effect::Quit;
        }
        match self.mode.clone() {
            Mode::Filter => self.filter_key(key),
            Mode::Confirm(pending) => {
                self.mode = Mode::Normal;
                if matches!(key.code, KeyCode::Char('y') | KeyCode::Char('Y')) {
                    self.report(format!("{} process {} ({})…", verb(pending.action), pending.pid, pending.name));
                    return Effect::Act(pending);
                }
                self.report(format!("Cancelled: process {} ({}) was left alone.", pending.pid, pending.name));
                Effect::None
            }
            Mode::Menu => {
                self.mode = Mode::Normal;
                let action = match key.code {
                    KeyCode::Char('1' | 's' | 'S') => ProcessAction::Suspend,
                    KeyCode::Char('2' | 'r' | 'R') => ProcessAction::Resume,
                    KeyCode::Char('3' | 't' | 'T') => ProcessAction::Terminate,
                    KeyCode::Char('4' | 'k' | 'K') => ProcessAction::Kill,
                    _ => return Effect::None,
                };
                self.ask(action);
                Effect::None
            }
            Mode::Help => {
                self.mode = Mode::Normal;
                Effect::None
            }
            Mode::Hosts { selected } => self.hosts_key(key, selected),
            Mode::Normal => self.normal_key(key),
        }
    }

    fn filter_key(&mut self, key: KeyEvent) -> Effect {
        let mut text = self.filter.clone();
        match key.code {
            KeyCode::Enter => {
                self.mode = Mode::Normal;
                return Effect::None;
            }
            KeyCode::Esc => {
                self.mode = Mode::Normal;
                text.clear();
            }
            KeyCode::Backspace => {
                text.pop();
            }
            KeyCode::Char(c) if !c.is_control() => text.push(c),
            _ => return Effect::None,
        }
        // The table follows as the filter is typed, as the dashboard's search box does.
        self.set_filter(&text);
        Effect::None
    }

    fn hosts_key(&mut self, key: KeyEvent, selected: usize) -> Effect {
        let last = self.hosts.len().saturating_sub(1);
        let selected = match key.code {
            KeyCode::Up | KeyCode::Char('k') => selected.saturating_sub(1),
            KeyCode::Down | KeyCode::Char('j') => (selected + 1).min(last),
            KeyCode::Enter => {
                self.mode = Mode::Normal;
                return match self.hosts.get(selected) {
                    Some(h) => Effect::Follow(h.hostname.clone()),
                    None => Effect::None,
                };
            }
            KeyCode::Esc | KeyCode::Char('q') => {
                self.mode = Mode::Normal;
                return Effect::None;
            }
            _ => selected,
        };
        self.mode = Mode::Hosts { selected };
        Effect::None
    }

    fn normal_key(&mut self, key: KeyEvent) -> Effect {
        let page = self.page.max(1) as isize;
        let at = self.selected as isize;
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc => return Effect::Quit,
            KeyCode::Up | KeyCode::Char('k') => self.select(at - 1),
            KeyCode::Down | KeyCode::Char('j') => self.select(at + 1),
            KeyCode::PageUp => self.select(at - page),
            KeyCode::PageDown | KeyCode::Char(' ') => self.select(at + page),
            KeyCode::Home | KeyCode::Char('g') => self.select(0),
            KeyCode::End | KeyCode::Char('G') => self.select(isize::MAX),
            KeyCode::Char('s' | '>') | KeyCode::F(6) => self.sort_by(self.sort.step(1)),
            KeyCode::Char('<') => self.sort_by(self.sort.step(-1)),
            KeyCode::Char('r' | 'i') => {
                self.descending = !self.descending;
                self.rebuild();
            }
            KeyCode::Char('P') => self.sort_by(Column::Cpu),
            KeyCode::Char('M') => self.sort_by(Column::Mem),
            KeyCode::Char('N') => self.sort_by(Column::Pid),
            KeyCode::Char('/') | KeyCode::F(3) | KeyCode::F(4) => self.mode = Mode::Filter,
            KeyCode::Char('t') | KeyCode::F(5) => {
                self.tree = !self.tree;
                self.rebuild();
            }
            KeyCode::Char('p') => {
                self.paused = !self.paused;
                self.report(if self.paused { "Paused: press p to follow again." } else { "Following again." });
            }
            KeyCode::Char('S') => self.ask(ProcessAction::Suspend),
            KeyCode::Char('R') => self.ask(ProcessAction::Resume),
            KeyCode::Char('T') => self.ask(ProcessAction::Terminate),
            KeyCode::Char('K') => self.ask(ProcessAction::Kill),
            KeyCode::F(9) => {
                if self.selected_process().is_some() {
                    self.mode = Mode::Menu;
                } else {
                    self.report("No process is selected.");
                }
            }
            KeyCode::Char('H') if !self.hosts.is_empty() => {
                let current = self.snapshot.as_ref().map(|s| s.host.hostname.as_str());
                let selected = self.hosts.iter().position(|h| Some(h.hostname.as_str()) == current).unwrap_or(0);
                self.mode = Mode::Hosts { selected };
            }
            KeyCode::Char('?') | KeyCode::F(1) | KeyCode::Char('h') => self.mode = Mode::Help,
            KeyCode::F(10) => return Effect::Quit,
            _ => {}
        }
        Effect::None
    }

    fn sort_by(&mut self, column: Column) {
        if self.sort != column {
            self.sort = column;
            self.descending = column.descending_by_default();
        }
        self.rebuild();
    }
}

/// Branches deeper than this many characters stop indenting.
const MAX_INDENT: usize = 60;

/// "Terminating", for the status line while an action runs.
fn verb(action: ProcessAction) -> &'static str {
    match action {
        ProcessAction::Suspend => "Suspending",
        ProcessAction::Resume => "Resuming",
        ProcessAction::Terminate => "Terminating",
        ProcessAction::Kill => "Killing",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use super::*;
    use crate::model::{CpuSample, HostInfo, InterfaceCounters, MemorySample, NetworkSample, PortUsage};

    pub(crate) fn proc(pid: u32, ppid: Option<u32>, name: &str, cpu: f32) -> ProcessSample {
        ProcessSample {
            pid,
            ppid,
            name: name.into(),
            cmd: format!("/usr/bin/{name} --flag"),
            user: Some("alice".into()),
            status: crate::model::ProcessStatus::Sleeping,
            cpu_percent: Some(cpu),
            memory_percent: Some(cpu / 10.0),
            rss_bytes: Some(u64::from(pid) * 1024 * 1024),
            virtual_bytes: Some(0),
            threads: Some(1),
            start_time: DateTime::from_timestamp(1_700_000_000 + i64::from(pid), 0),
            disk_read_bytes: None,
            disk_write_bytes: None,
            disk_read_bytes_per_sec: None,
            disk_write_bytes_per_sec: None,
            kernel_thread: false,
            container: None,
            gpu_percent: None,
            gpu_memory_bytes: None,
        }
    }

    pub(crate) fn snapshot(processes: Vec<ProcessSample>) -> Arc<Snapshot> {
        let counters = |sent: f64, received: f64| InterfaceCounters {
            sent_bytes_per_sec: sent,
            received_bytes_per_sec: received,
            ..InterfaceCounters::default()
        };
        Arc::new(Snapshot {
            schema_version: 1,
            host: HostInfo {
                id: "id".into(),
                hostname: "web-1".into(),
                os: "Debian GNU/Linux 12".into(),
                kernel: Some("6.1.0".into()),
                arch: "x86_64".into(),
                cpu_model: None,
                logical_cores: Some(2),
                memory_total_bytes: Some(8 << 30),
                boot_time: DateTime::from_timestamp(1_700_000_000, 0),
                agent_version: "0.1.0".into(),
            },
            taken_at: DateTime::from_timestamp(1_700_000_000 + 3 * 86400 + 3661, 0).unwrap(),
            seq: 1,
            interval_ms: 1000,
            cpu: CpuSample {
                total_percent: 25.0,
                per_core_percent: vec![10.0, 40.0],
                load_average: Some(crate::model::LoadAverage { one: 0.5, five: 0.25, fifteen: 0.125 }),
            },
            memory: MemorySample {
                total_bytes: Some(8 << 30),
                used_bytes: 2 << 30,
                available_bytes: Some(6 << 30),
                swap_total_bytes: Some(1 << 30),
                swap_used_bytes: Some(0),
            },
            processes,
            connections: Vec::new(),
            network: NetworkSample {
                total: Some(counters(1024.0, 2048.0)),
                interfaces: vec![
                    crate::model::InterfaceSample { name: "lo".into(), counters: counters(10240.0, 10240.0) },
                    crate::model::InterfaceSample { name: "eth0".into(), counters: counters(1024.0, 2048.0) },
                ],
            },
            ports: PortUsage::default(),
            errors: Vec::new(),
            gpus: Vec::new(),
            filesystems: None,
            disks: None,
            temperatures: None,
            fans: None,
            batteries: None,
        })
    }

    /// init(1) → sshd(100) → bash(200) → vim(300); init → cron(50); a kernel root.
    pub(crate) fn family() -> Arc<Snapshot> {
        snapshot(vec![
            proc(1, None, "init", 0.1),
            proc(2, None, "kthreadd", 0.0),
            proc(50, Some(1), "cron", 0.2),
            proc(100, Some(1), "sshd", 5.0),
            proc(200, Some(100), "bash", 1.0),
            proc(300, Some(200), "vim", 30.0),
        ])
    }

    fn press(app: &mut App, code: KeyCode) -> Effect {
        app.key(KeyEvent::new(code, KeyModifiers::NONE))
    }

    fn typed(app: &mut App, text: &str) {
        for c in text.chars() {
            press(app, KeyCode::Char(c));
        }
    }

    fn pids(app: &App) -> Vec<u32> {
        let s = app.snapshot.as_ref().unwrap();
        app.rows.iter().map(|r| s.processes[r.index].pid).collect()
    }

    #[test]
    fn sorts_by_cpu_first_and_cycles_columns() {
        let mut app = App::new("test");
        app.update(family());
        assert_eq!(pids(&app), [300, 100, 200, 50, 1, 2]);
        press(&mut app, KeyCode::Char('r'));
        assert_eq!(pids(&app), [2, 1, 50, 200, 100, 300]);
        press(&mut app, KeyCode::Char('<'));
        assert_eq!(app.sort, Column::User);
        press(&mut app, KeyCode::Char('<'));
        assert_eq!(app.sort, Column::Pid);
        assert!(!app.descending);
        assert_eq!(pids(&app), [1, 2, 50, 100, 200, 300]);
        press(&mut app, KeyCode::F(6));
        assert_eq!(app.sort, Column::User);
        press(&mut app, KeyCode::Char('M'));
        assert_eq!((app.sort, app.descending), (Column::Mem, true));
    }

    #[test]
    fn the_filter_prompt_applies_as_typed_and_escape_clears_it() {
        let mut app = App::new("test");
        app.update(family());
        press(&mut app, KeyCode::Char('/'));
        assert_eq!(app.mode, Mode::Filter);
        typed(&mut app, "cpu>=1");
        assert_eq!(pids(&app), [300, 100, 200]);
        press(&mut app, KeyCode::Enter);
        assert_eq!(app.mode, Mode::Normal);
        assert_eq!(app.filter, "cpu>=1");
        // Keys are keys again once the prompt is closed.
        press(&mut app, KeyCode::Char('/'));
        typed(&mut app, " cpu>lots");
        assert_eq!(pids(&app), [300, 100, 200]);
        assert_eq!(app.query.errors, ["“cpu>lots”: cpu needs a number, e.g. cpu>50"]);
        press(&mut app, KeyCode::Esc);
        assert_eq!((app.filter.as_str(), app.mode.clone()), ("", Mode::Normal));
        assert_eq!(pids(&app).len(), 6);
    }

    #[test]
    fn the_tree_puts_children_under_parents_and_keeps_ancestors_of_matches() {
        let mut app = App::new("test");
        app.update(family());
        press(&mut app, KeyCode::Char('t'));
        let lines: Vec<String> = app
            .rows
            .iter()
            .map(|r| format!("{}{}", r.branch, app.snapshot.as_ref().unwrap().processes[r.index].name))
            .collect();
        assert_eq!(lines, ["init", "├─ sshd", "│  └─ bash", "│     └─ vim", "└─ cron", "kthreadd"]);
        app.set_filter("vim");
        assert_eq!(pids(&app), [1, 100, 200, 300]);
        let context: Vec<bool> = app.rows.iter().map(|r| r.context).collect();
        assert_eq!(context, [true, true, true, false]);
    }

    #[test]
    fn cycles_and_missing_parents_make_roots_not_loops() {
        let mut app = App::new("test");
        app.tree = true;
        app.update(snapshot(vec![
            proc(10, Some(11), "a", 0.0),
            proc(11, Some(10), "b", 0.0),
            proc(12, Some(99), "c", 0.0),
        ]));
        let mut shown = pids(&app);
        shown.sort();
        assert_eq!(shown, [10, 11, 12]);
        app.set_filter("a");
        assert!(pids(&app).contains(&10));
    }

    #[test]
    fn deep_chains_stop_indenting() {
        let chain: Vec<ProcessSample> =
            (1..=5000).map(|pid| proc(pid, (pid > 1).then_some(pid - 1), "deep", 0.0)).collect();
        let mut app = App::new("test");
        app.tree = true;
        app.update(snapshot(chain));
        assert_eq!(app.rows.len(), 5000);
        assert!(app.rows.iter().all(|r| r.branch.chars().count() <= MAX_INDENT + 3));
    }

    #[test]
    fn the_selection_moves_scrolls_and_follows_its_process() {
        let mut app = App::new("test");
        app.update(family());
        press(&mut app, KeyCode::Down);
        press(&mut app, KeyCode::Char('j'));
        assert_eq!(app.selected_process().unwrap().pid, 200);
        // Re-sorting keeps the same process selected.
        press(&mut app, KeyCode::Char('N'));
        assert_eq!(app.selected_process().unwrap().pid, 200);
        press(&mut app, KeyCode::End);
        assert_eq!(app.selected, 5);
        app.scroll(3);
        assert_eq!(app.offset, 3);
        press(&mut app, KeyCode::PageUp);
        app.scroll(3);
        assert_eq!((app.selected, app.offset), (2, 2));
        press(&mut app, KeyCode::Home);
        app.scroll(3);
        assert_eq!((app.selected, app.offset), (0, 0));
        press(&mut app, KeyCode::Up);
        assert_eq!(app.selected, 0);
    }

    #[test]
    fn actions_ask_first_and_only_y_confirms() {
        let mut app = App::new("test");
        app.update(family());
        press(&mut app, KeyCode::Char('T'));
        let Mode::Confirm(pending) = app.mode.clone() else { panic!("no confirmation: {:?}", app.mode) };
        assert_eq!((pending.pid, pending.action, pending.name.as_str()), (300, ProcessAction::Terminate, "vim"));
        assert_eq!(press(&mut app, KeyCode::Char('n')), Effect::None);
        assert!(app.message.as_deref().unwrap().contains("Cancelled"));
        press(&mut app, KeyCode::F(9));
        assert_eq!(app.mode, Mode::Menu);
        press(&mut app, KeyCode::Char('k'));
        assert!(matches!(app.mode, Mode::Confirm(Pending { action: ProcessAction::Kill, .. })));
        let Effect::Act(p) = press(&mut app, KeyCode::Char('y')) else { panic!("y did not act") };
        assert_eq!((p.pid, p.start_time), (300, app.snapshot.as_ref().unwrap().processes[5].start_time));
        assert_eq!(app.mode, Mode::Normal);
    }

    #[test]
    fn pause_keeps_the_picture_and_quit_keys_quit() {
        let mut app = App::new("test");
        app.update(family());
        press(&mut app, KeyCode::Char('p'));
        app.update(snapshot(vec![]));
        assert_eq!(app.rows.len(), 6);
        press(&mut app, KeyCode::Char('p'));
        app.update(snapshot(vec![]));
        assert!(app.rows.is_empty());
        assert_eq!(press(&mut app, KeyCode::Char('q')), Effect::Quit);
        assert_eq!(press(&mut app, KeyCode::Esc), Effect::Quit);
        app.mode = Mode::Filter;
        assert_eq!(app.key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)), Effect::Quit);
    }

    #[test]
    fn the_host_picker_follows_the_chosen_host() {
        let mut app = App::new("test");
        press(&mut app, KeyCode::Char('H'));
        assert_eq!(app.mode, Mode::Normal, "no picker without hosts");
        app.hosts = ["a", "b"].map(|h| HostChoice { hostname: h.into(), online: true }).to_vec();
        press(&mut app, KeyCode::Char('H'));
        press(&mut app, KeyCode::Down);
        assert_eq!(press(&mut app, KeyCode::Enter), Effect::Follow("b".into()));
    }
}
