//! The `procyon` command: a thin command-line front over the library.
//!
//! Each subcommand parses its flags and calls the library; no measuring or acting is
//! done here.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use procyon::manual::{File, Parsed};
use procyon::model::ProcessAction;
#[cfg(feature = "server")]
use procyon::model::api::AuditAction;
use procyon::sample::{CmdlineMode, Sampler, SamplerOptions};

/// Prints a line to standard output, as `println!` does, but returns the write's error
/// instead of panicking: a reader that has gone (`procyon user list | head -1`) ends the
/// command, and [`is_broken_pipe`] makes that a normal end. Use it with `?`.
macro_rules! say {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout().lock(), $($arg)*)
    };
}

/// The collector's memory comes and goes with its agents: each connected host holds its
/// newest snapshot (a few hundred KB of small allocations), freed when the host leaves.
/// glibc's allocator keeps such memory in per-thread arenas for reuse and hardly ever
/// returns it, so a collector that once served a thousand agents stayed at that size.
/// mimalloc returns freed pages to the system shortly after (its default purge delay),
/// and is at least as fast here. The agent keeps the system allocator: it allocates
/// little, and nothing of this applies to it.
#[cfg(feature = "server")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How often the collector hands back memory freed while it was quiet.
#[cfg(feature = "server")]
const GIVE_BACK_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Opts this process out of transparent huge pages. mimalloc marks its arena for them,
/// and where the kernel allows them only on request (`madvise`, Debian's default)
/// khugepaged then fills partly used 2 MiB ranges with whole pages in the background:
/// the collector's resident size rose for the whole soak with nothing more allocated.
/// A collector holds many small, short-lived allocations, which huge pages do not
/// speed up, so it opts out for its whole address space (already mapped ranges
/// included).
#[cfg(feature = "server")]
fn no_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::debug!("transparent huge pages stay as the system sets them: {e}");
    }
}

/// mimalloc returns freed pages to the system a second after they are freed (its purge
/// delay), but only from inside a later allocation: once a thousand agents have left,
/// the few allocations of a quiet collector left hundreds of MiB waiting for the next
/// burst of work (the minute's maintenance, in practice). A thread of its own asks
/// every [`GIVE_BACK_EVERY`] for the purges that are due. Under load mimalloc does the
/// same on its own, so this only matters, and only costs a wake-up, when it is quiet.
#[cfg(feature = "server")]
fn give_back_freed_memory() {
    let started = std::thread::Builder::new().name("give-back".into()).spawn(|| {
        loop {
            std::thread::sleep(GIVE_BACK_EVERY);
            purge_due();
        }
    });
    if let Err(e) = started {
        tracing::debug!("freed memory waits for mimalloc's own purges: {e}");
    }
}

/// What another thread frees goes back to the thread that allocated it, which only
/// takes it in (and can then let whole pages go) when it allocates again: a worker
/// thread of the runtime that went quiet keeps it. So each worker, when it runs out of
/// work, collects its own at most every [`GIVE_BACK_EVERY`].
#[cfg(feature = "server")]
fn collect_if_due() {
    thread_local! {
        static LAST: std::cell::Cell<Option<std::time::Instant>> = const { std::cell::Cell::new(None) };
    }
    let now = std::time::Instant::now();
    if LAST.get().is_some_and(|t| now.duration_since(t) < GIVE_BACK_EVERY) {
        return;
    }
    LAST.set(Some(now));
    purge_due();
}

/// Has mimalloc hand back to the system what this thread freed and what is due from
/// everywhere: the workspace's one `unsafe` call.
#[cfg(feature = "server")]
#[allow(unsafe_code)]
fn purge_due() {
    // SAFETY: `mi_collect` takes no pointer and may be called from any thread at any
    // time; `false` purges only what is due and keeps what is in use.
    unsafe { libmimalloc_sys::mi_collect(false) };
}

/// Procyon: processes and network of a machine or a fleet, live and over time.
#[derive(Parser, Debug)]
#[command(name = "procyon", version, about, propagate_version = true)]
struct Cli {
    /// What to do. Without one, the desktop app opens (in builds that have it).
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Open the desktop app: this machine's dashboard in a window, with a tray icon.
    #[cfg(feature = "desktop")]
    Desktop {
        /// Start in the tray with the window hidden (e.g. when started at login).
        #[arg(long)]
        hidden: bool,
    },
    /// Print one snapshot of this machine as JSON (processes, sockets, network, CPU, memory).
    Snapshot {
        /// Indent the JSON for reading.
        #[arg(long)]
        pretty: bool,
        /// Report this host name instead of the machine's.
        #[arg(long, env = "PROCYON_HOSTNAME")]
        hostname: Option<String>,
        /// Command lines to print: full (secrets masked), exe (the program only) or none.
        #[arg(long, env = "PROCYON_CMDLINE", value_name = "full|exe|none", default_value_t = CmdlineMode::Full)]
        cmdline: CmdlineMode,
    },
    /// Watch this machine, or a host of a collector, live in the terminal (like top and
    /// htop; keys: ? for help). Piped or redirected, it prints a summary per update.
    Watch(WatchArgs),
    /// Suspend, resume, terminate or kill a process of this machine.
    Act {
        /// What to do: suspend, resume, terminate or kill.
        action: ProcessAction,
        /// The process id.
        pid: u32,
        /// The start time the process had when you looked (RFC 3339, from a snapshot):
        /// refuses to act if the pid now belongs to another process.
        #[arg(long)]
        start_time: Option<chrono::DateTime<chrono::Utc>>,
        /// Act on the whole subtree, children first.
        #[arg(long)]
        tree: bool,
    },
    /// Run the collector: store snapshots from agents, keep history, serve the API.
    #[cfg(feature = "server")]
    Serve(Box<ServeArgs>),
    /// Manage the users who may sign in to the collector.
    #[cfg(feature = "server")]
    User {
        #[command(flatten)]
        data: DataArg,
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manage the API keys agents upload with.
    #[cfg(feature = "server")]
    Apikey {
        #[command(flatten)]
        data: DataArg,
        #[command(subcommand)]
        command: ApiKeyCommand,
    },
    /// See, set or reset which API key and machine a host name belongs to.
    #[cfg(feature = "server")]
    Host {
        #[command(flatten)]
        data: DataArg,
        #[command(subcommand)]
        command: HostCommand,
    },
    /// Move a collector's data between databases.
    #[cfg(feature = "server")]
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
}

#[cfg(feature = "server")]
#[derive(Subcommand, Debug)]
enum DbCommand {
    /// Copy everything of a SQLite collector (history, users, API keys, bindings, the
    /// audit log and its token signing key) into an empty PostgreSQL database. Stop the
    /// collector first; the SQLite file is only read.
    Copy {
        /// The SQLite collector: its data directory, or its procyon.db file.
        #[arg(long, value_name = "DIR|FILE")]
        from: std::path::PathBuf,
        /// The PostgreSQL database: postgres://USER:PASSWORD@HOST:PORT/DATABASE (it must
        /// exist and be empty; the tables are made).
        #[arg(long, value_name = "URL")]
        to: DatabaseUrl,
    },
}

#[derive(clap::Args, Debug)]
struct WatchArgs {
    /// Time between updates of this machine (a collector's hosts report at their own).
    #[arg(long, default_value = "2s", value_parser = parse_interval)]
    interval: Duration,
    /// How many of the busiest processes to list when the output is not a terminal.
    #[arg(long, default_value_t = 10)]
    top: usize,
    /// Watch a host of this collector instead of this machine (https://HOST:PORT; plain
    /// http:// only to this machine unless --allow-http).
    #[cfg(feature = "server")]
    // No environment variable: the agent's PROCYON_COLLECTOR must not turn a look at
    // this machine into a sign-in elsewhere.
    #[arg(long, value_name = "URL")]
    collector: Option<String>,
    /// User to sign in as with --collector (asked for when not given).
    #[cfg(feature = "server")]
    #[arg(long)]
    user: Option<String>,
    /// The host to watch; without it, the only host, or a list to choose from.
    #[cfg(feature = "server")]
    #[arg(long, requires = "collector")]
    host: Option<String>,
    /// Read the password from standard input (one line) instead of asking on the
    /// terminal; PROCYON_PASSWORD also works.
    #[cfg(feature = "server")]
    #[arg(long, requires = "collector")]
    password_stdin: bool,
    /// Allow plain http:// to another machine: the password and session then cross the
    /// network unencrypted.
    #[cfg(feature = "server")]
    #[arg(long, requires = "collector")]
    allow_http: bool,
}

#[cfg(feature = "server")]
#[derive(Subcommand, Debug)]
enum HostCommand {
    /// Show the key and machine a host is bound to.
    Binding {
        /// Host name.
        name: String,
    },
    /// Forget a host's binding: the next agent to report it binds it anew (for a
    /// machine that was really replaced; a live key made for the host still holds it).
    /// Audited.
    Unbind {
        /// Host name.
        name: String,
    },
    /// Bind a host to an API key (moving it from the key that holds it, keeping its
    /// machine fingerprint). Audited; a running collector ends the host's agent session
    /// within seconds, and takes uploads by the new key's rules within a minute.
    Bind {
        /// Host name.
        name: String,
        /// The key's name or prefix; a key made for another host (--host) cannot have it.
        #[arg(long)]
        key: String,
    },
}

/// Where the collector keeps its data.
#[cfg(feature = "server")]
#[derive(clap::Args, Debug)]
struct DataArg {
    /// Data directory (database, token signing key). Default: /var/lib/procyon for root
    /// (where the system service keeps it), else the platform's data directory, e.g.
    /// ~/.local/share/procyon.
    #[arg(long, env = "PROCYON_DATA", global = true)]
    data: Option<std::path::PathBuf>,
    /// The database, when not SQLite in the data directory: a PostgreSQL URL,
    /// postgres://USER:PASSWORD@HOST:PORT/DATABASE (the database must exist; its tables
    /// are made). Collectors on one database share its hosts, users, keys and tokens.
    // Read as it is and checked later: clap's own error would quote the value, password
    // and all. Its value is never shown in --help either.
    #[arg(long, env = "PROCYON_DATABASE", global = true, value_name = "URL", hide_env_values = true)]
    database: Option<DatabaseUrl>,
}

/// `--database` as given; `Debug` leaves its password out.
#[cfg(feature = "server")]
#[derive(Clone)]
struct DatabaseUrl(String);

#[cfg(feature = "server")]
impl std::str::FromStr for DatabaseUrl {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(DatabaseUrl(s.to_owned()))
    }
}

#[cfg(feature = "server")]
impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&procyon::store::redact(&self.0))
    }
}

#[cfg(feature = "server")]
impl DataArg {
    fn dir(&self) -> anyhow::Result<std::path::PathBuf> {
        match &self.data {
            Some(d) => Ok(d.clone()),
            #[cfg(unix)]
            None if nix::unistd::Uid::effective().is_root() => Ok("/var/lib/procyon".into()),
            None => directories::ProjectDirs::from("", "", "procyon")
                .map(|d| d.data_dir().to_path_buf())
                .context("no home directory to keep data in; pass --data DIR"),
        }
    }

    /// `--database`, checked: `None` for SQLite in the data directory.
    fn database(&self) -> anyhow::Result<Option<procyon::store::Database>> {
        self.database
            .as_ref()
            .map(|url| procyon::store::Database::from_url(&url.0).map_err(anyhow::Error::msg))
            .transpose()
    }

    /// The directory and the database, said out loud: a command that manages users or
    /// keys in the wrong database would otherwise look like it worked.
    fn announced(&self) -> anyhow::Result<(std::path::PathBuf, Option<procyon::store::Database>)> {
        let dir = self.dir()?;
        let database = self.database()?;
        match &database {
            Some(db) => eprintln!("Using the database {db}"),
            None => {
                let new = !dir.join("procyon.db").exists();
                eprintln!(
                    "Using the database in {}{}",
                    dir.display(),
                    if new { " (new: no collector has used it; pass --data DIR for another)" } else { "" }
                );
            }
        }
        Ok((dir, database))
    }
}

#[cfg(feature = "server")]
#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Address and port to listen on. Keep 127.0.0.1 unless agents or browsers on other
    /// machines must reach it (then give it a certificate: --tls-cert, --tls-key).
    #[arg(long, env = "PROCYON_BIND", default_value = "127.0.0.1:7450", value_parser = parse_bind)]
    bind: std::net::SocketAddr,
    #[command(flatten)]
    data: DataArg,
    /// Time between samples of this machine (e.g. 2s, 500ms; 200ms to 1h).
    #[arg(long, env = "PROCYON_INTERVAL", default_value = "2s", value_parser = parse_interval)]
    interval: Duration,
    /// Do not sample this machine; only store what agents send.
    #[arg(long, env = "PROCYON_NO_LOCAL", value_parser = clap::builder::BoolishValueParser::new())]
    no_local: bool,
    /// How long full snapshots are kept (e.g. 24h, 3d).
    #[arg(long, env = "PROCYON_KEEP_RAW", default_value = "24h", value_parser = parse_duration)]
    keep_raw: Duration,
    /// How long per-minute history is kept.
    #[arg(long, env = "PROCYON_KEEP_MINUTES", default_value = "7d", value_parser = parse_duration)]
    keep_minutes: Duration,
    /// How long per-hour history is kept.
    #[arg(long, env = "PROCYON_KEEP_HOURS", default_value = "90d", value_parser = parse_duration)]
    keep_hours: Duration,
    /// How long a sign-in lasts.
    #[arg(long, env = "PROCYON_TOKEN_TTL", default_value = "1h", value_parser = parse_duration)]
    token_ttl: Duration,
    /// Command lines of this machine's processes to keep: full (secrets masked), exe (the
    /// program only) or none. Agents choose their own with their --cmdline.
    #[arg(long, env = "PROCYON_CMDLINE", value_name = "full|exe|none", default_value_t = CmdlineMode::Full)]
    cmdline: CmdlineMode,
    /// Serve HTTPS with this PEM certificate chain (leaf first); needs --tls-key. Reloaded
    /// when the file changes, or on SIGHUP.
    #[arg(long, env = "PROCYON_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<std::path::PathBuf>,
    /// The certificate's PEM private key (PKCS#8, RSA or SEC1); needs --tls-cert.
    #[arg(long, env = "PROCYON_TLS_KEY", value_name = "FILE")]
    tls_key: Option<std::path::PathBuf>,
    /// How often the certificate files are checked for changes.
    #[arg(long, env = "PROCYON_TLS_RELOAD_EVERY", default_value = "5s", value_parser = parse_reload_every)]
    tls_reload_every: Duration,
    /// Connections open at once (WebSockets included); more wait until one closes, but
    /// clients holding few get a small reserve, so that someone can still sign in. At
    /// most 1048576, the kernel's usual ceiling on open files per process.
    #[arg(long, env = "PROCYON_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    max_connections: u32,
    /// Connections one client address (an IPv6 client: its /64) may hold at once; more
    /// are refused with 429. Behind a reverse proxy or a NAT, every client behind it has
    /// one address: raise this to fit them all.
    #[arg(long, env = "PROCYON_MAX_CONNECTIONS_PER_ADDRESS", default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections_per_address: u32,
    /// Live streams (dashboards' WebSockets) one user may hold open at once.
    #[arg(long, env = "PROCYON_MAX_STREAMS_PER_USER", default_value_t = procyon::server::ws::MAX_STREAMS_PER_USER as u32, value_parser = clap::value_parser!(u32).range(1..))]
    max_streams_per_user: u32,
    /// Agent sessions one API key may hold at once (a fleet key's agents share it).
    #[arg(long, env = "PROCYON_MAX_AGENTS_PER_KEY", default_value_t = procyon::server::agents::MAX_SESSIONS_PER_KEY as u32, value_parser = clap::value_parser!(u32).range(1..))]
    max_agents_per_key: u32,
    /// Process groups (processes of one name) per host on /metrics: the busiest by CPU
    /// and the largest by memory; a gauge counts the others.
    #[arg(long, env = "PROCYON_METRICS_GROUPS", default_value_t = procyon::metrics::DEFAULT_GROUPS as u32, value_parser = clap::value_parser!(u32).range(0..=procyon::metrics::MAX_GROUPS as i64))]
    metrics_groups: u32,
    /// What processes are grouped by on /metrics: `name` (one group per program) or
    /// `user` (one group per account the processes run as).
    #[arg(long, env = "PROCYON_METRICS_GROUP_BY", value_name = "name|user", default_value = "name", value_parser = parse_group_by)]
    metrics_group_by: procyon::metrics::GroupBy,
    /// A process group on /metrics made by a filter in the dashboard's filter language,
    /// as NAME=FILTER (e.g. `web=name:nginx`, `backups=user:backup`); repeat for several
    /// (`;` between them in the variable). Shown whatever its rank; first match wins.
    #[arg(long = "metrics-group", env = "PROCYON_METRICS_GROUP", value_name = "NAME=FILTER", value_delimiter = ';', value_parser = parse_named_group)]
    metrics_groups_named: Vec<procyon::metrics::NamedGroup>,
    /// How often agents are pinged; an agent session that sends nothing (no snapshot, no
    /// pong) for three of these is closed, freeing its slot (1s to 1h).
    #[arg(long, env = "PROCYON_AGENT_PING_EVERY", default_value = "20s", value_parser = parse_ping_every)]
    agent_ping_every: Duration,
    /// Longest a client may leave an answer unread (no progress writing to it) before
    /// its connection is closed (1s to 1h).
    #[arg(long, env = "PROCYON_WRITE_TIMEOUT", default_value = "30s", value_parser = parse_write_timeout)]
    write_timeout: Duration,
    /// A reverse proxy in front of the collector, by address (repeat for several; none by
    /// default). Only requests from these have their X-Forwarded-For read as the client's
    /// address (sign-in throttling, logs); from anyone else that header is ignored.
    #[arg(long = "trusted-proxy", env = "PROCYON_TRUSTED_PROXY", value_name = "ADDR", value_delimiter = ',')]
    trusted_proxies: Vec<std::net::IpAddr>,
    /// Memory, in MiB, that the hosts' newest snapshots may hold together; past it, new
    /// hosts are refused (503) until others leave [default: a quarter of this machine's
    /// memory, at least 256].
    #[arg(long, env = "PROCYON_MAX_LIVE_MEMORY_MIB", value_name = "MIB", value_parser = clap::value_parser!(u64).range(16..))]
    max_live_memory_mib: Option<u64>,
    /// Alert rules (and channels) kept in a TOML file, `[[rules]]` and `[[channels]]`
    /// tables shaped as the API takes them; shown read-only, never changed through the
    /// API. A bad file stops the start with the rule and field at fault.
    #[arg(long, env = "PROCYON_ALERTS", value_name = "FILE")]
    alerts: Option<std::path::PathBuf>,
}

#[cfg(feature = "server")]
#[derive(Subcommand, Debug)]
enum UserCommand {
    /// Add a user. Prints a generated password unless --password-stdin is given.
    Add {
        /// Login name.
        name: String,
        /// viewer (read), operator (read and act on processes) or admin (also users and keys).
        #[arg(long)]
        role: procyon::model::api::Role,
        /// Read the password from standard input (one line).
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users.
    List,
    /// Remove a user.
    Remove {
        /// Login name.
        name: String,
    },
    /// Change a user's role. Their open sessions end; they sign in again.
    Role {
        /// Login name.
        name: String,
        /// viewer, operator or admin.
        role: procyon::model::api::Role,
    },
    /// Set a user's password. Prints a generated one unless --password-stdin is given.
    Passwd {
        /// Login name.
        name: String,
        /// Read the password from standard input (one line).
        #[arg(long)]
        password_stdin: bool,
    },
}

#[cfg(feature = "server")]
#[derive(Subcommand, Debug)]
enum ApiKeyCommand {
    /// Make a key for an agent (or, with --scope metrics, for a Prometheus server). The
    /// key is printed once, alone on the last line.
    Create {
        /// A label, e.g. the machine it is for.
        #[arg(long)]
        name: String,
        /// Only accept uploads for this host name, and reserve the host for this key
        /// now, so that no other key can claim it first (refused if another live key
        /// holds it).
        #[arg(long)]
        host: Option<String>,
        /// What the key may do: `upload` (snapshots, the agent channel) or `metrics`
        /// (read /metrics and nothing else).
        #[arg(long, value_name = "upload|metrics", default_value = "upload", value_parser = parse_scope)]
        scope: procyon::model::api::KeyScope,
    },
    /// List keys (never the keys themselves).
    List,
    /// Revoke a key by its name or prefix; agents using it are refused from then on.
    Revoke {
        /// Name or prefix.
        key: String,
    },
}

/// An API key's scope, by its name.
#[cfg(feature = "server")]
fn parse_scope(s: &str) -> Result<procyon::model::api::KeyScope, String> {
    s.parse()
}

fn parse_group_by(s: &str) -> Result<procyon::metrics::GroupBy, String> {
    s.parse()
}

fn parse_named_group(s: &str) -> Result<procyon::metrics::NamedGroup, String> {
    s.parse()
}

/// A duration as people type it (`2`, `0.5`, `500ms`, `2s`, `15m`, `1h`, `3d`): the
/// project's one parser, which the agent shares.
fn parse_duration(s: &str) -> Result<Duration, String> {
    procyon::duration::parse(s)
}

/// A sampling interval: between 0.2 seconds (the CPU figures need that much time between
/// readings) and an hour.
fn parse_interval(s: &str) -> Result<Duration, String> {
    procyon::duration::parse_between(s, Duration::from_millis(200), Duration::from_secs(3600))
}

/// How often the certificate files are checked: at most ten times a second (0 would
/// check in a loop that never rests), at least once a day. SIGHUP reloads at once in
/// between.
#[cfg(feature = "server")]
fn parse_reload_every(s: &str) -> Result<Duration, String> {
    procyon::duration::parse_between(s, Duration::from_millis(100), Duration::from_secs(86_400))
        .map_err(|e| format!("{e} (the certificate files are read this often; SIGHUP reloads them at once)"))
}

/// The agent ping interval: often enough to find a dead session within minutes, not so
/// often that idle agents cost work.
#[cfg(feature = "server")]
fn parse_ping_every(s: &str) -> Result<Duration, String> {
    procyon::duration::parse_between(s, Duration::from_secs(1), Duration::from_secs(3600))
}

/// The write timeout: long enough for a slow link, short enough to free a stalled one.
#[cfg(feature = "server")]
fn parse_write_timeout(s: &str) -> Result<Duration, String> {
    procyon::duration::parse_between(s, Duration::from_secs(1), Duration::from_secs(3600))
}

#[cfg(feature = "server")]
/// Where to listen: `ADDR:PORT`, a bare address (port 7450), or a host name with or
/// without a port (`localhost:7450`, `localhost`).
fn parse_bind(s: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
    const PORT: u16 = 7450;
    let t = s.trim();
    if let Ok(addr) = t.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = t.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, PORT));
    }
    let with_port = if t.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
        t.to_owned()
    } else {
        format!("{t}:{PORT}")
    };
    let mut found: Vec<SocketAddr> = with_port
        .to_socket_addrs()
        .map_err(|e| format!("`{s}` is not an address to listen on (like 127.0.0.1:7450, 0.0.0.0 or localhost): {e}"))?
        .collect();
    // IPv4 first: `localhost` then means 127.0.0.1, which every client reaches.
    found.sort_by_key(|a| !a.is_ipv4());
    found.into_iter().next().ok_or_else(|| format!("`{s}` names no address"))
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // A closed pipe (`procyon snapshot | head`) is a normal end, not an error.
        Err(e) if is_broken_pipe(&e) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Users get the message and its causes. A developer who wants the trace
            // asks for it with PROCYON_BACKTRACE=1 (and RUST_BACKTRACE=1 to capture it):
            // RUST_BACKTRACE alone is often set for other programs.
            if std::env::var_os("PROCYON_BACKTRACE").is_some() {
                eprintln!("Error: {e:?}");
            } else {
                eprintln!("Error: {e}");
                for cause in e.chain().skip(1) {
                    eprintln!("  because: {cause}");
                }
            }
            std::process::ExitCode::FAILURE
        }
    }
}

/// Whether an error comes from writing to a pipe whose reader has gone.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || cause
                .downcast_ref::<serde_json::Error>()
                .is_some_and(|j| j.io_error_kind() == Some(std::io::ErrorKind::BrokenPipe))
    })
}

/// The files of an installed collector, for the man page (paths of the `procyon`
/// package and its systemd unit; see packaging/).
const FILES: &[File] = &[
    File {
        path: "/etc/procyon/collector.env",
        what: "Settings of the procyon service, as PROCYON_* variables (every flag of procyon serve has one).",
    },
    File {
        path: "/var/lib/procyon",
        what: "The service's data: the database procyon.db (history, users, API keys), the token signing key, \
               and until you delete it the first admin's password, initial-admin-password. Also the default \
               --data of procyon serve, user, apikey and host when run as root.",
    },
];

fn run() -> anyhow::Result<()> {
    let cli = match procyon::manual::parse::<Cli>() {
        Parsed::Run(cli) => cli,
        Parsed::Generate(what) => return Ok(what.run::<Cli>(FILES)?),
    };
    let Some(command) = cli.command else {
        #[cfg(feature = "desktop")]
        return desktop(false);
        #[cfg(not(feature = "desktop"))]
        {
            use clap::CommandFactory;
            Cli::command().print_help()?;
            return Ok(());
        }
    };
    match command {
        #[cfg(feature = "desktop")]
        Command::Desktop { hidden } => desktop(hidden)?,
        Command::Snapshot { pretty, hostname, cmdline } => {
            let snapshot = Sampler::new(SamplerOptions { hostname, cmdline }).sample();
            let mut out = std::io::stdout().lock();
            if pretty {
                serde_json::to_writer_pretty(&mut out, &snapshot)?;
            } else {
                serde_json::to_writer(&mut out, &snapshot)?;
            }
            writeln!(out)?;
        }
        Command::Watch(args) => watch(args)?,
        Command::Act { action, pid, start_time, tree } => {
            let target = procyon::control::Target { pid, start_time };
            let result =
                if tree { procyon::control::act_tree(target, action) } else { procyon::control::act(target, action) };
            match result {
                Ok(outcome) => {
                    say!("Process {pid} {} ({} signalled).", action.past_tense(), outcome.signalled.len())?;
                    for (pid, e) in &outcome.failed {
                        eprintln!("  {pid}: {}", e.message);
                    }
                }
                Err(e) => anyhow::bail!(e.message),
            }
        }
        #[cfg(feature = "server")]
        Command::Serve(args) => serve(*args)?,
        #[cfg(feature = "server")]
        Command::User { data, command } => runtime()?.block_on(user(data.announced()?, command))?,
        #[cfg(feature = "server")]
        Command::Apikey { data, command } => runtime()?.block_on(apikey(data.announced()?, command))?,
        #[cfg(feature = "server")]
        Command::Host { data, command } => runtime()?.block_on(host(data.announced()?, command))?,
        #[cfg(feature = "server")]
        Command::Db { command: DbCommand::Copy { from, to } } => runtime()?.block_on(copy_db(&from, &to))?,
    }
    Ok(())
}

#[cfg(feature = "server")]
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        // A blocking-pool thread that has been idle this long ends (tokio's default is
        // 10 s). The collector decodes agents' frames on that pool, and the memory of
        // what a thread decoded only goes back to the system once the thread ends or
        // works again: after a fleet's agents leave, two seconds rather than ten.
        .thread_keep_alive(std::time::Duration::from_secs(2))
        .on_thread_park(collect_if_due)
        .enable_all()
        .build()
        .context("cannot start the runtime")
}

/// Logs to standard error; `RUST_LOG` overrides the default levels.
#[cfg(feature = "server")]
fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,tower_http=info")),
        )
        // Logs go to stderr, so stdout stays for what a command prints; colours only on
        // a terminal, and never with NO_COLOR set.
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none())
        .init();
}

#[cfg(feature = "desktop")]
fn desktop(hidden: bool) -> anyhow::Result<()> {
    // GTK panics when it cannot open a display; say what to do instead.
    #[cfg(target_os = "linux")]
    if let Err(why) = display::reachable() {
        anyhow::bail!(
            "No display to open the desktop app on: {why}. On a server, run the collector instead: `procyon \
             serve`, then open http://127.0.0.1:7450/ in a browser (`make run` does this by itself when there is \
             no display)."
        );
    }
    init_logging();
    // The app samples, stores and serves as the collector does, hidden most of the
    // time: its memory is kept the same way. Without huge pages its own process held
    // about 40 MiB less (measured under Xvfb); WebKit's processes inherit the setting.
    no_huge_pages();
    give_back_freed_memory();
    procyon::desktop::run(procyon::desktop::Options { hidden })
}

/// Whether the desktop app has a display to open its window on, checked the way GTK
/// will look for one, before GTK does: it panics when it finds none, and a variable
/// that is set proves nothing (`ssh -X` leaves `DISPLAY` behind after the forwarding is
/// gone; a Wayland session that ended leaves `WAYLAND_DISPLAY`).
#[cfg(all(feature = "desktop", target_os = "linux"))]
mod display {
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    /// How long a display server over TCP gets to accept the connection.
    const TCP_TIMEOUT: Duration = Duration::from_secs(3);

    /// `Ok` when a Wayland compositor or an X server accepts a connection where
    /// `WAYLAND_DISPLAY` or `DISPLAY` point; else what was tried, in words.
    pub fn reachable() -> Result<(), String> {
        let wayland = std::env::var("WAYLAND_DISPLAY").ok().filter(|v| !v.is_empty());
        let x11 = std::env::var("DISPLAY").ok().filter(|v| !v.is_empty());
        if wayland.is_none() && x11.is_none() {
            return Err("neither DISPLAY nor WAYLAND_DISPLAY is set".into());
        }
        let mut tried = Vec::new();
        if let Some(name) = wayland {
            match wayland_socket(&name).and_then(|path| connect_unix(&path)) {
                Ok(()) => return Ok(()),
                Err(e) => tried.push(format!("WAYLAND_DISPLAY is `{name}`, but {e}")),
            }
        }
        if let Some(name) = x11 {
            match connect_x11(&name) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tried.push(format!("DISPLAY is `{name}`, but {e} (a forwarded `ssh -X` display that is gone?)"))
                }
            }
        }
        Err(tried.join("; "))
    }

    /// Where a Wayland compositor listens: the name itself when it is a path, else in
    /// `XDG_RUNTIME_DIR`.
    fn wayland_socket(name: &str) -> Result<std::path::PathBuf, String> {
        if name.starts_with('/') {
            return Ok(name.into());
        }
        let dir =
            std::env::var_os("XDG_RUNTIME_DIR").ok_or("XDG_RUNTIME_DIR, where its socket would be, is not set")?;
        Ok(std::path::Path::new(&dir).join(name))
    }

    fn connect_unix(path: &std::path::Path) -> Result<(), String> {
        UnixStream::connect(path).map(drop).map_err(|e| format!("nothing answers at {} ({e})", path.display()))
    }

    /// An X display `[host]:N[.screen]`: a local server's socket `/tmp/.X11-unix/XN` (or
    /// the abstract socket of that name, which Xorg and Xvfb also open), or TCP port
    /// 6000 + N on `host`.
    fn connect_x11(display: &str) -> Result<(), String> {
        let (host, rest) = display.rsplit_once(':').ok_or("it names no display number (like :0)")?;
        let number: u16 = rest
            .split('.')
            .next()
            .and_then(|n| n.parse().ok())
            .filter(|n| *n < 1000)
            .ok_or("it names no display number (like :0)")?;
        if host.is_empty() || host == "unix" {
            let path = format!("/tmp/.X11-unix/X{number}");
            let abstract_socket = {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(path.as_bytes())
                    .and_then(|addr| UnixStream::connect_addr(&addr))
            };
            return match (UnixStream::connect(&path), abstract_socket) {
                (Ok(_), _) | (_, Ok(_)) => Ok(()),
                (Err(e), Err(_)) => Err(format!("no X server answers at {path} ({e})")),
            };
        }
        let port = 6000 + number;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let addrs = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
            .map_err(|e| format!("its host `{host}` cannot be found ({e})"))?;
        let mut last = format!("`{host}` has no address");
        for addr in addrs {
            match std::net::TcpStream::connect_timeout(&addr, TCP_TIMEOUT) {
                Ok(_) => return Ok(()),
                Err(e) => last = format!("no X server answers at {addr} ({e})"),
            }
        }
        Err(last)
    }
}

#[cfg(feature = "server")]
fn serve(args: ServeArgs) -> anyhow::Result<()> {
    use procyon::server::{Limits, ServeOptions, Settings, TlsFiles};
    init_logging();
    no_huge_pages();
    give_back_freed_memory();
    let tls = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles { reload_every: args.tls_reload_every, ..TlsFiles::new(cert, key) }),
        (None, None) => None,
        (Some(_), None) | (None, Some(_)) => anyhow::bail!(
            "--tls-cert and --tls-key go together (PROCYON_TLS_CERT, PROCYON_TLS_KEY): give both, \
             the certificate chain and its private key, or neither for plain HTTP"
        ),
    };
    // Settings that cannot work are refused now, with the reason, not found out later.
    if args.keep_raw.is_zero() {
        anyhow::bail!("--keep-raw must be more than 0: full snapshots are what history is made from");
    }
    if args.keep_minutes < args.keep_raw || args.keep_hours < args.keep_minutes {
        anyhow::bail!(
            "retention must grow tier by tier: --keep-raw ({}) <= --keep-minutes ({}) <= --keep-hours ({})",
            procyon::duration::format(args.keep_raw),
            procyon::duration::format(args.keep_minutes),
            procyon::duration::format(args.keep_hours)
        );
    }
    let options = ServeOptions {
        bind: args.bind,
        data: args.data.dir()?,
        local: !args.no_local,
        limits: Limits {
            max_connections: args.max_connections as usize,
            max_per_address: args.max_connections_per_address as usize,
            write_timeout: args.write_timeout,
            trusted_proxies: args.trusted_proxies.into(),
            ..Limits::default()
        },
        tls,
        settings: Settings {
            interval: args.interval,
            local_hostname: None,
            retention: procyon::store::Retention {
                raw: args.keep_raw,
                minute: args.keep_minutes,
                hour: args.keep_hours,
            },
            token_ttl: args.token_ttl,
            cmdline: args.cmdline,
            max_streams_per_user: args.max_streams_per_user as usize,
            max_sessions_per_key: args.max_agents_per_key as usize,
            metrics_groups: args.metrics_groups as usize,
            metrics_group_by: args.metrics_group_by,
            metrics_named_groups: args.metrics_groups_named.into(),
            agent_ping_every: args.agent_ping_every,
            max_live_memory: args.max_live_memory_mib.map_or_else(procyon::server::default_live_memory, |mib| {
                usize::try_from(mib.saturating_mul(1 << 20)).unwrap_or(usize::MAX)
            }),
            database: args.data.database()?,
            alerts_file: args.alerts,
            ..Settings::default()
        },
    };
    runtime()?.block_on(procyon::server::serve(options))
}

#[cfg(feature = "server")]
fn read_password(from_stdin: bool) -> anyhow::Result<(String, bool)> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        let password = line.trim_end_matches(['\n', '\r']).to_owned();
        return Ok((password, false));
    }
    let generated = procyon::server::auth::random_token(12).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok((generated, true))
}

#[cfg(feature = "server")]
fn api_error(e: procyon::server::error::ApiError) -> anyhow::Error {
    anyhow::anyhow!(e.parts().1.message)
}

#[cfg(feature = "server")]
async fn user(
    (data, database): (std::path::PathBuf, Option<procyon::store::Database>),
    command: UserCommand,
) -> anyhow::Result<()> {
    use procyon::server::{auth, rest::check_credentials};
    let store = procyon::server::open_store(&data, database.as_ref()).await?;
    match command {
        UserCommand::Add { name, role, password_stdin } => {
            let (password, generated) = read_password(password_stdin)?;
            check_credentials(&name, &password).map_err(api_error)?;
            let hash = auth::hash_password(&password).map_err(api_error)?;
            let user = store.create_user(&name, &hash, role).await?;
            say!("Added {} ({}).", user.username, user.role.as_str())?;
            if generated {
                say!("Password: {password}")?;
            }
        }
        UserCommand::List => {
            for u in store.users().await? {
                say!("{:<24} {:<9} created {}", u.username, u.role.as_str(), u.created_at.format("%Y-%m-%d %H:%M"))?;
            }
        }
        UserCommand::Remove { name } => {
            store.remove_user(&name).await?;
            say!("Removed {name}.")?;
        }
        UserCommand::Role { name, role } => {
            store.set_role(&name, role).await?;
            say!("{name} is now {} (their earlier sign-ins have ended).", role.as_str())?;
        }
        UserCommand::Passwd { name, password_stdin } => {
            let (password, generated) = read_password(password_stdin)?;
            check_credentials(&name, &password).map_err(api_error)?;
            store.set_password(&name, &auth::hash_password(&password).map_err(api_error)?).await?;
            say!("Password of {name} changed.")?;
            if generated {
                say!("Password: {password}")?;
            }
        }
    }
    store.close().await;
    Ok(())
}

#[cfg(feature = "server")]
async fn host(
    (data, database): (std::path::PathBuf, Option<procyon::store::Database>),
    command: HostCommand,
) -> anyhow::Result<()> {
    let store = procyon::server::open_store(&data, database.as_ref()).await?;
    match command {
        HostCommand::Binding { name } => match store.host_binding(&name).await? {
            Some(b) => say!(
                "{} is bound to API key {} ({}), machine {}, since {}.",
                b.hostname,
                b.key_name.as_deref().map_or_else(|| format!("id {}", b.key_id), |n| format!("`{n}`")),
                if b.key_live { "live" } else { "revoked" },
                b.machine_id.as_deref().unwrap_or("not known"),
                b.bound_at.format("%Y-%m-%d %H:%M")
            )?,
            None => say!("{name} is not bound: the next agent to report it binds it.")?,
        },
        HostCommand::Unbind { name } => {
            if store.reset_host_binding(&name).await? {
                audit_cli(&store, &name, AuditAction::UnbindHost, format!("Host {name} unbound")).await?;
                say!(
                    "{name} is no longer bound; the next agent to report it binds it (a running collector ends its agent's session within seconds)."
                )?;
            } else {
                say!("{name} was not bound.")?;
            }
        }
        HostCommand::Bind { name, key } => {
            procyon::server::upload::validate_hostname(&name).map_err(api_error)?;
            let b = store.bind_host(&name, &key).await.map_err(|e| api_error(e.into()))?;
            let key_name = b.key_name.clone().unwrap_or_default();
            audit_cli(&store, &name, AuditAction::BindHost, format!("Host {name} bound to API key {key_name}")).await?;
            say!(
                "{name} is bound to API key `{key_name}`, machine {} (a running collector ends its agent's session within seconds).",
                b.machine_id.as_deref().unwrap_or("not known yet")
            )?;
        }
    }
    store.close().await;
    Ok(())
}

/// Writes a change made from the command line to the audit log, as `cli:` and the
/// system user who ran it (`:` is never in an account's name).
#[cfg(feature = "server")]
async fn audit_cli(
    store: &procyon::store::Store,
    hostname: &str,
    action: AuditAction,
    message: String,
) -> anyhow::Result<()> {
    let who = std::env::var("SUDO_USER").or_else(|_| std::env::var("USER")).or_else(|_| std::env::var("USERNAME"));
    let actor = format!("cli:{}", who.unwrap_or_else(|_| "unknown".into()));
    let entry = procyon::store::NewAuditEntry::host_change(actor, hostname, action, message);
    store.audit(entry).await?;
    Ok(())
}

/// `procyon db copy`.
#[cfg(feature = "server")]
async fn copy_db(from: &std::path::Path, to: &DatabaseUrl) -> anyhow::Result<()> {
    let to = procyon::store::Database::from_url(&to.0).map_err(anyhow::Error::msg)?;
    let (file, dir) = if from.is_dir() { (from.join("procyon.db"), Some(from)) } else { (from.to_path_buf(), None) };
    if !file.is_file() {
        anyhow::bail!("{} is not a Procyon collector's database (no such file)", file.display());
    }
    // The key tokens were signed with, so that they stay valid on the new database.
    let key =
        dir.map(|d| d.join("token-signing.key")).and_then(|path| std::fs::read(path).ok()).filter(|k| k.len() >= 32);
    let source = procyon::store::Store::open(&file)
        .await
        .with_context(|| format!("cannot open the database {}", file.display()))?;
    let target = procyon::store::Store::connect(&to, procyon::store::ReadLimits::default())
        .await
        .with_context(|| format!("cannot open the database {to}"))?;
    let copied = source.copy_into(&target, key.as_deref()).await;
    source.close().await;
    target.close().await;
    let copied = copied?;
    say!(
        "Copied {} into {to}: {} hosts, {} snapshots, {} rollup buckets, {} users, {} API keys, {} host bindings, {} \
         host labels, {} audit entries, {} alert rows, {} dashboards{}.",
        file.display(),
        copied.hosts,
        copied.snapshots,
        copied.rollups,
        copied.users,
        copied.api_keys,
        copied.bindings,
        copied.labels,
        copied.audit,
        copied.alerts,
        copied.dashboards,
        if key.is_some() { ", and the token signing key" } else { "" }
    )?;
    Ok(())
}

#[cfg(feature = "server")]
async fn apikey(
    (data, database): (std::path::PathBuf, Option<procyon::store::Database>),
    command: ApiKeyCommand,
) -> anyhow::Result<()> {
    let store = procyon::server::open_store(&data, database.as_ref()).await?;
    match command {
        ApiKeyCommand::Create { name, host, scope } => {
            if scope == procyon::model::api::KeyScope::Metrics && host.is_some() {
                anyhow::bail!("A key of scope metrics reads every host: --host does not apply to it.");
            }
            if let Some(h) = &host {
                procyon::server::upload::validate_hostname(h).map_err(api_error)?;
            }
            let (key, prefix, hash) = procyon::server::auth::new_api_key().map_err(api_error)?;
            store
                .create_scoped_api_key(&name, &prefix, &hash, host.as_deref(), scope)
                .await
                .map_err(|e| api_error(e.into()))?;
            say!(
                "API key `{name}` (scope {}){}; it is shown only now:",
                scope.as_str(),
                host.map(|h| format!(" for host {h}")).unwrap_or_default()
            )?;
            say!("{key}")?;
        }
        ApiKeyCommand::List => {
            for k in store.api_keys().await? {
                let state = match (k.revoked_at, k.last_used_at) {
                    (Some(at), _) => format!("revoked {}", at.format("%Y-%m-%d %H:%M")),
                    (None, Some(at)) => format!("last used {}", at.format("%Y-%m-%d %H:%M")),
                    (None, None) => "never used".into(),
                };
                say!(
                    "{:<24} {:<12} {:<8} {:<20} {}",
                    k.name,
                    k.prefix,
                    k.scope.as_str(),
                    k.hostname.as_deref().unwrap_or("any host"),
                    state
                )?;
            }
        }
        ApiKeyCommand::Revoke { key } => {
            let k = store.revoke_api_key(&key).await?;
            say!("Revoked `{}` ({}).", k.name, k.prefix)?;
        }
    }
    store.close().await;
    Ok(())
}

fn watch(args: WatchArgs) -> anyhow::Result<()> {
    #[cfg(feature = "server")]
    if let Some(url) = &args.collector {
        return procyon::tui::remote::watch(procyon::tui::remote::Options {
            url: url.clone(),
            user: args.user.clone(),
            host: args.host.clone(),
            password_stdin: args.password_stdin,
            allow_http: args.allow_http,
            top: args.top,
            interactive: std::io::IsTerminal::is_terminal(&std::io::stdout()),
        });
    }
    // A terminal gets the full-screen UI; a pipe or a file (`procyon watch | head`, CI)
    // gets plain lines it can read.
    #[cfg(feature = "server")]
    if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        return procyon::tui::run_local(args.interval);
    }
    plain_watch(args.interval, args.top)
}

/// A summary per update, one after the other, for output that is not a terminal.
fn plain_watch(interval: Duration, top: usize) -> anyhow::Result<()> {
    let mut live = procyon::sample::spawn(Sampler::new(SamplerOptions::default()), interval);
    let runtime = tokio::runtime::Builder::new_current_thread().build().context("cannot start the runtime")?;
    runtime.block_on(async {
        while live.changed().await.is_ok() {
            let Some(snapshot) = live.borrow_and_update().clone() else { continue };
            procyon::tui::print_summary(&mut std::io::stdout().lock(), &snapshot, top)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_are_durations_within_their_range() {
        assert_eq!(parse_interval("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_interval("0.5"), Ok(Duration::from_millis(500)));
        assert!(parse_interval("0").is_err());
        assert!(parse_interval("2h").is_err());
        assert!(parse_duration("yesterday").is_err());
    }

    #[cfg(feature = "server")]
    #[test]
    fn the_certificate_check_cannot_spin() {
        assert_eq!(parse_reload_every("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_reload_every("100ms"), Ok(Duration::from_millis(100)));
        for bad in ["0", "0s", "10ms", "2d"] {
            let e = parse_reload_every(bad).unwrap_err();
            assert!(e.contains("between 100ms and 1day") && e.contains("SIGHUP"), "{bad}: {e}");
        }
    }

    #[cfg(feature = "server")]
    #[test]
    fn bind_takes_addresses_and_host_names_with_or_without_a_port() {
        let addr = |s: &str| parse_bind(s).map(|a| a.to_string());
        assert_eq!(addr("127.0.0.1:8000").as_deref(), Ok("127.0.0.1:8000"));
        assert_eq!(addr("127.0.0.1").as_deref(), Ok("127.0.0.1:7450"));
        assert_eq!(addr("0.0.0.0").as_deref(), Ok("0.0.0.0:7450"));
        assert_eq!(addr("::1").as_deref(), Ok("[::1]:7450"));
        assert_eq!(addr("localhost:9000").as_deref(), Ok("127.0.0.1:9000"));
        assert_eq!(addr("localhost").as_deref(), Ok("127.0.0.1:7450"));
        assert!(parse_bind("not a host!").is_err());
    }
}
