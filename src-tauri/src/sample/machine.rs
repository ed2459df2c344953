//! This machine's fingerprint: what an agent sends in its hello so that the collector
//! can tell two machines that report the same host name apart (cloned VMs, say).
//!
//! It is the hex SHA-256 of `procyon:` followed by the machine id (`/etc/machine-id`,
//! else `/var/lib/dbus/machine-id`, trimmed), never the id itself: some software treats
//! the raw id as confidential (systemd's documentation asks that it not be exposed on
//! the network), and the prefix keeps our value from matching anyone else's hash of it.
//! The file is read where the OS code lives (`linux.rs`; other systems have none yet).

use std::path::Path;

use sha2::{Digest, Sha256};

/// The fingerprint of this machine, or `None` when it has no machine id.
pub fn fingerprint() -> Option<String> {
    super::os::machine_id().map(|id| of(&id))
}

/// The fingerprint from a file holding a machine id instead of the system's (the
/// agent's `--machine-id-file`): the same hash of its trimmed content. An error if it
/// cannot be read or holds only white space.
pub fn fingerprint_from_file(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let id = text.trim();
    if id.is_empty() {
        return Err(format!("{} is empty: write a machine id into it (any stable text)", path.display()));
    }
    Ok(of(id))
}

/// The id a snapshot gives its host (`HostInfo::id`), which every viewer sees: a hash of
/// the machine id under another prefix than [`fingerprint`]'s, so that neither the raw
/// id nor the fingerprint the collector binds hosts to can be read off a snapshot.
pub fn host_id(machine_id: &str) -> String {
    let digest = Sha256::new().chain_update(b"procyon-host:").chain_update(machine_id.trim().as_bytes()).finalize();
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// The fingerprint of a machine id.
fn of(id: &str) -> String {
    let digest = Sha256::new().chain_update(b"procyon:").chain_update(id.trim().as_bytes()).finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_is_a_prefixed_sha256_never_the_id() {
        // sha256("procyon:0123456789abcdef0123456789abcdef")
        let id = "0123456789abcdef0123456789abcdef";
        let expected = {
            let d = Sha256::digest(format!("procyon:{id}").as_bytes());
            d.iter().map(|b| format!("{b:02x}")).collect::<String>()
        };
        assert_eq!(of(id), expected);
        assert_eq!(of(&format!(" {id}\n")), expected, "trimmed, as the file ends in a newline");
        assert_eq!(expected.len(), 64);
        assert_ne!(of(id), of("another"));
        assert!(!of(id).contains(id));
    }

    #[test]
    fn the_host_id_reveals_neither_the_machine_id_nor_the_fingerprint() {
        let id = "0123456789abcdef0123456789abcdef";
        let shown = host_id(id);
        assert_eq!(shown.len(), 32);
        assert_ne!(shown, id);
        assert!(!of(id).starts_with(&shown));
        assert_eq!(shown, host_id(&format!("{id}\n")));
    }

    #[test]
    fn a_file_stands_in_for_the_system_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("machine-id");
        std::fs::write(&path, "0123456789abcdef0123456789abcdef\n").unwrap();
        assert_eq!(fingerprint_from_file(&path).unwrap(), of("0123456789abcdef0123456789abcdef"));
        std::fs::write(&path, " \n").unwrap();
        assert!(fingerprint_from_file(&path).unwrap_err().contains("is empty"));
        let missing = fingerprint_from_file(&dir.path().join("nope")).unwrap_err();
        assert!(missing.starts_with("cannot read"), "{missing}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_machine_s_fingerprint_hides_its_id() {
        match (super::super::os::machine_id(), fingerprint()) {
            (Some(id), Some(print)) => {
                assert_eq!(print, of(&id));
                assert!(!print.contains(&id));
            }
            (None, None) => {}
            other => panic!("id and fingerprint disagree: {other:?}"),
        }
    }
}
