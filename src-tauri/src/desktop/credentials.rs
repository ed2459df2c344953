//! The remote collector's sign-in, kept in the OS keyring and nowhere else.
//!
//! One keyring entry per collector: service `procyon-desktop`, account the collector's
//! base URL, secret the JSON of [`StoredSession`] (the token with its user, role and
//! expiry, so the app can restore the session at start without asking the collector).
//!
//! On Linux the Secret Service (GNOME Keyring, KWallet) is used where the desktop runs
//! one. Where it does not (a minimal window manager, a D-Bus session without a keyring
//! daemon), the kernel's session keyring (keyutils) holds it instead: still the OS's
//! keyring, never a file, but forgotten at logout, so the user signs in again then.
//! Keyring calls block (D-Bus), so callers run them off the async threads.

use serde::{Deserialize, Serialize};

use crate::model::api::Role;
use crate::model::desktop::CommandError;

/// The keyring service name.
pub const SERVICE: &str = "procyon-desktop";

/// What is kept for one collector.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredSession {
    /// The bearer token.
    pub token: String,
    /// Who signed in.
    pub username: String,
    /// Their role on that collector.
    pub role: Role,
    /// When the token stops working.
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

impl std::fmt::Debug for StoredSession {
    /// Never prints the token, so it cannot reach a log by accident.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSession")
            .field("token", &"****")
            .field("username", &self.username)
            .field("role", &self.role)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

fn keyring_error(e: keyring::Error) -> CommandError {
    CommandError::new(
        "keyring",
        format!("The OS keyring refused: {e}. Unlock your keyring (or start one) and try again."),
    )
}

/// The entry for `url`, in the store that works on this desktop.
fn entry(url: &str) -> Result<keyring::Entry, CommandError> {
    #[cfg(target_os = "linux")]
    {
        use keyring::secret_service::SsCredential;
        if let Ok(credential) = SsCredential::new_with_target(None, SERVICE, url) {
            let entry = keyring::Entry::new_with_credential(Box::new(credential));
            // A lookup tells whether a Secret Service answers at all.
            match entry.get_password() {
                Ok(_) | Err(keyring::Error::NoEntry) => return Ok(entry),
                Err(e) => tracing::info!("no Secret Service ({e}); using the kernel session keyring"),
            }
        }
        // keyutils needs a session keyring; a process started outside a login session
        // (a service, a test) may have none until one is made.
        let _ = linux_keyutils::KeyRing::from_special_id(linux_keyutils::KeyRingIdentifier::Session, true);
        let credential =
            keyring::keyutils::KeyutilsCredential::new_with_target(None, SERVICE, url).map_err(keyring_error)?;
        Ok(keyring::Entry::new_with_credential(Box::new(credential)))
    }
    #[cfg(not(target_os = "linux"))]
    {
        keyring::Entry::new(SERVICE, url).map_err(keyring_error)
    }
}

/// Keeps the session for `url`.
pub fn save(url: &str, session: &StoredSession) -> Result<(), CommandError> {
    let text = serde_json::to_string(session).map_err(|e| CommandError::new("internal", e.to_string()))?;
    entry(url)?.set_password(&text).map_err(keyring_error)
}

/// The session kept for `url`, if any. An entry that is not ours is ignored.
pub fn load(url: &str) -> Result<Option<StoredSession>, CommandError> {
    match entry(url)?.get_password() {
        Ok(text) => Ok(serde_json::from_str(&text).ok()),
        Err(keyring::Error::NoEntry) => Ok(None),
        Err(e) => Err(keyring_error(e)),
    }
}

/// Forgets the session for `url` (signing out). Nothing kept is not an error.
pub fn delete(url: &str) -> Result<(), CommandError> {
    match entry(url)?.delete_credential() {
        Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
        Err(e) => Err(keyring_error(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_token() {
        let s = StoredSession {
            token: "secret-token-value".into(),
            username: "ada".into(),
            role: Role::Operator,
            expires_at: chrono::Utc::now(),
        };
        let printed = format!("{s:?}");
        assert!(!printed.contains("secret-token-value"), "{printed}");
        assert!(printed.contains("ada"));
    }

    /// A real keyring round trip: the Secret Service when the test's session has one,
    /// else the kernel keyring (always there on Linux).
    #[cfg(target_os = "linux")]
    #[test]
    fn sessions_round_trip_through_the_os_keyring() {
        let url = format!("http://127.0.0.1:1/test-{}", std::process::id());
        let s = StoredSession {
            token: "t0k3n".into(),
            username: "ada".into(),
            role: Role::Admin,
            expires_at: chrono::DateTime::from_timestamp(2_000_000_000, 0).unwrap(),
        };
        assert_eq!(load(&url).unwrap(), None);
        save(&url, &s).unwrap();
        assert_eq!(load(&url).unwrap(), Some(s));
        delete(&url).unwrap();
        assert_eq!(load(&url).unwrap(), None);
        delete(&url).unwrap();
    }
}
