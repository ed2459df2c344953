//! Drawing the terminal UI's state, htop-like: a header with the host, time, uptime and
//! load, a bar per CPU core, memory and swap bars and the network rates; the process
//! table; a status line and the keys. Drawing reads [`App`] and changes only its scroll
//! position, so what a state looks like is tested on ratatui's `TestBackend`.
//!
//! Every string that comes from a snapshot passes through [`printable`] first: names,
//! users and command lines are chosen by whoever started a process (or by a remote
//! agent) and must not reach the terminal as control sequences.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row as TableRow, Table, TableState, Wrap};

use super::app::{App, Column, Mode};
use super::filter::status_name;
use super::{or_unknown, printable};
use crate::model::{ProcessAction, Snapshot};

/// Draws the whole screen.
pub fn draw(frame: &mut Frame, app: &mut App) {
    let area = frame.area();
    let header = header_lines(app, area.width);
    let [top, table, status, keys] = Layout::vertical([
        Constraint::Length(header.len() as u16),
        Constraint::Min(3),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    frame.render_widget(Paragraph::new(header), top);
    draw_table(frame, app, table);
    frame.render_widget(Paragraph::new(status_line(app)), status);
    frame.render_widget(Paragraph::new(keys_line(app)), keys);
    match &app.mode {
        Mode::Confirm(p) => {
            let text = vec![
                Line::from(format!("{} process {} ({})?", title(p.action), p.pid, p.name)).bold(),
                Line::from(""),
                Line::from(format!("Sends {}. Press y to confirm, any other key to cancel.", signal(p.action))),
            ];
            popup(frame, area, "Confirm", text, 64);
        }
        Mode::Menu => {
            let name = app.selected_process().map(|p| format!("{} ({})", p.pid, printable(&p.name)));
            let mut text = vec![Line::from(format!("Process {}", name.unwrap_or_default())).bold(), Line::from("")];
            for (n, a) in ProcessAction::ALL.into_iter().enumerate() {
                let key = a.as_str().chars().next().unwrap_or(' ');
                text.push(Line::from(format!("  {} / {key}  {} ({})", n + 1, title(a), signal(a))));
            }
            text.push(Line::from(""));
            text.push(Line::from("Any other key: back."));
            popup(frame, area, "Action", text, 48);
        }
        Mode::Help => popup(frame, area, "Keys", help_lines(), 76),
        Mode::Hosts { selected } => {
            let mut text = vec![Line::from("Up/Down choose, Enter follows, Esc goes back."), Line::from("")];
            for (i, h) in app.hosts.iter().enumerate() {
                let line = format!(
                    "{} {:<40} {}",
                    if i == *selected { ">" } else { " " },
                    printable(&h.hostname),
                    if h.online { "online" } else { "offline" }
                );
                let style = if i == *selected { Style::new().reversed() } else { Style::new() };
                text.push(Line::styled(line, style));
            }
            popup(frame, area, "Hosts", text, 60);
        }
        Mode::Normal | Mode::Filter => {}
    }
}

fn title(action: ProcessAction) -> &'static str {
    match action {
        ProcessAction::Suspend => "Suspend",
        ProcessAction::Resume => "Resume",
        ProcessAction::Terminate => "Terminate",
        ProcessAction::Kill => "Kill",
    }
}

fn signal(action: ProcessAction) -> &'static str {
    match action {
        ProcessAction::Suspend => "SIGSTOP",
        ProcessAction::Resume => "SIGCONT",
        ProcessAction::Terminate => "SIGTERM",
        ProcessAction::Kill => "SIGKILL",
    }
}

fn popup(frame: &mut Frame, area: Rect, name: &str, text: Vec<Line<'static>>, width: u16) {
    let width = width.min(area.width);
    let height = (text.len() as u16 + 2).min(area.height);
    let rect = Rect { x: area.x + (area.width - width) / 2, y: area.y + (area.height - height) / 2, width, height };
    frame.render_widget(Clear, rect);
    let block = Block::new().borders(Borders::ALL).title(format!(" {name} "));
    frame.render_widget(Paragraph::new(text).block(block).wrap(Wrap { trim: false }), rect);
}

/// `1536` → `1.5K`, as top and htop print sizes (powers of 1024).
pub fn size(bytes: f64) -> String {
    const UNITS: [&str; 6] = ["B", "K", "M", "G", "T", "P"];
    let mut value = bytes.max(0.0);
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{value:.0}B"),
        _ if value < 10.0 => format!("{value:.1}{}", UNITS[unit]),
        _ => format!("{value:.0}{}", UNITS[unit]),
    }
}

/// `[|||||     42.0%]` in `width` characters, the figure inside the bar as in htop.
fn bar(label: &str, fraction: f64, figure: &str, width: usize, color: Color) -> Vec<Span<'static>> {
    let inner = width.saturating_sub(label.chars().count() + 2).max(1);
    let filled = ((fraction.clamp(0.0, 1.0) * inner as f64).round() as usize).min(inner);
    let figure: String = figure.chars().take(inner).collect();
    let text_at = inner - figure.chars().count();
    let mut body: Vec<char> = (0..inner).map(|i| if i < filled { '|' } else { ' ' }).collect();
    for (i, c) in figure.chars().enumerate() {
        body[text_at + i] = c;
    }
    let (bars, rest): (String, String) =
        (body[..filled.min(text_at)].iter().collect(), body[filled.min(text_at)..].iter().collect());
    vec![
        Span::styled(label.to_owned(), Style::new().fg(Color::Cyan).bold()),
        Span::raw("["),
        Span::styled(bars, Style::new().fg(color)),
        Span::raw(rest),
        Span::raw("]"),
    ]
}

fn uptime(s: &Snapshot) -> String {
    // Uploads in the seed API's short format know no boot time.
    let Some(boot_time) = s.host.boot_time.filter(|t| t.timestamp() > 0) else {
        return "?".into();
    };
    let secs = (s.taken_at - boot_time).num_seconds().max(0);
    let (days, h, m) = (secs / 86400, secs % 86400 / 3600, secs % 3600 / 60);
    match days {
        0 => format!("{h}:{m:02}"),
        1 => format!("1 day, {h}:{m:02}"),
        d => format!("{d} days, {h}:{m:02}"),
    }
}

fn header_lines(app: &App, width: u16) -> Vec<Line<'static>> {
    let width = usize::from(width);
    let Some(s) = app.snapshot.as_deref() else {
        return vec![Line::from(format!("procyon watch  {}  waiting for the first snapshot…", app.source))];
    };
    let mut lines = Vec::new();
    let load =
        s.cpu.load_average.map_or_else(|| "-".to_owned(), |l| format!("{:.2} {:.2} {:.2}", l.one, l.five, l.fifteen));
    let running = s.processes.iter().filter(|p| p.status == crate::model::ProcessStatus::Running).count();
    let mut title = vec![
        Span::styled(printable(&s.host.hostname), Style::new().bold()),
        Span::raw(format!(
            "  {}  {}  up {}  load {}  tasks {}, {} running  ",
            printable(&app.source),
            // An old snapshot (a host that stopped reporting) says its day too.
            s.taken_at.with_timezone(&chrono::Local).format(
                if chrono::Utc::now() - s.taken_at > chrono::Duration::hours(12) {
                    "%Y-%m-%d %H:%M:%S"
                } else {
                    "%H:%M:%S"
                }
            ),
            uptime(s),
            load,
            s.processes.len(),
            running
        )),
    ];
    if app.paused {
        title.push(Span::styled(" PAUSED ", Style::new().black().on_yellow()));
    }
    lines.push(Line::from(title));

    // CPU bars: as many columns as fit 30 characters each, more when there are many cores.
    let cores = &s.cpu.per_core_percent;
    if !cores.is_empty() {
        let mut columns = (width / 30).clamp(1, 4);
        if cores.len().div_ceil(columns) > 8 {
            columns = cores.len().div_ceil(8).min((width / 16).max(1));
        }
        let rows = cores.len().div_ceil(columns);
        let cell = width / columns;
        let label_width = (cores.len().saturating_sub(1)).to_string().len();
        for r in 0..rows {
            let mut spans = Vec::new();
            for c in 0..columns {
                let i = c * rows + r;
                let Some(pct) = cores.get(i) else { continue };
                let label = format!("{i:>label_width$}");
                let color = if *pct >= 90.0 { Color::Red } else { Color::Green };
                spans.extend(bar(
                    &label,
                    f64::from(*pct) / 100.0,
                    &format!("{pct:.1}%"),
                    cell.saturating_sub(1),
                    color,
                ));
                spans.push(Span::raw(" "));
            }
            lines.push(Line::from(spans));
        }
    }
    let m = &s.memory;
    let half = width / 2;
    // An unknown size (a short upload's) draws an empty bar, labelled as unknown.
    let fraction = |used: Option<u64>, total: Option<u64>| match (used, total) {
        (Some(used), Some(total)) if total > 0 => used as f64 / total as f64,
        _ => 0.0,
    };
    let bytes = |b: Option<u64>| or_unknown(b, |b| size(b as f64));
    let mut memory = bar(
        "Mem",
        fraction(Some(m.used_bytes), m.total_bytes),
        &format!("{}/{}", size(m.used_bytes as f64), bytes(m.total_bytes)),
        half.saturating_sub(1),
        Color::Green,
    );
    memory.push(Span::raw(" "));
    memory.extend(bar(
        "Swp",
        fraction(m.swap_used_bytes, m.swap_total_bytes),
        &format!("{}/{}", bytes(m.swap_used_bytes), bytes(m.swap_total_bytes)),
        (width - half).saturating_sub(1),
        Color::Red,
    ));
    lines.push(Line::from(memory));

    // `network.total` leaves loopback out; the interfaces include it. Both are shown,
    // said as such: traffic between local programs is real traffic too.
    let (mut sent, mut received) = (0.0, 0.0);
    for i in &s.network.interfaces {
        sent += i.counters.sent_bytes_per_sec;
        received += i.counters.received_bytes_per_sec;
    }
    let t = s.network.total.as_ref();
    let rate = |r: Option<f64>| or_unknown(r, |r| format!("{}/s", size(r)));
    lines.push(Line::from(vec![
        Span::styled("Net", Style::new().fg(Color::Cyan).bold()),
        Span::raw(format!(
            " all interfaces ↑ {}/s ↓ {}/s   without loopback ↑ {} ↓ {}   sockets {}",
            size(sent),
            size(received),
            rate(t.map(|t| t.sent_bytes_per_sec)),
            rate(t.map(|t| t.received_bytes_per_sec)),
            s.connections.len()
        )),
    ]));
    for e in s.errors.iter().take(2) {
        lines.push(Line::styled(format!("note: {}", printable(&e.message)), Style::new().fg(Color::Yellow)));
    }
    lines
}

/// Width of each column but the last, which takes the rest.
const WIDTHS: [u16; 6] = [7, 10, 6, 5, 6, 8];

fn draw_table(frame: &mut Frame, app: &mut App, area: Rect) {
    let header = TableRow::new(Column::ALL.map(|c| {
        let arrow = if c == app.sort { if app.descending { "▼" } else { "▲" } } else { "" };
        let text = format!("{}{arrow}", c.title());
        let text = if matches!(c, Column::Pid | Column::Cpu | Column::Mem | Column::Rss) {
            format!("{text:>width$}", width = usize::from(width_of(c)))
        } else {
            text
        };
        Cell::from(text)
    }))
    .style(Style::new().black().on_green());
    // Rows shown: the area less the heading.
    let height = usize::from(area.height.saturating_sub(1));
    app.scroll(height);
    let Some(snapshot) = app.snapshot.clone() else {
        frame.render_widget(Table::new(Vec::<TableRow>::new(), widths()).header(header), area);
        return;
    };
    let rows: Vec<TableRow> = app
        .rows
        .iter()
        .skip(app.offset)
        .take(height)
        .map(|row| {
            let p = &snapshot.processes[row.index];
            let user: String = printable(p.user.as_deref().unwrap_or("?")).chars().take(10).collect();
            let dim = Style::new().fg(Color::DarkGray);
            let name_style = if row.context { dim } else { Style::new().bold() };
            let mut command = vec![Span::styled(row.branch.clone(), Style::new().fg(Color::Blue))];
            command.push(Span::styled(printable(&p.name), name_style));
            if !p.cmd.is_empty() {
                command.push(Span::styled(format!("  {}", printable(&p.cmd)), dim));
            }
            let status_style = match p.status {
                crate::model::ProcessStatus::Running => Style::new().fg(Color::Green),
                crate::model::ProcessStatus::Stopped | crate::model::ProcessStatus::TracingStop => {
                    Style::new().fg(Color::Yellow)
                }
                crate::model::ProcessStatus::Zombie | crate::model::ProcessStatus::Dead => Style::new().fg(Color::Red),
                _ => Style::new(),
            };
            TableRow::new(vec![
                Cell::from(format!("{:>7}", p.pid)),
                Cell::from(user),
                Cell::from(format!("{:>6}", or_unknown(p.cpu_percent, |v| format!("{v:.1}")))),
                Cell::from(format!("{:>5}", or_unknown(p.memory_percent, |v| format!("{v:.1}")))),
                Cell::from(format!("{:>6}", or_unknown(p.rss_bytes, |b| size(b as f64)))),
                Cell::from(Span::styled(status_name(p.status).to_owned(), status_style)),
                Cell::from(Line::from(command)),
            ])
        })
        .collect();
    let mut state = TableState::default();
    if !app.rows.is_empty() {
        state.select(Some(app.selected - app.offset));
    }
    let table = Table::new(rows, widths())
        .header(header)
        .row_highlight_style(Style::new().black().on_cyan().add_modifier(Modifier::BOLD))
        .column_spacing(1);
    frame.render_stateful_widget(table, area, &mut state);
}

fn width_of(c: Column) -> u16 {
    Column::ALL.iter().position(|x| *x == c).and_then(|i| WIDTHS.get(i)).copied().unwrap_or(0)
}

fn widths() -> Vec<Constraint> {
    let mut w: Vec<Constraint> = WIDTHS.iter().map(|w| Constraint::Length(*w)).collect();
    w.push(Constraint::Fill(1));
    w
}

fn status_line(app: &App) -> Line<'static> {
    let problems = app.query.errors.join("; ");
    if app.mode == Mode::Filter {
        let mut spans = vec![
            Span::styled("Filter: ", Style::new().fg(Color::Cyan).bold()),
            Span::raw(printable(&app.filter)),
            Span::styled("▏", Style::new().fg(Color::Cyan)),
            Span::raw("  Enter keeps it, Esc clears it"),
        ];
        if !problems.is_empty() {
            spans.push(Span::styled(format!("  ignored: {}", printable(&problems)), Style::new().fg(Color::Yellow)));
        }
        return Line::from(spans);
    }
    let mut spans = Vec::new();
    if let Some(m) = &app.message {
        spans.push(Span::styled(printable(m), Style::new().bold()));
        spans.push(Span::raw("  "));
    }
    if !app.filter.is_empty() {
        let total = app.snapshot.as_ref().map_or(0, |s| s.processes.len());
        spans.push(Span::raw(format!(
            "filter “{}”: {} of {total} processes",
            printable(&app.filter),
            app.rows.iter().filter(|r| !r.context).count()
        )));
    }
    if !problems.is_empty() {
        spans.push(Span::styled(format!("  ignored: {}", printable(&problems)), Style::new().fg(Color::Yellow)));
    }
    Line::from(spans)
}

fn keys_line(app: &App) -> Line<'static> {
    let mut keys = vec![
        ("F1/?", "help"),
        ("/", "filter"),
        ("s <>", "sort"),
        ("r", "reverse"),
        ("t", "tree"),
        ("p", if app.paused { "resume view" } else { "pause" }),
        ("S R T K/F9", "suspend resume term kill"),
    ];
    if !app.hosts.is_empty() {
        keys.push(("H", "hosts"));
    }
    keys.push(("q", "quit"));
    let mut spans = Vec::new();
    for (key, what) in keys {
        spans.push(Span::styled(key, Style::new().black().on_cyan()));
        spans.push(Span::raw(format!(" {what} ")));
    }
    Line::from(spans)
}

fn help_lines() -> Vec<Line<'static>> {
    [
        "Up/Down j/k, PgUp/PgDn, Home/End   move the selection",
        "s > F6 / <                          next / previous sort column",
        "r or i                              reverse the order",
        "P M N                               sort by CPU, memory, pid",
        "t or F5                             tree: children under their parents",
        "/ or F3                             filter (Enter keeps it, Esc clears it)",
        "p                                   pause the picture",
        "S R T K                             suspend, resume, terminate, kill",
        "F9                                  action menu; every action asks first",
        "H                                   another host (with --collector)",
        "q Esc F10 Ctrl-C                    quit",
        "",
        "Filter words, all must hold: free text (name, user, command, pid),",
        "user:root  cpu>50  mem>=10  rss>500M  status:stopped,zombie  pid:1234",
        "ppid:1  threads>100  name:nginx  cmd:--port  is:kernel; negate with ! or -",
        "(-user:root); \"quotes\" keep spaces. The same language as the dashboard.",
        "",
        "Any key closes this.",
    ]
    .into_iter()
    .map(Line::from)
    .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

    use super::super::app::tests::{family, proc, snapshot};
    use super::*;

    fn screen(app: &mut App, width: u16, height: u16) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|f| draw(f, app)).unwrap();
        let buffer = terminal.backend().buffer();
        (0..height)
            .map(|y| (0..width).map(|x| buffer[(x, y)].symbol()).collect::<String>().trim_end().to_owned())
            .collect()
    }

    fn press(app: &mut App, code: KeyCode) {
        app.key(KeyEvent::new(code, KeyModifiers::NONE));
    }

    #[test]
    fn the_screen_has_header_bars_table_and_keys() {
        let mut app = App::new("this machine");
        app.update(family());
        let lines = screen(&mut app, 100, 20);
        let all = lines.join("\n");
        println!("{all}");
        assert!(lines[0].starts_with("web-1  this machine  "), "{}", lines[0]);
        assert!(lines[0].contains("up 3 days, 1:01  load 0.50 0.25 0.12  tasks 6, 0 running"), "{}", lines[0]);
        // Two cores, 10 % and 40 %, with the figure inside the bar.
        assert!(lines[1].starts_with("0[|||") && lines[1].contains("10.0%]"), "{}", lines[1]);
        assert!(lines[1].contains("1[|||||||||||| ") && lines[1].contains("40.0%]"), "{}", lines[1]);
        assert!(lines[2].starts_with("Mem[") && lines[2].contains("2.0G/8.0G]") && lines[2].contains("Swp["));
        assert!(
            lines[3].contains("all interfaces ↑ 11K/s ↓ 12K/s   without loopback ↑ 1.0K/s ↓ 2.0K/s"),
            "{}",
            lines[3]
        );
        assert!(lines[4].contains("PID USER") && lines[4].contains("CPU%▼") && lines[4].contains("COMMAND"));
        assert!(
            lines[5].contains("    300 alice        30.0   3.0   300M sleeping vim  /usr/bin/vim --flag"),
            "{}",
            lines[5]
        );
        assert!(lines[19].contains("F1/? help") && lines[19].contains("q quit"));
    }

    #[test]
    fn tree_view_indents_children() {
        let mut app = App::new("this machine");
        app.update(family());
        press(&mut app, KeyCode::Char('t'));
        let all = screen(&mut app, 100, 20).join("\n");
        println!("{all}");
        assert!(all.contains("sleeping init  /usr/bin/init"), "{all}");
        assert!(all.contains("sleeping ├─ sshd"), "{all}");
        assert!(all.contains("sleeping │  └─ bash"), "{all}");
        assert!(all.contains("sleeping │     └─ vim"), "{all}");
    }

    #[test]
    fn prompts_and_popups_say_what_they_are_for() {
        let mut app = App::new("this machine");
        app.update(family());
        press(&mut app, KeyCode::Char('/'));
        for c in "cpu>x vim".chars() {
            press(&mut app, KeyCode::Char(c));
        }
        let all = screen(&mut app, 120, 20).join("\n");
        assert!(all.contains("Filter: cpu>x vim▏"), "{all}");
        assert!(all.contains("ignored: “cpu>x”: cpu needs a number"), "{all}");
        press(&mut app, KeyCode::Enter);
        press(&mut app, KeyCode::Char('K'));
        let all = screen(&mut app, 120, 20).join("\n");
        println!("{all}");
        assert!(all.contains("Kill process 300 (vim)?"), "{all}");
        assert!(all.contains("Sends SIGKILL. Press y to confirm"), "{all}");
        press(&mut app, KeyCode::Char('x'));
        let all = screen(&mut app, 120, 20).join("\n");
        assert!(
            all.contains("Cancelled: process 300 (vim) was left alone.  filter “cpu>x vim”: 1 of 6 processes"),
            "{all}"
        );
        press(&mut app, KeyCode::F(1));
        assert!(screen(&mut app, 120, 30).join("\n").contains("The same language as the dashboard"));
    }

    #[test]
    fn hostile_names_cannot_reach_the_terminal() {
        let mut evil = proc(66, None, "\u{1b}[2Jevil\u{7}", 1.0);
        evil.cmd = "x\u{1b}]0;title\u{7}".into();
        let mut app = App::new("this machine");
        app.update(snapshot(vec![evil]));
        let all = screen(&mut app, 100, 12).join("\n");
        assert!(!all.chars().any(|c| c.is_control() && c != '\n'), "{all:?}");
        assert!(all.contains("?[2Jevil?"), "{all}");
    }

    #[test]
    fn tiny_and_huge_screens_do_not_panic() {
        let mut app = App::new("this machine");
        let mut many = (*family()).clone();
        many.cpu.per_core_percent = vec![50.0; 128];
        app.update(std::sync::Arc::new(many));
        for (w, h) in [(1, 1), (10, 5), (40, 10), (300, 80)] {
            screen(&mut app, w, h);
        }
        press(&mut app, KeyCode::F(9));
        screen(&mut app, 20, 6);
    }

    #[test]
    fn sizes_read_like_top() {
        assert_eq!(size(0.0), "0B");
        assert_eq!(size(1536.0), "1.5K");
        assert_eq!(size(300.0 * 1024.0 * 1024.0), "300M");
        assert_eq!(size(8.0 * 1024f64.powi(3)), "8.0G");
    }
}
