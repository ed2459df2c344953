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
        (&["--tls-reload-every", "0"][..], "between 100ms and 1day"),
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

/// A pipe whose reader is already gone: a write to it fails with EPIPE at once, as
/// `procyon user list | head -1` does once `head` has exited.
#[cfg(unix)]
fn closed_pipe() -> std::process::Stdio {
    let (reader, writer) = nix::unistd::pipe().unwrap();
    drop(reader);
    std::process::Stdio::from(writer)
}

#[cfg(all(unix, feature = "server"))]
#[test]
fn management_commands_end_quietly_on_a_closed_pipe() {
    let dir = tempfile::tempdir().unwrap();
    common::collector::new_user(dir.path(), "pat", "viewer");
    common::collector::new_key(dir.path(), "web-1", None);
    for args in [["user", "list"], ["apikey", "list"]] {
        let out = Command::new(BIN).args(args).arg("--data").arg(dir.path()).stdout(closed_pipe()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{args:?}: {stderr}");
    }
}

/// `procyon serve --no-local` on `data` with `extra` flags, until it says where it
/// listens: the child (stopped by the caller) and every line it printed until then.
#[cfg(feature = "server")]
fn serve_until_listening(data: &std::path::Path, extra: &[&str]) -> (std::process::Child, Vec<String>) {
    use std::io::BufRead;
    let mut child = Command::new(BIN)
        .args(["serve", "--no-local", "--data"])
        .arg(data)
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = Vec::new();
    for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let ready = line.starts_with("Procyon collector on ");
        lines.push(line);
        if ready {
            return (child, lines);
        }
    }
    let status = child.wait();
    panic!("the collector ended ({status:?}) before it listened: {lines:?}");
}

#[cfg(feature = "server")]
fn stop(mut child: std::process::Child) {
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let _ = child.wait();
}

#[cfg(all(unix, feature = "server"))]
#[test]
fn the_first_admin_password_survives_a_failed_first_start() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("initial-admin-password");
    // The port is taken: the start fails, and makes no admin whose password would be lost.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = Command::new(BIN)
        .args(["serve", "--no-local", "--bind", &format!("127.0.0.1:{port}"), "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("admin"), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(!file.exists(), "a failed start wrote a password");
    drop(taken);
    // Nobody was created either (`user list` prints one line per user).
    let users = Command::new(BIN).args(["user", "list", "--data"]).arg(dir.path()).output().unwrap();
    assert!(users.status.success() && users.stdout.is_empty(), "{}", String::from_utf8_lossy(&users.stdout));

    // The next start, on a free port, makes the admin and says where its password is.
    let (child, said) = serve_until_listening(dir.path(), &["--bind", "127.0.0.1:0"]);
    stop(child);
    let where_ = format!("created `admin`; its password is in {}", file.display());
    assert!(said.iter().any(|l| l.contains(&where_)), "{said:?}");
    let password = std::fs::read_to_string(&file).unwrap();
    assert!(password.trim().len() >= 16, "{password:?}");
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    // Never on the terminal.
    assert!(!said.iter().any(|l| l.contains(password.trim())), "{said:?}");
    let users = Command::new(BIN).args(["user", "list", "--data"]).arg(dir.path()).output().unwrap();
    assert!(String::from_utf8_lossy(&users.stdout).starts_with("admin "));

    // Every later start reminds where it is until the file is deleted; the password stays.
    let (child, said) = serve_until_listening(dir.path(), &["--bind", "127.0.0.1:0"]);
    stop(child);
    assert!(said.iter().any(|l| l.contains(&format!("still in {}", file.display()))), "{said:?}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), password);
    std::fs::remove_file(&file).unwrap();
    let (child, said) = serve_until_listening(dir.path(), &["--bind", "127.0.0.1:0"]);
    stop(child);
    assert!(!said.iter().any(|l| l.contains("admin")), "{said:?}");
}

/// Runs `script` in sh on a pseudo-terminal, as at a person's terminal, and returns what
/// it wrote there. `None` when `script` (util-linux) is not installed.
#[cfg(unix)]
fn on_a_terminal(script: &str, envs: &[(&str, &str)]) -> Option<String> {
    let out = Command::new("script")
        .args(["-qec", script, "/dev/null"])
        .env("P", BIN)
        .envs(envs.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(all(unix, feature = "server"))]
#[test]
fn serve_logs_to_stderr_in_colour_only_on_a_terminal() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("stderr.log");
    // Into a file (as under systemd): the logs are there, plain; stdout has none of them.
    let mut child = Command::new(BIN)
        .args(["serve", "--no-local", "--bind", "127.0.0.1:0", "--data"])
        .arg(&data)
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut stdout = Vec::new();
    for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let ready = line.starts_with("Procyon collector on ");
        stdout.push(line);
        if ready {
            break;
        }
    }
    stop(child);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("collector listening") && logged.contains("INFO"), "{logged}");
    assert!(!logged.contains('\u{1b}'), "colour codes in a file: {logged:?}");
    assert!(!stdout.iter().any(|l| l.contains("INFO")), "logs on stdout: {stdout:?}");

    // On a terminal: coloured, unless NO_COLOR says otherwise.
    let run = r#"timeout -s INT 4 "$P" serve --no-local --bind 127.0.0.1:0 --data "$D""#;
    let d = data.to_str().unwrap();
    let Some(coloured) = on_a_terminal(run, &[("RUST_LOG", "info"), ("D", d)]) else {
        eprintln!("skipped the terminal half: `script` is not installed");
        return;
    };
    assert!(coloured.contains("collector listening") && coloured.contains('\u{1b}'), "{coloured:?}");
    let plain = on_a_terminal(run, &[("RUST_LOG", "info"), ("D", d), ("NO_COLOR", "1")]).unwrap();
    assert!(plain.contains("collector listening") && !plain.contains('\u{1b}'), "{plain:?}");
}
