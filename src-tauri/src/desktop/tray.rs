//! The tray icon: a menu with this machine's live CPU and memory use and its busiest
//! processes, plus "Open Procyon", "Quick view", "Pause updates" and "Quit"; a left
//! click opens the quick view window.
//!
//! What the menu says is worked out by [`figures`], a plain function of a snapshot, so
//! it is tested without a desktop. Creating the icon can fail in two ways that must not
//! stop the app: the desktop has no tray (the icon is just not shown), or the
//! appindicator library is missing, which makes its loader panic; that panic is caught
//! and the app runs without a tray. On Linux the indicator protocol delivers no clicks
//! on the icon itself, only menu choices, hence the "Quick view" entry.

use tauri::menu::{CheckMenuItem, Menu, MenuItem, PredefinedMenuItem};
use tauri::tray::{MouseButton, MouseButtonState, TrayIconBuilder, TrayIconEvent};
use tauri::{AppHandle, Manager, Runtime};

use crate::model::Snapshot;

/// How many processes the menu lists.
pub const TOP: usize = 5;

/// What the menu shows for one snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Figures {
    /// e.g. `CPU 12 % · Memory 3.1 of 7.8 GiB (40 %)`.
    pub summary: String,
    /// One line per busy process, busiest first, e.g. `firefox  23.4 %`; always
    /// [`TOP`] lines (blank ones when there are fewer processes).
    pub top: Vec<String>,
}

/// Menu lines with no snapshot yet, or paused.
pub fn waiting(paused: bool) -> Figures {
    let summary = if paused { "Updates paused" } else { "Measuring…" };
    Figures { summary: summary.into(), top: vec![String::new(); TOP] }
}

/// The menu's figures for `snapshot`. Process names are shortened and stripped of
/// control characters: a menu label is not the place for a hostile name's tricks.
pub fn figures(snapshot: &Snapshot) -> Figures {
    let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
    let m = &snapshot.memory;
    let memory = match m.total_bytes.filter(|&t| t > 0) {
        Some(total) => format!(
            "{:.1} of {:.1} GiB ({:.0} %)",
            gib(m.used_bytes),
            gib(total),
            m.used_bytes as f64 * 100.0 / total as f64
        ),
        None => format!("{:.1} GiB", gib(m.used_bytes)),
    };
    let summary = format!("CPU {:.0} % · Memory {memory}", snapshot.cpu.total_percent);
    let mut busy: Vec<_> = snapshot.processes.iter().collect();
    busy.sort_by(|a, b| crate::tui::compare_known(b.cpu_percent, a.cpu_percent).then(a.pid.cmp(&b.pid)));
    let mut top: Vec<String> = busy
        .into_iter()
        .take(TOP)
        .map(|p| {
            let name: String = p.name.chars().filter(|c| !c.is_control()).take(32).collect();
            format!("{name}  {}", crate::tui::or_unknown(p.cpu_percent, |c| format!("{c:.1} %")))
        })
        .collect();
    top.resize(TOP, String::new());
    Figures { summary, top }
}

/// The menu entries that change.
pub struct Tray<R: Runtime> {
    summary: MenuItem<R>,
    top: Vec<MenuItem<R>>,
    pause: CheckMenuItem<R>,
}

impl<R: Runtime> Tray<R> {
    /// Shows `figures` and the pause state.
    pub fn show(&self, figures: &Figures, paused: bool) {
        let _ = self.summary.set_text(&figures.summary);
        for (item, line) in self.top.iter().zip(&figures.top) {
            let _ = item.set_text(line);
        }
        let _ = self.pause.set_checked(paused);
    }
}

/// Menu ids.
const OPEN: &str = "open";
const QUICK: &str = "quick";
const PAUSE: &str = "pause";
const QUIT: &str = "quit";

/// Creates the tray icon, or `None` when this desktop cannot have one.
pub fn create<R: Runtime>(app: &AppHandle<R>) -> Option<Tray<R>> {
    // The loader's panic is expected on such machines and handled below, so its message
    // and backtrace are kept off the terminal (the hook is process-wide, but this runs
    // once, at start, before any other thread of ours could panic).
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| build(app)));
    std::panic::set_hook(hook);
    match built {
        Ok(Ok(tray)) => Some(tray),
        Ok(Err(e)) => {
            tracing::warn!("no tray icon: {e}");
            None
        }
        Err(_) => {
            tracing::warn!("no tray icon: the appindicator library is missing (install libayatana-appindicator3-1)");
            None
        }
    }
}

fn build<R: Runtime>(app: &AppHandle<R>) -> tauri::Result<Tray<R>> {
    let info = |text: &str| MenuItem::new(app, text, false, None::<&str>);
    let start = waiting(false);
    let summary = info(&start.summary)?;
    let top = start.top.iter().map(|l| info(l)).collect::<tauri::Result<Vec<_>>>()?;
    let pause = CheckMenuItem::with_id(app, PAUSE, "Pause updates", true, false, None::<&str>)?;
    let menu = Menu::new(app)?;
    menu.append(&summary)?;
    for item in &top {
        menu.append(item)?;
    }
    menu.append(&PredefinedMenuItem::separator(app)?)?;
    menu.append(&MenuItem::with_id(app, OPEN, "Open Procyon", true, None::<&str>)?)?;
    menu.append(&MenuItem::with_id(app, QUICK, "Quick view", true, None::<&str>)?)?;
    menu.append(&pause)?;
    menu.append(&PredefinedMenuItem::separator(app)?)?;
    menu.append(&MenuItem::with_id(app, QUIT, "Quit", true, None::<&str>)?)?;

    let mut icon = TrayIconBuilder::with_id("procyon").tooltip("Procyon").menu(&menu).show_menu_on_left_click(false);
    if let Some(image) = app.default_window_icon() {
        icon = icon.icon(image.clone());
    }
    icon.on_menu_event(|app, event| match event.id().as_ref() {
        OPEN => super::show_main(app),
        QUICK => super::show_quick_view(app),
        PAUSE => {
            if let Some(desktop) = app.try_state::<super::Desktop>() {
                let paused = !desktop.paused();
                desktop.set_paused(app, paused);
            }
        }
        QUIT => app.exit(0),
        _ => {}
    })
    .on_tray_icon_event(|icon, event| {
        if let TrayIconEvent::Click { button: MouseButton::Left, button_state: MouseButtonState::Up, .. } = event {
            super::show_quick_view(icon.app_handle());
        }
    })
    .build(app)?;
    Ok(Tray { summary, top, pause })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_menu_shows_current_figures_and_the_busiest_processes() {
        let mut s = crate::sample::Sampler::new(crate::sample::SamplerOptions::default()).sample();
        s.cpu.total_percent = 12.4;
        s.memory.total_bytes = Some(8 << 30);
        s.memory.used_bytes = 2 << 30;
        let template = s.processes[0].clone();
        s.processes.clear();
        for (i, (name, cpu)) in
            [("idle", 0.0), ("firefox", 23.44), ("<b>x</b>\u{7}", 50.0), ("cc1", 23.44)].iter().enumerate()
        {
            let mut p = template.clone();
            p.pid = 100 + i as u32;
            p.name = (*name).into();
            p.cpu_percent = Some(*cpu);
            s.processes.push(p);
        }
        let f = figures(&s);
        assert_eq!(f.summary, "CPU 12 % · Memory 2.0 of 8.0 GiB (25 %)");
        assert_eq!(f.top, vec!["<b>x</b>  50.0 %", "firefox  23.4 %", "cc1  23.4 %", "idle  0.0 %", ""]);
        assert_eq!(waiting(true).summary, "Updates paused");
        assert_eq!(waiting(true).top.len(), TOP);
    }
}
