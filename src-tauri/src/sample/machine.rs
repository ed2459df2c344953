//! This machine's fingerprint: what an agent sends in its hello so that the collector
//! can tell two machines that report the same host name apart (cloned VMs, say).
//!
//! It is the hex SHA-256 of `procyon:` followed by the machine id, never the id itself:
//! some software treats the raw id as confidential (systemd's documentation asks that it
//! not be exposed on the network), and the prefix keeps our value from matching anyone
//! else's hash of it. The id is the system's own:
//!
//! - Linux: `/etc/machine-id`, else `/var/lib/dbus/machine-id` (the first that is not
//!   empty: containers often ship an empty `/etc/machine-id`);
//! - macOS: the `IOPlatformUUID` that `ioreg -rd1 -c IOPlatformExpertDevice` prints;
//! - Windows: `MachineGuid` under `HKLM\SOFTWARE\Microsoft\Cryptography`, as
//!   `reg query` prints it.
//!
//! The OS is asked where its code lives (`linux.rs`, `portable.rs`); what it answers is
//! read here, so that the parsing is tested on every system.

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

/// The first of `contents` (machine-id files' text, `None` for one that cannot be read)
/// that holds an id, trimmed.
pub(super) fn first_id<I: IntoIterator<Item = Option<String>>>(contents: I) -> Option<String> {
    contents.into_iter().flatten().map(|s| s.trim().to_owned()).find(|s| !s.is_empty())
}

/// The `IOPlatformUUID` in what `ioreg -rd1 -c IOPlatformExpertDevice` prints: a line
/// `"IOPlatformUUID" = "8D6A2A0C-...-1B2C3D4E5F60"`.
#[cfg_attr(not(any(test, target_os = "macos")), allow(dead_code))]
pub(super) fn id_from_ioreg(output: &str) -> Option<String> {
    output.lines().find_map(|line| {
        let (name, value) = line.split_once('=')?;
        if name.trim().trim_matches('"') != "IOPlatformUUID" {
            return None;
        }
        let id = value.trim().trim_matches('"').trim();
        plausible(id).then(|| id.to_owned())
    })
}

/// The `MachineGuid` in what `reg query HKLM\SOFTWARE\Microsoft\Cryptography /v
/// MachineGuid` prints: a line `    MachineGuid    REG_SZ    2f4c...`.
#[cfg_attr(not(any(test, windows)), allow(dead_code))]
pub(super) fn id_from_reg_query(output: &str) -> Option<String> {
    output.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        if !words.next()?.eq_ignore_ascii_case("MachineGuid") || !words.next()?.eq_ignore_ascii_case("REG_SZ") {
            return None;
        }
        let id = words.next()?;
        plausible(id).then(|| id.to_owned())
    })
}

/// An id worth hashing: some hex digits (and `-`), not all zeros (what some VMs and
/// broken firmware report, which would make every such machine one).
fn plausible(id: &str) -> bool {
    (8..=64).contains(&id.len())
        && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
        && id.chars().any(|c| c.is_ascii_hexdigit() && c != '0')
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

    #[test]
    fn the_first_id_that_is_not_empty_wins() {
        let some = |s: &str| Some(s.to_owned());
        assert_eq!(first_id([some("abc\n"), some("def\n")]), some("abc"));
        // A container's empty /etc/machine-id falls back to D-Bus's.
        assert_eq!(first_id([some("\n"), some(" def\n")]), some("def"));
        assert_eq!(first_id([None, some("def")]), some("def"));
        assert_eq!(first_id([None, some(" ")]), None);
    }

    #[test]
    fn macos_ioreg_output_gives_the_platform_uuid() {
        let output = r#"+-o J316sAP  <class IOPlatformExpertDevice, id 0x100000254, registered, matched, active, busy 0 (124 ms), retain 35>
    {
      "IOPlatformSerialNumber" = "C02XYZ123ABC"
      "compatible" = <"J316sAP","MacBookPro18,1","AppleARM">
      "IOPlatformUUID" = "8D6A2A0C-5E3F-4B1A-9C2D-1B2C3D4E5F60"
      "manufacturer" = <"Apple Inc.">
    }
"#;
        assert_eq!(id_from_ioreg(output).as_deref(), Some("8D6A2A0C-5E3F-4B1A-9C2D-1B2C3D4E5F60"));
        assert_eq!(id_from_ioreg("\"IOPlatformSerialNumber\" = \"C02\"\n"), None);
        assert_eq!(id_from_ioreg("\"IOPlatformUUID\" = \"00000000-0000-0000-0000-000000000000\"\n"), None);
        assert_eq!(id_from_ioreg(""), None);
    }

    #[test]
    fn windows_reg_query_output_gives_the_machine_guid() {
        let output = "\r\nHKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Cryptography\r\n    MachineGuid    REG_SZ    \
                      2f4c1a7e-8b3d-4e6f-9a1b-0c2d3e4f5a6b\r\n\r\n";
        assert_eq!(id_from_reg_query(output).as_deref(), Some("2f4c1a7e-8b3d-4e6f-9a1b-0c2d3e4f5a6b"));
        assert_eq!(
            id_from_reg_query("ERROR: The system was unable to find the specified registry key or value.\r\n"),
            None
        );
        assert_eq!(id_from_reg_query("    MachineGuid    REG_SZ    \r\n"), None);
        assert_eq!(id_from_reg_query("    MachineGuid    REG_DWORD    0x1\r\n"), None);
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

/// Fuzz targets for the machine id's sources: any text in a machine-id file or in what
/// `ioreg` and `reg query` print gives an id that is trimmed and not empty (and, from
/// the commands, plausible), or none; never a panic. See `crate::fuzzing`.
#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::fuzzing::config;
    use proptest::prelude::*;

    fn output() -> impl Strategy<Value = String> {
        prop_oneof![
            "\\PC{0,200}",
            "( *\"?IOPlatformUUID\"? *= *\"?[0-9A-Fa-f-]{0,70}\"?\\n|\\PC{0,20}\\n){0,4}",
            "( *MachineGuid +REG_SZ +[0-9a-f-]{0,70}\\n|\\PC{0,20}\\n){0,4}",
        ]
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn any_machine_id_text(files in prop::collection::vec(prop::option::of("\\PC{0,80}"), 0..3)) {
            if let Some(id) = first_id(files) {
                prop_assert!(!id.is_empty() && id.trim() == id, "{id:?}");
                prop_assert_eq!(of(&id).len(), 64);
            }
        }

        #[test]
        fn any_command_output(text in output()) {
            for id in [id_from_ioreg(&text), id_from_reg_query(&text)].into_iter().flatten() {
                prop_assert!(plausible(&id), "{id:?}");
            }
        }
    }
}
