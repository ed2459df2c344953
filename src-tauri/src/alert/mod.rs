//! Alerts: rules on host and process metrics, evaluated as snapshots are published,
//! and notifications where people look.
//!
//! - `rule.rs`: rules and channels as people write them, their checks, rules compiled
//!   for evaluation (process filters in the dashboard's language, parsed once);
//! - `status.rs`: what the API answers (alerts now, history, notification attempts,
//!   silences);
//! - `eval.rs`: the evaluation itself, plain data with no I/O: per (rule, host,
//!   process), pending after the condition holds, firing after `for_secs`, resolved
//!   past `clear` (hysteresis), repeated every `repeat_secs`;
//! - `quiet.rs`: channels' quiet hours in an IANA time zone, as pure functions of an
//!   instant;
//! - `notify.rs` (collector): the channels' message formats and sending them (HTTP,
//!   SMTP, and the desktop's native notification through a hook the app installs);
//! - `service.rs` (collector): the rules in force, the task that feeds the evaluation
//!   from the hub and a one-second tick, stored state, delivery with retries, and
//!   notifications held through quiet hours (stored) and summarised when they end.
//!
//! # Cost
//!
//! Evaluation runs on the hub's all-hosts stream, once per published snapshot, never
//! by reading the database. Per snapshot and rule that watches the host: a figure read
//! from the snapshot, or the processes its filter matched. Each distinct filter of all
//! the rules is asked once per process, and only about processes that changed since the
//! host's previous snapshot (see `eval.rs`); the answers for the others are kept per
//! host. Nothing is allocated for a process unless it starts to be pending; state is
//! looked up by rule name and pid. Only transitions are written (in one transaction per
//! snapshot), so a steady fleet writes nothing. `host.offline` is a one-second tick
//! over the hosts' last-contact times held in memory.

pub mod eval;
#[cfg(feature = "server")]
pub mod notify;
pub mod quiet;
pub mod rule;
#[cfg(feature = "server")]
pub mod service;
pub mod status;
