//! The `procyon` command as a person meets it in a terminal: pipes that close early,
//! errors without backtraces, no display.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::process::Command;

use common::collector::BIN;

/// Runs `script` in sh with `procyon` as `$P`; returns (exit code, stderr).
fn sh(script: &str, envs: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new("sh").arg("-c").arg(script).env("P", BIN).envs(envs.iter().copied()).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_closed_pipe_is_a_normal_end() {
    // `set -o pipefail` is not in every sh: read procyon's own exit code instead.
    let (code, stderr) = sh(r#"{ "$P" snapshot --pretty; echo "rc=$?" >&2; } | head -c 1 >/dev/null"#, &[]);
    assert_eq!(code, 0);
    assert!(stderr.contains("rc=0"), "{stderr}");
    assert!(!stderr.contains("Broken pipe"), "{stderr}");
}

#[test]
fn errors_carry_their_message_not_a_backtrace() {
    let (code, stderr) = sh(r#""$P" act kill 4000000000"#, &[("RUST_BACKTRACE", "1")]);
    assert_ne!(code, 0);
    assert!(stderr.starts_with("Error: "), "{stderr}");
    assert!(!stderr.contains("Stack backtrace") && !stderr.contains("stack backtrace"), "{stderr}");
}

#[cfg(all(target_os = "linux", feature = "desktop"))]
#[test]
fn without_a_display_the_desktop_app_says_what_to_run_instead() {
    for args in ["", "desktop"] {
        let out = Command::new(BIN)
            .args(args.split_whitespace())
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "no panic (101): {stderr}");
        assert!(stderr.contains("No display") && stderr.contains("procyon serve"), "{stderr}");
    }
    // Set, but nothing there: a stale `ssh -X` display, a Wayland session that ended.
    let runtime = tempfile::tempdir().unwrap();
    for (var, value) in [("DISPLAY", ":987"), ("DISPLAY", "127.0.0.1:987"), ("WAYLAND_DISPLAY", "wayland-987")] {
        let out = Command::new(BIN)
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY")
            .env("XDG_RUNTIME_DIR", runtime.path())
            .env(var, value)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{var}={value}: no panic (101): {stderr}");
        assert!(stderr.contains("No display") && stderr.contains(&format!("{var} is `{value}`")), "{stderr}");
        assert!(stderr.contains("procyon serve") && !stderr.contains("panicked"), "{stderr}");
    }
}

#[cfg(feature = "server")]
#[test]
fn impossible_settings_are_refused_at_start_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    for (args, says) in [
        (&["--keep-raw", "0"][..], "--keep-raw"),
        (&["--keep-raw", "2h", "--keep-minutes", "1h"][..], "grow tier by tier"),
        (&["--token-ttl", "0"][..], "--token-ttl"),
        (&["--interval", "50ms"][..], "interval"),
        (&["--bind", "not a host!"][..], "not an address"),
        // Zero would check the certificate files in a busy loop.
        (&["--tls-reload-every", "0"][..], "--tls-reload-every"),
        (&["--tls-reload-every", "0"][..], "between 1s and 1day"),
        (&["--max-connections", "0"][..], "--max-connections"),
        (&["--max-connections", "4000000000"][..], "--max-connections"),
    ] {
        // Certificates that do not exist: a setting that slipped through would still
        // stop the start (with another message) instead of leaving a collector running.
        let out = Command::new(BIN)
            .args(["serve", "--no-local", "--data"])
            .arg(dir.path())
            .args(["--tls-cert", "/nonexistent/cert.pem", "--tls-key", "/nonexistent/key.pem"])
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

#[cfg(feature = "server")]
#[test]
fn management_commands_say_which_database_they_use() {
    let dir = tempfile::tempdir().unwrap();
    let run = || Command::new(BIN).args(["user", "list", "--data"]).arg(dir.path()).output().unwrap();
    let first = run();
    let said = String::from_utf8_lossy(&first.stderr);
    assert!(said.contains(&format!("Using the database in {}", dir.path().display())), "{said}");
    assert!(said.contains("(new"), "a database nobody used is called new: {said}");
    let again = run();
    assert!(!String::from_utf8_lossy(&again.stderr).contains("(new"));
}

#[cfg(feature = "server")]
#[test]
fn a_second_collector_on_one_data_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = common::collector::Collector::start(dir.path(), &["--no-local"]);
    let pid = first.child.as_ref().unwrap().id();
    let out = Command::new(BIN)
        .args(["serve", "--no-local", "--bind", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(&format!("Another Procyon collector (pid {pid})")), "{stderr}");
    assert!(stderr.contains("--data"), "{stderr}");
}
