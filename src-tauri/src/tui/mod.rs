//! `procyon watch`: a terminal UI over live snapshots, like top and htop, of this
//! machine or of any host of a collector.
//!
//! A thin adapter: snapshots come from [`crate::sample`] (this machine) or from a
//! collector's live WebSocket (`remote`, with the deltas of [`crate::model::delta`]);
//! actions go through [`crate::control`] or the collector's REST API. The parts:
//!
//! - [`filter`]: the dashboard's filter language (no terminal, no feature needed);
//! - `app`: the state and what each key does, tested without a terminal;
//! - `render`: drawing that state with ratatui, tested on its `TestBackend`;
//! - `remote`: signing in to a collector and following one of its hosts;
//! - this module: the terminal itself (raw mode, restored on any exit, panics
//!   included) and the loop joining keys, snapshots and results.

pub mod filter;

#[cfg(feature = "server")]
pub mod app;
#[cfg(feature = "server")]
pub mod remote;
#[cfg(feature = "server")]
pub mod render;

/// Process names, users and command lines are chosen by whoever started the process:
/// control characters in them could move the cursor or recolour the terminal, so they
/// are shown as `?`.
pub fn printable(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

/// What is shown for a figure the snapshot does not know (a short upload leaves some
/// out): a dash, never a made-up zero.
pub const UNKNOWN: &str = "—";

/// `value` formatted by `show`, or [`UNKNOWN`].
pub fn or_unknown<T>(value: Option<T>, show: impl FnOnce(T) -> String) -> String {
    value.map_or_else(|| UNKNOWN.to_owned(), show)
}

/// Orders figures that may be unknown: an unknown one below every known one.
pub fn compare_known(a: Option<f32>, b: Option<f32>) -> std::cmp::Ordering {
    match (a, b) {
        (Some(a), Some(b)) => a.total_cmp(&b),
        (a, b) => a.is_some().cmp(&b.is_some()),
    }
}

/// One summary of `s` as plain lines, for output that is not a terminal (`procyon watch |
/// head`, CI logs): the host's figures, then the `top` busiest processes.
pub fn print_summary(out: &mut impl std::io::Write, s: &crate::model::Snapshot, top: usize) -> std::io::Result<()> {
    let gib = |b: u64| format!("{:.1}", b as f64 / (1024.0 * 1024.0 * 1024.0));
    let kib = |b: f64| format!("{:.1}", b / 1024.0);
    let total = s.network.total.as_ref();
    // `network.total` leaves loopback out; the interfaces list has it.
    let (sent, received) =
        s.network.interfaces.iter().fold((0.0, 0.0), |(tx, rx), i| {
            (tx + i.counters.sent_bytes_per_sec, rx + i.counters.received_bytes_per_sec)
        });
    writeln!(
        out,
        "\n{}  {}  cpu {:5.1}%  mem {}/{} GiB  load {}  processes {}  sockets {}  net ↑{} ↓{} KiB/s \
         (↑{} ↓{} with loopback)",
        s.taken_at.format("%H:%M:%S"),
        printable(&s.host.hostname),
        s.cpu.total_percent,
        gib(s.memory.used_bytes),
        or_unknown(s.memory.total_bytes, gib),
        s.cpu.load_average.map_or("-".into(), |l| format!("{:.2}", l.one)),
        s.processes.len(),
        s.connections.len(),
        or_unknown(total.map(|t| t.sent_bytes_per_sec), kib),
        or_unknown(total.map(|t| t.received_bytes_per_sec), kib),
        kib(sent),
        kib(received),
    )?;
    let mut busiest: Vec<_> = s.processes.iter().collect();
    busiest.sort_by(|a, b| compare_known(b.cpu_percent, a.cpu_percent));
    writeln!(out, "{:>8} {:<12} {:>6} {:>6}  {:<10} name", "pid", "user", "cpu%", "mem%", "status")?;
    let percent = |v: Option<f32>| or_unknown(v, |v| format!("{v:.1}"));
    for p in busiest.into_iter().take(top) {
        let user: String = printable(p.user.as_deref().unwrap_or("?")).chars().take(12).collect();
        writeln!(
            out,
            "{:>8} {:<12} {:>6} {:>6}  {:<10} {}",
            p.pid,
            user,
            percent(p.cpu_percent),
            percent(p.memory_percent),
            filter::status_name(p.status),
            printable(&p.name)
        )?;
    }
    for e in &s.errors {
        writeln!(out, "note: {}", printable(&e.message))?;
    }
    Ok(())
}

#[cfg(feature = "server")]
pub use terminal::{Note, Source, run, run_local};

#[cfg(feature = "server")]
mod terminal {
    //! The terminal (raw mode, the alternate screen, put back on any exit) and the loop
    //! that joins keys, snapshots and the results of actions.

    use std::future::Future;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::time::Duration;

    use anyhow::Context;
    use ratatui::crossterm::event::{self, Event};
    use tokio::sync::{mpsc, watch};

    use super::app::{App, Effect, Pending};
    use super::render;
    use crate::model::Snapshot;
    use crate::sample::{Sampler, SamplerOptions};

    /// What the loop hears from the background: results, problems, the end.
    #[derive(Debug)]
    pub enum Note {
        /// A sentence for the status line.
        Report(String),
        /// Leave, saying this (e.g. the sign-in expired).
        End(String),
    }

    /// Where snapshots come from and actions go.
    pub trait Source: Send + Sync {
        /// Carries out a confirmed action; the sentence that reports how it went.
        fn act(&self, pending: Pending) -> Pin<Box<dyn Future<Output = String> + Send + 'static>>;
        /// Follows another host (collectors only).
        fn follow(&self, _hostname: String) {}
        /// Called at each key: a collector's session is renewed only for someone there.
        fn touched(&self) {}
    }

    /// This machine: [`crate::control`], with the start time the snapshot showed, so a
    /// pid reused since is refused.
    struct Local;

    impl Source for Local {
        fn act(&self, p: Pending) -> Pin<Box<dyn Future<Output = String> + Send + 'static>> {
            Box::pin(async move {
                let target = crate::control::Target { pid: p.pid, start_time: p.start_time };
                match tokio::task::spawn_blocking(move || crate::control::act(target, p.action)).await {
                    Ok(Ok(_)) => format!("Process {} ({}) {}.", p.pid, p.name, p.action.past_tense()),
                    Ok(Err(e)) => e.message,
                    Err(e) => format!("The action failed: {e}"),
                }
            })
        }
    }

    /// The terminal in raw mode on the alternate screen; put back when dropped, on an
    /// error as on a normal exit. Panics put it back too (ratatui's hook, installed by
    /// `try_init`), before the message is printed.
    struct Screen(ratatui::DefaultTerminal);

    impl Screen {
        fn enter() -> anyhow::Result<Screen> {
            ratatui::try_init().map(Screen).context("cannot set up the terminal")
        }
    }

    impl Drop for Screen {
        fn drop(&mut self) {
            ratatui::restore();
        }
    }

    /// Watches this machine until the person quits.
    pub fn run_local(interval: Duration) -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("cannot start the runtime")?;
        runtime.block_on(async {
            let snapshots = crate::sample::spawn(Sampler::new(SamplerOptions::default()), interval);
            let (_notes_tx, notes) = mpsc::unbounded_channel();
            run(App::new("this machine"), snapshots, Arc::new(Local), notes).await
        })
    }

    /// Runs the UI over `snapshots` until the person quits or a [`Note::End`] arrives.
    pub async fn run(
        mut app: App,
        mut snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
        source: Arc<dyn Source>,
        mut notes: mpsc::UnboundedReceiver<Note>,
    ) -> anyhow::Result<()> {
        let mut screen = Screen::enter()?;
        // Keys are read on a thread of their own: crossterm's reader blocks.
        let (keys_tx, mut keys) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("procyon-keys".into())
            .spawn(move || {
                while let Ok(event) = event::read() {
                    if keys_tx.send(event).is_err() {
                        break;
                    }
                }
            })
            .context("cannot start reading keys")?;
        let (results_tx, mut results) = mpsc::unbounded_channel::<String>();
        if let Some(s) = snapshots.borrow_and_update().clone() {
            app.update(s);
        }
        let end = loop {
            screen.0.draw(|frame| render::draw(frame, &mut app)).context("cannot draw")?;
            tokio::select! {
                event = keys.recv() => match event {
                    Some(Event::Key(key)) => {
                        source.touched();
                        match app.key(key) {
                            Effect::None => {}
                            Effect::Quit => break None,
                            Effect::Act(pending) => {
                                let done = source.act(pending);
                                let tx = results_tx.clone();
                                tokio::spawn(async move {
                                    let _ = tx.send(done.await);
                                });
                            }
                            Effect::Follow(hostname) => {
                                app.report(format!("Following {}…", super::printable(&hostname)));
                                source.follow(hostname);
                            }
                        }
                    }
                    // A new size: the next draw fits it (ratatui resizes on draw).
                    Some(_) => {}
                    None => break Some("the terminal closed".to_owned()),
                },
                changed = snapshots.changed() => {
                    if changed.is_err() {
                        break Some("no more snapshots".to_owned());
                    }
                    let newest = snapshots.borrow_and_update().clone();
                    if let Some(s) = newest {
                        app.update(s);
                    }
                }
                Some(text) = results.recv() => app.report(text),
                Some(note) = notes.recv() => match note {
                    Note::Report(text) => app.report(text),
                    Note::End(text) => break Some(text),
                },
            }
        };
        drop(screen);
        if let Some(text) = end {
            eprintln!("procyon watch: {text}");
        }
        Ok(())
    }

    #[cfg(test)]
    #[allow(clippy::unwrap_used)]
    mod tests {
        use super::*;

        #[tokio::test]
        async fn local_actions_are_refused_for_a_reused_pid() {
            let me = std::process::id();
            let pending = Pending {
                action: crate::model::ProcessAction::Suspend,
                pid: me,
                start_time: chrono::DateTime::from_timestamp(0, 0),
                name: "x".into(),
            };
            let said = Local.act(pending).await;
            assert!(!said.contains("suspended"), "{said}");
        }
    }
}
