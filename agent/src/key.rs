//! The agent's API key: where it comes from, where `set-key` and `login` keep it, and
//! the [`Secret`] type that keeps it out of logs.
//!
//! [`resolve`] looks, in order, at `--api-key-file FILE`, the `PROCYON_API_KEY`
//! variable, the OS keyring (service `procyon-agent`, account the collector's
//! `host:port`, so keys for several collectors coexist) and the fallback key file
//! ([`Config::key_file`], mode 0600). The first found wins; a key file that other users
//! could read or write is refused, not used.
//!
//! Several collectors in the list are one fleet on one database, so one key serves them
//! all. The keyring entry is looked for under each collector's `host:port` in the
//! list's order (so a key stored when the agent knew one collector is still found once
//! others are added, in any position), and is stored under the first one's, with the
//! others' entries removed: one key for the list, never a stale second one that a
//! reordered list would bring back.
//!
//! Why the keyring is skipped as root: a root service (the systemd unit) has no login
//! session, so no Secret Service to read from; a key that `sudo procyon-agent set-key`
//! put in some user's session keyring would be invisible to the service. Kernel keyrings
//! (keyutils) are not used either: they do not survive a reboot. So on a server the key
//! lives in the 0600 file, and the keyring serves agents run by a desktop user.

use std::fmt;
use std::io::{Read, Write};
use std::path::Path;

use anyhow::{Context, bail};

use crate::config::Config;

/// The keyring service name under which keys are stored.
pub const KEYRING_SERVICE: &str = "procyon-agent";
/// Longest key file or standard input read (a key is ~50 bytes; this stops a wrong
/// path such as `/dev/zero` from being read forever).
const MAX_KEY_BYTES: u64 = 64 * 1024;
/// How long a keyring call may take: a locked keyring may wait for an unlock prompt
/// that nobody will answer on a server.
#[cfg(any(target_os = "linux", target_os = "macos", windows))]
const KEYRING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// An API key. Its `Debug` and `Display` print `Api-Key(****)`, so a key cannot reach a
/// log by accident; [`Secret::expose`] is the one way to the text.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// A key from `raw` (trimmed), which came from `source` (named in errors, e.g.
    /// "PROCYON_API_KEY"). Refuses an empty key and one with spaces or control
    /// characters: it goes into an HTTP header as it is.
    pub fn new(raw: &str, source: &str) -> anyhow::Result<Secret> {
        let key = raw.trim();
        if key.is_empty() {
            bail!(
                "{source} is empty: it should hold an API key (create one on the collector with `procyon apikey create --name LABEL`)"
            );
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            bail!("{source} does not hold an API key: a key is one word of printable characters");
        }
        Ok(Secret(key.to_owned()))
    }

    /// The key itself, for the `Authorization` header and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Api-Key(****)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Api-Key(****)")
    }
}

/// Finds the API key: `--api-key-file`, `PROCYON_API_KEY`, the OS keyring, then the
/// fallback key file. An error says what is wrong (a key file others can read, an empty
/// one) or, when there is no key anywhere, how to give one.
pub fn resolve(config: &Config) -> anyhow::Result<Secret> {
    resolve_with(config, &*system_vault())
}

/// Stores `key` for `config`'s collectors: in the OS keyring when one is usable (not as
/// root, see the module's docs), else in [`Config::key_file`], created with mode 0600.
/// Returns where it went, for the user: "in the system keyring (...)" or
/// "in FILE (mode 0600)".
pub fn store(config: &Config, key: &Secret) -> anyhow::Result<String> {
    store_with(config, key, &*system_vault())
}

/// Removes the stored key: the keyring entries for `config`'s collectors and the key file.
/// Returns what was removed, for the user. `--api-key-file` and `PROCYON_API_KEY` are
/// the user's own and are left alone (the message mentions them if set).
pub fn forget(config: &Config) -> anyhow::Result<String> {
    forget_with(config, &*system_vault())
}

/// Reads a key from `input` (standard input for `set-key`), at most 64 KiB.
pub fn read_key(input: impl Read) -> anyhow::Result<Secret> {
    let mut text = String::new();
    input.take(MAX_KEY_BYTES).read_to_string(&mut text).context("cannot read the API key from standard input")?;
    Secret::new(&text, "standard input")
}

/// Where keys can be kept besides files: the OS keyring, or a stand-in in tests.
/// `Err` means "not usable here", with the reason.
trait Vault {
    /// `Err` with the reason when it is known beforehand that the vault cannot be used.
    fn usable(&self) -> Result<(), String> {
        Ok(())
    }
    fn get(&self, account: &str) -> Result<Option<String>, String>;
    fn set(&self, account: &str, key: &str) -> Result<(), String>;
    /// `Ok(true)` if there was an entry to delete.
    fn delete(&self, account: &str) -> Result<bool, String>;
}

/// No keyring, and why.
struct NoVault(&'static str);

impl Vault for NoVault {
    fn usable(&self) -> Result<(), String> {
        Err(self.0.to_owned())
    }
    fn get(&self, _: &str) -> Result<Option<String>, String> {
        Err(self.0.to_owned())
    }
    fn set(&self, _: &str, _: &str) -> Result<(), String> {
        Err(self.0.to_owned())
    }
    fn delete(&self, _: &str) -> Result<bool, String> {
        Err(self.0.to_owned())
    }
}

fn system_vault() -> Box<dyn Vault> {
    if crate::config::running_as_root() {
        return Box::new(NoVault("running as root: a system service has no login session to read a keyring from"));
    }
    #[cfg(any(target_os = "linux", target_os = "macos", windows))]
    {
        Box::new(OsKeyring)
    }
    #[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
    {
        Box::new(NoVault("no keyring support on this operating system"))
    }
}

/// The OS keyring through the `keyring` crate: the Secret Service (D-Bus) on Linux, the
/// Keychain on macOS, the Credential Manager on Windows.
#[cfg(any(target_os = "linux", target_os = "macos", windows))]
struct OsKeyring;

#[cfg(any(target_os = "linux", target_os = "macos", windows))]
impl OsKeyring {
    /// Runs `op` on an entry in a thread, giving up after [`KEYRING_TIMEOUT`] (the
    /// thread is left to finish on its own).
    fn call<T: Send + 'static>(
        account: &str,
        op: impl FnOnce(&keyring::Entry) -> keyring::Result<T> + Send + 'static,
    ) -> Result<keyring::Result<T>, String> {
        let account = account.to_owned();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("keyring".into())
            .spawn(move || {
                let result = keyring::Entry::new(KEYRING_SERVICE, &account).and_then(|entry| op(&entry));
                let _ = tx.send(result);
            })
            .map_err(|e| format!("cannot start a thread for the keyring: {e}"))?;
        rx.recv_timeout(KEYRING_TIMEOUT)
            .map_err(|_| format!("the keyring did not answer within {} s", KEYRING_TIMEOUT.as_secs()))
    }
}

#[cfg(any(target_os = "linux", target_os = "macos", windows))]
impl Vault for OsKeyring {
    fn get(&self, account: &str) -> Result<Option<String>, String> {
        match OsKeyring::call(account, |e| e.get_password())? {
            Ok(key) => Ok(Some(key)),
            Err(keyring::Error::NoEntry) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }
    fn set(&self, account: &str, key: &str) -> Result<(), String> {
        let key = key.to_owned();
        OsKeyring::call(account, move |e| e.set_password(&key))?.map_err(|e| e.to_string())
    }
    fn delete(&self, account: &str) -> Result<bool, String> {
        match OsKeyring::call(account, |e| e.delete_credential())? {
            Ok(()) => Ok(true),
            Err(keyring::Error::NoEntry) => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// The keyring accounts for `config`'s collectors, `host:port` each, in the list's
/// order and each once (two URLs may differ only in their path); empty without a
/// collector.
fn accounts(config: &Config) -> Vec<String> {
    let mut accounts: Vec<String> = Vec::new();
    for url in &config.collectors {
        let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else { continue };
        let account = format!("{host}:{port}");
        if !accounts.contains(&account) {
            accounts.push(account);
        }
    }
    accounts
}

fn resolve_with(config: &Config, vault: &dyn Vault) -> anyhow::Result<Secret> {
    if let Some(path) = &config.api_key_file {
        return read_key_file(path);
    }
    if let Some(key) = &config.api_key {
        tracing::debug!("API key from {}", crate::config::API_KEY_ENV);
        return Ok(key.clone());
    }
    for account in accounts(config) {
        match vault.get(&account) {
            Ok(Some(key)) => {
                tracing::debug!(account, "API key from the system keyring");
                return Secret::new(&key, "the system keyring's entry");
            }
            Ok(None) => {}
            Err(why) => {
                tracing::debug!("system keyring not used: {why}");
                break;
            }
        }
    }
    match std::fs::symlink_metadata(&config.key_file) {
        Ok(_) => read_key_file(&config.key_file),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "no API key: pass --api-key-file FILE, set {}, or store one with `procyon-agent set-key` \
             (create a key on the collector with `procyon apikey create --name LABEL`)",
            crate::config::API_KEY_ENV
        ),
        Err(e) => bail!("cannot read the key file {}: {e}", config.key_file.display()),
    }
}

fn store_with(config: &Config, key: &Secret, vault: &dyn Vault) -> anyhow::Result<String> {
    let accounts = accounts(config);
    match (vault.usable(), accounts.split_first()) {
        // Known beforehand (root): the description says where the key went.
        (Err(why), _) => tracing::debug!("not using the system keyring: {why}"),
        (Ok(()), None) => tracing::info!("not using the system keyring: no collector is configured to name the entry"),
        (Ok(()), Some((account, others))) => match vault.set(account, key.expose()) {
            Ok(()) => {
                // A key left in the file from before would come back, stale, whenever the
                // keyring is unavailable; one under another collector of the list, if
                // the list were reordered.
                remove_if_exists(&config.key_file)?;
                for other in others {
                    if let Ok(true) = vault.delete(other) {
                        tracing::info!(account = %other, "removed the earlier key of this fleet from the system keyring");
                    }
                }
                return Ok(format!("in the system keyring (service {KEYRING_SERVICE}, account {account})"));
            }
            Err(why) => tracing::info!("the system keyring is not available: {why}"),
        },
    }
    write_private_file(&config.key_file, key)?;
    Ok(format!("in {} (mode 0600)", config.key_file.display()))
}

fn forget_with(config: &Config, vault: &dyn Vault) -> anyhow::Result<String> {
    let mut removed = Vec::new();
    for account in accounts(config) {
        match vault.delete(&account) {
            Ok(true) => removed.push(format!("the system keyring (account {account})")),
            Ok(false) => {}
            Err(why) => {
                tracing::debug!("system keyring not used: {why}");
                break;
            }
        }
    }
    if remove_if_exists(&config.key_file)? {
        removed.push(config.key_file.display().to_string());
    }
    let mut message = if removed.is_empty() {
        "no stored API key was found".to_owned()
    } else {
        format!("removed the API key from {}", removed.join(" and "))
    };
    if let Some(path) = &config.api_key_file {
        message += &format!("; --api-key-file {} still gives one", path.display());
    }
    if config.api_key.is_some() {
        message += &format!("; {} still gives one", crate::config::API_KEY_ENV);
    }
    Ok(message)
}

/// `Ok(true)` if the file was there and is now gone.
fn remove_if_exists(path: &Path) -> anyhow::Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}

/// Reads a key file, refusing one that other users can read or write.
fn read_key_file(path: &Path) -> anyhow::Result<Secret> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot read the API key file {}", path.display()))?;
    check_private(path, &file.metadata()?)?;
    let mut text = String::new();
    file.take(MAX_KEY_BYTES)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read the API key file {}", path.display()))?;
    Secret::new(&text, &format!("the API key file {}", path.display()))
}

/// Refuses a file whose mode lets group or others read or write it: readable, the key
/// is no longer a secret; writable, someone else chooses which collector account this
/// agent reports as.
#[cfg(unix)]
fn check_private(path: &Path, meta: &std::fs::Metadata) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o7777;
    let how = if mode & 0o044 != 0 {
        "readable"
    } else if mode & 0o022 != 0 {
        "writable"
    } else {
        return Ok(());
    };
    let p = path.display();
    bail!("{p} is {how} by other users (mode {mode:04o}); run `chmod 600 {p}`")
}

#[cfg(not(unix))]
fn check_private(_: &Path, _: &std::fs::Metadata) -> anyhow::Result<()> {
    Ok(())
}

/// Writes `key` to `path` through a temporary file created with mode 0600 (so the key is
/// never readable by others, not even between a write and a chmod), then renamed over
/// `path`. Creates the directory (mode 0700) if needed.
fn write_private_file(path: &Path, key: &Secret) -> anyhow::Result<()> {
    let context = || format!("cannot write the key file {}", path.display());
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).with_context(context)?;

    let mut tmp_name = path.file_name().with_context(context)?.to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    remove_if_exists(&tmp)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&tmp).and_then(|mut file| {
        file.write_all(key.expose().as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()
    });
    let renamed = written.and_then(|()| std::fs::rename(&tmp, path));
    if renamed.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    renamed.with_context(context)
}

// The tests check Unix file modes.
#[cfg(test)]
#[cfg(unix)]
mod tests {
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    use super::*;
    use crate::config::{Cli, Defaults, Flags, Sub, resolve as resolve_config};

    /// An in-memory keyring, or none at all.
    #[derive(Default)]
    struct FakeVault {
        entries: RefCell<HashMap<String, String>>,
        unavailable: bool,
    }

    impl Vault for FakeVault {
        fn get(&self, account: &str) -> Result<Option<String>, String> {
            if self.unavailable {
                return Err("no keyring".into());
            }
            Ok(self.entries.borrow().get(account).cloned())
        }
        fn set(&self, account: &str, key: &str) -> Result<(), String> {
            if self.unavailable {
                return Err("no keyring".into());
            }
            self.entries.borrow_mut().insert(account.into(), key.into());
            Ok(())
        }
        fn delete(&self, account: &str) -> Result<bool, String> {
            if self.unavailable {
                return Err("no keyring".into());
            }
            Ok(self.entries.borrow_mut().remove(account).is_some())
        }
    }

    const C: &str = "https://c.example:7450";

    fn no_keyring() -> FakeVault {
        FakeVault { unavailable: true, ..FakeVault::default() }
    }

    /// The settings of `procyon-agent --collector COLLECTOR set-key` with `dir` as the
    /// state directory (built by hand: parsing would read the process's environment).
    fn config(dir: &Path, collector: &str) -> Config {
        let urls = collector.split(',').map(|c| url::Url::parse(c).unwrap()).collect();
        let flags = Flags { collector: vec![crate::config::Collectors(urls)], ..Flags::default() };
        let cli = Cli { flags, command: Some(Sub::SetKey) };
        let defaults = Defaults { state_dir: Some(dir.to_path_buf()) };
        resolve_config(cli, None, None, &defaults).unwrap().0
    }

    fn write_mode(path: &Path, text: &str, mode: u32) {
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn mode_of(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn secret(key: &str) -> Secret {
        Secret::new(key, "test").unwrap()
    }

    #[test]
    fn a_key_file_others_can_read_or_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let p = path.display();
        write_mode(&path, "k-123\n", 0o644);
        let err = read_key_file(&path).unwrap_err().to_string();
        assert_eq!(err, format!("{p} is readable by other users (mode 0644); run `chmod 600 {p}`"));
        write_mode(&path, "k-123\n", 0o640);
        assert!(read_key_file(&path).unwrap_err().to_string().contains("readable by other users (mode 0640)"));
        write_mode(&path, "k-123\n", 0o620);
        assert!(read_key_file(&path).unwrap_err().to_string().contains("writable by other users (mode 0620)"));
        write_mode(&path, "  k-123\n\n", 0o600);
        assert_eq!(read_key_file(&path).unwrap().expose(), "k-123");
        write_mode(&path, "k-123", 0o400);
        assert_eq!(read_key_file(&path).unwrap().expose(), "k-123");
    }

    #[test]
    fn an_empty_or_malformed_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        write_mode(&path, " \n\t\n", 0o600);
        let err = read_key_file(&path).unwrap_err().to_string();
        assert!(err.starts_with(&format!("the API key file {} is empty", path.display())), "{err}");
        assert!(Secret::new("", "PROCYON_API_KEY").unwrap_err().to_string().starts_with("PROCYON_API_KEY is empty"));
        assert!(Secret::new("two words", "x").is_err());
        assert!(Secret::new("a\u{7}b", "x").is_err());
        assert!(read_key(&b""[..]).unwrap_err().to_string().starts_with("standard input is empty"));
        assert_eq!(read_key(&b"k-1\r\n"[..]).unwrap().expose(), "k-1");
    }

    #[test]
    fn debug_and_display_never_show_the_key() {
        let key = secret("pk_live_0123456789");
        assert_eq!(format!("{key:?}"), "Api-Key(****)");
        assert_eq!(format!("{key}"), "Api-Key(****)");
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(dir.path(), C);
        config.api_key = Some(key);
        let printed = format!("{config:?} {config:#?}");
        assert!(!printed.contains("pk_live") && printed.contains("Api-Key(****)"), "{printed}");
    }

    #[test]
    fn the_fallback_file_is_created_0600_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let config = config(&state, C);
        let stored = store_with(&config, &secret("k-1"), &no_keyring()).unwrap();
        assert_eq!(stored, format!("in {} (mode 0600)", state.join("api.key").display()));
        assert_eq!(mode_of(&state.join("api.key")), 0o600);
        assert_eq!(mode_of(&state), 0o700, "the directory it created");
        assert_eq!(resolve_with(&config, &no_keyring()).unwrap().expose(), "k-1");

        // Replacing a key whose file had been loosened gives a fresh 0600 file.
        std::fs::set_permissions(state.join("api.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
        store_with(&config, &secret("k-2"), &no_keyring()).unwrap();
        assert_eq!(mode_of(&state.join("api.key")), 0o600);
        assert_eq!(resolve_with(&config, &no_keyring()).unwrap().expose(), "k-2");
        let names: Vec<_> = std::fs::read_dir(&state).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["api.key"], "no temporary file left behind");
    }

    #[test]
    fn keys_are_found_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let vault = FakeVault::default();
        let mut config = config(dir.path(), C);
        let err = resolve_with(&config, &vault).unwrap_err().to_string();
        assert!(err.starts_with("no API key: pass --api-key-file FILE, set PROCYON_API_KEY"), "{err}");

        write_mode(&config.key_file, "from-fallback", 0o600);
        assert_eq!(resolve_with(&config, &vault).unwrap().expose(), "from-fallback");
        vault.set("c.example:7450", "from-keyring").unwrap();
        assert_eq!(resolve_with(&config, &vault).unwrap().expose(), "from-keyring");
        config.api_key = Some(secret("from-env"));
        assert_eq!(resolve_with(&config, &vault).unwrap().expose(), "from-env");
        let file: PathBuf = dir.path().join("given");
        write_mode(&file, "from-flag", 0o600);
        config.api_key_file = Some(file);
        assert_eq!(resolve_with(&config, &vault).unwrap().expose(), "from-flag");
        // An unusable keyring is passed over, not an error.
        config.api_key_file = None;
        config.api_key = None;
        assert_eq!(resolve_with(&config, &no_keyring()).unwrap().expose(), "from-fallback");
    }

    #[test]
    fn keys_for_several_collectors_coexist_in_the_keyring() {
        let dir = tempfile::tempdir().unwrap();
        let vault = FakeVault::default();
        let a = config(dir.path(), C);
        let b = config(dir.path(), "http://other.example");
        assert_eq!(
            store_with(&a, &secret("key-a"), &vault).unwrap(),
            "in the system keyring (service procyon-agent, account c.example:7450)"
        );
        store_with(&b, &secret("key-b"), &vault).unwrap();
        assert_eq!(resolve_with(&a, &vault).unwrap().expose(), "key-a");
        assert_eq!(resolve_with(&b, &vault).unwrap().expose(), "key-b");
        assert!(!a.key_file.exists(), "the keyring was usable: no file");
    }

    #[test]
    fn one_key_serves_a_list_of_collectors_and_an_existing_one_is_still_found() {
        let dir = tempfile::tempdir().unwrap();
        let vault = FakeVault::default();
        // Stored when the agent knew one collector.
        store_with(&config(dir.path(), C), &secret("old"), &vault).unwrap();
        // Found with that collector anywhere in a list.
        for list in [format!("{C},https://b.example"), format!("https://b.example,{C}")] {
            assert_eq!(resolve_with(&config(dir.path(), &list), &vault).unwrap().expose(), "old", "{list}");
        }
        // Stored for a list: under the first, and the list's other entries go.
        let list = config(dir.path(), "https://b.example,https://d.example:7450/x,https://d.example:7450/y");
        vault.set("d.example:7450", "stale").unwrap();
        let stored = store_with(&list, &secret("new"), &vault).unwrap();
        assert_eq!(stored, "in the system keyring (service procyon-agent, account b.example:443)");
        let mut left: Vec<_> = vault.entries.borrow().clone().into_iter().collect();
        left.sort();
        let want = [("b.example:443", "new"), (&C["https://".len()..], "old")];
        assert_eq!(left, want.map(|(a, k)| (a.to_owned(), k.to_owned())), "one key under the list's first");
        let reordered = config(dir.path(), "https://d.example:7450,https://b.example");
        assert_eq!(resolve_with(&reordered, &vault).unwrap().expose(), "new");
        // forget-key removes the list's entries, and only those.
        let message = forget_with(&reordered, &vault).unwrap();
        assert!(
            message.starts_with("removed the API key from the system keyring (account b.example:443)"),
            "{message}"
        );
        assert_eq!(vault.entries.borrow().len(), 1);
        // Without a keyring: the one key file, whatever the list.
        store_with(&list, &secret("filed"), &no_keyring()).unwrap();
        assert_eq!(resolve_with(&config(dir.path(), C), &no_keyring()).unwrap().expose(), "filed");
    }

    #[test]
    fn storing_in_the_keyring_removes_a_stale_file_and_forget_removes_both() {
        let dir = tempfile::tempdir().unwrap();
        let vault = FakeVault::default();
        let config = config(dir.path(), C);
        store_with(&config, &secret("old"), &no_keyring()).unwrap();
        assert!(config.key_file.exists());
        store_with(&config, &secret("new"), &vault).unwrap();
        assert!(!config.key_file.exists());

        write_mode(&config.key_file, "also", 0o600);
        let message = forget_with(&config, &vault).unwrap();
        assert_eq!(
            message,
            format!(
                "removed the API key from the system keyring (account c.example:7450) and {}",
                config.key_file.display()
            )
        );
        assert!(vault.entries.borrow().is_empty() && !config.key_file.exists());
        assert_eq!(forget_with(&config, &no_keyring()).unwrap(), "no stored API key was found");
    }
}
