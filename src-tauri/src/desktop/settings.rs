//! The app's settings file: `settings.json` in the app's configuration folder.
//!
//! It holds [`DesktopSettings`] and nothing secret (the remote sign-in token lives in
//! the OS keyring, see `credentials.rs`). A missing file means the defaults; a file that
//! cannot be read is kept aside as `settings.json.bad` and the defaults are used, so a
//! broken file never stops the app from opening.

use std::path::{Path, PathBuf};

use crate::model::desktop::{CollectorSettings, CommandError, DesktopSettings};

/// Where the settings live.
pub fn path(config_dir: &Path) -> PathBuf {
    config_dir.join("settings.json")
}

/// Reads the settings, or the defaults.
pub fn load(path: &Path) -> DesktopSettings {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return DesktopSettings::default(),
        Err(e) => {
            tracing::warn!("cannot read {}: {e}; using the default settings", path.display());
            return DesktopSettings::default();
        }
    };
    match serde_json::from_str::<DesktopSettings>(&text).map_err(|e| e.to_string()).and_then(|s| {
        check(&s).map_err(|e| e.detail)?;
        Ok(s)
    }) {
        Ok(s) => s,
        Err(e) => {
            let aside = path.with_extension("json.bad");
            tracing::warn!("{} is not valid ({e}); kept as {} and using the defaults", path.display(), aside.display());
            let _ = std::fs::rename(path, aside);
            DesktopSettings::default()
        }
    }
}

/// Writes the settings: to a temporary file, then renamed over the old one, so a crash
/// never leaves half a file.
pub fn save(path: &Path, settings: &DesktopSettings) -> Result<(), CommandError> {
    check(settings)?;
    let io =
        |e: std::io::Error| CommandError::new("io", format!("Cannot save the settings in {}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let text = serde_json::to_string_pretty(settings).map_err(|e| CommandError::new("internal", e.to_string()))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Refuses settings that cannot work, with a sentence saying why.
pub fn check(settings: &DesktopSettings) -> Result<(), CommandError> {
    check_collector(&settings.collector)?;
    if let Some(url) = &settings.remote_url {
        super::remote::base_url(url)?;
    }
    Ok(())
}

fn check_collector(c: &CollectorSettings) -> Result<(), CommandError> {
    c.bind.parse::<std::net::IpAddr>().map_err(|_| {
        CommandError::new(
            "invalid",
            format!(
                "`{}` is not an IP address to listen on: use 127.0.0.1 for this machine only, or 0.0.0.0 for every network.",
                c.bind
            ),
        )
    })?;
    // Port 0 (any free port) is allowed: the status then says which one was taken.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_gives_defaults_and_bad_file_is_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        assert_eq!(load(&p), DesktopSettings::default());
        assert!(!DesktopSettings::default().collector.enabled, "the built-in collector is off by default");

        std::fs::write(&p, "{ not json").unwrap();
        assert_eq!(load(&p), DesktopSettings::default());
        assert!(dir.path().join("settings.json.bad").exists());
        assert!(!p.exists());
    }

    #[test]
    fn saved_settings_read_back_and_bad_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(&dir.path().join("nested"));
        let s = DesktopSettings {
            close_to_tray: false,
            collector: CollectorSettings { enabled: true, port: 9000, ..CollectorSettings::default() },
            remote_url: None,
        };
        save(&p, &s).unwrap();
        assert_eq!(load(&p), s);

        let mut bad = s.clone();
        bad.collector.bind = "everywhere".into();
        let e = save(&p, &bad).unwrap_err();
        assert_eq!(e.code, "invalid");
        assert_eq!(load(&p), s, "a refused save changes nothing stored");

        bad = s.clone();
        bad.remote_url = Some("ftp://example.com".into());
        assert_eq!(save(&p, &bad).unwrap_err().code, "invalid");
    }
}
