//! `procyon-agent`: samples this machine and streams its snapshots to a collector.
//!
//! Two tasks share the spool. The sampler thread takes a snapshot every interval and
//! writes it to the spool first (the spool gives it its seq), so nothing taken is lost
//! whatever happens to the network; the uplink sends what the spool holds, oldest first,
//! and removes each snapshot once the collector acknowledges it.
//!
//! - `clock.rs`: the wall clock it stamps snapshots with (a test can move it);
//! - `config.rs`: flags, `PROCYON_*` variables and the config file;
//! - `key.rs`: where the API key comes from and is kept;
//! - `spool.rs`: the bounded on-disk queue;
//! - `uplink.rs`: the WebSocket (or REST) connection and relayed process actions;
//! - `tls.rs`: whom it trusts as its collector (a private CA, a pinned certificate);
//! - `metrics.rs`: this machine's Prometheus metrics (`--metrics-listen`).

mod clock;
mod config;
mod key;
mod metrics;
mod spool;
mod tls;
mod uplink;

use std::io::Read;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use procyon::sample::{Sampler, SamplerOptions};
use tokio::sync::{Notify, watch};

use config::{Command, Config, Transport};
use spool::Spool;

/// The files of an installed agent, for the man page (paths of the `procyon-agent`
/// package and its systemd unit; see packaging/).
const FILES: &[procyon::manual::File] = &[
    procyon::manual::File {
        path: config::DEFAULT_CONFIG_FILE,
        what: "The settings, read when --config is not given: every flag has a key there (the installed file \
               lists them all, commented out).",
    },
    procyon::manual::File {
        path: config::SYSTEM_STATE_DIR,
        what: "The state directory when run as root (the service): the spool of snapshots not yet stored by \
               the collector, and api.key, the key set-key and login store when there is no keyring.",
    },
];

fn main() -> ExitCode {
    // Parsing exits with clap's message on a bad flag or --help.
    let cli = match procyon::manual::parse::<config::Cli>() {
        procyon::manual::Parsed::Run(cli) => cli,
        procyon::manual::Parsed::Generate(what) => {
            return match what.run::<config::Cli>(FILES) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("procyon-agent: {e}");
                    ExitCode::FAILURE
                }
            };
        }
    };
    let (config, command) = match config::load(cli) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("procyon-agent: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&config.log)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        // Logs go to stderr (stdout is for what a command prints, such as `login`'s
        // answer). Colours only on a terminal and never with NO_COLOR set: under systemd
        // stderr is the journal, and escape codes there are noise.
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none())
        .init();
    let result = match command {
        Command::Run => run(config),
        Command::SetKey => set_key(&config),
        Command::ForgetKey => key::forget(&config).map(|done| println!("{done}")),
        Command::Login { collectors, user, replace } => login(&config, &collectors, &user, replace),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    // Two workers are plenty: the uplink is one connection; the heavy work (sampling)
    // is on its own thread.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the runtime")
}

/// The TLS settings, one for every collector of the list, and the one warning about
/// plain HTTP across the network for each collector it concerns.
fn connection_settings(config: &Config, collectors: &[url::Url]) -> anyhow::Result<Option<Arc<rustls::ClientConfig>>> {
    for collector in collectors {
        if collector.scheme() == "http" && !config::is_loopback(collector) {
            tracing::warn!(
                %collector,
                "--insecure-http: the API key and every snapshot cross the network UNENCRYPTED; \
                 anyone on the path can read them and act as this agent (use https://)"
            );
        } else if collector.scheme() == "http" && (config.ca_cert.is_some() || !config.pins.is_empty()) {
            tracing::warn!(%collector, "--ca-cert and --pin apply to https:// only; this collector is plain http://");
        }
    }
    tls::client_config(config.ca_cert.as_deref(), &config.pins)
}

fn run(config: Config) -> anyhow::Result<()> {
    let tls = connection_settings(&config, config.collectors()?)?;
    let collectors: Vec<String> = config.collectors()?.iter().map(url::Url::to_string).collect();
    let key = key::resolve(&config)?;
    let spool = Spool::open(&config.spool, config.spool_limits())
        .with_context(|| format!("cannot open the spool in {}", config.spool.display()))?;
    let machine_id = machine_id(&config)?;
    // Bound before anything runs: an address in use stops the start with its reason.
    let metrics_listener = match config.metrics_listen.filter(|_| !config.once) {
        Some(addr) => {
            let listener = std::net::TcpListener::bind(addr)
                .with_context(|| format!("--metrics-listen: cannot listen on {addr}"))?;
            listener.set_nonblocking(true)?;
            tracing::info!(address = %addr, "serving metrics at http://{addr}/metrics");
            Some(listener)
        }
        None => None,
    };
    let (latest_tx, latest) = watch::channel(None);
    let mut sampler = Sampler::new(SamplerOptions { hostname: config.hostname.clone(), cmdline: config.cmdline });
    let host = sampler.host().clone();
    tracing::info!(
        hostname = %host.hostname,
        collectors = %collectors.join(","),
        interval = config.interval.as_secs_f64(),
        allow_control = config.allow_control,
        cmdline = %config.cmdline,
        pending = spool.pending().len(),
        "starting"
    );
    let spool = Arc::new(Mutex::new(spool));
    let fresh = Arc::new(Notify::new());
    let options = uplink::Options {
        collectors,
        key: key.expose().to_owned(),
        allow_control: config.allow_control,
        rest_only: config.transport == Transport::Rest,
        machine_id,
        labels: config.labels.clone(),
        seq_leeway: uplink::seq_leeway(config.interval, config.spool_max_age),
        tls,
    };
    let mut uplink = uplink::Uplink::new(options, host, spool.clone(), fresh.clone())?;

    if config.once {
        take_one(&mut sampler, &spool, &latest_tx)?;
        return runtime()?.block_on(uplink.flush());
    }

    let (stop_tx, stop) = watch::channel(false);
    // The sampler thread sleeps a whole interval at a time and wakes early only when
    // told to stop: no polling while idle.
    let (stop_sampling, sampling_stopped) = std::sync::mpsc::channel::<()>();
    let sampling = {
        let spool = spool.clone();
        let interval = config.interval;
        std::thread::Builder::new().name("sampler".into()).spawn(move || {
            loop {
                let started = Instant::now();
                if let Err(e) = take_one(&mut sampler, &spool, &latest_tx) {
                    tracing::error!("cannot spool a snapshot: {e:#}");
                }
                fresh.notify_one();
                let rest = interval.saturating_sub(started.elapsed());
                match sampling_stopped.recv_timeout(rest) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    // Told to stop, or the sender is gone: either way, stop.
                    _ => return,
                }
            }
        })?
    };
    runtime()?.block_on(async move {
        let metrics = match metrics_listener {
            Some(listener) => match tokio::net::TcpListener::from_std(listener) {
                Ok(listener) => Some(tokio::spawn(metrics::serve(listener, latest, stop.clone()))),
                Err(e) => {
                    tracing::error!("--metrics-listen: {e}");
                    None
                }
            },
            None => None,
        };
        let uplink = tokio::spawn(uplink.run(stop));
        shutdown_signal().await;
        tracing::info!("stopping");
        let _ = stop_sampling.send(());
        let _ = stop_tx.send(true);
        let _ = uplink.await;
        if let Some(metrics) = metrics {
            let _ = metrics.await;
        }
    });
    let _ = sampling.join();
    Ok(())
}

/// The fingerprint of this machine for the hello, computed once: from
/// `--machine-id-file` if given (an error if it cannot be read), else from the system's
/// machine id; `None`, with a warning, when there is neither.
fn machine_id(config: &Config) -> anyhow::Result<Option<String>> {
    if let Some(path) = &config.machine_id_file {
        return procyon::sample::machine::fingerprint_from_file(path)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("--machine-id-file: {e}"));
    }
    let fingerprint = procyon::sample::machine::fingerprint();
    if fingerprint.is_none() {
        tracing::warn!(
            "this machine has no machine id (/etc/machine-id), so the collector cannot tell it from another \
             machine reporting the same host name; give it one with --machine-id-file FILE"
        );
    }
    Ok(fingerprint)
}

/// Takes a snapshot, spools it under the next seq, and makes it the newest for
/// `--metrics-listen`.
fn take_one(
    sampler: &mut Sampler,
    spool: &Mutex<Spool>,
    latest: &watch::Sender<Option<Arc<procyon::model::Snapshot>>>,
) -> anyhow::Result<()> {
    let mut snapshot = sampler.sample();
    snapshot.taken_at = clock::adjust(snapshot.taken_at);
    let mut spool = uplink::lock(spool);
    // The spool numbers snapshots: it remembers the last seq across restarts and
    // raises it when the collector knows a higher one.
    snapshot.seq = spool.last_seq() + 1;
    let snapshot = Arc::new(snapshot);
    latest.send_replace(Some(snapshot.clone()));
    let dropped = spool.push_shared(snapshot)?;
    if dropped > 0 {
        tracing::warn!(dropped, bytes = spool.bytes(), "spool full: dropped the oldest snapshots");
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

fn set_key(config: &Config) -> anyhow::Result<()> {
    let key = key::read_key(std::io::stdin().lock())?;
    let where_ = key::store(config, &key)?;
    println!("Stored the API key {where_}.");
    Ok(())
}

/// Signs in as an admin and has the collector issue a key bound to this host. A host
/// that already has one (an earlier login, a reinstall) gets a new one only with
/// `replace`, which revokes the old.
///
/// With several collectors it signs in to the first that answers: they share one
/// database, so the key it issues serves them all. One that cannot be reached, or
/// answers with a server error, is passed over; a refusal (a wrong password) is the
/// answer, since every other collector would give the same.
fn login(config: &Config, collectors: &[url::Url], user: &str, replace: bool) -> anyhow::Result<()> {
    let mut password = String::new();
    std::io::stdin().read_to_string(&mut password)?;
    let password = password.lines().next().unwrap_or_default().to_owned();
    let hostname = match &config.hostname {
        Some(h) => h.clone(),
        None => Sampler::new(SamplerOptions::default()).host().hostname.clone(),
    };
    let tls = connection_settings(config, collectors)?;
    let (base, key): (String, String) = runtime()?.block_on(async {
        let http = uplink::http_client(tls.as_deref())?;
        let mut failures = Vec::new();
        let mut reached = None;
        for collector in collectors {
            let base = collector.as_str().trim_end_matches('/').to_owned();
            let sent = http
                .post(format!("{base}/api/auth/login"))
                .json(&serde_json::json!({ "username": user, "password": password }))
                .send()
                .await;
            match sent {
                Ok(answer) if !answer.status().is_server_error() => {
                    reached = Some((base, answer));
                    break;
                }
                Ok(answer) => {
                    let status = answer.status();
                    let body: serde_json::Value = answer.json().await.unwrap_or_default();
                    let why = body["message"].as_str().map_or_else(|| format!("HTTP {status}"), str::to_owned);
                    failures.push(format!("{base} cannot sign in now: {why}"));
                }
                Err(e) => failures.push(format!("cannot reach {base}: {}", uplink::explain(tls::describe(&e)))),
            }
            if collectors.len() > 1 {
                tracing::warn!("{}; trying the next collector", failures.last().map_or("", String::as_str));
            }
        }
        let Some((base, answer)) = reached else {
            match failures.as_slice() {
                [one] => anyhow::bail!("{one}"),
                all => anyhow::bail!("no collector answered: {}", all.join("; ")),
            }
        };
        let status = answer.status();
        let body: serde_json::Value = answer.json().await.unwrap_or_default();
        if !status.is_success() {
            anyhow::bail!("sign-in refused: {}", body["message"].as_str().unwrap_or("no reason given"));
        }
        let token = body["token"].as_str().context("the collector sent no token")?.to_owned();
        let name = format!("agent-{hostname}");
        if replace {
            // The old key (and the name earlier versions gave it) stops working now, so
            // the host's binding passes to the new one.
            for old in [name.clone(), format!("agent {hostname}")] {
                let url = format!(
                    "{base}/api/keys/{}",
                    url::form_urlencoded::byte_serialize(old.as_bytes()).collect::<String>()
                );
                let answer = http.delete(url).bearer_auth(&token).send().await?;
                if answer.status().is_success() {
                    println!("Revoked the earlier key `{old}`.");
                }
            }
        }
        let answer = http
            .post(format!("{base}/api/keys"))
            .bearer_auth(&token)
            .json(&serde_json::json!({ "name": name, "hostname": hostname }))
            .send()
            .await?;
        let status = answer.status();
        let body: serde_json::Value = answer.json().await.unwrap_or_default();
        if status.as_u16() == 409 {
            anyhow::bail!(
                "the collector already has a key for host {hostname} (`{name}`, from an earlier login or another \
                 machine of that name). To replace it, and make the old key stop working, run this again with \
                 --replace."
            );
        }
        if !status.is_success() {
            anyhow::bail!(
                "the collector did not issue a key: {}",
                body["message"].as_str().unwrap_or("no reason given")
            );
        }
        Ok((base, body["key"].as_str().context("the collector sent no key")?.to_owned()))
    })?;
    let key = key::Secret::new(&key, "the collector")?;
    let where_ = key::store(config, &key)?;
    println!("Signed in to {base}; an API key for host {hostname} is stored {where_}.");
    Ok(())
}
