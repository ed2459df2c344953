//! Command lines with their secrets taken out.
//!
//! Command lines leave the machine (to a collector, to a browser), and people put secrets
//! on them: `mysql -pS3cret`, `--token=...`, `DB_PASSWORD=...`, `https://user:pass@host`,
//! `curl -u user:pass -H 'X-Api-Key: ...'`, `?api_key=...`, `;Password=...;`, webhook URLs
//! whose path is the secret, settings passed through an option
//! (`--from-literal=password=...`, `--env=DB_PASSWORD=...`), and the one-letter password
//! flags of a few commands (`sqlcmd -P`, `zip -P`, `ldapsearch -w`), JSON bodies
//! (`-d '{"password":"..."}'`), mount option lists (`-o username=u,password=...`),
//! Samba's `-U user%pass`, Oracle's `user/pass@db`, Windows' `/p:...`, ODBC's `;Pwd=...`,
//! npm's `//host/:_authToken=...`, passwords that a few programs take as a plain word
//! (`vault login TOKEN`, `htpasswd -b FILE USER PASS`, `nmcli ... password PASS`), and
//! tokens known by their shape wherever they stand (`ghp_...`, `xoxb-...`, `AKIA...`,
//! JWTs, `sk-...`, `npm_...`, `hvs....`).
//! [`command_line`] joins the arguments, replaces every value that looks like a secret by
//! `***` ([`redact`]), then bounds the length. It errs on the side of hiding: the word
//! after a lone `-p` is taken for a password unless it is a port or a path (`-p 8080`,
//! `-p 8080:80`).
//!
//! [`command_line`] knows where each argument ends, and a secret that starts an argument
//! runs to its end: `--passphrase "correct horse battery staple"` is masked whole, and a
//! program's positional words are counted by argument.
//!
//! [`redact`] works on an already joined line, so the collector runs the same rules on
//! every command line it receives (an old agent, or one that does not redact, must not
//! get secrets stored). It is idempotent (redacting a redacted line changes nothing) and
//! cheap: one pass over the words with a little state (the word after `--password` is
//! the secret), no regular expressions, and no allocation unless something is masked.
//!
//! [`CmdlineMode`] says how much of a command line is reported at all: everything, only
//! the program, or nothing.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, MatchKind};

use crate::model::MAX_CMD_CHARS;

/// What a secret is replaced by.
pub const MASK: &str = "***";

/// How much of each process's command line a sampler reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CmdlineMode {
    /// The whole line, secrets masked.
    #[default]
    Full,
    /// Only the first word: the program as it was started (e.g. `/usr/sbin/nginx`).
    Exe,
    /// Nothing: every command line is empty.
    None,
}

impl CmdlineMode {
    /// The three names, as flags and config files spell them.
    pub const NAMES: [&'static str; 3] = ["full", "exe", "none"];
}

impl FromStr for CmdlineMode {
    type Err = String;

    /// `full`, `exe` or `none` (any case); the error completes "cmdline ...".
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "full" => Ok(CmdlineMode::Full),
            "exe" => Ok(CmdlineMode::Exe),
            "none" => Ok(CmdlineMode::None),
            _ => Err(format!("must be full, exe or none (not {:?})", s.trim())),
        }
    }
}

impl fmt::Display for CmdlineMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CmdlineMode::Full => "full",
            CmdlineMode::Exe => "exe",
            CmdlineMode::None => "none",
        })
    }
}

/// Joins `args` into one line with secrets masked and at most [`MAX_CMD_CHARS`]
/// characters.
pub fn command_line<S: AsRef<str>>(args: &[S]) -> String {
    command_line_with(args, CmdlineMode::Full)
}

/// [`command_line`], reduced as `mode` says: `Exe` keeps the first word, `None` gives an
/// empty string.
pub fn command_line_with<S: AsRef<str>>(args: &[S], mode: CmdlineMode) -> String {
    if mode == CmdlineMode::None {
        return String::new();
    }
    let mut line = String::new();
    // Where each argument ends in `line`: the rules see words, as on the collector, but
    // a secret that is one argument is masked whole even when it has spaces in it
    // (`--passphrase "correct horse battery staple"`).
    let mut ends = Vec::with_capacity(args.len().min(64));
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            line.push(' ');
        }
        let arg = arg.as_ref();
        // Tabs and line breaks become spaces first, so that they separate words as
        // spaces do; each argument on its own, so that the ends stay where they are.
        if arg.chars().any(char::is_control) {
            line.push_str(&printable(arg));
        } else {
            line.push_str(arg);
        }
        ends.push(line.len());
        if mode == CmdlineMode::Exe || line.len() > MAX_CMD_CHARS * 4 {
            break; // only the program is wanted, or far past the limit already
        }
    }
    if mode == CmdlineMode::Exe
        && let Some(space) = line.find(' ')
    {
        line.truncate(space);
        ends.clear();
    }
    if let Cow::Owned(masked) = redact_args(&line, &ends) {
        line = masked;
    }
    truncate(line)
}

/// Masks the secrets in `cmd` where there are any; a line that changes is then made
/// like [`command_line`]'s (tabs as spaces, the length bounded again: a mask may be
/// longer than what it hides). Allocates only when something is masked: this is
/// what the collector runs on every process of every snapshot it receives.
pub fn redact_in_place(cmd: &mut String) {
    if let Cow::Owned(masked) = redact(cmd) {
        *cmd = truncate(masked);
    }
}

/// `line` with every value that looks like a secret replaced by [`MASK`]; borrowed when
/// nothing needed masking. Words are separated by spaces or tabs. Redacting the result
/// again changes nothing.
pub fn redact(line: &str) -> Cow<'_, str> {
    redact_args(line, &[])
}

/// [`redact`], knowing where the arguments of `line` end (`ends`, in order; empty when
/// only the joined line is known): a secret that the rules find at the start of an
/// argument runs to that argument's end, and a program's positional words are counted
/// by argument.
fn redact_args<'a>(line: &'a str, ends: &[usize]) -> Cow<'a, str> {
    let mut r = Redactor {
        line,
        edits: Vec::new(),
        pending: Pending::None,
        program: Program::Other,
        arg_start: 0,
        arg_end: 0,
        skip_to: 0,
        state: State::default(),
    };
    let bytes = line.as_bytes();
    let mut start = 0;
    // The argument that holds `start`, and where it begins.
    let mut arg = 0;
    let mut arg_start = 0;
    while start < bytes.len() {
        if BYTE_CLASS[usize::from(bytes[start])] == SPACE {
            start += 1;
            continue;
        }
        let word = scan_word(line, start);
        while arg < ends.len() && ends[arg] < word.start {
            arg_start = ends[arg] + 1;
            arg += 1;
        }
        (r.arg_start, r.arg_end) = match ends.get(arg) {
            Some(end) => (arg_start, *end),
            None => (word.start, word.end),
        };
        r.word(&word);
        start = word.end.max(r.skip_to);
    }
    r.tokens();
    if r.edits.is_empty() { Cow::Borrowed(line) } else { Cow::Owned(apply(line, r.edits)) }
}

const ONES: u64 = 0x0101_0101_0101_0101;

/// The high bit of every byte of `v` that equals `b`. Exact for the lowest such byte
/// (a borrow only runs upwards), which is all [`scan_word`] relies on: the first `=`,
/// the first `:`, whether any `?` comes before the first space.
fn bytes_equal(v: u64, b: u8) -> u64 {
    let x = v ^ (ONES * u64::from(b));
    x.wrapping_sub(ONES) & !x & (ONES << 7)
}

/// The word of `line` that starts at `start`: where it ends (the next space or tab, or
/// the end) and where its rules' characters are. Eight bytes at a time, since this scan
/// is most of the cost of a line.
fn scan_word(line: &str, start: usize) -> Word {
    let bytes = line.as_bytes();
    let mut w = Word { start, ..Word::default() };
    let mut i = start;
    let mut query = 0u64;
    let mut semicolon = 0u64;
    let mut comma = 0u64;
    let mut quote = 0u64;
    while let Some(chunk) = bytes[i..].first_chunk::<8>() {
        let v = u64::from_le_bytes(*chunk);
        let space = bytes_equal(v, b' ') | bytes_equal(v, b'\t');
        // Flags at or after the word's end belong to the next word.
        let before_end = if space == 0 { u64::MAX } else { (space & space.wrapping_neg()) - 1 };
        let first = |mask: u64| (mask & before_end != 0).then(|| i - start + mask.trailing_zeros() as usize / 8);
        if w.eq.is_none() {
            w.eq = first(bytes_equal(v, b'='));
        }
        if w.colon.is_none() {
            w.colon = first(bytes_equal(v, b':'));
        }
        query |= (bytes_equal(v, b'?') | bytes_equal(v, b'&')) & before_end;
        semicolon |= bytes_equal(v, b';') & before_end;
        comma |= bytes_equal(v, b',') & before_end;
        quote |= bytes_equal(v, b'"') & before_end;
        if space != 0 {
            w.end = i + space.trailing_zeros() as usize / 8;
            break;
        }
        i += 8;
    }
    if w.end == 0 {
        w.end = bytes.len();
        for (j, b) in bytes[i..].iter().enumerate() {
            match BYTE_CLASS[usize::from(*b)] {
                SPACE => {
                    w.end = i + j;
                    break;
                }
                EQUALS if w.eq.is_none() => w.eq = Some(i + j - start),
                COLON if w.colon.is_none() => w.colon = Some(i + j - start),
                QUERY => query = 1,
                SEMICOLON => semicolon = 1,
                COMMA => comma = 1,
                QUOTE => quote = 1,
                _ => {}
            }
        }
    }
    w.query = query != 0;
    w.semicolon = semicolon != 0;
    w.comma = comma != 0;
    w.quote = quote != 0;
    w.url = w.colon.is_some_and(|c| line[w.start + c..w.end].contains("://"));
    w
}

const SPACE: u8 = 1;
const EQUALS: u8 = 2;
const COLON: u8 = 3;
const QUERY: u8 = 4;
const SEMICOLON: u8 = 5;
const COMMA: u8 = 6;
const QUOTE: u8 = 7;

/// What each byte means to the word scan; 0 for most.
const BYTE_CLASS: [u8; 256] = {
    let mut class = [0u8; 256];
    class[b' ' as usize] = SPACE;
    class[b'\t' as usize] = SPACE;
    class[b'=' as usize] = EQUALS;
    class[b':' as usize] = COLON;
    class[b'?' as usize] = QUERY;
    class[b'&' as usize] = QUERY;
    class[b';' as usize] = SEMICOLON;
    class[b',' as usize] = COMMA;
    class[b'"' as usize] = QUOTE;
    class
};

/// One word of the line and what its scan found (offsets relative to the word).
#[derive(Default)]
struct Word {
    start: usize,
    end: usize,
    eq: Option<usize>,
    colon: Option<usize>,
    url: bool,
    query: bool,
    semicolon: bool,
    /// A `,` (an option list: `-o user=u,password=x`).
    comma: bool,
    /// A `"` (a JSON body: `{"token":"x"}`).
    quote: bool,
}

/// What the previous word says about this one.
#[derive(Clone, Copy, Default, PartialEq)]
enum Pending {
    #[default]
    None,
    /// The whole word is a secret (`--password hunter2`).
    Whole,
    /// The part after the first `:` is a secret (`curl -u user:pass`).
    AfterColon,
    /// A secret header's value: an authentication scheme (`Bearer`) stays, the word
    /// after it is masked (`Authorization: Bearer TOKEN`).
    Header,
    /// After a lone `Bearer` or `Basic`: the word is the token, unless it is the next
    /// long option (`--token-type bearer --verbose`).
    Scheme,
    /// After `-U`: `user:pass`, or Samba's `user%pass`.
    UserPercent,
    /// After a lone `-p`: a password (`sshpass -p X`, `mysql -p X`), unless the word is a
    /// port or a port mapping (`-p 8080`, `docker run -p 8080:80`), or a path
    /// (`mkdir -p /var/lib/app`).
    PortOrSecret,
    /// After a JSON name that ends its word (`'{"token":` then `"x"}'`): the value.
    Json,
    /// Inside a JSON string value that has spaces in it: masked up to its closing quote.
    JsonString,
    /// After `lftp -u`: `user,password`.
    AfterComma,
    /// Inside a secret tuple or list that has spaces in it (Python's
    /// `auth=("user", "password")`): masked up to its closing bracket.
    Tuple,
}

struct Redactor<'a> {
    line: &'a str,
    /// Byte ranges of `line` to replace by the mask, in any order, possibly overlapping.
    edits: Vec<(usize, usize)>,
    pending: Pending,
    /// The command the words belong to, when its one-letter flags differ from the rest.
    program: Program,
    /// The argument the current word is in, when the arguments are known; else the word
    /// itself. A word that starts its argument is the whole of a value.
    arg_start: usize,
    arg_end: usize,
    /// Where the next word to look at starts when a whole argument was masked.
    skip_to: usize,
    /// What the program's positional words have said so far.
    state: State,
}

/// Positional words of the current program, for those that take a secret as one
/// (`wpa_passphrase SSID PASSPHRASE`).
#[derive(Clone, Copy, Default)]
struct State {
    /// Words that are not options, since the program's name.
    count: u8,
    /// The count at which the word is the secret; 0 for none.
    secret_at: u8,
    /// The subcommand seen so far, as the program understands it.
    stage: u8,
    /// `htpasswd`'s `-b` (the password is on the line) and `-n` (no file name).
    batch: bool,
    no_file: bool,
}

/// Commands whose password flag is a letter that means something harmless elsewhere
/// (`grep -P`, `cp -P`, `wc -w`), so it is masked only inside them, until a shell
/// separator (`;`, `&&`, `|`) ends the command.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Program {
    /// Any other: only the flags every command shares (`-p`, `-u`).
    Other,
    /// `redis-cli` and its forks: `-a PASSWORD`.
    Redis,
    /// `sqlcmd`, `bcp`, `osql`, `zip`, `unzip`, `ipmitool`, `mosquitto_pub`: `-P PASSWORD`.
    CapitalP,
    /// The OpenLDAP tools: `-w PASSWORD`.
    Ldap,
    /// `ldappasswd`: `-w`, and the old and new passwords `-a` and `-s`.
    LdapPasswd,
    /// `sshpass`: `-p PASSWORD`, even when it is only digits.
    Sshpass,
    /// Oracle's tools (`sqlplus`, `rman`, `expdp`, ...): `user/password@db`.
    Oracle,
    /// `ipmitool`: `-P PASSWORD`, and the keys `-k KEY` and `-y HEXKEY`.
    Ipmitool,
    /// `ssh-keygen`: the new and old passphrases, `-N` and `-P`.
    SshKeygen,
    /// `openssl`: `-k PASSWORD` and `-K HEXKEY` (`enc`).
    Openssl,
    /// The Net-SNMP tools: `-c COMMUNITY`, `-A AUTHPASS`, `-X PRIVPASS`.
    Snmp,
    /// `lftp`: `-u user,password`.
    Lftp,
    /// `consul`: `-encrypt=KEY`, the gossip encryption key.
    Consul,
    /// `vault login TOKEN`.
    Vault,
    /// A secret named by the word before it: `nmcli ... password PASSWORD` (or
    /// `wifi-sec.psk PSK`), `mysqladmin ... password NEWPASSWORD`, `rclone config create
    /// NAME s3 secret_access_key KEY`.
    PasswordWord,
    /// `htpasswd -b FILE USER PASSWORD`, `htpasswd -nb USER PASSWORD`.
    Htpasswd,
    /// MinIO's `mc alias set NAME URL ACCESSKEY SECRETKEY` (and the older
    /// `mc config host add ...`).
    Mc,
    /// `rabbitmqctl add_user USER PASSWORD` (and `change_password`, `authenticate_user`).
    Rabbitmq,
    /// `wpa_passphrase SSID PASSPHRASE`.
    WpaPassphrase,
    /// unixODBC's `isql DSN USER PASSWORD`, and Sybase's `isql -P PASSWORD`.
    Isql,
}

impl Program {
    /// The command a word names, by its file name. Every word that is not an option
    /// comes here, so most are turned away by their last letter and their length before
    /// any name is compared.
    fn of(word: &str) -> Option<Program> {
        // For each last letter, the lengths (one bit each) of the names that end in it.
        const LAST: [u16; 256] = {
            let mut last = [0u16; 256];
            let names: [&[u8]; 44] = [
                b"redis-cli",
                b"valkey-cli",
                b"keydb-cli",
                b"sqlcmd",
                b"zip",
                b"unzip",
                b"ldapsearch",
                b"ldapmodify",
                b"ldapadd",
                b"ldapdelete",
                b"ldapwhoami",
                b"ldapcompare",
                b"ldapmodrdn",
                b"ldapexop",
                b"ldappasswd",
                b"sshpass",
                b"sqlplus",
                b"sqlldr",
                b"rman",
                b"expdp",
                b"impdp",
                b"exp",
                b"imp",
                b"dgmgrl",
                b"ipmitool",
                b"mosquitto_pub",
                b"mosquitto_sub",
                b"mosquitto_rr",
                b"ssh-keygen",
                b"openssl",
                b"lftp",
                b"consul",
                b"vault",
                b"nmcli",
                b"mysqladmin",
                b"mariadb-admin",
                b"htpasswd",
                b"mc",
                b"rabbitmqctl",
                b"wpa_passphrase",
                b"rclone",
                b"bcp",
                b"osql",
                b"isql",
            ];
            let mut i = 0;
            while i < names.len() {
                last[names[i][names[i].len() - 1] as usize] |= 1 << names[i].len();
                i += 1;
            }
            // The last letters of the Net-SNMP tools (`snmpwalk`, `snmpget`, `snmptable`,
            // `snmpstatus`, `snmpdf`, `snmpvacm`, `snmptrap`, `snmpdelta`).
            let snmp = b"ktesfmpa";
            let mut i = 0;
            while i < snmp.len() {
                last[snmp[i] as usize] |= 0b0011_1111_1000_0000; // 7 to 13 letters
                i += 1;
            }
            last
        };
        let lengths = word.as_bytes().last().map(|b| LAST[usize::from(*b)]).filter(|l| *l != 0)?;
        let name = word.rfind('/').map_or(word, |slash| &word[slash + 1..]);
        if name.len() >= 16 || lengths & (1 << name.len()) == 0 {
            return None;
        }
        // Net-SNMP's clients, not its daemons (whose `-c` names a configuration file).
        if name.starts_with("snmp")
            && name.len() > 6
            && name.bytes().all(|b| b.is_ascii_lowercase())
            && !matches!(name, "snmptrapd" | "snmptranslate" | "snmpconf")
        {
            return Some(Program::Snmp);
        }
        Some(match name {
            "redis-cli" | "valkey-cli" | "keydb-cli" => Program::Redis,
            "sqlcmd" | "bcp" | "osql" | "zip" | "unzip" => Program::CapitalP,
            "isql" => Program::Isql,
            "ldapsearch" | "ldapmodify" | "ldapadd" | "ldapdelete" | "ldapwhoami" | "ldapcompare" | "ldapmodrdn"
            | "ldapexop" => Program::Ldap,
            "ldappasswd" => Program::LdapPasswd,
            "sshpass" => Program::Sshpass,
            "sqlplus" | "sqlldr" | "rman" | "expdp" | "impdp" | "exp" | "imp" | "dgmgrl" => Program::Oracle,
            "mosquitto_pub" | "mosquitto_sub" | "mosquitto_rr" => Program::CapitalP,
            "ipmitool" => Program::Ipmitool,
            "ssh-keygen" => Program::SshKeygen,
            "openssl" => Program::Openssl,
            "lftp" => Program::Lftp,
            "consul" => Program::Consul,
            "vault" => Program::Vault,
            "nmcli" | "mysqladmin" | "mariadb-admin" | "rclone" => Program::PasswordWord,
            "htpasswd" => Program::Htpasswd,
            "mc" => Program::Mc,
            "rabbitmqctl" => Program::Rabbitmq,
            "wpa_passphrase" => Program::WpaPassphrase,
            _ => return None,
        })
    }

    /// Whether `-LETTER` takes a password in this command.
    fn password_flag(self, letter: u8) -> bool {
        match self {
            Program::Sshpass => letter == b'p',
            Program::Redis => letter == b'a',
            Program::CapitalP => letter == b'P',
            Program::Ldap => letter == b'w',
            Program::LdapPasswd => matches!(letter, b'w' | b'a' | b's'),
            Program::SshKeygen => matches!(letter, b'N' | b'P'),
            Program::Ipmitool => matches!(letter, b'P' | b'k' | b'y'),
            Program::Isql => letter == b'P',
            Program::Openssl => matches!(letter, b'k' | b'K'),
            Program::Snmp => matches!(letter, b'c' | b'A' | b'X'),
            _ => false,
        }
    }

    /// Whether `-LETTERvalue` is the password flag with its value attached. Not in
    /// `openssl`, whose options are whole words (`-kfile`, `-key`).
    fn attached(self, letter: u8) -> bool {
        self != Program::Openssl && self.password_flag(letter)
    }

    /// Whether the command takes a secret as a positional word.
    fn positional(self) -> bool {
        matches!(
            self,
            Program::Vault
                | Program::PasswordWord
                | Program::Htpasswd
                | Program::Mc
                | Program::Rabbitmq
                | Program::WpaPassphrase
                | Program::Isql
        )
    }

    /// Whether the option `name` (without its dashes) takes a secret in this command
    /// though its name says nothing of one elsewhere.
    fn secret_option(self, name: &str) -> bool {
        self == Program::Consul && name.eq_ignore_ascii_case("encrypt")
    }
}

impl Redactor<'_> {
    /// Masks `start..end` of the line unless it is empty or already the mask.
    fn mask(&mut self, start: usize, end: usize) {
        if start < end && &self.line[start..end] != MASK {
            self.edits.push((start, end));
        }
    }

    fn word(&mut self, w: &Word) {
        let edits_before = self.edits.len();
        self.rules(w);
        // A shell separator ends the command, unless it was masked away (then it is gone
        // on a second pass too, and both passes must agree).
        let text = &self.line[w.start..w.end];
        let separator = matches!(text, "&&" | "||" | "|" | "&") || text.ends_with(';');
        if separator && !self.edits[edits_before..].iter().any(|e| e.1 == w.end) {
            self.program = Program::Other;
            self.state = State::default();
        }
    }

    fn rules(&mut self, w: &Word) {
        let text = &self.line[w.start..w.end];
        match std::mem::take(&mut self.pending) {
            Pending::None => {}
            Pending::Whole => return self.masked_word(w, text),
            Pending::Scheme if !text.starts_with("--") => return self.masked_word(w, text),
            Pending::Scheme => {}
            Pending::Header => {
                if is_auth_scheme(text) {
                    self.pending = Pending::Whole;
                    return;
                }
                return self.masked_word(w, text);
            }
            Pending::AfterColon => {
                if let Some(colon) = w.colon
                    && !w.url
                {
                    return self.mask_value(w.start + colon + 1, w);
                }
                // No `user:pass` after all: an ordinary word.
            }
            Pending::UserPercent => {
                if let Some(sep) = text.find([':', '%'])
                    && !w.url
                {
                    return self.mask_value(w.start + sep + 1, w);
                }
            }
            Pending::AfterComma => {
                if let Some(comma) = text.find(',') {
                    return self.mask_value(w.start + comma + 1, w);
                }
            }
            Pending::Tuple => {
                let end = text.find([')', ']']).unwrap_or_else(|| {
                    self.pending = Pending::Tuple;
                    text.len()
                });
                return self.mask(w.start, w.start + end);
            }
            Pending::PortOrSecret if is_port(text) || is_path(text) => {}
            Pending::PortOrSecret => return self.masked_word(w, text),
            Pending::Json => return self.json_value(text, w.start),
            Pending::JsonString => {
                // Up to the closing quote (`\"` in an escaped body), else the whole word.
                let end = match text.find('"') {
                    Some(q) if q > 0 && text.as_bytes()[q - 1] == b'\\' => q - 1,
                    Some(q) => q,
                    None => {
                        self.pending = Pending::JsonString;
                        text.len()
                    }
                };
                return self.mask(w.start, w.start + end);
            }
        }
        if w.quote && w.colon.is_some() {
            self.json(text, w.start);
        }
        if w.comma && w.eq.is_some() {
            self.option_list(text, w.start);
        }

        if w.url {
            self.urls(text, w.start);
        }
        if w.query {
            self.params(text, w.start);
        }
        if w.semicolon {
            self.segments(text, w.start);
        }
        // Headers: `X-Api-Key: VALUE`, `Authorization: Bearer TOKEN`, `Cookie:a=b`, also as
        // an option's value (`--header=X-Api-Key: VALUE`).
        if let Some(colon) = w.colon
            && !w.url
        {
            let before = &text[..colon];
            let name = &before[before.rfind(['=', '\'', '"']).map_or(0, |i| i + 1)..];
            if is_header_name(name) && classify(name) == Kind::Secret {
                let after = &text[colon + 1..];
                if after.is_empty() {
                    self.pending = Pending::Header;
                } else if is_auth_scheme(after) {
                    // `Authorization:Bearer TOKEN`: the scheme stays, the token goes.
                    self.pending = Pending::Whole;
                } else {
                    self.mask(w.start + colon + 1, w.end);
                }
            }
        }
        // Quotes left in by a shell script (`sh -c "curl -H 'X-Api-Key: ...'"`).
        let lead_len = text.len() - text.trim_start_matches(['\'', '"', '`']).len();
        let lead = &text[lead_len..];
        let at = w.start + lead_len;
        if lead.len() > 1 && lead.starts_with('-') {
            // An option that starts its argument holds its value to the argument's end
            // (`--passphrase=correct horse`).
            let end = if lead_len == 0 { self.value_end(w) } else { w.end };
            self.option(lead, at, end);
            if end > w.end && self.edits.last().is_some_and(|e| e.1 == end) {
                self.skip_to = end;
            }
            return;
        }
        if lead.starts_with('/') && w.colon.is_some() && !w.url {
            self.windows_option(lead, at);
        }
        if self.program.positional() && self.positional(lead, w) {
            return;
        }
        if let Some(program) = Program::of(lead) {
            self.program = program;
            self.state = State::default();
        } else if self.program == Program::Oracle && !w.url {
            self.oracle_login(lead, at);
        }
        // npm's settings: `//registry.npmjs.org/:_authToken=X`, or the value as the next
        // word (`npm config set //host/:_authToken X`, `npm config set _auth X`).
        let npm_key = match lead.strip_prefix("//") {
            Some(scoped) if !w.url => scoped.rfind(':').map(|c| (&scoped[c + 1..], at + 2 + c + 1)),
            _ => lead.starts_with('_').then_some((lead, at)),
        };
        if let Some((key, key_at)) = npm_key {
            let name = key.split_once('=').map_or(key, |(name, _)| name);
            if matches!(name, "_authToken" | "_auth" | "_password") {
                if key.len() > name.len() {
                    self.mask(key_at + name.len() + 1, w.end);
                } else {
                    self.pending = Pending::Whole;
                }
                return;
            }
        }
        if lead.eq_ignore_ascii_case("bearer") || lead.eq_ignore_ascii_case("basic") {
            self.pending = Pending::Scheme;
            return;
        }
        // `aws configure set aws_secret_access_key SECRET`: a secret named by a bare word.
        if matches!(lead.len(), 17 | 21)
            && (lead.eq_ignore_ascii_case("aws_secret_access_key") || lead.eq_ignore_ascii_case("aws_session_token"))
        {
            self.pending = Pending::Whole;
            return;
        }
        // Environment-style assignments: `DB_PASSWORD=...`, `api_key=...`.
        if let Some(eq) = w.eq
            && eq > lead_len
        {
            let name = &text[lead_len..eq];
            if is_name(name) && classify(name) == Kind::Secret && !names_a_file(name, &text[eq + 1..]) {
                self.mask(w.start + eq + 1, w.end);
                if opens_a_tuple(&text[eq + 1..]) {
                    self.pending = Pending::Tuple;
                }
            }
        }
    }

    /// The end of the value that starts at word `w`: its argument's end if it starts
    /// one (a passphrase with spaces), else its own.
    fn value_end(&self, w: &Word) -> usize {
        if w.start == self.arg_start { self.arg_end } else { w.end }
    }

    /// Masks from `start` in word `w` to the end of the value: the word's argument's end
    /// if the word starts one (`-u "ada:correct horse"`), else the word's.
    fn mask_value(&mut self, start: usize, w: &Word) {
        let end = self.value_end(w);
        self.mask(start, end);
        if end > w.end {
            self.skip_to = end;
        }
    }

    /// A word hidden whole because of the one before (with the rest of its argument).
    /// If it is itself a secret option (`--token --password hunter2`), the word after it
    /// is hidden too.
    fn masked_word(&mut self, w: &Word, text: &str) {
        let end = self.value_end(w);
        self.mask(w.start, end);
        if end > w.end {
            self.skip_to = end;
            return;
        }
        let lead = text.trim_start_matches(['\'', '"', '`']);
        if lead.eq_ignore_ascii_case("bearer") || lead.eq_ignore_ascii_case("basic") {
            self.pending = Pending::Scheme;
        } else if lead.len() > 1 && lead.starts_with('-') && w.eq.is_none() {
            let name = lead.trim_start_matches('-');
            if classify_option(name) == Kind::Secret || (lead.len() == 2 && name == "p") {
                self.pending = Pending::Whole;
            }
        }
    }

    /// A word of a program that takes a secret as a positional word: counts it, and
    /// masks it (with the rest of its argument) when it is the secret. Words inside one
    /// argument count once.
    fn positional(&mut self, lead: &str, w: &Word) -> bool {
        if w.start != self.arg_start {
            return false;
        }
        let st = &mut self.state;
        st.count = st.count.saturating_add(1);
        let n = st.count;
        let secret = match self.program {
            // `vault login TOKEN`; `vault login -method=userpass username=ada` has none.
            Program::Vault => {
                if n == 1 && lead == "login" {
                    st.stage = 1;
                }
                n > 1 && st.stage == 1 && !lead.contains('=') && lead != "-" && {
                    st.stage = 2;
                    true
                }
            }
            Program::PasswordWord => {
                let bare_name = !lead.contains(['=', '/', ':']);
                if bare_name && (lead.ends_with(".psk") || classify_option(lead) == Kind::Secret) {
                    self.pending = Pending::Whole;
                }
                false
            }
            Program::Htpasswd => st.batch && n == if st.no_file { 2 } else { 3 },
            Program::Mc => {
                match (n, st.stage, lead) {
                    (1, _, "alias") => st.stage = 1,
                    (2, 1, "set") => st.secret_at = 6,
                    (1, _, "config") => st.stage = 2,
                    (2, 2, "host") => st.stage = 3,
                    (3, 3, "add") => st.secret_at = 7,
                    _ => {}
                }
                n == st.secret_at
            }
            Program::Rabbitmq => {
                if matches!(lead, "add_user" | "change_password" | "authenticate_user") {
                    st.secret_at = n.saturating_add(2);
                }
                n == st.secret_at
            }
            Program::WpaPassphrase => n == 2,
            Program::Isql => n == 3,
            _ => false,
        };
        if secret {
            // A `;` that ends the word ends the command, and stays.
            let end = if self.value_end(w) == w.end && lead.ends_with(';') { w.end - 1 } else { self.value_end(w) };
            self.mask(w.start, end);
            self.skip_to = end;
        }
        secret
    }

    /// An option: `--name=value`, `--name value`, `-name value`, `-pVALUE`, `-p VALUE`.
    fn option(&mut self, text: &str, at: usize, end: usize) {
        let long = text.starts_with("--");
        let dashes = if long { 2 } else { 1 };
        let body = &text[dashes..];
        if body.is_empty() {
            return;
        }
        if self.program == Program::Htpasswd && !long {
            self.state.batch |= body.contains('b');
            self.state.no_file |= body.contains('n');
        }
        // `--name=value`, or `-name=value` with a real name before the `=` (a `-p`
        // with an attached password may hold a `=` anywhere).
        if let Some(eq) = body.find('=')
            && (long || is_name(&body[..eq]))
        {
            let name = &body[..eq];
            let value = at + dashes + eq + 1;
            let rest = &body[eq + 1..];
            if (classify_option(name) == Kind::Secret || self.program.secret_option(name)) && !names_a_file(name, rest)
            {
                self.mask(value, end);
            } else if is_user_option(name, long)
                && let Some(colon) = rest.find(':')
            {
                self.mask(value + colon + 1, end);
            } else if let Some(inner_eq) = rest.find('=')
                && is_name(&rest[..inner_eq])
                && classify(&rest[..inner_eq]) == Kind::Secret
            {
                // A setting passed on as the option's value: `--from-literal=password=X`,
                // `--env=DB_PASSWORD=X`, `--set=db.password=X` (up to a `;` or `&` that
                // starts the next one).
                let secret = &rest[inner_eq + 1..];
                let len = secret.find([';', '&']).unwrap_or(secret.len());
                self.mask(value + inner_eq + 1, value + inner_eq + 1 + len);
            }
            return;
        }
        if long {
            if classify_option(body) == Kind::Secret || self.program.secret_option(body) {
                self.pending = Pending::Whole;
            } else if is_user_option(body, true) {
                self.pending = Pending::AfterColon;
            }
            return;
        }
        let first = body.as_bytes()[0];
        if body.len() == 1 {
            match first {
                b'p' if self.program.password_flag(b'p') => self.pending = Pending::Whole,
                // A switch there: `ssh-keygen -p` changes a passphrase, `htpasswd -p`
                // stores it in clear, `openssl enc -p` prints the key.
                b'p' if matches!(self.program, Program::SshKeygen | Program::Htpasswd | Program::Openssl) => {}
                b'p' => self.pending = Pending::PortOrSecret,
                b'u' if self.program == Program::Lftp => self.pending = Pending::AfterComma,
                b'u' => self.pending = Pending::AfterColon,
                b'U' => self.pending = Pending::UserPercent,
                letter if self.program.password_flag(letter) => self.pending = Pending::Whole,
                _ => {}
            }
            return;
        }
        // A single dash and a whole name: Java's and Go's style (`-storepass X`).
        if is_name(body) {
            let kind = if self.program.secret_option(body) { Kind::Secret } else { classify_option(body) };
            match kind {
                Kind::Secret => {
                    // `-password X` is an option; `-pMyPassw0rd` is MySQL's `-p` with
                    // its value attached. Options are lowercase words; an attached
                    // password that looks like one is hidden as both.
                    if (first == b'p' || self.program.attached(first)) && !is_lowercase_option(body) {
                        self.mask(at + 2, end);
                    }
                    self.pending = Pending::Whole;
                    return;
                }
                Kind::Reference => return, // `-password-file /run/secrets/db`
                Kind::Plain => {}
            }
        }
        match first {
            b'p' if body.as_bytes()[1] != b'-' => self.mask(at + 2, end),
            letter if self.program.attached(letter) => self.mask(at + 2, end),
            b'u' => {
                let sep = if self.program == Program::Lftp { ',' } else { ':' };
                if let Some(colon) = body.find(sep) {
                    self.mask(at + 1 + colon + 1, end);
                }
            }
            // Samba's tools take `-Uuser%password` as well as `user:password`.
            b'U' => {
                if let Some(sep) = body.find([':', '%']) {
                    self.mask(at + 1 + sep + 1, end);
                }
            }
            _ => {}
        }
    }

    /// Token shapes that are secrets wherever they stand, whatever names them: GitHub's
    /// `ghp_`/`github_pat_`, GitLab's `glpat-`, Slack's `xoxb-`, AWS access key ids
    /// (`AKIA...`, and the secret key in the word after one), JWTs (`eyJ...`),
    /// `sk-`/`sk_live_` API keys. One pass over the whole line finds where one may begin
    /// (a multi-pattern search over their prefixes, far cheaper than looking at each
    /// byte); only a prefix at the start of a run of letters and digits is looked at.
    fn tokens(&mut self) {
        let line = self.line;
        let bytes = line.as_bytes();
        if bytes.len() < MIN_TOKEN {
            return;
        }
        let Some(starts) = TOKEN_STARTS.as_ref() else { return };
        let mut from = 0;
        for found in starts.find_iter(line) {
            let i = found.start();
            if i < from || (i > 0 && bytes[i - 1].is_ascii_alphanumeric()) {
                continue;
            }
            let Some(len) = token_len(&bytes[i..]) else { continue };
            self.mask(i, i + len);
            from = i + len;
            // `AKIA... SECRET`: the secret access key follows its id.
            if bytes[i] == b'A' && bytes.get(from).is_some_and(|b| BYTE_CLASS[usize::from(*b)] == SPACE) {
                let next = from + 1;
                let end = bytes[next..]
                    .iter()
                    .position(|b| BYTE_CLASS[usize::from(*b)] == SPACE)
                    .map_or(bytes.len(), |e| next + e);
                if is_aws_secret(line[next..end].trim_matches(['\'', '"'])) {
                    self.mask(next, end);
                }
            }
        }
    }

    /// `"name":value` pairs of a JSON body in the word (`-d '{"password":"x"}'`, also
    /// escaped inside a script: `{\"token\":\"x\"}`) whose name is a secret's.
    fn json(&mut self, text: &str, at: usize) {
        let mut from = 0;
        while let Some(found) = text[from..].find("\":") {
            let close = from + found;
            let value = close + 2;
            from = value;
            let Some(open) = text[..close].rfind('"') else { continue };
            let name = text[open + 1..close].trim_end_matches('\\');
            if !(is_name(name) && classify_option(name) == Kind::Secret) {
                continue;
            }
            if value == text.len() {
                self.pending = Pending::Json; // `"token": "x"`: the value is the next word
            } else {
                self.json_value(&text[value..], at + value);
            }
        }
    }

    /// Masks the JSON value `text` starts with: a string's content (to its closing
    /// quote, or on through the next words when it has spaces), else up to the next
    /// `,`, `}` or `]`.
    fn json_value(&mut self, text: &str, at: usize) {
        let quote = if text.starts_with("\\\"") { 2 } else { usize::from(text.starts_with('"')) };
        if quote == 0 {
            let end = text.find([',', '}', ']']).unwrap_or(text.len());
            return self.mask(at, at + end);
        }
        let rest = &text[quote..];
        let bytes = rest.as_bytes();
        let mut end = None;
        for (i, b) in bytes.iter().enumerate() {
            if *b == b'"' {
                let escaped = i > 0 && bytes[i - 1] == b'\\';
                // In an escaped body (`\"x\"`) the value ends at `\"`; in a plain one
                // `\"` is a quote inside the string.
                if quote == 2 && escaped {
                    end = Some(i - 1);
                    break;
                } else if quote == 1 && !escaped {
                    end = Some(i);
                    break;
                }
            }
        }
        let end = end.unwrap_or_else(|| {
            self.pending = Pending::JsonString;
            rest.len()
        });
        self.mask(at + quote, at + quote + end);
    }

    /// A comma-separated option list (`mount -o username=u,password=x,vers=3.0`): each
    /// secret `name=value` is masked up to the next comma. `credentials=FILE` names a
    /// file and stays.
    fn option_list(&mut self, text: &str, at: usize) {
        let mut offset = 0;
        for piece in text.split(',') {
            if let Some(eq) = piece.find('=') {
                let name = piece[..eq].trim_start_matches(['-', '\'', '"']);
                if is_name(name) && classify(name) == Kind::Secret && !names_a_file(name, &piece[eq + 1..]) {
                    self.mask(at + offset + eq + 1, at + offset + piece.len());
                    // `auth=("user",` then `"password")`: the tuple goes on in the next word.
                    if opens_a_tuple(&text[offset + eq + 1..]) {
                        self.pending = Pending::Tuple;
                    }
                }
            }
            offset += piece.len() + 1;
        }
    }

    /// Windows-style options: `/password:X`, `/pass:X`, `/p:X`; `/p:Name=Value` is a
    /// property (msbuild, sqlpackage), masked only when its name is a secret's.
    fn windows_option(&mut self, text: &str, at: usize) {
        let body = &text[1..];
        let Some(colon) = body.find(':') else { return };
        let (name, value) = (&body[..colon], &body[colon + 1..]);
        if !is_name(name) {
            return;
        }
        let value_at = at + 1 + colon + 1;
        let property = name.eq_ignore_ascii_case("p") || name.eq_ignore_ascii_case("property");
        if property && let Some(eq) = value.find('=') {
            if is_name(&value[..eq]) && classify_option(&value[..eq]) == Kind::Secret {
                self.mask(value_at + eq + 1, value_at + value.len());
            }
        } else if name.eq_ignore_ascii_case("p") || classify_option(name) == Kind::Secret {
            self.mask(value_at, value_at + value.len());
        }
    }

    /// An Oracle login, `user/password@db` (or `userid=user/password@db`): the password
    /// is between the first `/` and the last `@`. `/ as sysdba`, `@script.sql` and
    /// other `name=value` words are left alone.
    fn oracle_login(&mut self, text: &str, at: usize) {
        let (value, value_at) = match text.split_once('=') {
            Some((name, value)) if name.eq_ignore_ascii_case("userid") => (value, at + name.len() + 1),
            Some(_) => return,
            None => (text, at),
        };
        if value.starts_with(['/', '@']) {
            return;
        }
        if let Some(slash) = value.find('/') {
            let end = value.rfind('@').filter(|a| *a > slash).unwrap_or(value.len());
            self.mask(value_at + slash + 1, value_at + end);
        }
    }

    /// Credentials and secret-bearing paths in every `scheme://` of the word.
    fn urls(&mut self, text: &str, at: usize) {
        let mut from = 0;
        while let Some(found) = text[from..].find("://") {
            let authority_start = from + found + 3;
            let rest = &text[authority_start..];
            let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let authority = &rest[..authority_len];
            let host = match authority.rfind('@') {
                Some(userinfo_end) => {
                    match authority[..userinfo_end].find(':') {
                        Some(colon) => self.mask(at + authority_start + colon + 1, at + authority_start + userinfo_end),
                        // A lone user part may itself be a token (`https://TOKEN@host`).
                        None => self.mask(at + authority_start, at + authority_start + userinfo_end),
                    }
                    &authority[userinfo_end + 1..]
                }
                None => authority,
            };
            let path_start = authority_start + authority_len;
            let path_len = text[path_start..].find(['?', '#']).unwrap_or(text.len() - path_start);
            self.hook_path(host, &text[path_start..path_start + path_len], at + path_start);
            from = path_start;
        }
    }

    /// Webhook URLs whose path is the secret: Slack's
    /// `hooks.slack.com/services/T../B../SECRET`, Discord's `/api/webhooks/ID/TOKEN`,
    /// others' `/hooks/KEY`, Teams' `/IncomingWebhook/ID/KEY`, Telegram's `/botID:TOKEN`.
    fn hook_path(&mut self, host: &str, path: &str, at: usize) {
        let host = host.rsplit_once(':').map_or(host, |(name, _port)| name);
        let segments = || {
            path.split('/').scan(0, |offset, seg| {
                let start = *offset;
                *offset += seg.len() + 1;
                Some((start, seg))
            })
        };
        // Bytes, not a string slice: the name may hold any text, and a cut inside a
        // character would panic.
        if host.len() >= 15 && host.as_bytes()[host.len() - 15..].eq_ignore_ascii_case(b"hooks.slack.com") {
            let mut named = segments().filter(|(_, s)| !s.is_empty());
            if let (Some(_), Some((start, last))) = (named.next(), named.last()) {
                self.mask(at + start, at + start + last.len());
            }
            return;
        }
        let mut after_hook: Option<usize> = None;
        let mut kept = None;
        for (start, seg) in segments() {
            if let Some(n) = after_hook.as_mut() {
                *n += 1;
                match *n {
                    1 => kept = Some((start, seg.len())),
                    // Two or more after the hook: the first is an id, the rest secret.
                    _ => return self.mask(at + start, at + path.len()),
                }
                continue;
            }
            if ["webhooks", "webhook", "hooks", "incomingwebhook"].iter().any(|h| seg.eq_ignore_ascii_case(h)) {
                after_hook = Some(0);
            } else if let Some(token) = seg.strip_prefix("bot")
                && let Some(colon) = token.find(':')
                && token[..colon].bytes().all(|b| b.is_ascii_digit())
            {
                self.mask(at + start + 3 + colon + 1, at + start + seg.len());
            }
        }
        // Exactly one segment after the hook: it is the key.
        if let Some((start, len)) = kept {
            self.mask(at + start, at + start + len);
        }
    }

    /// `name=value` pairs of a query string (`?api_key=...&sig=...`) or form data
    /// (`user=ada&password=...`).
    fn params(&mut self, text: &str, at: usize) {
        let start = match text.find('?') {
            Some(q) => q + 1,
            None => text.len() - text.trim_start_matches(['\'', '"', '`']).len(),
        };
        let end = text[start..].find('#').map_or(text.len(), |h| start + h);
        let mut offset = start;
        // `?` too: a URL in a parameter may bring its own query.
        for pair in text[start..end].split(['&', '?']) {
            if let Some(eq) = pair.find('=')
                && classify(&pair[..eq]) == Kind::Secret
            {
                self.mask(at + offset + eq + 1, at + offset + pair.len());
            }
            offset += pair.len() + 1;
        }
    }

    /// `;name=value;` pairs of a connection string (`Server=db;Password=...;`), and the
    /// first pair when it is an option's value (`--conn=Password=...;Server=db`).
    fn segments(&mut self, text: &str, at: usize) {
        let mut offset = 0;
        for (i, piece) in text.split(';').enumerate() {
            let eq = if i == 0 {
                piece.rfind('=').filter(|e| piece[..*e].contains('=')).or_else(|| {
                    // A connection string that starts with its password: `Pwd=x;Server=db`.
                    let eq = piece.find('=')?;
                    (piece[..eq].eq_ignore_ascii_case("pwd") && text[piece.len()..].contains('=')).then_some(eq)
                })
            } else {
                piece.find('=')
            };
            if let Some(eq) = eq {
                let before = &piece[..eq];
                let name = before[before.rfind(['=', '\'', '"']).map_or(0, |e| e + 1)..].trim();
                // `Pwd` is ODBC's password, not the shell's working directory, inside a
                // connection string.
                if classify(name) == Kind::Secret || name.eq_ignore_ascii_case("pwd") {
                    self.mask(at + offset + eq + 1, at + offset + piece.len());
                }
            }
            offset += piece.len() + 1;
        }
    }
}

/// Replaces the `edits` ranges of `line` by the mask; overlapping or touching ranges
/// become one mask, so that the result is stable under [`redact`].
fn apply(line: &str, mut edits: Vec<(usize, usize)>) -> String {
    edits.sort_unstable();
    let mut out = String::with_capacity(line.len());
    let mut pos = 0;
    let mut in_mask = false;
    for (start, end) in edits {
        if in_mask && start <= pos {
            pos = pos.max(end);
            continue;
        }
        out.push_str(&line[pos..start]);
        out.push_str(MASK);
        pos = end;
        in_mask = true;
    }
    out.push_str(&line[pos..]);
    out
}

/// The shortest line [`Redactor::tokens`] looks into (the shortest token it knows, an
/// AWS access key id, is 20 characters).
const MIN_TOKEN: usize = 20;

/// Where the tokens [`token_len`] knows begin. `None` only if the searcher could not be
/// built, which fixed patterns never fail to be. Leftmost-first matching, because only
/// then does the crate use its vectorised search (four times faster here than the
/// standard automaton).
static TOKEN_STARTS: LazyLock<Option<AhoCorasick>> = LazyLock::new(|| {
    AhoCorasick::builder()
        .match_kind(MatchKind::LeftmostFirst)
        .build([
            "ghp_",
            "gho_",
            "ghu_",
            "ghs_",
            "ghr_",
            "github_pat_",
            "glpat-",
            "xoxb-",
            "xoxp-",
            "xoxa-",
            "xoxr-",
            "xoxs-",
            "AKIA",
            "ASIA",
            "eyJ",
            "sk-",
            "sk_live_",
            "sk_test_",
            "rk_live_",
            "rk_test_",
            "npm_",
            "hvs.",
            "hvb.",
            "hvr.",
        ])
        .ok()
});

/// The length of the secret token `bytes` starts with, if it starts with one.
fn token_len(bytes: &[u8]) -> Option<usize> {
    let run = |from: usize, ok: fn(&u8) -> bool| bytes[from.min(bytes.len())..].iter().take_while(|b| ok(b)).count();
    let word = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-');
    let alnum = |b: &u8| b.is_ascii_alphanumeric();
    // Enough of a mix that a word or a file name is not taken for a key.
    let mixed = |t: &[u8]| {
        t.iter().any(u8::is_ascii_digit) && t.iter().any(u8::is_ascii_uppercase) && t.iter().any(u8::is_ascii_lowercase)
    };
    let prefixed = |prefix: &[u8], ok: fn(&u8) -> bool, min: usize| {
        if !bytes.starts_with(prefix) {
            return None;
        }
        let len = run(prefix.len(), ok);
        (len >= min).then_some(prefix.len() + len)
    };
    match bytes[0] {
        b'g' => [b"ghp_".as_slice(), b"gho_", b"ghu_", b"ghs_", b"ghr_"]
            .iter()
            .find_map(|p| prefixed(p, alnum, 30))
            .or_else(|| prefixed(b"github_pat_", word, 30))
            .or_else(|| prefixed(b"glpat-", word, 20)),
        b'x' if bytes.len() > 5
            && bytes.starts_with(b"xox")
            && matches!(bytes[3], b'b' | b'p' | b'a' | b'r' | b's') =>
        {
            prefixed(&bytes[..5], word, 10)
                .filter(|_| bytes[4] == b'-' && bytes[5..].iter().take(10).any(u8::is_ascii_digit))
        }
        b'A' if bytes.starts_with(b"AKIA") || bytes.starts_with(b"ASIA") => {
            let len = run(0, |b| b.is_ascii_uppercase() || b.is_ascii_digit());
            (len == 20 && !bytes.get(20).is_some_and(u8::is_ascii_alphanumeric)).then_some(20)
        }
        b'e' if bytes.starts_with(b"eyJ") => {
            // header.payload.signature, base64url each; the payload is JSON too.
            let header = run(0, word);
            let payload = bytes.get(header + 1..)?;
            if bytes[header..].first() != Some(&b'.') || !payload.starts_with(b"eyJ") {
                return None;
            }
            let payload_len = run(header + 1, word);
            let end = header + 1 + payload_len;
            let signature = if bytes.get(end) == Some(&b'.') { 1 + run(end + 1, word) } else { 0 };
            Some(end + signature)
        }
        // npm's access tokens: `npm_` and 36 letters and digits.
        b'n' => prefixed(b"npm_", alnum, 36),
        // Vault's service, batch and recovery tokens.
        b'h' if bytes.len() > 4 && bytes.starts_with(b"hv") && matches!(bytes[2], b's' | b'b' | b'r') => {
            prefixed(&bytes[..4], word, 20).filter(|_| bytes[3] == b'.')
        }
        b's' | b'r' => {
            let stripe = [b"sk_live_".as_slice(), b"sk_test_", b"rk_live_", b"rk_test_"];
            if let Some(len) = stripe.iter().find_map(|p| prefixed(p, alnum, 16)) {
                return Some(len);
            }
            let len = prefixed(b"sk-", word, 32)?;
            mixed(&bytes[3..len]).then_some(len)
        }
        _ => None,
    }
}

/// Whether a secret value opens a tuple or list that the word does not close
/// (`("user",`): its other elements are in the next words.
fn opens_a_tuple(value: &str) -> bool {
    let value = value.trim_start_matches(['\'', '"']);
    match value.as_bytes().first() {
        Some(b'(') => !value.contains(')'),
        Some(b'[') => !value.contains(']'),
        _ => false,
    }
}

/// An AWS secret access key's shape: 40 characters of base64.
fn is_aws_secret(word: &str) -> bool {
    word.len() == 40 && word.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'+'))
}

/// A port, a port range or a port mapping (`8080`, `8000-8010`, `8080:80`,
/// `127.0.0.1:8080:80/tcp`): what `-p` takes in most programs.
fn is_port(word: &str) -> bool {
    let word = word.strip_suffix("/tcp").or_else(|| word.strip_suffix("/udp")).unwrap_or(word);
    if word.bytes().all(|b| b.is_ascii_digit()) {
        return word.parse::<u16>().is_ok_and(|p| p > 0);
    }
    word.len() <= 48
        && word.as_bytes()[0].is_ascii_digit()
        && word.contains(':')
        && word.bytes().all(|b| b.is_ascii_digit() || matches!(b, b':' | b'.' | b'-'))
}

/// A path (`mkdir -p /var/lib/app`): what `-p` takes where it is not a password.
fn is_path(word: &str) -> bool {
    word.starts_with(['/', '~']) || word.starts_with("./") || word.starts_with("../")
}

/// [`classify`] for an option's name: there `pwd` is a password (`--pwd X`), not the
/// shell's working directory (`PWD=/root`).
fn classify_option(name: &str) -> Kind {
    if name.trim_start_matches('-').eq_ignore_ascii_case("pwd") { Kind::Secret } else { classify(name) }
}

/// Whether a secret-sounding setting names a file instead of holding the secret:
/// `credentials=/etc/smb.cred`, as `mount.cifs` takes it.
fn names_a_file(name: &str, value: &str) -> bool {
    let credentials = name.eq_ignore_ascii_case("credentials") || name.eq_ignore_ascii_case("cred");
    credentials && value.starts_with(['/', '~', '.'])
}

/// What an option, variable, parameter or header name says about its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Nothing secret.
    Plain,
    /// The value is a secret: `password`, `api_key`, `X-Auth-Token`, `storepass`.
    Secret,
    /// About a secret but not one: `--password-file`, `token_type`, `AWS_ACCESS_KEY_ID`.
    Reference,
}

/// Endings that make a name secret: `storepass`, `--pass`, `MYSQL_PWD`.
const SECRET_ENDINGS: [&[u8]; 2] = [b"pass", b"pwd"];

/// Whole names, or last parts of a name (`STRIPE_KEY`, `--pw`, `?sig=`), that are secret.
const SECRET_PARTS: [&str; 5] = ["key", "pw", "sig", "passin", "passout"];

/// Names that end like a secret but are not one.
const NOT_SECRET: [&[u8]; 4] = [b"pwd", b"oldpwd", b"bypass", b"compass"];

/// Beginnings that make a name a switch rather than a value: `--no-auth`.
const SWITCH_PREFIXES: [&[u8]; 6] = [b"no", b"without", b"skip", b"disable", b"enable", b"allow"];

/// Endings that make a name refer to a secret, or be about one, instead of holding it:
/// where it is (`--password-file`, `TOKEN_PATH`, `--cookie-jar`), what kind it is
/// (`token_type`), which one (`AWS_ACCESS_KEY_ID`), how to get it
/// (`--password-command`), whether one is needed (`--auth-required`).
const REFERENCE_ENDINGS: [&[u8]; 29] = [
    b"file",
    b"path",
    b"dir",
    b"fd",
    b"env",
    b"var",
    b"cmd",
    b"command",
    b"helper",
    b"prompt",
    b"type",
    b"len",
    b"length",
    b"id",
    b"name",
    b"user",
    b"username",
    b"url",
    b"uri",
    b"host",
    b"port",
    b"mode",
    b"method",
    b"jar",
    b"required",
    b"enabled",
    b"disabled",
    b"timeout",
    b"ttl",
];

/// What `name` says about its value. Case is folded and `-`, `_`, `.` are dropped first,
/// so `--api-key`, `API_KEY` and `apikey` are one name.
fn classify(name: &str) -> Kind {
    let mut stack = [0u8; 64];
    let heap: Vec<u8>;
    let separator = |b: &u8| matches!(b, b'-' | b'_' | b'.' | b' ');
    let folded: &[u8] = if name.len() <= stack.len() {
        let mut n = 0;
        for b in name.bytes().filter(|b| !separator(b)) {
            stack[n] = b.to_ascii_lowercase();
            n += 1;
        }
        &stack[..n]
    } else {
        heap = name.bytes().filter(|b| !separator(b)).map(|b| b.to_ascii_lowercase()).collect();
        &heap
    };
    if folded.len() < 2 || NOT_SECRET.contains(&folded) {
        return Kind::Plain;
    }
    let last_part = || name.rsplit(['-', '_', '.']).next().unwrap_or(name);
    let secret = has_secret_word(folded)
        || SECRET_ENDINGS.iter().any(|e| folded.ends_with(e))
        || SECRET_PARTS.iter().any(|p| folded.ends_with(p.as_bytes()) && last_part().eq_ignore_ascii_case(p));
    if !secret {
        return Kind::Plain;
    }
    let first_part = name.trim_start_matches('-').split(['-', '_', '.']).next().unwrap_or("");
    let switch =
        first_part.len() < name.len() && SWITCH_PREFIXES.iter().any(|p| first_part.as_bytes().eq_ignore_ascii_case(p));
    // Vault's `secret_id` is a credential, unlike other ids.
    let reference = REFERENCE_ENDINGS.iter().any(|e| folded.ends_with(e)) && !folded.ends_with(b"secretid");
    if switch || reference { Kind::Reference } else { Kind::Secret }
}

/// Words that make a name secret wherever they stand in it, after folding.
const SECRET_WORDS: [&[u8]; 14] = [
    b"password",
    b"passwd",
    b"passphrase",
    b"privatekey",
    b"secret",
    b"signature",
    b"token",
    b"apikey",
    b"accesskey",
    b"accountkey",
    b"authoriz",
    b"credential",
    b"cookie",
    b"bearer",
];

/// The first four letters of each of [`SECRET_WORDS`] (and `auth`), as numbers.
const SECRET_STARTS: [u32; 12] = {
    let starts = [
        *b"pass", *b"priv", *b"secr", *b"sign", *b"toke", *b"apik", *b"acce", *b"acco", *b"auth", *b"cred", *b"cook",
        *b"bear",
    ];
    let mut out = [0u32; 12];
    let mut i = 0;
    while i < out.len() {
        out[i] = u32::from_le_bytes(starts[i]);
        i += 1;
    }
    out
};

/// Whether a folded name holds one of [`SECRET_WORDS`], or `auth` not followed by `or`
/// (`--auth`, `oauth` but not `--author`). This runs for most options of every line, so
/// each position costs a few comparisons of four letters at once, and only a match of
/// those looks further.
fn has_secret_word(folded: &[u8]) -> bool {
    folded.windows(4).enumerate().any(|(i, w)| {
        let four = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        if !SECRET_STARTS.contains(&four) {
            return false;
        }
        let rest = &folded[i..];
        if rest.starts_with(b"auth") {
            return !rest.starts_with(b"author") || rest.starts_with(b"authoriz");
        }
        SECRET_WORDS.iter().any(|word| rest.starts_with(word))
    })
}

/// An option or variable name: letters, digits, `_`, `-`, `.`, starting with a letter.
fn is_name(name: &str) -> bool {
    name.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// A header name: letters, digits, `-` and `_`.
fn is_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

/// Lowercase letters with `-` or `_` between words, starting with one of the ways
/// option names that start with `p` do (`-password`, `-passin`, `-proxy-pass`).
fn is_lowercase_option(body: &str) -> bool {
    ["pass", "pw", "proxy", "priv", "pin", "pgp", "pkcs"].iter().any(|p| body.starts_with(p))
        && body.bytes().all(|b| b.is_ascii_lowercase() || matches!(b, b'-' | b'_'))
}

/// curl's `-u`/`--user` and `--proxy-user` take `user:password`, its `--cert` and
/// `--proxy-cert` `file:password`.
fn is_user_option(name: &str, long: bool) -> bool {
    long && ["user", "proxy-user", "cert", "proxy-cert"].iter().any(|n| name.eq_ignore_ascii_case(n))
}

/// HTTP authentication schemes, which come before the secret in a header's value.
fn is_auth_scheme(word: &str) -> bool {
    ["bearer", "basic", "token", "digest", "bot"].iter().any(|s| word.eq_ignore_ascii_case(s))
}

/// Text as it may travel and be shown: tabs and line breaks become spaces, other control
/// characters (terminal escapes, say) become `?`. Names and command lines are chosen by
/// whoever started a process, and a monitor must not pass their escapes on.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\t' | '\n' | '\r' => ' ',
            c if c.is_control() => '?',
            c => c,
        })
        .collect()
}

fn truncate(line: String) -> String {
    let mut line = if line.chars().any(char::is_control) { printable(&line) } else { line };
    if let Some((cut, _)) = line.char_indices().nth(MAX_CMD_CHARS) {
        line.truncate(cut);
        line.push('…');
    }
    line
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        /// Whatever text a process puts on its command line, redaction neither panics
        /// (a cut inside a multi-byte character would) nor changes a line twice.
        #[test]
        fn any_text_is_redacted_without_panicking(
            text in "\\PC{0,120}",
            parts in proptest::collection::vec(
                "(https?://|hooks\\.slack\\.com|discord\\.com/api/webhooks/|--?[a-z]{0,8}|[=:@?;&#/ \t]|[a-zA-Z0-9éß€😀]{0,10}\
                 |[\"\\\\%,{}]|sqlplus |-U |-p |/p:|eyJ|ghp_|xoxb-|sk-|AKIA|[A-Z0-9]{16}|[a-zA-Z0-9]{30})",
                0..16,
            ),
        ) {
            let joined: String = parts.concat();
            for line in [text.as_str(), joined.as_str()] {
                let once = redact(line).into_owned();
                prop_assert_eq!(redact(&once).into_owned(), once.clone());
                let _ = command_line(&[line, line]);
                let mut owned = line.to_owned();
                redact_in_place(&mut owned);
            }
        }
    }

    proptest! {
        /// Arguments with spaces in them (whose ends the agent knows) are masked without
        /// panicking, and what comes out is stable on the collector once it has masked it.
        #[test]
        fn any_arguments_are_masked_without_panicking(
            args in proptest::collection::vec(
                "(--?[a-z]{0,8}|[a-zA-Z0-9é ]{0,12}|password|login|vault|htpasswd|-b|wpa_passphrase|-p|;|\
                 auth=\\(\"a\",|b\"\\)|//h/:_authToken|Pwd=x;A=b| )",
                0..10,
            ),
        ) {
            let agent = command_line(&args);
            let collector = redact(&agent).into_owned();
            prop_assert_eq!(redact(&collector).into_owned(), collector);
        }
    }

    use super::*;

    fn line(args: &[&str]) -> String {
        command_line(args)
    }

    /// Real command lines, as one string each (split on spaces into arguments), and what
    /// leaves the machine.
    const CASES: &[(&str, &str)] = &[
        // Harmless lines stay as they are.
        ("nginx -g daemon off;", "nginx -g daemon off;"),
        ("python3 -m http.server 8000", "python3 -m http.server 8000"),
        ("ls -la", "ls -la"),
        ("ls --color=auto -la", "ls --color=auto -la"),
        ("curl https://example.com/a?b=c", "curl https://example.com/a?b=c"),
        ("grep -ri password /etc", "grep -ri password /etc"),
        ("app -password-file /run/secrets/db", "app -password-file /run/secrets/db"),
        ("app --password-file=/run/secrets/db", "app --password-file=/run/secrets/db"),
        ("app --token-type bearer --author ada", "app --token-type bearer --author ada"),
        ("process_api --auth-required --no-password -v", "process_api --auth-required --no-password -v"),
        (
            "env AWS_ACCESS_KEY_ID=AKIA123 DB_PASSWORD_FILE=/s PWD=/root",
            "env AWS_ACCESS_KEY_ID=AKIA123 DB_PASSWORD_FILE=/s PWD=/root",
        ),
        ("cp -a /src /dst", "cp -a /src /dst"),
        ("sort -u names.txt", "sort -u names.txt"),
        // `-p` followed by anything is taken for MySQL's password flag.
        (
            "/usr/lib/firefox/firefox -contentproc -childID 1 -isForBrowser -prefsLen 31",
            "/usr/lib/firefox/firefox -contentproc -childID 1 -isForBrowser -p*** 31",
        ),
        ("postgres: checkpointer", "postgres: checkpointer"),
        ("sshd: root@pts/0", "sshd: root@pts/0"),
        ("git -c credential.helper=store fetch", "git -c credential.helper=store fetch"),
        (
            "curl -X POST -d name=ada&age=3 https://api.example/v1/users?page=2#top",
            "curl -X POST -d name=ada&age=3 https://api.example/v1/users?page=2#top",
        ),
        // What redaction always did.
        ("mysql -uroot -pS3cret db", "mysql -uroot -p*** db"),
        ("mysql -u root -p s3cret", "mysql -u root -p ***"),
        ("app --token=abc --db-token=x", "app --token=*** --db-token=***"),
        ("app --api-key=abc -auth=xyz", "app --api-key=*** -auth=***"),
        ("app --token abc --port 80", "app --token *** --port 80"),
        ("app --password hunter2", "app --password ***"),
        ("env DB_PASSWORD=x1 HOME=/root", "env DB_PASSWORD=*** HOME=/root"),
        ("SECRET=1 API_KEY=2 my.secret.key=3", "SECRET=*** API_KEY=*** my.secret.key=***"),
        ("psql postgres://app:pw@db:5432/app", "psql postgres://app:***@db:5432/app"),
        ("git clone https://ghp_TOKEN@github.com/x/y", "git clone https://***@github.com/x/y"),
        ("app --upstream=http://u:p@a/ http://b/", "app --upstream=http://u:***@a/ http://b/"),
        ("curl https://user:pass@host/x", "curl https://user:***@host/x"),
        ("app --password", "app --password"),
        // Single-dash long options (Java, Go, keytool, openssl).
        ("vault -token s.abc123 status", "vault -token *** status"),
        ("keytool -list -keystore ks.jks -storepass changeit", "keytool -list -keystore ks.jks -storepass ***"),
        (
            "keytool -importkeystore -srcstorepass a -destkeypass b",
            "keytool -importkeystore -srcstorepass *** -destkeypass ***",
        ),
        ("app -password hunter2 -v", "app -password *** -v"),
        ("openssl pkcs12 -passin pass:hunter2 -passout pass:x", "openssl pkcs12 -passin *** -passout ***"),
        ("mysql -ppassword db", "mysql -p*** ***"),
        ("mysql -pMyPassw0rd db", "mysql -p*** db"),
        ("app -apiKey=abc -secret xyz", "app -apiKey=*** -secret ***"),
        (
            "java -Dserver.port=8080 -Djavax.net.ssl.trustStorePassword=x -jar a.jar",
            "java -Dserver.port=8080 -Djavax.net.ssl.trustStorePassword=*** -jar a.jar",
        ),
        // Variables and options the old rules missed.
        ("env MYSQL_PWD=hunter2 mysql", "env MYSQL_PWD=*** mysql"),
        ("x11vnc --pass hunter2 -rfbport 5900", "x11vnc --pass *** -rfbport 5900"),
        ("STRIPE_KEY=sk_live_1 node app.js", "STRIPE_KEY=*** node app.js"),
        ("bitcoind -rpcpassword=hunter2 -rpcuser=btc", "bitcoind -rpcpassword=*** -rpcuser=btc"),
        // curl's user:password, redis-cli's -a.
        ("curl -u ada:hunter2 https://x", "curl -u ada:*** https://x"),
        ("curl --user=ada:hunter2 --proxy-user bob:pw https://x", "curl --user=ada:*** --proxy-user bob:*** https://x"),
        ("curl -uada:hunter2 https://x", "curl -uada:*** https://x"),
        ("redis-cli -h cache -a hunter2 ping", "redis-cli -h cache -a *** ping"),
        ("/usr/bin/redis-cli -a hunter2", "/usr/bin/redis-cli -a ***"),
        ("sh -c redis-cli -a pw ping; cp -a src dst", "sh -c redis-cli -a *** ping; cp -a src dst"),
        // Query strings and webhooks.
        ("curl https://api.example/v1?api_key=abc&page=2", "curl https://api.example/v1?api_key=***&page=2"),
        (
            "curl https://x.blob.core.windows.net/c/f?sv=2024&sig=abc%3D&se=1",
            "curl https://x.blob.core.windows.net/c/f?sv=2024&sig=***&se=1",
        ),
        ("wget https://maps.example/api?key=AIza123#map", "wget https://maps.example/api?key=***#map"),
        ("curl https://h/cb?access_token=abc&signature=def", "curl https://h/cb?access_token=***&signature=***"),
        ("curl https://h/a?next=https://i/b?token=abc", "curl https://h/a?next=https://i/b?token=***"),
        ("curl -d user=ada&password=hunter2 https://h/login", "curl -d user=ada&password=*** https://h/login"),
        (
            "curl https://hooks.slack.com/services/T0001/B0002/XXXXXXXXXXXXXXXX",
            "curl https://hooks.slack.com/services/T0001/B0002/***",
        ),
        (
            "notify --url=https://discord.com/api/webhooks/1234/abcDEF-_x",
            "notify --url=https://discord.com/api/webhooks/1234/***",
        ),
        (
            "curl https://discordapp.com/api/webhooks/1234/abc/slack",
            "curl https://discordapp.com/api/webhooks/1234/***",
        ),
        ("curl https://chat.example/hooks/xk3jd8", "curl https://chat.example/hooks/***"),
        (
            "curl https://api.telegram.org/bot123456:ABC-def/sendMessage",
            "curl https://api.telegram.org/bot123456:***/sendMessage",
        ),
        // Connection strings and headers.
        (
            "app Server=db;Database=app;User Id=sa;Password=S3cret;",
            "app Server=db;Database=app;User Id=sa;Password=***;",
        ),
        ("app --conn=Password=x;Server=db", "app --conn=Password=***;Server=db"),
        (
            "az DefaultEndpointsProtocol=https;AccountName=a;AccountKey=abc==;",
            "az DefaultEndpointsProtocol=https;AccountName=a;AccountKey=***;",
        ),
        ("curl -H X-Api-Key: abc123 https://h", "curl -H X-Api-Key: *** https://h"),
        ("curl -H X-Api-Key:abc123 https://h", "curl -H X-Api-Key:*** https://h"),
        ("curl -H Authorization: Bearer abc.def https://h", "curl -H Authorization: Bearer *** https://h"),
        ("curl -H Authorization: token ghp_x https://h", "curl -H Authorization: token *** https://h"),
        ("curl -H Cookie: session=abc https://h", "curl -H Cookie: *** https://h"),
        ("curl -H 'PRIVATE-TOKEN: glpat-x' https://h", "curl -H 'PRIVATE-TOKEN: *** https://h"),
        // A secret option whose value is hidden hides its own next word too.
        ("app --token --password hunter2", "app --token *** ***"),
        // Secrets in an option's value: `--opt=NAME=VALUE` and `--opt=Header: VALUE`.
        (
            "kubectl create secret generic x --from-literal=password=S3cret",
            "kubectl create secret generic x --from-literal=password=***",
        ),
        ("docker run --env=DB_PASSWORD=S3cret -e DEBUG=1 app", "docker run --env=DB_PASSWORD=*** -e DEBUG=1 app"),
        ("docker run --env DB_PASSWORD=S3cret app", "docker run --env DB_PASSWORD=*** app"),
        ("app --set=image.tag=v1 --set=db.password=x", "app --set=image.tag=v1 --set=db.password=***"),
        ("wget --header=X-Api-Key: abc123 https://h", "wget --header=X-Api-Key: *** https://h"),
        ("wget --header=X-Api-Key:abc123 https://h", "wget --header=X-Api-Key:*** https://h"),
        ("wget --header \"X-Api-Key: abc123\" https://h", "wget --header \"X-Api-Key: *** https://h"),
        ("wget --header=Authorization: Bearer abc https://h", "wget --header=Authorization: Bearer *** https://h"),
        // A scheme glued to the header name: the token after it is the secret.
        ("curl -H Authorization:Bearer abc.def https://h", "curl -H Authorization:Bearer *** https://h"),
        ("curl -H \"Authorization: Bearer abc.def\" https://h", "curl -H \"Authorization: Bearer *** https://h"),
        ("curl -H Authorization:Basic YWRhOmh1bnRlcjI= https://h", "curl -H Authorization:Basic *** https://h"),
        // Programs whose one-letter flag takes the password.
        ("sqlcmd -S db -U sa -P S3cret -Q select", "sqlcmd -S db -U sa -P *** -Q select"),
        ("/opt/mssql-tools18/bin/sqlcmd -PS3cret", "/opt/mssql-tools18/bin/sqlcmd -P***"),
        ("zip -P S3cret backup.zip notes.txt", "zip -P *** backup.zip notes.txt"),
        ("unzip -P S3cret backup.zip", "unzip -P *** backup.zip"),
        ("ldapsearch -x -D cn=admin,dc=x -w S3cret -b dc=x", "ldapsearch -x -D cn=admin,dc=x -w *** -b dc=x"),
        (
            "ldapmodify -H ldap://h -D cn=admin -w S3cret -f x.ldif",
            "ldapmodify -H ldap://h -D cn=admin -w *** -f x.ldif",
        ),
        // ... and only theirs: elsewhere those flags are harmless.
        ("grep -P \\d+ log.txt", "grep -P \\d+ log.txt"),
        ("cp -P link dst", "cp -P link dst"),
        ("xargs -P 4 -n 1 gzip", "xargs -P 4 -n 1 gzip"),
        ("wc -w notes.txt", "wc -w notes.txt"),
        ("zip -r out.zip dir", "zip -r out.zip dir"),
        ("sh -c zip -P pw a.zip f; grep -P x y", "sh -c zip -P *** a.zip f; grep -P x y"),
        ("ldapsearch -x -W -b dc=x", "ldapsearch -x -W -b dc=x"),
        // JSON bodies, as curl sends them.
        (
            "curl -d '{\"user\":\"ada\",\"password\":\"hunter2\"}' https://h",
            "curl -d '{\"user\":\"ada\",\"password\":\"***\"}' https://h",
        ),
        ("curl --data '{\"token\": \"abc\"}' https://h", "curl --data '{\"token\": \"***\"}' https://h"),
        ("app --json {\"api_key\":\"abc\",\"n\":1}", "app --json {\"api_key\":\"***\",\"n\":1}"),
        ("curl -d {\"pin\":1234,\"ok\":true}", "curl -d {\"pin\":1234,\"ok\":true}"),
        ("curl -d {\"secret\":1234,\"ok\":true}", "curl -d {\"secret\":***,\"ok\":true}"),
        (
            "curl -d '{\"password\": \"correct horse battery\", \"user\": \"ada\"}'",
            "curl -d '{\"password\": \"*** *** ***\", \"user\": \"ada\"}'",
        ),
        ("sh -c curl -d {\\\"token\\\":\\\"abc\\\"} https://h", "sh -c curl -d {\\\"token\\\":\\\"***\\\"} https://h"),
        // Mount option lists.
        (
            "mount -t cifs //srv/share /mnt -o username=ada,password=hunter2,vers=3.0",
            "mount -t cifs //srv/share /mnt -o username=ada,password=***,vers=3.0",
        ),
        ("mount.cifs //srv/s /mnt -o pass=hunter2", "mount.cifs //srv/s /mnt -o pass=***"),
        (
            "mount -t cifs //srv/s /mnt -o credentials=/etc/smb.cred,uid=1000",
            "mount -t cifs //srv/s /mnt -o credentials=/etc/smb.cred,uid=1000",
        ),
        (
            "mount -o credentials=/etc/samba/share.cred //srv/s /mnt",
            "mount -o credentials=/etc/samba/share.cred //srv/s /mnt",
        ),
        // Samba's user%password, Oracle's user/password@db.
        ("smbclient //srv/share -U ada%hunter2", "smbclient //srv/share -U ada%***"),
        ("smbclient //srv/share -Uada%hunter2", "smbclient //srv/share -Uada%***"),
        ("rpcclient -U DOM/ada%hunter2 srv", "rpcclient -U DOM/ada%*** srv"),
        ("date -u +%Y-%m-%d", "date -u +%Y-%m-%d"),
        ("sqlplus scott/tiger@orcl @/tmp/report.sql", "sqlplus scott/***@orcl @/tmp/report.sql"),
        ("sqlplus -s scott/tiger", "sqlplus -s scott/***"),
        ("/u01/app/oracle/bin/sqlplus / as sysdba", "/u01/app/oracle/bin/sqlplus / as sysdba"),
        ("rman target sys/p@ss@//db:1521/orcl", "rman target sys/***@//db:1521/orcl"),
        ("expdp userid=scott/tiger@orcl dumpfile=x.dmp", "expdp userid=scott/***@orcl dumpfile=x.dmp"),
        ("cp a/b c/d", "cp a/b c/d"),
        // Windows options.
        ("cmdkey /add:srv /user:ada /pass:hunter2", "cmdkey /add:srv /user:ada /pass:***"),
        ("wmic /node:srv /user:ada /password:hunter2 os get", "wmic /node:srv /user:ada /password:*** os get"),
        ("tool.exe /u:ada /p:hunter2", "tool.exe /u:ada /p:***"),
        (
            "msbuild app.sln /p:Configuration=Release /p:DbPassword=x",
            "msbuild app.sln /p:Configuration=Release /p:DbPassword=***",
        ),
        // --pwd, which is not the shell's PWD.
        ("app --pwd hunter2 -v", "app --pwd *** -v"),
        ("app --pwd=hunter2", "app --pwd=***"),
        ("app -pwd hunter2", "app -pwd ***"),
        ("env PWD=/root OLDPWD=/tmp app", "env PWD=/root OLDPWD=/tmp app"),
        // Token shapes, whatever names them.
        ("app ghp_0123456789abcdefABCDEF0123456789abcd", "app ***"),
        (
            "git push https://x-access:github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz@github.com/o/r",
            "git push https://x-access:***@github.com/o/r",
        ),
        ("app --config=github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz", "app --config=***"),
        ("slack-notify xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "slack-notify ***"),
        ("aws-tool AKIAIOSFODNN7EXAMPLE wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "aws-tool *** ***"),
        ("app --access AKIAIOSFODNN7EXAMPLE -v", "app --access *** -v"),
        (
            "app --access-key-id AKIAIOSFODNN7EXAMPLE --secret-access-key wJalrXUtnFEMI/K7MDENG",
            "app --access-key-id *** --secret-access-key ***",
        ),
        ("aws configure set aws_access_key_id AKIAIOSFODNN7EXAMPLE", "aws configure set aws_access_key_id ***"),
        (
            "aws configure set aws_secret_access_key wJalrXUtnFEMI/K7MDENG",
            "aws configure set aws_secret_access_key ***",
        ),
        ("app eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dBjftJeZ4CVPmB92K27uhbUJU1p1r_wW1gFWFOEjXk -v", "app *** -v"),
        ("app --header=X:eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.sig", "app --header=X:***"),
        ("python bot.py sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z", "python bot.py ***"),
        ("node pay.js --stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc", "node pay.js --stripe ***"),
        // ... and what only looks like one stays.
        (
            "python train.py /data/sk-learn-model-checkpoint-final-v2",
            "python train.py /data/sk-learn-model-checkpoint-final-v2",
        ),
        ("ls /home/ada/eyJ-notes/AKIA-plans", "ls /home/ada/eyJ-notes/AKIA-plans"),
        ("git show 3f786850e387550fdab836ed7e6dc881de23001b", "git show 3f786850e387550fdab836ed7e6dc881de23001b"),
        // Ports are not passwords, not even after `-p`.
        ("nc -l -p 8080", "nc -l -p 8080"),
        ("ssh -p 2222 ada@host", "ssh -p 2222 ada@host"),
        ("ps -p 1234 -o pid,cmd", "ps -p 1234 -o pid,cmd"),
        ("mkdir -p /var/lib/app ./cache", "mkdir -p /var/lib/app ./cache"),
        ("sshpass -p /not/a/path ssh host", "sshpass -p *** ssh host"),
        ("docker run -p 8080:80 -p 127.0.0.1:5432:5432/tcp pg", "docker run -p 8080:80 -p 127.0.0.1:5432:5432/tcp pg"),
        ("psql -h db --port 5432 -U app", "psql -h db --port 5432 -U app"),
        ("cat /path/to/pass.txt", "cat /path/to/pass.txt"),
        ("app --config /etc/app/password.conf", "app --config /etc/app/password.conf"),
        ("sshpass -p 1234 ssh host", "sshpass -p *** ssh host"),
        ("mysql -p 123456789 db", "mysql -p *** db"),
        // ODBC connection strings, where `Pwd` is the password.
        ("isql Driver={ODBC};Server=db;Uid=sa;Pwd=0dbcSecret;", "isql Driver={ODBC};Server=db;Uid=sa;Pwd=***;"),
        ("app Pwd=0dbcSecret;Server=db;Uid=sa", "app Pwd=***;Server=db;Uid=sa"),
        ("app --conn=Server=db;Uid=sa;Pwd=0dbcSecret", "app --conn=Server=db;Uid=sa;Pwd=***"),
        ("sh -c cd /tmp; PWD=/root; ls", "sh -c cd /tmp; PWD=/root; ls"),
        ("git log --format=%H;%s", "git log --format=%H;%s"),
        // npm's settings and tokens.
        (
            "npm config set //registry.npmjs.org/:_authToken=npm_abcdefghijklmnopqrstuvwxyz0123456789",
            "npm config set //registry.npmjs.org/:_authToken=***",
        ),
        (
            "npm config set //registry.npmjs.org/:_authToken S3cret",
            "npm config set //registry.npmjs.org/:_authToken ***",
        ),
        ("npm config set _auth YWRhOnB3", "npm config set _auth ***"),
        ("node x.js npm_abcdefghijklmnopqrstuvwxyz0123456789", "node x.js ***"),
        ("npm config set //registry.npmjs.org/:email ada@x", "npm config set //registry.npmjs.org/:email ada@x"),
        ("env npm_config_cache=/tmp/npm npm_package_name=app", "env npm_config_cache=/tmp/npm npm_package_name=app"),
        // Vault's tokens.
        ("vault login hvs.CAESIJbS0aTQX1yR2tQ2OD3tZz5aMY", "vault login ***"),
        ("vault login s.AbCdEf0123456789abcdefgh", "vault login ***"),
        ("app --vault-token x hvs.CAESIJbS0aTQX1yR2tQ2OD3tZz5aMY", "app --vault-token *** ***"),
        (
            "vault login -method=userpass username=ada password=pw",
            "vault login -method=userpass username=ada password=***",
        ),
        ("vault status", "vault status"),
        ("vault kv get secret/app", "vault kv get secret/app"),
        ("vault login -method=oidc", "vault login -method=oidc"),
        // One-letter password flags of more programs.
        (
            "ipmitool -I lanplus -H bmc -U admin -P IpmiPw1 power status",
            "ipmitool -I lanplus -H bmc -U admin -P *** power status",
        ),
        ("mosquitto_pub -h broker -u bob -P MqttPw1 -t x -m hi", "mosquitto_pub -h broker -u bob -P *** -t x -m hi"),
        ("snmpwalk -v2c -c S3cretCommunity host", "snmpwalk -v2c -c *** host"),
        (
            "snmpget -v3 -u bob -a SHA -A SnmpAuth1 -x AES -X SnmpPriv1 host sysDescr.0",
            "snmpget -v3 -u bob -a SHA -A *** -x AES -X *** host sysDescr.0",
        ),
        ("snmpd -c /etc/snmp/snmpd.conf", "snmpd -c /etc/snmp/snmpd.conf"),
        ("lftp -u bob,LftpPw1 ftp.example.com", "lftp -u bob,*** ftp.example.com"),
        ("lftp -ubob,LftpPw1 ftp.example.com", "lftp -ubob,*** ftp.example.com"),
        ("ps -u root,daemon", "ps -u root,daemon"),
        ("ssh-keygen -t ed25519 -N KeygenPass1 -f key", "ssh-keygen -t ed25519 -N *** -f key"),
        ("ssh-keygen -p -P OldPass -N NewPass -f key", "ssh-keygen -p -P *** -N *** -f key"),
        ("openssl enc -aes256 -k EncKey123 -in f", "openssl enc -aes256 -k *** -in f"),
        ("openssl enc -aes256 -pass pass:EncKey123 -in f", "openssl enc -aes256 -pass *** -in f"),
        ("openssl enc -d -aes256 -p -kfile key.txt", "openssl enc -d -aes256 -p -kfile key.txt"),
        ("sort -k 2 names.txt", "sort -k 2 names.txt"),
        ("openssl req -new -keyout k.pem -out r.csr", "openssl req -new -keyout k.pem -out r.csr"),
        ("consul agent -encrypt=pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s=", "consul agent -encrypt=***"),
        ("consul agent -encrypt pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s=", "consul agent -encrypt ***"),
        ("gpg --encrypt notes.txt", "gpg --encrypt notes.txt"),
        // Passwords as positional words.
        ("nmcli dev wifi connect SSID password WifiPw1", "nmcli dev wifi connect SSID password ***"),
        ("nmcli con modify home wifi-sec.psk WifiPw1", "nmcli con modify home wifi-sec.psk ***"),
        ("mysqladmin -u root password NewRootPw1", "mysqladmin -u root password ***"),
        ("nmcli con show", "nmcli con show"),
        ("bcp db.dbo.t out t.dat -S srv -U sa -P BcpPw1 -c", "bcp db.dbo.t out t.dat -S srv -U sa -P *** -c"),
        ("isql -v mydsn sa IsqlPw1", "isql -v mydsn sa ***"),
        ("isql -S srv -U sa -P IsqlPw1", "isql -S srv -U sa -P ***"),
        ("isql mydsn", "isql mydsn"),
        ("curl --cert client.pem:CertPw1 https://h", "curl --cert client.pem:*** https://h"),
        ("curl --cert=client.pem:CertPw1 https://h", "curl --cert=client.pem:*** https://h"),
        ("curl --cert /etc/ssl/client.pem https://h", "curl --cert /etc/ssl/client.pem https://h"),
        ("nmcli con add type wifi 802-1x.password Wpa2Pw1", "nmcli con add type wifi 802-1x.password ***"),
        (
            "rclone config create r2 s3 access_key_id AKID secret_access_key RcloneKey1",
            "rclone config create r2 s3 access_key_id AKID secret_access_key ***",
        ),
        ("rclone copy /data remote:bucket --transfers 4", "rclone copy /data remote:bucket --transfers 4"),
        (
            "ipmitool -I lanplus -H bmc -U admin -y 0102AB -k KgKey1 sel list",
            "ipmitool -I lanplus -H bmc -U admin -y *** -k *** sel list",
        ),
        ("htpasswd -b /etc/nginx/.htpasswd bob HtPw1", "htpasswd -b /etc/nginx/.htpasswd bob ***"),
        ("htpasswd -nb bob HtPw1", "htpasswd -nb bob ***"),
        ("htpasswd -p -b file bob HtPw1", "htpasswd -p -b file bob ***"),
        ("htpasswd -c /etc/htpasswd bob", "htpasswd -c /etc/htpasswd bob"),
        (
            "mc alias set myminio http://minio:9000 ACCESSKEY SecretKey1",
            "mc alias set myminio http://minio:9000 ACCESSKEY ***",
        ),
        (
            "mc config host add myminio http://minio:9000 ACCESSKEY SecretKey1",
            "mc config host add myminio http://minio:9000 ACCESSKEY ***",
        ),
        ("mc ls myminio/bucket", "mc ls myminio/bucket"),
        ("rabbitmqctl add_user bob RabbitPw1", "rabbitmqctl add_user bob ***"),
        ("rabbitmqctl change_password bob RabbitPw1", "rabbitmqctl change_password bob ***"),
        ("rabbitmqctl list_users", "rabbitmqctl list_users"),
        ("wpa_passphrase HomeWifi WpaPw1", "wpa_passphrase HomeWifi ***"),
        ("sh -c wpa_passphrase a b; echo c d", "sh -c wpa_passphrase a ***; echo c d"),
        // A secret tuple, and `--bearer`.
        ("python3 -c requests.get(u, auth=(\"bob\", \"PyPw1\"))", "python3 -c requests.get(u, auth=*** ***))"),
        ("python3 -c requests.get(u,auth=(\"bob\", \"PyPw1\"))", "python3 -c requests.get(u,auth=***, ***))"),
        ("python3 -c f(n, token=[\"a\", \"b\"], n=1)", "python3 -c f(n, token=*** ***], n=1)"),
        ("app --bearer Tok1 -v", "app --bearer *** -v"),
        ("snmp_exporter -c x", "snmp_exporter -c x"),
        ("app --bearer=Tok1", "app --bearer=***"),
    ];

    #[test]
    fn real_command_lines_come_out_masked() {
        let mut failures = Vec::new();
        for (input, expected) in CASES {
            let args: Vec<&str> = input.split(' ').collect();
            let got = command_line(&args);
            if got != *expected {
                failures.push(format!("{input}\n   got {got}\n  want {expected}"));
            }
            assert_eq!(redact(input), *expected, "redact over the joined line: {input}");
        }
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    }

    /// Arguments as the sampler reads them, and what leaves the machine: a secret that is
    /// one argument is masked whole, spaces and all.
    const ARGUMENT_CASES: &[(&[&str], &str, Option<&str>)] = &[
        (
            &["python3", "app.py", "--passphrase", "correct horse battery staple"],
            "python3 app.py --passphrase ***",
            None,
        ),
        (
            &["python3", "app.py", "--passphrase=correct horse battery staple", "-v"],
            "python3 app.py --passphrase=*** -v",
            None,
        ),
        (&["mysql", "-p", "my pass word", "db"], "mysql -p *** db", None),
        (&["mysql", "-pmy pass word", "db"], "mysql -p*** db", None),
        (&["app", "--token", "a b", "--password", "c d e", "tail"], "app --token *** --password *** tail", None),
        (
            &["curl", "-H", "Authorization: Bearer", "a b", "https://h"],
            "curl -H Authorization: Bearer *** https://h",
            None,
        ),
        // ... and what must stay: a script keeps its words, an option only its value.
        (&["sh", "-c", "mysql -uroot -pS3cret db && echo hi"], "sh -c mysql -uroot -p*** db && echo hi", None),
        (&["sh", "-c", "DB_PASSWORD=x app --verbose"], "sh -c DB_PASSWORD=*** app --verbose", None),
        (&["app", "--title", "my password is here", "-v"], "app --title my password is here -v", None),
        (&["nc", "-l", "-p", "8080 extra", "x"], "nc -l -p 8080 extra x", None),
        // Positional secrets count by argument, and are masked whole.
        (
            &["wpa_passphrase", "My Home", "correct horse"],
            "wpa_passphrase My Home ***",
            Some("wpa_passphrase My *** ***"),
        ),
        (
            &["nmcli", "dev", "wifi", "connect", "My Home", "password", "my wifi pw"],
            "nmcli dev wifi connect My Home password ***",
            None,
        ),
        (&["rabbitmqctl", "add_user", "bob", "two words"], "rabbitmqctl add_user bob ***", None),
        (&["curl", "-u", "ada:correct horse", "https://h"], "curl -u ada:*** https://h", None),
        (&["smbclient", "//srv/s", "-U", "ada%correct horse"], "smbclient //srv/s -U ada%***", None),
        (&["lftp", "-u", "bob,correct horse", "ftp.example.com"], "lftp -u bob,*** ftp.example.com", None),
    ];

    #[test]
    fn secrets_with_spaces_are_masked_whole_on_the_agent() {
        let mut failures = Vec::new();
        for (args, expected, collector) in ARGUMENT_CASES {
            let got = command_line(args);
            if got != *expected {
                failures.push(format!("{args:?}\n   got {got}\n  want {expected}"));
            }
            // The collector, which only has the joined line, leaves it as it is, but for
            // a positional secret after words with spaces: it counts words, and masks
            // more.
            assert_eq!(redact(expected), collector.unwrap_or(expected), "{args:?}");
        }
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    }

    #[test]
    fn tabs_separate_words_as_spaces_do() {
        assert_eq!(line(&["sh", "-c", "app -password\thunter2"]), "sh -c app -password ***");
        assert_eq!(line(&["app\t--token\tabc"]), "app --token ***");
        // On the collector, a tab-separated line keeps its tabs.
        assert_eq!(redact("app\t--token\tabc\t-v"), "app\t--token\t***\t-v");
    }

    #[test]
    fn redacting_twice_changes_nothing() {
        for (input, expected) in CASES {
            assert_eq!(redact(expected), *expected, "{input}");
        }
        // Every sequence of three tricky words.
        let words = [
            "-p",
            "-pX",
            "-password",
            "-ppassword",
            "--token",
            "--user",
            "-u",
            "a:b",
            "X-Api-Key:",
            "Bearer",
            "v",
            "redis-cli",
            "-a",
            ";",
            "https://u:p@h/hooks/k",
            "?key=1&sig=2",
            "A=1;Password=2",
            "--pw=1",
            "***",
            "Authorization:",
            "-p***",
            "Password=x;",
            "http://hooks.slack.com/services/a/b/c",
            "&&",
            "x;",
            "bearer",
            "--token-type",
            "Cookie:",
            "-pass",
            "u:p;",
            "'--password=x'",
            "https://h/a?token=1;b",
            "-phttp://discord.com/api/webhooks/=",
            "-pa=b",
            "zip",
            "-P",
            "-Px",
            "ldappasswd",
            "-w",
            "--env=A_PASSWORD=x",
            "--set=db.password=x;y",
            "Authorization:Bearer",
            "--header=X-Api-Key:",
            "--header=X-Api-Key:v",
            "-U",
            "a%b",
            "{\"token\":",
            "\"x",
            "y\"}",
            "{\"pw\":\"x\"}",
            "sqlplus",
            "u/p@d",
            "/p:x",
            "/p:A_PASSWORD=B",
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "8080",
            "--pwd",
            "a=1,password=2",
            "ghp_0123456789abcdefABCDEF0123456789abcd",
            "aws_secret_access_key",
            "vault",
            "login",
            "htpasswd",
            "-b",
            "rabbitmqctl",
            "add_user",
            "nmcli",
            "password",
            "lftp",
            "//r/:_authToken",
            "auth=(\"a\",",
            "Pwd=x;A=b",
        ];
        for a in words {
            for b in words {
                for c in words {
                    let input = format!("{a} {b} {c} tail");
                    let once = redact(&input).into_owned();
                    assert_eq!(redact(&once), once, "{input}");
                }
            }
        }
    }

    #[test]
    fn nothing_to_mask_means_nothing_allocated() {
        for (input, expected) in CASES {
            if input == expected {
                assert!(matches!(redact(input), Cow::Borrowed(_)), "{input}");
            }
        }
        let mut cmd = String::from("app --password=***");
        let before = cmd.as_ptr();
        redact_in_place(&mut cmd);
        assert_eq!(cmd.as_ptr(), before, "an already masked line is left where it is");
        let mut cmd = String::from("app --password=hunter2");
        redact_in_place(&mut cmd);
        assert_eq!(cmd, "app --password=***");
    }

    #[test]
    fn masks_secrets_inside_a_shell_script_argument() {
        assert_eq!(
            line(&["sh", "-c", "mysql -uroot -pS3cret db && curl -H 'Authorization: Bearer abc.def' x"]),
            "sh -c mysql -uroot -p*** db && curl -H 'Authorization: Bearer *** x"
        );
    }

    #[test]
    fn modes_keep_all_the_program_or_nothing() {
        let args = ["/usr/bin/mysql", "-uroot", "-pS3cret", "db"];
        assert_eq!(command_line_with(&args, CmdlineMode::Full), "/usr/bin/mysql -uroot -p*** db");
        assert_eq!(command_line_with(&args, CmdlineMode::Exe), "/usr/bin/mysql");
        assert_eq!(command_line_with(&args, CmdlineMode::None), "");
        // A program that rewrote its title into its first argument.
        assert_eq!(command_line_with(&["nginx: worker process"], CmdlineMode::Exe), "nginx:");
        assert_eq!(command_line_with(&["https://u:pw@h/x --v"], CmdlineMode::Exe), "https://u:***@h/x");
        assert_eq!(command_line_with::<&str>(&[], CmdlineMode::Exe), "");
        for (text, mode) in [("full", CmdlineMode::Full), ("EXE", CmdlineMode::Exe), (" none ", CmdlineMode::None)] {
            assert_eq!(text.parse::<CmdlineMode>(), Ok(mode));
            assert_eq!(mode.to_string().parse::<CmdlineMode>(), Ok(mode));
        }
        assert_eq!("all".parse::<CmdlineMode>(), Err("must be full, exe or none (not \"all\")".to_owned()));
    }

    #[test]
    fn control_characters_never_pass() {
        assert_eq!(line(&["python3", "-c", "import x\nprint(1)\x1b[31m"]), "python3 -c import x print(1)?[31m");
        assert_eq!(printable("a\tb\u{7}c"), "a b?c");
    }

    #[test]
    fn bounds_the_length_on_a_character_boundary() {
        let long = "é".repeat(MAX_CMD_CHARS + 10);
        let out = line(&[&long]);
        assert_eq!(out.chars().count(), MAX_CMD_CHARS + 1);
        assert!(out.ends_with('…'));
        // A mask longer than what it hides does not take a line past the bound.
        let mut cmd = format!("{} -px", "a".repeat(MAX_CMD_CHARS - 3));
        redact_in_place(&mut cmd);
        assert_eq!(cmd.chars().count(), MAX_CMD_CHARS + 1);
    }

    /// The collector's cost: `redact` over this machine's real command lines, in
    /// nanoseconds per line. Run with
    /// `cargo test --release -p procyon --no-default-features --lib redact_cost -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn redact_cost() {
        let mut lines = Vec::new();
        // A saved set of lines (one a line) to compare runs on, else this machine's.
        if let Ok(file) = std::env::var("REDACT_COST_LINES") {
            lines = std::fs::read_to_string(file).unwrap().lines().map(str::to_owned).collect();
        }
        let from_proc = lines.is_empty();
        for entry in std::fs::read_dir("/proc").unwrap().filter(|_| from_proc) {
            let path = entry.unwrap().path();
            if let Ok(raw) = std::fs::read(path.join("cmdline")) {
                let args: Vec<String> = raw
                    .split(|b| *b == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                lines.push(args.join(" "));
            }
        }
        let bytes: usize = lines.iter().map(String::len).sum();
        println!("{} command lines, {} bytes on average", lines.len(), bytes / lines.len().max(1));
        // As the collector gets them from agents that redact (the usual case), and raw.
        let redacted: Vec<String> = lines.iter().map(|l| redact(l).into_owned()).collect();
        // The fastest of several batches: this machine is shared, and other work only
        // ever makes a batch slower.
        let fastest = |f: &dyn Fn(&str)| {
            (0..20)
                .map(|_| {
                    let started = std::time::Instant::now();
                    for _ in 0..100 {
                        lines.iter().for_each(|l| f(l));
                    }
                    started.elapsed().as_nanos() as f64 / (100 * lines.len()) as f64
                })
                .fold(f64::INFINITY, f64::min)
        };
        // For scale: copying each line, as storing it does anyway.
        let copy = fastest(&|l| drop(std::hint::black_box(std::hint::black_box(l).to_owned())));
        println!("copying a line: {copy:.0} ns");
        let raw = fastest(&|l| drop(std::hint::black_box(redact(std::hint::black_box(l)))));
        let masked = lines.iter().filter(|l| matches!(redact(l), Cow::Owned(_))).count();
        println!("redacting a raw line: {raw:.0} ns ({masked} of them masked)");
        let lines = &redacted;
        let again = (0..20)
            .map(|_| {
                let started = std::time::Instant::now();
                for _ in 0..100 {
                    for l in lines {
                        std::hint::black_box(redact(std::hint::black_box(l)));
                    }
                }
                started.elapsed().as_nanos() as f64 / (100 * lines.len()) as f64
            })
            .fold(f64::INFINITY, f64::min);
        println!("redacting an already redacted line (the collector's usual case): {again:.0} ns");
    }
}
