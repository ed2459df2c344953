//! The agent's configuration: command-line flags, `PROCYON_*` environment variables and
//! a TOML file, merged field by field, then the defaults.
//!
//! Precedence, highest first: a flag, its environment variable, the config file
//! (`--config FILE`, else [`DEFAULT_CONFIG_FILE`] when it exists), the default. Clap
//! handles the first two (a flag wins over its variable); every flag is an `Option` so
//! that an absent one falls through to the file instead of hiding it behind a clap
//! default. The file is parsed into the same [`Flags`] type, so merging is one `or` per
//! field and the flag and the file share their parsers and range checks.
//!
//! The API key itself is not configuration: `key.rs` finds it (`--api-key-file`, the
//! `PROCYON_API_KEY` variable read here, the keyring, the fallback key file).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::builder::BoolishValueParser;
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;
use url::Url;

use procyon::model::labels::{self, Labels};
use procyon::sample::CmdlineMode;

use crate::key::Secret;
use crate::spool::Limits;
use crate::tls::Pin;

/// The config file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/procyon/agent.toml";
/// The agent's state directory when it runs as root: the systemd unit's
/// `StateDirectory=procyon-agent`. It holds the spool and the fallback key file.
pub const SYSTEM_STATE_DIR: &str = "/var/lib/procyon-agent";
/// Name of the fallback key file in the state directory.
pub const KEY_FILE_NAME: &str = "api.key";
/// The environment variable that may hold the API key itself.
pub const API_KEY_ENV: &str = "PROCYON_API_KEY";

/// Shortest interval: the sampler's CPU figures need at least 200 ms between readings.
pub const MIN_INTERVAL: Duration = Duration::from_millis(200);
/// Longest interval: an hour; slower than that a host looks offline to the collector.
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);
const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
const DEFAULT_SPOOL_MAX_BYTES: u64 = 256 << 20;
const DEFAULT_SPOOL_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Smallest spool: a handful of snapshots of a busy machine; below that the spool would
/// drop what it was meant to keep.
const MIN_SPOOL_MAX_BYTES: u64 = 64 << 10;
/// Shortest spool age: shorter would drop snapshots during an ordinary reconnect.
const MIN_SPOOL_MAX_AGE: Duration = Duration::from_secs(60);

/// How snapshots reach the collector.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// One WebSocket (`/ws/agent`); REST uploads when the upgrade is refused (e.g. by a
    /// proxy that does not pass WebSockets).
    #[default]
    Auto,
    /// Always `POST /api/process-snapshots/`.
    Rest,
}

/// The agent's settings after merging flags, environment, file and defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The config file that was read, if any.
    pub config_file: Option<PathBuf>,
    /// The collectors' base URLs (http or https), in the order they are tried: one
    /// fleet's collectors, sharing one database (see uplink.rs for how the agent moves
    /// between them). Never empty when [`load`] returns [`Command::Run`] or
    /// [`Command::Login`]; see [`Config::collectors`].
    pub collectors: Vec<Url>,
    /// `--api-key-file`: a file holding the API key (must not be readable by others).
    pub api_key_file: Option<PathBuf>,
    /// The key from `PROCYON_API_KEY`, already checked.
    pub api_key: Option<Secret>,
    /// Where `set-key` and `login` keep the key when there is no usable keyring (mode
    /// 0600). Default: `api.key` in the state directory.
    pub key_file: PathBuf,
    /// Host name to report instead of the machine's.
    pub hostname: Option<String>,
    /// `--machine-id-file`: a file whose content stands in for the machine id
    /// (`/etc/machine-id`) in the fingerprint sent to the collector.
    pub machine_id_file: Option<PathBuf>,
    /// Time between snapshots.
    pub interval: Duration,
    /// The spool directory: snapshots not yet acknowledged by the collector.
    pub spool: PathBuf,
    /// The spool's size limit in bytes (compressed snapshots).
    pub spool_max_bytes: u64,
    /// Snapshots older than this are dropped from the spool.
    pub spool_max_age: Duration,
    /// Carry out process actions the collector relays.
    pub allow_control: bool,
    /// Send one snapshot and exit.
    pub once: bool,
    /// WebSocket with REST fallback, or REST only.
    pub transport: Transport,
    /// How much of each command line is sent: all of it (secrets masked), the program
    /// only, or nothing.
    pub cmdline: CmdlineMode,
    /// `tracing` filter, e.g. `info` or `procyon_agent=debug`.
    pub log: String,
    /// CA certificates (PEM) trusted for the collector instead of the system's.
    pub ca_cert: Option<PathBuf>,
    /// Only a collector certificate with one of these SHA-256s is accepted.
    pub pins: Vec<Pin>,
    /// Plain `http://` to a collector on another machine is allowed.
    pub insecure_http: bool,
    /// Serve this machine's Prometheus metrics on this address (off when `None`).
    pub metrics_listen: Option<SocketAddr>,
    /// `metrics_listen` may be an address other machines reach.
    pub metrics_listen_public: bool,
    /// The host's labels, sent to the collector in the hello (`env=prod`).
    pub labels: Labels,
}

impl Config {
    /// The collector URLs (at least one), or the error that tells how to give one.
    pub fn collectors(&self) -> anyhow::Result<&[Url]> {
        if self.collectors.is_empty() {
            bail!("no collector: pass --collector URL or set collector in the config file");
        }
        Ok(&self.collectors)
    }

    /// The spool's limits.
    pub fn spool_limits(&self) -> Limits {
        Limits { max_bytes: self.spool_max_bytes, max_age: self.spool_max_age }
    }
}

/// What the agent was asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Sample and stream to the collector (the default).
    Run,
    /// Read an API key from standard input and store it (`key::store`).
    SetKey,
    /// Sign in to the first reachable of `collectors` as `user` (password on standard
    /// input) and store the API key the collector issues. `collectors` is the
    /// subcommand's `--collector`, else the configured list; it is also in
    /// [`Config::collectors`].
    Login {
        /// The collectors to try, in order (at least one).
        collectors: Vec<Url>,
        /// The user name.
        user: String,
        /// Replace (revoke) this host's earlier key if the collector has one.
        replace: bool,
    },
    /// Remove the stored API key (keyring entry and key file).
    ForgetKey,
}

/// Samples this machine and streams its snapshots to a Procyon collector.
///
/// Every option can also be given as a `PROCYON_*` environment variable or in the
/// config file (flag, then variable, then file, then default).
#[derive(Parser, Debug, Clone)]
#[command(name = "procyon-agent", version, about)]
pub struct Cli {
    /// The settings.
    #[command(flatten)]
    pub flags: Flags,
    /// What to do; without one the agent runs.
    #[command(subcommand)]
    pub command: Option<Sub>,
}

/// The settings as flags, environment variables or file keys: `None` means "not given
/// here", so the next source decides.
#[derive(Args, Debug, Default, Clone, PartialEq)]
pub struct Flags {
    /// TOML config file [default: /etc/procyon/agent.toml if it exists].
    #[arg(long, env = "PROCYON_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The collector's URL, e.g. https://collector.example:7450. For a fleet of several collectors on one database, repeat it or separate the URLs with commas: the agent uses the first it can reach and moves to the next when that one is gone.
    #[arg(long, env = "PROCYON_COLLECTOR", value_name = "URL", value_parser = parse_collectors)]
    pub collector: Vec<Collectors>,
    /// Read the API key from FILE (it must not be readable by other users).
    #[arg(long, env = "PROCYON_API_KEY_FILE", value_name = "FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Where `set-key` and `login` keep the key when no keyring is usable [default: api.key in the state directory].
    #[arg(long, env = "PROCYON_KEY_FILE", value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Report this host name instead of the machine's.
    #[arg(long, env = "PROCYON_HOSTNAME", value_name = "NAME", value_parser = parse_hostname)]
    pub hostname: Option<String>,
    /// Identify this machine to the collector by the content of FILE instead of the system's machine id (/etc/machine-id, macOS's IOPlatformUUID, Windows' MachineGuid), for hosts without one, and tests.
    #[arg(long, env = "PROCYON_MACHINE_ID_FILE", value_name = "FILE")]
    pub machine_id_file: Option<PathBuf>,
    /// Time between snapshots, e.g. 2s, 500ms or 1m (a bare number is seconds), 200ms to 1h [default: 2s].
    #[arg(long, env = "PROCYON_INTERVAL", value_name = "DURATION", value_parser = parse_interval)]
    pub interval: Option<Duration>,
    /// Directory for snapshots not yet acknowledged [default: /var/lib/procyon-agent as root, else the user's data directory].
    #[arg(long, env = "PROCYON_SPOOL", value_name = "DIR")]
    pub spool: Option<PathBuf>,
    /// The spool's size limit, e.g. 256MiB or a number of bytes [default: 256MiB].
    #[arg(long, env = "PROCYON_SPOOL_MAX_BYTES", value_name = "SIZE", value_parser = parse_size)]
    pub spool_max_bytes: Option<u64>,
    /// Drop spooled snapshots older than this, e.g. 7d or 12h [default: 7d].
    #[arg(long, env = "PROCYON_SPOOL_MAX_AGE", value_name = "DURATION", value_parser = parse_age)]
    pub spool_max_age: Option<Duration>,
    /// Carry out process actions relayed by the collector [default: false].
    #[arg(
        long,
        env = "PROCYON_ALLOW_CONTROL",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = BoolishValueParser::new(),
    )]
    pub allow_control: Option<bool>,
    /// Send one snapshot, wait for the collector to store it, and exit.
    #[arg(
        long,
        env = "PROCYON_ONCE",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = BoolishValueParser::new(),
    )]
    pub once: Option<bool>,
    /// auto: WebSocket, REST if the upgrade is refused; rest: REST only [default: auto].
    #[arg(long, env = "PROCYON_TRANSPORT", value_enum)]
    pub transport: Option<Transport>,
    /// Command lines to send: full (secrets masked), exe (the program only) or none [default: full].
    #[arg(long, env = "PROCYON_CMDLINE", value_name = "full|exe|none", value_parser = parse_cmdline)]
    pub cmdline: Option<CmdlineMode>,
    /// Log filter, e.g. info or procyon_agent=debug [default: info].
    #[arg(long, env = "PROCYON_LOG", value_name = "FILTER")]
    pub log: Option<String>,
    /// Trust the CA certificates in FILE (PEM) for the collector's https://, instead of the system's.
    #[arg(long, env = "PROCYON_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Accept only the collector certificate with this SHA-256 (sha256:HEX or sha256:BASE64; several separated by commas).
    #[arg(long, env = "PROCYON_PIN", value_name = "sha256:DIGEST", value_parser = parse_pins)]
    pub pin: Option<Pins>,
    /// Allow plain http:// to a collector on another machine: the key and snapshots go unencrypted [default: false].
    #[arg(
        long,
        env = "PROCYON_INSECURE_HTTP",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = BoolishValueParser::new(),
    )]
    pub insecure_http: Option<bool>,
    /// Serve this machine's metrics for Prometheus at http://ADDR/metrics, e.g. 127.0.0.1:9560 [default: off].
    #[arg(long, env = "PROCYON_METRICS_LISTEN", value_name = "ADDR", value_parser = parse_listen)]
    pub metrics_listen: Option<SocketAddr>,
    /// Allow --metrics-listen on an address other machines reach: anyone who can connect reads the metrics, without a key [default: false].
    #[arg(
        long,
        env = "PROCYON_METRICS_LISTEN_PUBLIC",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = BoolishValueParser::new(),
    )]
    pub metrics_listen_public: Option<bool>,
    /// Label this host for the collector's overview, e.g. --label env=prod --label role=db (repeat it, or separate pairs with commas); an admin's labels on the collector win per key.
    #[arg(long, env = "PROCYON_LABEL", value_name = "KEY=VALUE", value_parser = parse_labels)]
    pub label: Vec<LabelList>,
}

/// One `--label` value: one `key=value` pair, or several separated by commas.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LabelList(pub Vec<(String, String)>);

/// One `--collector` value: a URL, or several separated by commas.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Collectors(pub Vec<Url>);

/// The pinned certificates of `--pin`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pins(pub Vec<Pin>);

/// The subcommands.
#[derive(Subcommand, Debug, Clone, PartialEq)]
pub enum Sub {
    /// Read an API key from standard input and store it (the system keyring, else a
    /// file only root or this user can read).
    SetKey,
    /// Sign in to the collector (password on standard input) and store an API key for
    /// this agent.
    Login {
        /// The collector's URL [default: the configured collectors]; repeat it or separate URLs with commas to sign in to the first that answers.
        #[arg(long, value_name = "URL", value_parser = parse_collectors)]
        collector: Vec<Collectors>,
        /// The user to sign in as (an admin: creating agent keys needs that role).
        #[arg(long, value_name = "NAME")]
        user: String,
        /// If the collector already has this host's key (an earlier login, a reinstall),
        /// revoke it and issue a new one: the old key stops working.
        #[arg(long)]
        replace: bool,
    },
    /// Remove the stored API key (keyring entry and key file).
    ForgetKey,
}

/// What the defaults depend on: where this process keeps its state.
#[derive(Clone, Debug, PartialEq)]
pub struct Defaults {
    /// The state directory (spool and fallback key file), `None` when there is none
    /// (no home directory), in which case `--spool` and `--key-file` are required.
    pub state_dir: Option<PathBuf>,
}

impl Defaults {
    /// [`SYSTEM_STATE_DIR`] for root (the systemd unit), else the user's data directory,
    /// e.g. `~/.local/share/procyon-agent` on Linux.
    pub fn for_this_process() -> Defaults {
        let state_dir = if running_as_root() {
            Some(PathBuf::from(SYSTEM_STATE_DIR))
        } else {
            directories::ProjectDirs::from("", "", "procyon-agent").map(|d| d.data_dir().to_path_buf())
        };
        Defaults { state_dir }
    }
}

/// Whether the process runs as root (effective uid 0).
pub fn running_as_root() -> bool {
    #[cfg(unix)]
    {
        nix::unistd::geteuid().is_root()
    }
    #[cfg(not(unix))]
    {
        false
    }
}

/// Takes the parsed command line, reads `PROCYON_API_KEY` and the config file, and merges
/// them with the defaults.
///
/// Errors name the setting and its source, e.g. `config file /etc/procyon/agent.toml:
/// interval must be between 200ms and 1h`, or say what is missing, e.g. no
/// collector for [`Command::Run`].
pub fn load(cli: Cli) -> anyhow::Result<(Config, Command)> {
    let api_key = match std::env::var(API_KEY_ENV) {
        Ok(raw) => Some(Secret::new(&raw, API_KEY_ENV)?),
        Err(std::env::VarError::NotPresent) => None,
        Err(std::env::VarError::NotUnicode(_)) => bail!("{API_KEY_ENV} is not valid UTF-8"),
    };
    let file = read_config_file(cli.flags.config.as_deref())?;
    let file = file.as_ref().map(|(path, text)| (path.as_path(), text.as_str()));
    resolve(cli, file, api_key, &Defaults::for_this_process())
}

/// Merges parsed flags (environment included), the config file's text and the defaults.
/// [`load`] without the process's environment and file system, for tests.
pub fn resolve(
    cli: Cli,
    file: Option<(&Path, &str)>,
    api_key: Option<Secret>,
    defaults: &Defaults,
) -> anyhow::Result<(Config, Command)> {
    let (file_flags, config_file) = match file {
        Some((path, text)) => (parse_file(path, text)?, Some(path.to_path_buf())),
        None => (Flags::default(), None),
    };
    let f = cli.flags;
    let state_dir = defaults.state_dir.as_deref();
    let spool = f.spool.or(file_flags.spool).or_else(|| state_dir.map(Path::to_path_buf));
    let key_file = f.key_file.or(file_flags.key_file).or_else(|| state_dir.map(|d| d.join(KEY_FILE_NAME)));
    let mut config = Config {
        config_file,
        collectors: merge_collectors(if f.collector.is_empty() { file_flags.collector } else { f.collector }),
        api_key_file: f.api_key_file.or(file_flags.api_key_file),
        api_key,
        key_file: key_file.context("cannot find a data directory for the key file: pass --key-file FILE")?,
        hostname: f.hostname.or(file_flags.hostname),
        machine_id_file: f.machine_id_file.or(file_flags.machine_id_file),
        interval: f.interval.or(file_flags.interval).unwrap_or(DEFAULT_INTERVAL),
        spool: spool.context("cannot find a data directory for the spool: pass --spool DIR")?,
        spool_max_bytes: f.spool_max_bytes.or(file_flags.spool_max_bytes).unwrap_or(DEFAULT_SPOOL_MAX_BYTES),
        spool_max_age: f.spool_max_age.or(file_flags.spool_max_age).unwrap_or(DEFAULT_SPOOL_MAX_AGE),
        allow_control: f.allow_control.or(file_flags.allow_control).unwrap_or(false),
        once: f.once.unwrap_or(false),
        transport: f.transport.or(file_flags.transport).unwrap_or_default(),
        cmdline: f.cmdline.or(file_flags.cmdline).unwrap_or_default(),
        log: f.log.or(file_flags.log).unwrap_or_else(|| "info".to_owned()),
        ca_cert: f.ca_cert.or(file_flags.ca_cert),
        pins: f.pin.or(file_flags.pin).unwrap_or_default().0,
        insecure_http: f.insecure_http.or(file_flags.insecure_http).unwrap_or(false),
        metrics_listen: f.metrics_listen.or(file_flags.metrics_listen),
        metrics_listen_public: f.metrics_listen_public.or(file_flags.metrics_listen_public).unwrap_or(false),
        labels: merge_labels(if f.label.is_empty() { file_flags.label } else { f.label })?,
    };
    check_metrics_listen(config.metrics_listen, config.metrics_listen_public)?;
    let command = match cli.command {
        None => {
            config.collectors()?;
            Command::Run
        }
        Some(Sub::SetKey) => Command::SetKey,
        Some(Sub::ForgetKey) => Command::ForgetKey,
        Some(Sub::Login { collector, user, replace }) => {
            if !collector.is_empty() {
                config.collectors = merge_collectors(collector);
            }
            let collectors = config.collectors()?.to_vec();
            Command::Login { collectors, user, replace }
        }
    };
    // Every collector of the list, since any of them may be the one in use.
    if matches!(command, Command::Run | Command::Login { .. }) {
        for url in config.collectors()? {
            check_plain_http(url, config.insecure_http)?;
        }
    }
    Ok((config, command))
}

/// The URLs of the `--collector` values (or the file's) in order, each once: a URL
/// given twice would only be tried twice in a row.
fn merge_collectors(values: Vec<Collectors>) -> Vec<Url> {
    let mut urls: Vec<Url> = Vec::new();
    for url in values.into_iter().flat_map(|c| c.0) {
        if !urls.contains(&url) {
            urls.push(url);
        }
    }
    urls
}

/// The labels of the `--label` values (or the file's); a key given twice keeps its last
/// value. At most [`labels::MAX_LABELS`].
fn merge_labels(values: Vec<LabelList>) -> anyhow::Result<Labels> {
    let labels: Labels = values.into_iter().flat_map(|l| l.0).collect();
    if labels.len() > labels::MAX_LABELS {
        bail!("{} labels given; a host carries at most {}", labels.len(), labels::MAX_LABELS);
    }
    Ok(labels)
}

/// Refuses a metrics address other machines reach unless `public`: the metrics name this
/// machine's programs and are served without a key.
pub fn check_metrics_listen(addr: Option<SocketAddr>, public: bool) -> anyhow::Result<()> {
    match addr {
        Some(addr) if !addr.ip().is_loopback() && !public => anyhow::bail!(
            "--metrics-listen {addr} is not a loopback address: anyone who can reach it would read this machine's \
             process names and figures, without a key. Listen on 127.0.0.1 (and let Prometheus reach it through a \
             tunnel or a proxy that checks credentials), or pass --metrics-listen-public \
             (PROCYON_METRICS_LISTEN_PUBLIC, metrics_listen_public in the config file) if the network is trusted"
        ),
        _ => Ok(()),
    }
}

/// An address to listen on: `IP:PORT` (`[::1]:9560` for IPv6).
fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.trim().parse().map_err(|_| format!("must be IP:PORT, e.g. 127.0.0.1:9560 (got `{s}`)"))
}

/// Refuses plain `http://` to another machine unless `insecure_http`: the API key and
/// every snapshot would cross the network unencrypted. This machine (loopback) is fine.
pub fn check_plain_http(url: &Url, insecure_http: bool) -> anyhow::Result<()> {
    if url.scheme() != "http" || insecure_http || is_loopback(url) {
        return Ok(());
    }
    bail!(
        "the collector {url} is on another machine and plain http:// would send the API key and every snapshot \
         unencrypted: use https:// (procyon serve --tls-cert FILE --tls-key FILE), or pass --insecure-http \
         (PROCYON_INSECURE_HTTP, insecure_http in the config file) if the network between them is trusted"
    )
}

/// Whether plain `http://` to `url` goes over the network at all: `127.0.0.0/8`, `::1`
/// and `localhost` stay on this machine.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
        Some(url::Host::Domain(name)) => matches!(name.to_ascii_lowercase().as_str(), "localhost" | "localhost."),
        None => false,
    }
}

/// Reads `explicit`, else [`DEFAULT_CONFIG_FILE`] if it exists: `(path, text)`.
fn read_config_file(explicit: Option<&Path>) -> anyhow::Result<Option<(PathBuf, String)>> {
    let (path, required) = match explicit {
        Some(path) => (path.to_path_buf(), true),
        None => (PathBuf::from(DEFAULT_CONFIG_FILE), false),
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some((path, text))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => Ok(None),
        // The default file exists but is unreadable: say so rather than silently running
        // without the settings it holds (it is mode 0600 root when installed).
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied && !required => {
            bail!(
                "cannot read config file {}: {e} (run as root, or pass --config FILE; --config /dev/null for none)",
                path.display()
            )
        }
        Err(e) => bail!("cannot read config file {}: {e}", path.display()),
    }
}

/// The config file as written: the same keys as the flags, without `config` and `once`
/// (`once` is a way of invoking the agent, not a setting: in the file it would make the
/// service exit after one snapshot).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    collector: Option<OneOrMany>,
    api_key_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    hostname: Option<String>,
    machine_id_file: Option<PathBuf>,
    interval: Option<NumberOrText>,
    spool: Option<PathBuf>,
    spool_max_bytes: Option<NumberOrText>,
    spool_max_age: Option<NumberOrText>,
    allow_control: Option<bool>,
    transport: Option<Transport>,
    cmdline: Option<String>,
    log: Option<String>,
    ca_cert: Option<PathBuf>,
    pin: Option<String>,
    insecure_http: Option<bool>,
    metrics_listen: Option<String>,
    metrics_listen_public: Option<bool>,
    labels: Option<toml::Table>,
}

/// The file's `collector`: one string (URLs separated by commas, as in the flag and the
/// variable) or an array of them.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    /// The value as the flag would spell it, so the flag's parser checks it.
    fn as_flag_text(&self) -> String {
        match self {
            OneOrMany::One(s) => s.clone(),
            OneOrMany::Many(list) => list.join(","),
        }
    }
}

/// A TOML value that may be written as a number (`interval = 2`) or with a unit
/// (`spool_max_bytes = "256MiB"`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum NumberOrText {
    Integer(i64),
    Float(f64),
    Text(String),
}

impl NumberOrText {
    /// The value as a flag would spell it, so the flag's parser checks it.
    fn as_flag_text(&self) -> String {
        match self {
            NumberOrText::Integer(n) => n.to_string(),
            NumberOrText::Float(x) => x.to_string(),
            NumberOrText::Text(s) => s.clone(),
        }
    }
}

/// Parses and checks a config file; errors start with `config file PATH:` and name the
/// key. Relative paths in it are taken relative to the file's directory.
fn parse_file(path: &Path, text: &str) -> anyhow::Result<Flags> {
    let prefix = format!("config file {}", path.display());
    let raw: FileConfig =
        toml::from_str(text).map_err(|e| anyhow::anyhow!("{prefix}: {}", e.to_string().trim_end()))?;
    let base = path.parent().unwrap_or(Path::new(""));
    let text = |v: Option<NumberOrText>| v.map(|v| v.as_flag_text());
    Ok(Flags {
        config: None,
        collector: check(&prefix, "collector", raw.collector.map(|c| c.as_flag_text()), parse_collectors)?
            .into_iter()
            .collect(),
        api_key_file: raw.api_key_file.map(|p| base.join(p)),
        key_file: raw.key_file.map(|p| base.join(p)),
        hostname: check(&prefix, "hostname", raw.hostname, parse_hostname)?,
        machine_id_file: raw.machine_id_file.map(|p| base.join(p)),
        interval: check(&prefix, "interval", text(raw.interval), parse_interval)?,
        spool: raw.spool.map(|p| base.join(p)),
        spool_max_bytes: check(&prefix, "spool_max_bytes", text(raw.spool_max_bytes), parse_size)?,
        spool_max_age: check(&prefix, "spool_max_age", text(raw.spool_max_age), parse_age)?,
        allow_control: raw.allow_control,
        once: None,
        transport: raw.transport,
        cmdline: check(&prefix, "cmdline", raw.cmdline, parse_cmdline)?,
        log: check(&prefix, "log", raw.log, non_empty)?,
        ca_cert: raw.ca_cert.map(|p| base.join(p)),
        pin: check(&prefix, "pin", raw.pin, parse_pins)?,
        insecure_http: raw.insecure_http,
        metrics_listen: check(&prefix, "metrics_listen", raw.metrics_listen, parse_listen)?,
        metrics_listen_public: raw.metrics_listen_public,
        label: match raw.labels {
            None => Vec::new(),
            Some(table) => vec![file_labels(&prefix, table)?],
        },
    })
}

/// The file's `labels = { env = "prod" }` table, each pair checked as the flag's are.
fn file_labels(prefix: &str, table: toml::Table) -> anyhow::Result<LabelList> {
    let mut pairs = Vec::new();
    for (key, value) in table {
        let Some(value) = value.as_str() else {
            bail!("{prefix}: labels.{key} must be a string, e.g. labels = {{ env = \"prod\" }}");
        };
        let pair =
            labels::parse_pair(&format!("{key}={value}")).map_err(|e| anyhow::anyhow!("{prefix}: labels: {e}"))?;
        pairs.push(pair);
    }
    Ok(LabelList(pairs))
}

/// `key=value` pairs separated by commas.
fn parse_labels(s: &str) -> Result<LabelList, String> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| labels::parse_pair(p).map_err(|e| format!("is refused: {e}")))
        .collect::<Result<Vec<_>, _>>()
        .map(LabelList)
}

/// Runs a flag's parser on a file's value; its error completes "PREFIX: KEY ...".
fn check<T>(
    prefix: &str,
    key: &str,
    value: Option<String>,
    parse: fn(&str) -> Result<T, String>,
) -> anyhow::Result<Option<T>> {
    value.map(|v| parse(&v).map_err(|e| anyhow::anyhow!("{prefix}: {key} {e}"))).transpose()
}

// Parsers shared by flags, environment variables and the file. Their errors complete a
// sentence that starts with the setting's name ("interval must be ...").

/// An http or https URL with a host, no credentials, no query.
fn parse_collector(s: &str) -> Result<Url, String> {
    let url = Url::parse(s.trim()).map_err(|e| format!("is not a URL ({e}), e.g. https://collector.example:7450"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "must be an http or https URL (not {}), e.g. https://collector.example:7450",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("must name a host, e.g. https://collector.example:7450".into());
    }
    // A password in the URL would end up in logs and process listings; agents
    // authenticate with an API key instead.
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain a user name or password (the agent authenticates with an API key)".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query or fragment".into());
    }
    // A path is fine (a collector behind a proxy at /procyon/), but one naming the API
    // is the collector's address copied from an API call: the agent adds those paths.
    let path = url.path().trim_end_matches('/');
    if path.split('/').any(|segment| segment == "api" || segment == "ws") {
        let mut base = url.clone();
        base.set_path("");
        return Err(format!(
            "is the address of an API endpoint ({path}); give the collector's own address, e.g. {}",
            base.as_str().trim_end_matches('/')
        ));
    }
    Ok(url)
}

/// One collector URL or several, separated by commas (blanks around them and empty
/// entries are ignored, so a trailing comma is harmless). A single URL's error reads as
/// it always did; in a list the error names the URL it is about.
fn parse_collectors(s: &str) -> Result<Collectors, String> {
    let parts: Vec<&str> = s.split(',').map(str::trim).filter(|p| !p.is_empty()).collect();
    match parts.as_slice() {
        // Nothing but commas and blanks: the single URL's "is not a URL".
        [] => parse_collector(s).map(|url| Collectors(vec![url])),
        [one] => parse_collector(one).map(|url| Collectors(vec![url])),
        many => many
            .iter()
            .map(|part| parse_collector(part).map_err(|e| format!("`{part}` {e}")))
            .collect::<Result<_, _>>()
            .map(Collectors),
    }
}

/// One pin or several, separated by commas.
fn parse_pins(s: &str) -> Result<Pins, String> {
    let pins = s.split(',').filter(|p| !p.trim().is_empty()).map(Pin::parse).collect::<Result<Vec<_>, _>>()?;
    if pins.is_empty() {
        return Err(crate::tls::PIN_USAGE.into());
    }
    Ok(Pins(pins))
}

fn parse_hostname(s: &str) -> Result<String, String> {
    let name = s.trim();
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > 255 || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("must be at most 255 characters without spaces or control characters".into());
    }
    Ok(name.to_owned())
}

/// A duration (`2`, `0.5`, `500ms`, `1m`) between [`MIN_INTERVAL`] and [`MAX_INTERVAL`].
fn parse_interval(s: &str) -> Result<Duration, String> {
    procyon::duration::parse_between(s, MIN_INTERVAL, MAX_INTERVAL)
}

/// Bytes as a number, or with a unit: `KB`, `MB`, `GB`, `TB` are powers of 1000; `K`,
/// `M`, `G`, `T` and `KiB`, `MiB`, `GiB`, `TiB` powers of 1024 (as systemd reads them).
fn parse_size(s: &str) -> Result<u64, String> {
    let text = s.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit_bytes: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return Err(format!("has an unknown unit {unit:?} (use e.g. 256MiB, 1GB or a number of bytes)")),
    };
    let value: f64 =
        number.parse().map_err(|_| "must be a size such as 256MiB, 1GB or a number of bytes".to_owned())?;
    let bytes = value * unit_bytes as f64;
    if !(MIN_SPOOL_MAX_BYTES as f64..=u64::MAX as f64).contains(&bytes) {
        return Err(format!("must be at least {} KiB", MIN_SPOOL_MAX_BYTES >> 10));
    }
    Ok(bytes as u64)
}

/// A duration (`7d`, `12h`, `90min`, or a number of seconds) of at least
/// [`MIN_SPOOL_MAX_AGE`].
fn parse_age(s: &str) -> Result<Duration, String> {
    procyon::duration::parse_at_least(s, MIN_SPOOL_MAX_AGE)
}

/// `full`, `exe` or `none`.
fn parse_cmdline(s: &str) -> Result<CmdlineMode, String> {
    s.parse()
}

fn non_empty(s: &str) -> Result<String, String> {
    if s.trim().is_empty() { Err("must not be empty".into()) } else { Ok(s.to_owned()) }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches};

    use super::*;

    /// Parses `args` as the command line, ignoring the process's environment so that the
    /// tests do not depend on it and can run in parallel.
    fn cli(args: &[&str]) -> Cli {
        let command = Cli::command().mut_args(|a| a.env(None));
        let matches = command.try_get_matches_from(std::iter::once("procyon-agent").chain(args.iter().copied()));
        Cli::from_arg_matches(&matches.unwrap()).unwrap()
    }

    fn cli_error(args: &[&str]) -> String {
        let command = Cli::command().mut_args(|a| a.env(None));
        let err = command.try_get_matches_from(std::iter::once("procyon-agent").chain(args.iter().copied()));
        err.unwrap_err().to_string()
    }

    fn defaults() -> Defaults {
        Defaults { state_dir: Some(PathBuf::from("/state")) }
    }

    fn load_with(args: &[&str], file: Option<&str>) -> anyhow::Result<(Config, Command)> {
        resolve(cli(args), file.map(|text| (Path::new("/etc/procyon/agent.toml"), text)), None, &defaults())
    }

    const FILE: &str = r#"
        collector = "https://file.example:7450"
        hostname = "from-file"
        interval = 5
        spool = "/file/spool"
        spool_max_bytes = "64MiB"
        spool_max_age = "2d"
        allow_control = true
        transport = "rest"
        cmdline = "exe"
        log = "debug"
    "#;

    #[test]
    fn defaults_apply_when_nothing_is_given() {
        let (config, command) = load_with(&["--collector", "https://c.example:7450"], None).unwrap();
        assert_eq!(command, Command::Run);
        assert_eq!(config.interval, Duration::from_secs(2));
        assert_eq!(config.spool, Path::new("/state"));
        assert_eq!(config.key_file, Path::new("/state/api.key"));
        assert_eq!(config.spool_max_bytes, 256 << 20);
        assert_eq!(config.spool_max_age, Duration::from_secs(7 * 86400));
        assert!(!config.allow_control && !config.once);
        assert_eq!(config.transport, Transport::Auto);
        assert_eq!(config.cmdline, CmdlineMode::Full);
        assert_eq!(config.log, "info");
        assert_eq!(config.hostname, None);
        assert_eq!(config.config_file, None);
    }

    #[test]
    fn the_file_overrides_the_defaults() {
        let (config, _) = load_with(&[], Some(FILE)).unwrap();
        assert_eq!(config.collectors, [Url::parse("https://file.example:7450/").unwrap()]);
        assert_eq!(config.hostname.as_deref(), Some("from-file"));
        assert_eq!(config.interval, Duration::from_secs(5));
        assert_eq!(config.spool, Path::new("/file/spool"));
        assert_eq!(config.spool_max_bytes, 64 << 20);
        assert_eq!(config.spool_max_age, Duration::from_secs(2 * 86400));
        assert!(config.allow_control);
        assert_eq!(config.transport, Transport::Rest);
        assert_eq!(config.cmdline, CmdlineMode::Exe);
        assert_eq!(config.log, "debug");
        assert_eq!(config.config_file.as_deref(), Some(Path::new("/etc/procyon/agent.toml")));
    }

    #[test]
    fn flags_override_the_file_field_by_field() {
        let args = [
            "--collector=https://flag.example:1",
            "--interval=0.5",
            "--allow-control=false",
            "--spool-max-bytes=2MiB",
            "--transport=auto",
            "--cmdline=none",
        ];
        let (config, _) = load_with(&args, Some(FILE)).unwrap();
        assert_eq!(config.collectors, [Url::parse("https://flag.example:1/").unwrap()]);
        assert_eq!(config.interval, Duration::from_millis(500));
        assert!(!config.allow_control, "--allow-control=false turns off what the file turned on");
        assert_eq!(config.spool_max_bytes, 2 << 20);
        assert_eq!(config.transport, Transport::Auto);
        assert_eq!(config.cmdline, CmdlineMode::None);
        // Not given as flags: still the file's.
        assert_eq!(config.hostname.as_deref(), Some("from-file"));
        assert_eq!(config.spool, Path::new("/file/spool"));
        assert_eq!(config.log, "debug");
    }

    /// Clap puts a variable's value where the flag's would go, so the struct a test
    /// builds by hand stands for "given by the environment". What is checked here is
    /// that each setting has its variable.
    #[test]
    fn every_setting_has_its_environment_variable() {
        let command = Cli::command();
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            let expected = format!("PROCYON_{}", id.to_ascii_uppercase());
            assert_eq!(arg.get_env().and_then(|e| e.to_str()), Some(expected.as_str()), "{id}");
        }
        let flags = Flags { interval: Some(Duration::from_secs(9)), ..Flags::default() };
        let from_env = Cli { flags, command: None };
        let (config, _) = resolve(from_env, Some((Path::new("f.toml"), FILE)), None, &defaults()).unwrap();
        assert_eq!(config.interval, Duration::from_secs(9), "the environment overrides the file");
    }

    #[test]
    fn bool_flags_need_no_value_and_absent_means_not_given() {
        let f = cli(&["--allow-control", "--once"]).flags;
        assert_eq!((f.allow_control, f.once), (Some(true), Some(true)));
        let f = cli(&["--allow-control=no"]).flags;
        assert_eq!(f.allow_control, Some(false));
        let f = cli(&[]).flags;
        assert_eq!((f.allow_control, f.once), (None, None));
        // A subcommand after a bool flag is not taken for its value.
        assert_eq!(cli(&["--allow-control", "set-key"]).command, Some(Sub::SetKey));
    }

    #[test]
    fn the_collector_is_required_to_run() {
        let err = load_with(&[], None).unwrap_err().to_string();
        assert_eq!(err, "no collector: pass --collector URL or set collector in the config file");
        // Key commands can do without one (the key file needs no collector's name).
        assert_eq!(load_with(&["set-key"], None).unwrap().1, Command::SetKey);
        assert_eq!(load_with(&["forget-key"], None).unwrap().1, Command::ForgetKey);
    }

    #[test]
    fn plain_http_is_refused_to_other_machines_unless_allowed() {
        let cases = [
            ("http://127.0.0.1:7450", true),
            ("http://127.8.9.10", true),
            ("http://[::1]:7450", true),
            ("http://[::ffff:127.0.0.1]", true),
            ("http://localhost:7450", true),
            ("http://LOCALHOST", true),
            ("http://localhost.:7450", true),
            ("https://collector.example", true),
            ("https://10.0.0.5:7450", true),
            ("http://collector.example:7450", false),
            ("http://10.0.0.5", false),
            ("http://128.0.0.1", false),
            ("http://[::2]", false),
            ("http://localhost.example", false),
            ("http://my-localhost", false),
        ];
        for (url, allowed) in cases {
            let plain = load_with(&["--collector", url], None);
            assert_eq!(plain.is_ok(), allowed, "{url}: {:?}", plain.err());
            if !allowed {
                let err = plain.unwrap_err().to_string();
                assert!(err.contains("use https://") && err.contains("--insecure-http"), "{err}");
                // Allowed on request, by flag or by file.
                assert!(load_with(&["--collector", url, "--insecure-http"], None).unwrap().0.insecure_http);
                let file = format!("collector = \"{url}\"\ninsecure_http = true");
                assert!(load_with(&[], Some(&file)).is_ok(), "{url} with insecure_http in the file");
                // login sends a password: the same rule.
                let login = load_with(&["login", "--collector", url, "--user", "ada"], None);
                assert!(login.unwrap_err().to_string().contains("--insecure-http"), "{url}");
            }
        }
        // Key commands send nothing anywhere.
        assert_eq!(load_with(&["set-key"], Some("collector = \"http://c.example\"")).unwrap().1, Command::SetKey);
    }

    #[test]
    fn ca_cert_and_pins_come_from_flags_or_the_file() {
        let hex = "AB".repeat(32);
        let pin = Pin([0xab; 32]);
        let args = ["--collector=https://c.example", "--ca-cert=/etc/ca.pem"];
        let (config, _) = load_with(&args, None).unwrap();
        assert_eq!(config.ca_cert.as_deref(), Some(Path::new("/etc/ca.pem")));
        assert!(config.pins.is_empty() && !config.insecure_http);
        let two = format!("--pin=sha256:{hex},{}", Pin([1; 32]));
        let (config, _) = load_with(&["--collector=https://c.example", &two], None).unwrap();
        assert_eq!(config.pins, vec![pin, Pin([1; 32])]);
        let file = format!("collector = \"https://c\"\nca_cert = \"ca.pem\"\npin = \"sha256:{hex}\"");
        let (config, _) = load_with(&[], Some(&file)).unwrap();
        assert_eq!(config.ca_cert.as_deref(), Some(Path::new("/etc/procyon/ca.pem")));
        assert_eq!(config.pins, vec![pin]);
        let err = cli_error(&["--pin=md5:abc"]);
        assert!(err.contains("--pin") && err.contains("sha256:"), "{err}");
        let err = load_with(&[], Some("collector = \"https://c\"\npin = \"sha256:xyz\"")).unwrap_err().to_string();
        assert!(err.contains("config file /etc/procyon/agent.toml: pin must be sha256:"), "{err}");
    }

    #[test]
    fn login_takes_its_collector_or_the_configured_one() {
        let (config, command) =
            load_with(&["login", "--collector", "https://l.example", "--user", "ada"], Some(FILE)).unwrap();
        let url = Url::parse("https://l.example").unwrap();
        assert_eq!(command, Command::Login { collectors: vec![url.clone()], user: "ada".into(), replace: false });
        assert_eq!(config.collectors, [url]);
        let (_, command) = load_with(&["login", "--user", "ada"], Some(FILE)).unwrap();
        let url = Url::parse("https://file.example:7450").unwrap();
        assert_eq!(command, Command::Login { collectors: vec![url], user: "ada".into(), replace: false });
        // A list, as for running: signed in to the first that answers.
        let (_, command) =
            load_with(&["login", "--collector", "https://a.example,https://b.example", "--user", "ada"], Some(FILE))
                .unwrap();
        let Command::Login { collectors, .. } = command else { panic!("not a login") };
        assert_eq!(
            collectors.iter().map(Url::as_str).collect::<Vec<_>>(),
            ["https://a.example/", "https://b.example/"]
        );
        assert!(load_with(&["login", "--user", "ada"], None).unwrap_err().to_string().contains("no collector"));
        assert!(cli_error(&["login"]).contains("--user"));
    }

    fn urls(config: &Config) -> Vec<&str> {
        config.collectors.iter().map(Url::as_str).collect()
    }

    #[test]
    fn several_collectors_by_repeating_the_flag_or_with_commas() {
        let (config, _) = load_with(
            &["--collector", "https://a.example:7450", "--collector=https://b.example, https://c.example,"],
            None,
        )
        .unwrap();
        assert_eq!(urls(&config), ["https://a.example:7450/", "https://b.example/", "https://c.example/"]);
        // Each once, in the order given.
        let (config, _) = load_with(
            &["--collector", "https://b.example,https://a.example", "--collector", "https://b.example/"],
            None,
        )
        .unwrap();
        assert_eq!(urls(&config), ["https://b.example/", "https://a.example/"]);
        // The flags' list replaces the file's as a whole, not entry by entry.
        let file = "collector = \"https://f1.example, https://f2.example\"";
        let (config, _) = load_with(&[], Some(file)).unwrap();
        assert_eq!(urls(&config), ["https://f1.example/", "https://f2.example/"]);
        let (config, _) = load_with(&["--collector=https://flag.example"], Some(file)).unwrap();
        assert_eq!(urls(&config), ["https://flag.example/"]);
        // An array in the file, too.
        let file = "collector = [\"https://f1.example\", \"http://127.0.0.1:7450\"]";
        let (config, _) = load_with(&[], Some(file)).unwrap();
        assert_eq!(urls(&config), ["https://f1.example/", "http://127.0.0.1:7450/"]);
    }

    #[test]
    fn a_bad_url_in_a_list_is_named_in_the_error() {
        let err = cli_error(&["--collector", "https://a.example,ftp://b.example"]);
        assert!(err.contains("--collector") && err.contains("`ftp://b.example` must be an http or https URL"), "{err}");
        let err = cli_error(&["--collector", "https://a.example", "--collector", "https://u:p@b.example"]);
        assert!(err.contains("must not contain a user name or password"), "{err}");
        let err = cli_error(&["--collector", "https://a.example, not a url"]);
        assert!(err.contains("`not a url` is not a URL"), "{err}");
        let err = cli_error(&["--collector", ","]);
        assert!(err.contains("is not a URL"), "{err}");
        let cases = [
            (
                "collector = \"https://a.example, https://b.example/api/\"",
                "collector `https://b.example/api/` is the address of an API endpoint",
            ),
            (
                "collector = [\"https://a.example\", \"ws://b.example\"]",
                "collector `ws://b.example` must be an http or https URL",
            ),
            ("collector = []", "collector is not a URL"),
            ("collector = [1]", "collector"),
        ];
        for (text, expected) in cases {
            let err = load_with(&[], Some(text)).unwrap_err().to_string();
            assert!(
                err.starts_with("config file /etc/procyon/agent.toml: ") && err.contains(expected),
                "{text}: {err}"
            );
        }
        // Plain http to another machine, anywhere in the list, as for one collector.
        let err = load_with(&["--collector", "http://127.0.0.1:1,http://10.0.0.5:7450"], None).unwrap_err();
        assert!(err.to_string().contains("the collector http://10.0.0.5:7450/ is on another machine"), "{err}");
        let err = load_with(&["login", "--collector", "https://a.example,http://10.0.0.5", "--user", "ada"], None);
        assert!(err.unwrap_err().to_string().contains("--insecure-http"));
    }

    #[test]
    fn bad_values_in_the_file_name_the_key() {
        let cases = [
            ("interval = -1", "config file /etc/procyon/agent.toml: interval must be a duration"),
            ("interval = 0.1", "interval must be between 200ms and 1h"),
            ("interval = \"50ms\"", "interval must be between 200ms and 1h"),
            ("interval = \"2 fortnights\"", "interval must be a duration such as 2 (seconds), 500ms"),
            ("collector = \"ftp://x.example\"", "collector must be an http or https URL"),
            ("collector = \"https://u:p@x.example\"", "collector must not contain a user name or password"),
            ("collector = \"not a url\"", "collector is not a URL"),
            ("spool_max_bytes = \"12 parsecs\"", "spool_max_bytes has an unknown unit"),
            ("spool_max_bytes = 1000", "spool_max_bytes must be at least 64 KiB"),
            ("spool_max_age = \"soon\"", "spool_max_age must be a duration such as"),
            ("spool_max_age = -5", "spool_max_age must be a duration of zero or more seconds"),
            ("spool_max_age = \"5s\"", "spool_max_age must be at least 1m"),
            ("hostname = \"\"", "hostname must not be empty"),
            ("log = \" \"", "log must not be empty"),
            ("allow_control = \"yes\"", "allow_control"),
            ("transport = \"carrier-pigeon\"", "transport"),
            ("cmdline = \"some\"", "cmdline must be full, exe or none (not \"some\")"),
            ("cmdline = 1", "cmdline"),
            ("intervall = 2", "unknown field `intervall`"),
            ("once = true", "unknown field `once`"),
            ("interval = ", "config file /etc/procyon/agent.toml"),
        ];
        for (text, expected) in cases {
            let err = load_with(&["--collector=https://c.example"], Some(text)).unwrap_err().to_string();
            assert!(err.contains(expected), "{text}: {err}");
            assert!(err.starts_with("config file /etc/procyon/agent.toml: "), "{text}: {err}");
        }
    }

    #[test]
    fn bad_flag_values_name_the_flag() {
        let err = cli_error(&["--interval=-1"]);
        assert!(err.contains("--interval") && err.contains("must be a duration"), "{err}");
        let err = cli_error(&["--interval=0"]);
        assert!(err.contains("--interval") && err.contains("must be between 200ms and 1h"), "{err}");
        let err = cli_error(&["--collector=ws://x.example"]);
        assert!(err.contains("--collector") && err.contains("http or https"), "{err}");
        let err = cli_error(&["--spool-max-age=1s"]);
        assert!(err.contains("--spool-max-age") && err.contains("at least"), "{err}");
        let err = cli_error(&["--transport=udp"]);
        assert!(err.contains("--transport"), "{err}");
        let err = cli_error(&["--cmdline=args"]);
        assert!(err.contains("--cmdline") && err.contains("must be full, exe or none"), "{err}");
    }

    #[test]
    fn values_are_read_in_every_accepted_form() {
        assert_eq!(parse_interval("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_interval("0.2"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_interval("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_interval("NaN").is_err() && parse_interval("inf").is_err() && parse_interval("3601").is_err());
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("256 MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert!(parse_size("-5MiB").is_err() && parse_size("MiB").is_err());
        assert_eq!(parse_age("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert_eq!(parse_age("90min"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_age("3600"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_age("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_interval("1m"), Ok(Duration::from_secs(60)));
        let (config, _) =
            load_with(&[], Some("collector = \"https://c\"\ninterval = 2.5\nspool_max_age = 7200")).unwrap();
        assert_eq!(config.interval, Duration::from_millis(2500));
        assert_eq!(config.spool_max_age, Duration::from_secs(7200));
    }

    #[test]
    fn relative_paths_in_the_file_are_relative_to_it() {
        let text = "collector = \"https://c\"\nspool = \"spool\"\nkey_file = \"keys/api.key\"\napi_key_file = \"/abs/key\"\n\
                    machine_id_file = \"id\"";
        let (config, _) =
            resolve(cli(&[]), Some((Path::new("/etc/procyon/agent.toml"), text)), None, &defaults()).unwrap();
        assert_eq!(config.spool, Path::new("/etc/procyon/spool"));
        assert_eq!(config.key_file, Path::new("/etc/procyon/keys/api.key"));
        assert_eq!(config.api_key_file.as_deref(), Some(Path::new("/abs/key")));
        assert_eq!(config.machine_id_file.as_deref(), Some(Path::new("/etc/procyon/id")));
    }

    #[test]
    fn without_a_data_directory_the_spool_must_be_given() {
        let none = Defaults { state_dir: None };
        let err = resolve(cli(&["--collector=https://c", "--key-file=/k"]), None, None, &none).unwrap_err();
        assert!(err.to_string().contains("pass --spool DIR"), "{err}");
        let (config, _) =
            resolve(cli(&["--collector=https://c", "--key-file=/k", "--spool=/s"]), None, None, &none).unwrap();
        assert_eq!(config.spool, Path::new("/s"));
    }

    #[test]
    fn the_example_config_file_parses_and_matches_the_defaults() {
        // packaging/agent.toml documents every key with its default, commented out;
        // uncommented, it must still parse and mean the defaults.
        let example = include_str!("../../packaging/agent.toml");
        let is_setting = |line: &&str| {
            line.split_once(" = ").is_some_and(|(key, _)| {
                !key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                    // Settings without a default, shown with an example value.
                    && !matches!(
                        key,
                        "hostname"
                            | "api_key_file"
                            | "machine_id_file"
                            | "ca_cert"
                            | "pin"
                            | "metrics_listen"
                            | "labels"
                    )
            })
        };
        let uncommented: String = example
            .lines()
            .filter_map(|line| line.strip_prefix("# "))
            .filter(is_setting)
            .map(|line| format!("{line}\n"))
            .collect();
        for key in ["collector", "key_file", "interval", "spool", "spool_max_bytes", "spool_max_age", "allow_control"] {
            assert!(uncommented.contains(&format!("{key} = ")), "{key} is missing from the example");
        }
        let (config, _) =
            resolve(cli(&[]), Some((Path::new("/etc/procyon/agent.toml"), &uncommented)), None, &defaults()).unwrap();
        let (plain, _) = load_with(&["--collector=https://collector.example:7450"], None).unwrap();
        assert_eq!(
            Config { config_file: None, spool: plain.spool.clone(), key_file: plain.key_file.clone(), ..config },
            plain,
            "{uncommented}"
        );
    }

    #[test]
    fn metrics_listen_is_loopback_unless_made_public() {
        let c = "--collector=https://c";
        let (config, _) = load_with(&[c], None).unwrap();
        assert_eq!(config.metrics_listen, None, "off by default");
        let (config, _) = load_with(&[c, "--metrics-listen", "127.0.0.1:9560"], None).unwrap();
        assert_eq!(config.metrics_listen, Some("127.0.0.1:9560".parse().unwrap()));
        assert!(load_with(&[c, "--metrics-listen", "[::1]:9560"], None).is_ok());
        let err = load_with(&[c, "--metrics-listen", "0.0.0.0:9560"], None).unwrap_err().to_string();
        assert!(err.contains("not a loopback address") && err.contains("--metrics-listen-public"), "{err}");
        let (config, _) = load_with(&[c, "--metrics-listen", "0.0.0.0:9560", "--metrics-listen-public"], None).unwrap();
        assert!(config.metrics_listen_public);
        let file = "collector = \"https://c\"\nmetrics_listen = \"192.0.2.7:9560\"\nmetrics_listen_public = true";
        assert_eq!(load_with(&[], Some(file)).unwrap().0.metrics_listen, Some("192.0.2.7:9560".parse().unwrap()));
        let err = load_with(&[], Some("collector = \"https://c\"\nmetrics_listen = \"9560\"")).unwrap_err();
        assert!(err.to_string().contains("metrics_listen must be IP:PORT"), "{err}");
        assert!(load_with(&[], Some("collector = \"https://c\"\nmetrics_listen = \"10.0.0.1:9560\"")).is_err());
    }

    #[test]
    fn labels_come_from_flags_else_the_file_and_are_checked() {
        let c = "--collector=https://c";
        let (config, _) = load_with(&[c], None).unwrap();
        assert!(config.labels.is_empty(), "none by default");
        let (config, _) = load_with(&[c, "--label", "env=prod", "--label", "role=db,rack=r1"], None).unwrap();
        let pairs: Vec<(&str, &str)> = config.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(pairs, [("env", "prod"), ("rack", "r1"), ("role", "db")]);
        let file = "collector = \"https://c\"\nlabels = { env = \"staging\", team = \"core\" }";
        let (config, _) = load_with(&[], Some(file)).unwrap();
        assert_eq!(config.labels.get("team").map(String::as_str), Some("core"));
        let (config, _) = load_with(&["--label=env=prod"], Some(file)).unwrap();
        assert_eq!(config.labels.len(), 1, "the flag replaces the file's labels: {:?}", config.labels);
        let err = cli_error(&[c, "--label", "env"]);
        assert!(err.contains("key=value"), "{err}");
        let err = cli_error(&[c, "--label", "env=<b>"]);
        assert!(err.contains("holds `<`"), "{err}");
        let err = load_with(&[], Some("collector = \"https://c\"\nlabels = { env = 1 }")).unwrap_err().to_string();
        assert!(err.contains("labels.env must be a string"), "{err}");
        let err = load_with(&[], Some("collector = \"https://c\"\nlabels = { \"a b\" = \"x\" }")).unwrap_err();
        assert!(err.to_string().contains("config file /etc/procyon/agent.toml: labels:"), "{err}");
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
