//! The dashboard's process filter language, for the terminal: the same words mean the
//! same thing in `procyon watch` as in the dashboard's search box
//! (`ui/src/lib/filter.ts`).
//!
//! A query is words separated by spaces (double quotes keep spaces in a word). A word is
//! free text, matched anywhere (name, pid, user, command line), or a filter such as
//! `user:root`, `cpu>50`, `mem>=10`, `rss>500M`, `status:stopped,zombie`, `pid:1234`,
//! `container:web` (a container's name, or the start of its id). A
//! filter is negated by a leading `!` or `-` (`-user:root`). All words must hold. A word
//! that looks like a filter but is malformed (`cpu>lots`) is reported and ignored, so
//! typing never empties the table by surprise.
//!
//! Both implementations are checked against the same cases,
//! `tests/fixtures/filter-cases.json`: a change to one that the other lacks fails a test.

use crate::model::{ProcessSample, ProcessStatus};

/// A comparison in a filter word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `:`: "is" for ids and text, "at least" for measures.
    Colon,
    /// `=`: exactly.
    Eq,
    /// `>`.
    Gt,
    /// `>=`.
    Ge,
    /// `<`.
    Lt,
    /// `<=`.
    Le,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Colon => ":",
            Op::Eq => "=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
        }
    }
}

/// One word of a query.
#[derive(Clone, Debug, PartialEq)]
pub struct Token {
    /// Led by `!` (anything) or `-` (filters only).
    pub negated: bool,
    /// The field (lower case) and comparison of a filter; `None` for free text.
    pub filter: Option<(String, Op)>,
    /// What follows the comparison, or the whole text.
    pub value: String,
    /// The word as typed, for messages.
    pub raw: String,
}

/// `name` + comparison + rest, as the dashboard's `/^([A-Za-z_]+)(>=|<=|:|=|>|<)(.*)$/s`.
fn split_filter(word: &str) -> Option<(&str, Op, &str)> {
    let name_len = word.bytes().take_while(|b| b.is_ascii_alphabetic() || *b == b'_').count();
    if name_len == 0 {
        return None;
    }
    let (name, rest) = word.split_at(name_len);
    let (op, len) = if rest.starts_with(">=") {
        (Op::Ge, 2)
    } else if rest.starts_with("<=") {
        (Op::Le, 2)
    } else {
        match rest.as_bytes().first() {
            Some(b':') => (Op::Colon, 1),
            Some(b'=') => (Op::Eq, 1),
            Some(b'>') => (Op::Gt, 1),
            Some(b'<') => (Op::Lt, 1),
            _ => return None,
        }
    };
    Some((name, op, &rest[len..]))
}

/// Splits a query into words, keeping quoted spaces. An unknown `field:` is not a filter
/// (a URL such as `http://host` is text to search for).
pub fn tokenize(query: &str, is_field: impl Fn(&str) -> bool) -> Vec<Token> {
    let mut words = Vec::new();
    let mut current = String::new();
    let (mut quoted, mut started) = (false, false);
    for ch in query.chars() {
        if ch == '"' {
            quoted = !quoted;
            started = true;
            continue;
        }
        if !quoted && ch.is_whitespace() {
            if started {
                words.push(std::mem::take(&mut current));
            }
            started = false;
            continue;
        }
        current.push(ch);
        started = true;
    }
    if started {
        words.push(current);
    }
    let known = |word: &str| split_filter(word).is_some_and(|(name, _, _)| is_field(&name.to_ascii_lowercase()));
    words
        .into_iter()
        .filter(|w| !w.is_empty())
        .map(|raw| {
            let mut word = raw.as_str();
            let mut negated = false;
            // `!` negates anything; `-` only a filter, so `--verbose` stays searchable text.
            if word.chars().count() > 1 && word.starts_with('!') {
                negated = true;
                word = &word[1..];
            } else if let Some(rest) = word.strip_prefix('-')
                && known(rest)
            {
                negated = true;
                word = rest;
            }
            match split_filter(word) {
                Some((name, op, value)) if is_field(&name.to_ascii_lowercase()) => Token {
                    negated,
                    filter: Some((name.to_ascii_lowercase(), op)),
                    value: value.to_owned(),
                    raw: raw.clone(),
                },
                _ => Token { negated, filter: None, value: word.to_owned(), raw: raw.clone() },
            }
        })
        .filter(|t| !t.value.is_empty() || t.filter.is_some())
        .collect()
}

/// `500M`, `1.5GiB`, `2048`, `3MB/s` as bytes; `None` when it is not a size.
pub fn parse_size(text: &str) -> Option<f64> {
    let t = text.trim();
    let digits = leading_decimal(t)?;
    let (number, rest) = t.split_at(digits);
    let rest = rest.trim_start();
    let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
    let (unit, tail) = rest.split_at(unit_len);
    if !(tail.is_empty() || tail.eq_ignore_ascii_case("/s")) {
        return None;
    }
    let factor: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024f64.powi(2),
        "g" | "gb" | "gib" => 1024f64.powi(3),
        "t" | "tb" | "tib" => 1024f64.powi(4),
        _ => return None,
    };
    Some(number.parse::<f64>().ok()? * factor)
}

/// Length of `\d+(\.\d+)?` at the start of `t`, if there is one.
fn leading_decimal(t: &str) -> Option<usize> {
    let b = t.as_bytes();
    let int = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if int == 0 {
        return None;
    }
    if b.get(int) == Some(&b'.') {
        let frac = b[int + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if frac > 0 {
            return Some(int + 1 + frac);
        }
    }
    Some(int)
}

/// `-12.5`, `50%` as a number; `None` otherwise.
fn parse_number(text: &str) -> Option<f64> {
    let t = text.trim();
    let t = t.strip_suffix('%').unwrap_or(t);
    let unsigned = t.strip_prefix('-').unwrap_or(t);
    (leading_decimal(unsigned) == Some(unsigned.len())).then(|| t.parse().ok()).flatten()
}

fn compare(value: Option<f64>, op: Op, target: f64) -> bool {
    let Some(value) = value else { return false };
    match op {
        Op::Gt => value > target,
        Op::Ge | Op::Colon => value >= target,
        Op::Lt => value < target,
        Op::Le => value <= target,
        Op::Eq => value == target,
    }
}

/// A figure as the dashboard sees it: JSON carries an `f32` in its shortest decimal
/// form, which JavaScript reads as the nearest `f64`. Widening the bits instead would
/// make `mem<=0.2` false for a process at 0.2 %. Written by the formatter serde_json
/// writes JSON with, on the stack: alert rules ask this of every process of every
/// snapshot, and a `String` each time was a sixth of their cost.
fn widen(x: f32) -> f64 {
    if !x.is_finite() {
        return f64::from(x);
    }
    zmij::Buffer::new().format_finite(x).parse().unwrap_or(f64::from(x))
}

/// The lower-case name of a status, as in JSON.
pub fn status_name(s: ProcessStatus) -> &'static str {
    match s {
        ProcessStatus::Running => "running",
        ProcessStatus::Sleeping => "sleeping",
        ProcessStatus::DiskSleep => "disk_sleep",
        ProcessStatus::Stopped => "stopped",
        ProcessStatus::TracingStop => "tracing_stop",
        ProcessStatus::Zombie => "zombie",
        ProcessStatus::Dead => "dead",
        ProcessStatus::Idle => "idle",
        ProcessStatus::Parked => "parked",
        ProcessStatus::Waking => "waking",
        ProcessStatus::Unknown => "unknown",
    }
}

const STATUSES: [ProcessStatus; 11] = [
    ProcessStatus::Running,
    ProcessStatus::Sleeping,
    ProcessStatus::DiskSleep,
    ProcessStatus::Stopped,
    ProcessStatus::TracingStop,
    ProcessStatus::Zombie,
    ProcessStatus::Dead,
    ProcessStatus::Idle,
    ProcessStatus::Parked,
    ProcessStatus::Waking,
    ProcessStatus::Unknown,
];

/// `stopped`, `stop`, `T`, `disk` → the statuses meant.
pub fn statuses_matching(word: &str) -> Vec<ProcessStatus> {
    let w: String = word.to_lowercase().chars().map(|c| if c.is_whitespace() || c == '-' { '_' } else { c }).collect();
    let letter = match w.as_str() {
        "r" => Some(ProcessStatus::Running),
        "s" => Some(ProcessStatus::Sleeping),
        "d" => Some(ProcessStatus::DiskSleep),
        "t" => Some(ProcessStatus::Stopped),
        "z" => Some(ProcessStatus::Zombie),
        "i" => Some(ProcessStatus::Idle),
        "x" => Some(ProcessStatus::Dead),
        _ => None,
    };
    if let Some(s) = letter {
        return vec![s];
    }
    STATUSES
        .into_iter()
        .filter(|s| {
            let name = status_name(*s);
            name.starts_with(&w) || name.replacen('_', "", 1) == w
        })
        .collect()
}

/// How a field's value is read and compared.
enum Kind {
    /// A measure: `:` means "at least".
    Number(fn(&ProcessSample) -> Option<f64>, &'static str),
    /// A size in bytes (`500M`): `:` means "at least".
    Size(fn(&ProcessSample) -> Option<f64>, &'static str),
    /// An id: `:` means "is".
    Id(fn(&ProcessSample) -> Option<f64>, &'static str),
    /// Text that contains the value (`=`: equals it).
    Text(fn(&ProcessSample) -> Option<&str>),
    /// Text that equals the value.
    Exact(fn(&ProcessSample) -> Option<&str>),
    /// `status:` and `is:`.
    Status,
    Is,
    /// `container:`: the container's name, or the start of its id.
    Container,
}

fn field(name: &str) -> Option<Kind> {
    Some(match name {
        "name" => Kind::Text(|p| Some(&p.name)),
        "cmd" | "command" => Kind::Text(|p| Some(&p.cmd)),
        "user" => Kind::Exact(|p| p.user.as_deref()),
        "pid" => Kind::Id(|p| Some(f64::from(p.pid)), "pid:1234"),
        "ppid" => Kind::Id(|p| p.ppid.map(f64::from), "ppid:1"),
        "cpu" => Kind::Number(|p| p.cpu_percent.map(widen), "cpu>50"),
        "mem" => Kind::Number(|p| p.memory_percent.map(widen), "mem>10"),
        "memory" => Kind::Number(|p| p.memory_percent.map(widen), "memory>10"),
        "rss" => Kind::Size(|p| p.rss_bytes.map(|b| b as f64), "rss>500M"),
        "threads" => Kind::Number(|p| p.threads.map(f64::from), "threads>100"),
        "read" => Kind::Size(|p| p.disk_read_bytes_per_sec, "read>1M"),
        "write" => Kind::Size(|p| p.disk_write_bytes_per_sec, "write>1M"),
        "status" | "state" => Kind::Status,
        "is" => Kind::Is,
        "container" => Kind::Container,
        _ => return None,
    })
}

/// Fields whose value is fixed for a process's life (free text reads only these too).
/// Any other field, and any added later, counts as a moving figure: the safe side.
const IDENTITY_FIELDS: [&str; 7] = ["name", "cmd", "command", "user", "pid", "ppid", "is"];

/// Whether `name` (lower case) is a field of the language.
pub fn is_field(name: &str) -> bool {
    field(name).is_some()
}

type Predicate = Box<dyn Fn(&ProcessSample) -> bool + Send + Sync>;

/// Whether `text`, lower-cased, contains `lower` (lower-case already). Without an
/// allocation when `text` is ASCII, as process names and command lines nearly always
/// are: alert rules run filters over every process of every snapshot received.
fn contains_folded(text: &str, lower: &str) -> bool {
    if text.is_ascii() {
        let (t, n) = (text.as_bytes(), lower.as_bytes());
        n.is_empty() || t.windows(n.len()).any(|w| w.iter().zip(n).all(|(a, b)| a.to_ascii_lowercase() == *b))
    } else {
        text.to_lowercase().contains(lower)
    }
}

/// Whether `text`, lower-cased, equals `lower` (lower-case already); see
/// [`contains_folded`].
fn eq_folded(text: &str, lower: &str) -> bool {
    if text.is_ascii() {
        text.len() == lower.len() && text.bytes().zip(lower.bytes()).all(|(a, b)| a.to_ascii_lowercase() == b)
    } else {
        text.to_lowercase() == lower
    }
}

/// A compiled process query.
pub struct ProcessQuery {
    tests: Vec<Predicate>,
    /// Whether a word reads a figure that moves from one sample to the next (CPU,
    /// memory, threads, disk rates, status); see [`ProcessQuery::reads_figures`].
    reads_figures: bool,
    /// Words that were malformed and ignored, each with what was wrong, for a person.
    pub errors: Vec<String>,
}

impl std::fmt::Debug for ProcessQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessQuery").field("tests", &self.tests.len()).field("errors", &self.errors).finish()
    }
}

impl Default for ProcessQuery {
    fn default() -> Self {
        ProcessQuery::compile("")
    }
}

impl ProcessQuery {
    /// Compiles `query`; malformed words are in [`ProcessQuery::errors`].
    pub fn compile(query: &str) -> ProcessQuery {
        let mut tests: Vec<Predicate> = Vec::new();
        let mut errors = Vec::new();
        let mut reads_figures = false;
        for token in tokenize(query, is_field) {
            if let Some((name, _)) = &token.filter {
                reads_figures |= !IDENTITY_FIELDS.contains(&name.as_str());
            }
            let test: Predicate = match &token.filter {
                None => {
                    let needle = token.value.to_lowercase();
                    let as_pid = (!needle.is_empty() && needle.bytes().all(|b| b.is_ascii_digit()))
                        .then(|| needle.parse::<f64>().ok())
                        .flatten();
                    Box::new(move |p| {
                        as_pid == Some(f64::from(p.pid))
                            || contains_folded(&p.name, &needle)
                            || p.user.as_ref().is_some_and(|u| contains_folded(u, &needle))
                            || contains_folded(&p.cmd, &needle)
                    })
                }
                Some((name, op)) => {
                    let (name, op, value, raw) = (name.as_str(), *op, token.value.as_str(), token.raw.as_str());
                    if value.is_empty() {
                        errors.push(format!("“{raw}” needs a value after {name}{}", op.as_str()));
                        continue;
                    }
                    match build(name, op, value, raw) {
                        Ok(test) => test,
                        Err(message) => {
                            errors.push(message);
                            continue;
                        }
                    }
                }
            };
            tests.push(if token.negated { Box::new(move |p| !test(p)) } else { test });
        }
        ProcessQuery { tests, reads_figures, errors }
    }

    /// Whether the query reads a figure that moves from one sample to the next. When it
    /// does not, its answer for a process depends only on what the process is (pid,
    /// parent, start time, name, command line, user, kernel thread or not), so it holds
    /// for as long as the process lives: alert evaluation asks it once per process, not
    /// once per snapshot.
    pub fn reads_figures(&self) -> bool {
        self.reads_figures
    }

    /// Whether the query asks for nothing (every process matches).
    pub fn is_empty(&self) -> bool {
        self.tests.is_empty()
    }

    /// Whether `p` matches every word.
    pub fn matches(&self, p: &ProcessSample) -> bool {
        self.tests.iter().all(|t| t(p))
    }
}

fn build(name: &str, op: Op, value: &str, raw: &str) -> Result<Predicate, String> {
    let Some(kind) = field(name) else { return Err(format!("“{raw}”: unknown field {name}")) };
    Ok(match kind {
        Kind::Status => {
            let mut wanted: Vec<ProcessStatus> = Vec::new();
            for w in value.split(',').filter(|w| !w.is_empty()) {
                wanted.extend(statuses_matching(w));
            }
            if wanted.is_empty() {
                return Err(format!("“status:{value}”: no such status; try running, sleeping, stopped, zombie"));
            }
            Box::new(move |p| wanted.contains(&p.status))
        }
        Kind::Is => {
            if value.to_lowercase() != "kernel" {
                return Err(format!("“is:{value}”: the only one is is:kernel (and -is:kernel)"));
            }
            Box::new(|p| p.kernel_thread)
        }
        Kind::Container => {
            if !matches!(op, Op::Colon | Op::Eq) {
                return Err(format!("“{raw}”: container is a name or id; use container:NAME"));
            }
            let wanted: Vec<String> =
                value.to_lowercase().split(',').filter(|w| !w.is_empty()).map(str::to_owned).collect();
            Box::new(move |p| {
                p.container.as_ref().is_some_and(|c| {
                    wanted.iter().any(|w| {
                        c.name.as_deref().is_some_and(|n| eq_folded(n, w))
                            || c.id.get(..w.len()).is_some_and(|start| eq_folded(start, w))
                    })
                })
            })
        }
        Kind::Text(get) | Kind::Exact(get) => {
            if !matches!(op, Op::Colon | Op::Eq) {
                return Err(format!("“{raw}”: {name} is text; use {name}:value"));
            }
            let exact = matches!(kind, Kind::Exact(_)) || op == Op::Eq;
            let wanted: Vec<String> =
                value.to_lowercase().split(',').filter(|w| !w.is_empty()).map(str::to_owned).collect();
            Box::new(move |p| {
                get(p)
                    .is_some_and(|v| wanted.iter().any(|w| if exact { eq_folded(v, w) } else { contains_folded(v, w) }))
            })
        }
        Kind::Number(get, example) | Kind::Size(get, example) | Kind::Id(get, example) => {
            let size = matches!(kind, Kind::Size(..));
            let targets: Option<Vec<f64>> =
                value.split(',').map(|part| if size { parse_size(part) } else { parse_number(part) }).collect();
            let Some(targets) = targets else {
                let what = if size { "size" } else { "number" };
                return Err(format!("“{raw}”: {name} needs a {what}, e.g. {example}"));
            };
            // For ids `:` means "is"; for measures it means "at least".
            let op = if matches!(kind, Kind::Id(..)) && op == Op::Colon { Op::Eq } else { op };
            Box::new(move |p| targets.iter().any(|t| compare(get(p), op, *t)))
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// The cases shared with the dashboard's tests (`ui/src/lib/filter.test.ts`).
    const CASES: &str = include_str!("../../../tests/fixtures/filter-cases.json");

    /// A process from the fixture's defaults with the case's fields over them, as the
    /// dashboard's `proc()` helper makes one.
    fn process(defaults: &serde_json::Value, patch: &serde_json::Value) -> ProcessSample {
        let mut p = defaults.clone();
        for (k, v) in patch.as_object().unwrap() {
            p[k] = v.clone();
        }
        serde_json::from_value(p).unwrap()
    }

    #[test]
    fn the_shared_cases_hold() {
        let doc: serde_json::Value = serde_json::from_str(CASES).unwrap();
        let defaults = &doc["defaults"];
        let processes: Vec<ProcessSample> =
            doc["processes"].as_array().unwrap().iter().map(|p| process(defaults, p)).collect();
        let cases = doc["cases"].as_array().unwrap();
        assert!(cases.len() > 30);
        for case in cases {
            let query = case["query"].as_str().unwrap();
            let compiled = ProcessQuery::compile(query);
            let pids: Vec<u64> = processes.iter().filter(|p| compiled.matches(p)).map(|p| u64::from(p.pid)).collect();
            let want: Vec<u64> = case["pids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
            assert_eq!(pids, want, "pids of {query:?}");
            let errors: Vec<&str> = case["errors"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
            assert_eq!(compiled.errors, errors, "errors of {query:?}");
        }
    }

    /// A figure is compared as the dashboard reads it from the JSON serde_json writes:
    /// the `f64` nearest to the `f32`'s shortest decimal form.
    #[test]
    fn figures_are_widened_as_the_dashboard_reads_them() {
        for x in [0.2f32, 0.1, 1.0 / 3.0, 99.99, 1e-7, 3.4e38, f32::MIN_POSITIVE, 16_777_217.0, -0.0] {
            let json: f64 = serde_json::from_str(&serde_json::to_string(&x).unwrap()).unwrap();
            assert_eq!(widen(x).to_bits(), json.to_bits(), "{x}");
        }
        assert!(widen(0.2) <= 0.2 && widen(f32::NAN).is_nan() && widen(f32::INFINITY) == f64::INFINITY);
        // Any bit pattern alike. (Rust's `Display` is not the reference: where two
        // shortest forms read back as the same `f32`, it may pick the other one.)
        let mut bits = 0x9e37_79b9u32;
        for _ in 0..100_000 {
            bits = bits.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
            let x = f32::from_bits(bits);
            if x.is_finite() {
                let json: f64 = serde_json::from_str(&serde_json::to_string(&x).unwrap()).unwrap();
                assert_eq!(widen(x).to_bits(), json.to_bits(), "{x:e}");
            }
        }
    }

    /// A query that says it reads no figure answers the same for a process whatever
    /// its figures: alert evaluation keeps such answers for the process's life.
    #[test]
    fn queries_without_figures_ignore_every_figure() {
        let doc: serde_json::Value = serde_json::from_str(CASES).unwrap();
        let defaults = &doc["defaults"];
        let processes: Vec<ProcessSample> =
            doc["processes"].as_array().unwrap().iter().map(|p| process(defaults, p)).collect();
        let mut queries: Vec<String> =
            doc["cases"].as_array().unwrap().iter().map(|c| c["query"].as_str().unwrap().to_owned()).collect();
        queries.extend(
            ["name:nginx", "-user:root cmd:java", "pid:1 ppid:0", "is:kernel", "status:zombie", "rss>1M"]
                .map(String::from),
        );
        let mut stable = 0;
        for query in &queries {
            let q = ProcessQuery::compile(query);
            if q.reads_figures() {
                continue;
            }
            stable += 1;
            for p in &processes {
                for status in STATUSES {
                    let mut moved = p.clone();
                    moved.status = status;
                    moved.cpu_percent = Some(p.cpu_percent.unwrap_or(0.0) + 97.5);
                    moved.memory_percent = None;
                    moved.rss_bytes = Some(p.rss_bytes.unwrap_or(0) * 3 + (5 << 30));
                    moved.virtual_bytes = None;
                    moved.threads = Some(p.threads.unwrap_or(0) + 1000);
                    moved.disk_read_bytes = Some(1 << 40);
                    moved.disk_write_bytes = None;
                    moved.disk_read_bytes_per_sec = Some(1e9);
                    moved.disk_write_bytes_per_sec = Some(1e9);
                    assert_eq!(q.matches(p), q.matches(&moved), "{query:?} on pid {} read a figure", p.pid);
                }
            }
        }
        assert!(stable > 10, "only {stable} queries read no figure");
        for moving in ["cpu>1", "status:running", "name:x mem>1", "threads>1", "read>1M", "-rss>1G"] {
            assert!(ProcessQuery::compile(moving).reads_figures(), "{moving}");
        }
    }

    #[test]
    fn tokens_split_on_spaces_and_keep_quotes() {
        let fields = |n: &str| matches!(n, "user" | "cpu");
        let values: Vec<String> = tokenize("  a  \"b c\" user:root ", fields).into_iter().map(|t| t.value).collect();
        assert_eq!(values, ["a", "b c", "root"]);
        let t = &tokenize("-user:root", fields)[0];
        assert!(t.negated);
        assert_eq!(t.filter, Some(("user".into(), Op::Colon)));
        let t = &tokenize("--verbose", fields)[0];
        assert!(!t.negated && t.filter.is_none() && t.value == "--verbose");
        assert!(tokenize("http://x", fields)[0].filter.is_none());
        assert!(tokenize("CPU>=5", fields)[0].filter == Some(("cpu".into(), Op::Ge)));
    }

    #[test]
    fn sizes_and_statuses_read_as_in_the_dashboard() {
        assert_eq!(parse_size("500"), Some(500.0));
        assert_eq!(parse_size("1.5k"), Some(1536.0));
        assert_eq!(parse_size("2MiB"), Some(2.0 * 1024.0 * 1024.0));
        assert_eq!(parse_size("3MB/s"), Some(3.0 * 1024.0 * 1024.0));
        assert_eq!(parse_size(" 1 G "), Some(1024f64.powi(3)));
        for bad in ["lots", "5 parsecs", "1.", ".5", "1e3", "-1"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
        assert_eq!(parse_number("50%"), Some(50.0));
        assert_eq!(parse_number("-2.5"), Some(-2.5));
        assert_eq!(parse_number("1e3"), None);
        assert_eq!(statuses_matching("disk"), [ProcessStatus::DiskSleep]);
        assert_eq!(statuses_matching("D"), [ProcessStatus::DiskSleep]);
        assert_eq!(statuses_matching("disksleep"), [ProcessStatus::DiskSleep]);
        assert_eq!(statuses_matching("tracing-stop"), [ProcessStatus::TracingStop]);
    }

    #[test]
    fn hostile_text_is_only_text() {
        for q in ["((((( [[[ \\ .* +?", "\"", "!", "-", "\u{0}\u{1b}[2J", "é:ü>"] {
            let _ = ProcessQuery::compile(q);
        }
    }
}

/// Fuzz targets for the filter language: any query compiles (malformed words reported,
/// never a panic) and matches any process; a leading `!` negates a word exactly. See
/// `crate::fuzzing`.
#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::fuzzing::config;
    use proptest::prelude::*;

    /// Processes with the figures a filter compares, ordinary and extreme.
    fn processes() -> Vec<ProcessSample> {
        let base = ProcessSample {
            pid: 1234,
            ppid: Some(1),
            name: "Name With Spaces".into(),
            cmd: "/usr/bin/thing --flag \"quoted\"".into(),
            user: Some("root".into()),
            status: ProcessStatus::Running,
            cpu_percent: Some(12.5),
            memory_percent: Some(1.0),
            rss_bytes: Some(500 << 20),
            virtual_bytes: Some(1 << 30),
            threads: Some(4),
            start_time: None,
            disk_read_bytes: Some(0),
            disk_write_bytes: None,
            disk_read_bytes_per_sec: Some(1e6),
            disk_write_bytes_per_sec: None,
            kernel_thread: false,
            container: None,
            gpu_percent: None,
            gpu_memory_bytes: None,
        };
        let extreme = ProcessSample {
            pid: u32::MAX,
            ppid: None,
            name: String::new(),
            cmd: "ǅ\u{130}ß".into(),
            user: None,
            status: ProcessStatus::Zombie,
            cpu_percent: Some(f32::MAX),
            memory_percent: Some(-0.0),
            rss_bytes: Some(u64::MAX),
            threads: Some(u32::MAX),
            disk_read_bytes_per_sec: Some(f64::MAX),
            kernel_thread: true,
            gpu_percent: None,
            gpu_memory_bytes: None,
            ..base.clone()
        };
        vec![base, extreme]
    }

    /// A word of the language: a field, a comparison and a value, perhaps quoted, or
    /// free text.
    fn bare_word() -> impl Strategy<Value = String> {
        let name = prop_oneof![
            prop::sample::select(vec![
                "name",
                "cmd",
                "command",
                "user",
                "pid",
                "ppid",
                "cpu",
                "mem",
                "memory",
                "rss",
                "threads",
                "read",
                "write",
                "status",
                "state",
                "is",
                "container",
                "Name",
                "nope",
            ])
            .prop_map(String::from),
            "[a-z_]{0,6}",
        ];
        let op = prop::sample::select(vec![":", "=", ">", ">=", "<", "<=", "=>", "::", ""]);
        let value = prop_oneof![
            prop::sample::select(vec![
                "",
                "0",
                "-1",
                "1e400",
                "NaN",
                "inf",
                "500M",
                "1.5G",
                "99999999999999999999T",
                "1K",
                "0x10",
                ".",
                "running,zombie",
                ",",
                "stopped,",
                "kernel",
                "root",
                "ǅ",
                "\"a b\"",
                "1e-400",
            ])
            .prop_map(String::from),
            ".{0,10}",
        ];
        (prop::sample::select(vec!["", "\""]), name, op, value)
            .prop_map(|(quote, name, op, value)| format!("{quote}{name}{op}{value}"))
    }

    /// A [`bare_word`], perhaps negated.
    fn word() -> impl Strategy<Value = String> {
        (prop::sample::select(vec!["", "!", "-", "!-"]), bare_word()).prop_map(|(neg, word)| format!("{neg}{word}"))
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn any_text_compiles_and_matches(query in ".{0,60}") {
            let q = ProcessQuery::compile(&query);
            for p in processes() {
                q.matches(&p);
            }
        }

        #[test]
        fn any_words_compile_and_match(words in prop::collection::vec(word(), 0..5)) {
            let q = ProcessQuery::compile(&words.join(" "));
            for p in processes() {
                q.matches(&p);
            }
            for e in &q.errors {
                prop_assert!(!e.is_empty());
            }
        }

        /// `!word` holds exactly where `word` does not, for every well-formed word. (One
        /// `!` is taken off a word, as the dashboard does: `!!x` looks for the text `!x`,
        /// and `!-cpu>5` for `-cpu>5`.)
        #[test]
        fn a_bang_negates_a_word(word in bare_word()) {
            // Quotes are dropped before the `!` is looked for.
            prop_assume!(!word.trim_start_matches('"').starts_with(['!', '-']));
            let plain = ProcessQuery::compile(&word);
            let negated = ProcessQuery::compile(&format!("!{word}"));
            let one_test = plain.errors.is_empty() && negated.errors.is_empty()
                && plain.tests.len() == 1 && negated.tests.len() == 1;
            if one_test {
                for p in processes() {
                    prop_assert_eq!(negated.matches(&p), !plain.matches(&p), "{} on {}", word, p.pid);
                }
            }
        }

        #[test]
        fn any_size_and_status_text(text in ".{0,20}") {
            if let Some(size) = parse_size(&text) {
                prop_assert!(!size.is_nan(), "{} is NaN", text);
            }
            let _ = statuses_matching(&text);
        }
    }
}
