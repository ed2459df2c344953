//! Procyon watches the processes and the network of a machine, or of a fleet of
//! machines, live and over time, and lets an authorised person suspend, resume,
//! terminate or kill a process.
//!
//! This crate is shared by every way Procyon ships (the desktop app, the collector
//! `procyon serve`, and the headless agent). Without features it is the core:
//!
//! - [`model`]: the wire types, one definition each (the UI's TypeScript is generated
//!   from them);
//! - [`sample`]: the sampler, the one owner of the OS handles, producing snapshots;
//! - [`control`]: process actions with their guards (pid reuse, protected processes);
//! - [`duration`]: durations as people type them, for every program's settings.
//!
//! - [`hub`]: live fan-out of the newest snapshot per host;
//! - [`alert`]: alert rules, their evaluation as snapshots are published, and (with
//!   `server`) notification channels;
//! - [`tui`]: `procyon watch`, the terminal UI (its filter language needs no feature;
//!   the terminal itself comes with `server`);
//! - [`search`]: fleet-wide process search (the filter language plus `host:` and
//!   `port:`), matched over any host's snapshot;
//! - [`netmap`]: the fleet's network map, processes joined to the processes they
//!   connect to across hosts, built from any hosts' snapshots;
//! - [`metrics`]: Prometheus metrics of a host made from its newest snapshot, shared
//!   by the collector's `/metrics` and the agent's `--metrics-listen`;
//! - [`manual`]: man pages and shell completions made from a program's clap
//!   definition (the hidden `generate` subcommand of `procyon` and `procyon-agent`).
//!
//! With the `server` feature (on by default) it is also the collector:
//!
//! - `store`: SQLite history, users, API keys and the audit log;
//! - `server`: thin axum adapters (REST, WebSockets, auth) over the store, the hub and
//!   control.
//!
//! With the `desktop` feature it is also the desktop app:
//!
//! - `desktop`: the Tauri window, tray and quick view, thin commands over the same
//!   services (the collector's state runs in the app for this machine).
//!
//! The data flow: the sampler publishes the newest `Arc<Snapshot>`; readers never
//! sample on their own. Process actions go through [`control`] on the machine that owns
//! the process.

pub mod alert;
pub mod control;
#[cfg(feature = "desktop")]
pub mod desktop;
pub mod duration;
#[cfg(test)]
mod fuzzing;
pub mod hub;
pub mod manual;
pub mod metrics;
pub mod model;
pub mod netmap;
pub mod sample;
pub mod search;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod store;
pub mod tui;
