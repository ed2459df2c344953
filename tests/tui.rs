//! `procyon watch` as a person uses it: in a real terminal (tmux), keys sent and the
//! screen read back. This machine first, then a host of a collector.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_procyon");

/// A tmux server of the test's own (its own socket, in a directory of its own), so that
/// nobody's sessions are touched; killed when dropped, and its socket removed.
struct Tmux {
    socket: std::path::PathBuf,
    session: String,
    _dir: tempfile::TempDir,
}

impl Tmux {
    /// `None` when tmux is not installed.
    fn start(name: &str, command: &str, env: &[(&str, &str)]) -> Option<Tmux> {
        if Command::new("tmux").arg("-V").output().is_err() {
            eprintln!("skipped: tmux is not installed (scripts/deps.sh test installs it)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let tmux = Tmux { socket: dir.path().join("tmux"), session: name.into(), _dir: dir };
        let mut args = vec!["new-session", "-d", "-s", name, "-x", "160", "-y", "45"];
        let mut vars = Vec::new();
        for (k, v) in env {
            vars.push(format!("{k}={v}"));
        }
        for v in &vars {
            args.extend(["-e", v.as_str()]);
        }
        args.push(command);
        let out = tmux.run(&args);
        assert!(out.status.success(), "tmux new-session: {}", String::from_utf8_lossy(&out.stderr));
        Some(tmux)
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux").arg("-S").arg(&self.socket).args(["-f", "/dev/null"]).args(args).output().unwrap()
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", &self.session];
        args.extend(keys);
        assert!(self.run(&args).status.success());
    }

    /// Text typed as it is (no key names).
    fn type_text(&self, text: &str) {
        assert!(self.run(&["send-keys", "-t", &self.session, "-l", text]).status.success());
    }

    fn pane(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", &self.session]).stdout).into_owned()
    }

    /// Waits until the pane satisfies `ok`; panics with the pane (and `what`) if it never does.
    fn wait_for(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let pane = self.pane();
            if ok(&pane) {
                println!("--- {what} ---\n{pane}");
                return pane;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}; the pane shows:\n{pane}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// The table's rows: the lines between the heading and the status line.
fn table_rows(pane: &str) -> Vec<&str> {
    let lines: Vec<&str> = pane.lines().collect();
    let Some(head) = lines.iter().position(|l| l.contains("PID USER")) else { return Vec::new() };
    // The last two lines are the status line and the keys.
    let end = lines.iter().rposition(|l| l.contains("F1/? help")).unwrap_or(lines.len()).saturating_sub(1);
    lines[head + 1..end.max(head + 1)].iter().copied().filter(|l| !l.trim().is_empty()).collect()
}

/// A `sleep` whose command line carries a name no other process has.
fn marked_sleep(tag: &str) -> (Child, String) {
    let name = format!("procyon-tui-test-{tag}-{}", std::process::id());
    let child = Command::new("sleep").arg0(&name).arg("600").stdin(Stdio::null()).spawn().unwrap();
    (child, name)
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the process was not ended");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `watch_args` in the terminal, then says the terminal's state once it has quit,
/// so the test can see that it was put back (the screen and the line discipline).
fn watch_command(watch_args: &str) -> String {
    format!("env TERM=xterm-256color {BIN} watch {watch_args}; echo WATCH-ENDED $?; stty -a; sleep 60")
}

#[test]
fn watch_this_machine_filter_tree_sort_and_terminate() {
    let (mut child, name) = marked_sleep("local");
    let Some(tmux) = Tmux::start("local", &watch_command("--interval 1s"), &[]) else {
        child.kill().unwrap();
        return;
    };
    tmux.wait_for("the header and the table", |p| {
        p.contains("Mem[") && p.contains("Net all interfaces") && p.contains("PID USER") && table_rows(p).len() > 3
    });

    // Filter: only the marked process is left.
    tmux.keys(&["/"]);
    tmux.type_text(&name);
    tmux.keys(&["Enter"]);
    let pid = child.id().to_string();
    // Each wait asks for the whole picture: a capture can catch the screen mid-redraw.
    tmux.wait_for("only the marked process", |p| {
        let rows = table_rows(p);
        rows.len() == 1
            && rows[0].trim_start().starts_with(&format!("{pid} "))
            && rows[0].contains(&format!("sleep  {name} 600"))
            && p.contains(&format!("filter “{name}”: 1 of "))
    });

    // Tree: the process under its ancestors (this test, and what started it), indented.
    tmux.keys(&["t"]);
    let me = std::process::id().to_string();
    let pane = tmux.wait_for("the tree", |p| {
        let rows = table_rows(p);
        rows.iter().any(|r| r.contains(&name)) && rows.iter().any(|r| r.trim_start().starts_with(&format!("{me} ")))
    });
    let rows = table_rows(&pane);
    let mine = rows.iter().find(|r| r.contains(&name)).expect("the process is in the tree");
    assert!(mine.contains("└─ sleep") || mine.contains("├─ sleep"), "no branch before the name: {mine}");
    let parent = rows.iter().find(|r| r.trim_start().starts_with(&format!("{me} "))).expect("this test is its parent");
    let heading = pane.lines().find(|l| l.contains("PID USER")).unwrap();
    let command =
        heading.chars().collect::<Vec<_>>().windows(7).position(|w| w.iter().collect::<String>() == "COMMAND");
    let name_at = |row: &str| {
        row.chars().enumerate().skip(command.unwrap()).find(|(_, c)| !" │├└─".contains(*c)).map(|(i, _)| i).unwrap()
    };
    assert!(name_at(mine) > name_at(parent), "the process is not indented under its parent:\n{pane}");

    // Sort: the next column, then reversed; the heading says which.
    assert!(pane.contains("CPU%▼"), "{pane}");
    tmux.keys(&["s"]);
    tmux.wait_for("sorting by memory", |p| p.contains("MEM%▼"));
    tmux.keys(&["r"]);
    tmux.wait_for("sorting by memory, smallest first", |p| p.contains("MEM%▲"));
    tmux.keys(&["t", "Home"]);
    tmux.wait_for("the flat list again", |p| table_rows(p).len() == 1);

    // Terminate, confirmed: the process really ends, by SIGTERM.
    tmux.keys(&["T"]);
    tmux.wait_for("the confirmation", |p| p.contains(&format!("Terminate process {pid} (sleep)?")));
    tmux.keys(&["y"]);
    let status = wait_exit(&mut child);
    assert_eq!(status.signal(), Some(15), "{status:?}");
    tmux.wait_for("the result", |p| p.contains(&format!("Process {pid} (sleep) terminated.")));

    // Quit: the program ends and the terminal is as it was (no raw mode, echo on).
    tmux.keys(&["q"]);
    // `stty -a` prints after the program has gone; its `icanon` line is near the end.
    let pane = tmux.wait_for("the shell after quitting", |p| p.contains("WATCH-ENDED") && p.contains("icanon"));
    assert!(pane.contains("WATCH-ENDED 0"), "{pane}");
    assert!(!pane.contains("PID USER"), "the full screen was left on:\n{pane}");
    assert!(pane.contains(" icanon") && pane.contains(" echo "), "the terminal was left raw:\n{pane}");
}

#[test]
fn watch_a_cancelled_action_leaves_the_process_alone() {
    let (mut child, name) = marked_sleep("cancel");
    let Some(tmux) = Tmux::start("cancel", &watch_command("--interval 1s"), &[]) else {
        child.kill().unwrap();
        return;
    };
    tmux.wait_for("the table", |p| table_rows(p).len() > 3);
    tmux.keys(&["?"]);
    tmux.wait_for("the help", |p| p.contains("Keys") && p.contains("The same language as the dashboard"));
    tmux.keys(&["x"]);
    tmux.wait_for("the help closed", |p| !p.contains("The same language as the dashboard"));
    // A smaller terminal: the screen is laid out again to fit it.
    let resized = tmux.run(&["resize-window", "-t", &tmux.session, "-x", "90", "-y", "24"]);
    assert!(resized.status.success(), "{}", String::from_utf8_lossy(&resized.stderr));
    tmux.wait_for("the smaller layout", |p| {
        p.lines().count() <= 24 && p.contains("F1/? help") && p.contains("PID USER") && table_rows(p).len() > 3
    });
    // And back: the status line needs the width for what follows.
    tmux.run(&["resize-window", "-t", &tmux.session, "-x", "160", "-y", "45"]);
    tmux.wait_for("the larger layout", |p| p.lines().position(|l| l.contains("F1/? help")).is_some_and(|i| i >= 40));
    tmux.keys(&["/"]);
    tmux.type_text(&format!("{name} cpu>lots"));
    tmux.keys(&["Enter"]);
    tmux.wait_for("the filter's problem", |p| {
        table_rows(p).len() == 1 && p.contains("ignored: “cpu>lots”: cpu needs a number, e.g. cpu>50")
    });
    tmux.keys(&["K"]);
    tmux.wait_for("the confirmation", |p| p.contains("Kill process"));
    tmux.keys(&["n"]);
    tmux.wait_for("the cancellation", |p| p.contains("Cancelled: process"));
    std::thread::sleep(Duration::from_millis(500));
    assert!(child.try_wait().unwrap().is_none(), "the process ended though the action was cancelled");
    child.kill().unwrap();
    child.wait().unwrap();
    tmux.keys(&["C-c"]);
    tmux.wait_for("the shell after Ctrl-C", |p| p.contains("WATCH-ENDED 0"));
}

#[test]
fn watch_into_a_pipe_prints_summaries() {
    // The exit status of a pipeline is its last command's (`head`), and `pipefail` is
    // not in every sh: procyon's own status is written to stderr next to its messages.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            r#"{{ "{BIN}" watch --interval 500ms --top 3; echo "procyon exited with $?" >&2; }} | head -n 12"#
        ))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // `head` leaving is a normal end for procyon: no error, status 0.
    assert!(stderr.contains("procyon exited with 0"), "{stderr}");
    assert!(!stderr.contains("Broken pipe") && !stderr.contains("Error"), "{stderr}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("with loopback") && text.contains("pid user"), "{text}");
    assert!(!text.contains('\u{1b}'), "escape sequences in plain output: {text:?}");
}

/// The local host of a collector, once it has reported.
async fn local_host(c: &common::collector::Collector, token: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, hosts) = c.get("/api/hosts/", token).await;
        if let Some(h) = hosts.as_array().and_then(|a| a.iter().find(|h| h["local"] == true)) {
            return h["hostname"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "the collector's own host never reported: {hosts}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_a_collector_host_act_as_operator_refused_as_viewer_and_sessions_renew_only_when_used() {
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("skipped: tmux is not installed (scripts/deps.sh test installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Short sign-ins, so that renewal and expiry happen within the test.
    let c = common::collector::Collector::start(dir.path(), &["--interval", "1s", "--token-ttl", "12s"]);
    let admin = c.admin_token().await;
    let host = local_host(&c, &admin).await;
    let viewer_password = common::collector::new_user(dir.path(), "watcher", "viewer");
    let (mut child, name) = marked_sleep("remote");
    let pid = child.id().to_string();

    // An admin, who keeps pressing keys: the session is renewed and outlives its token.
    let admin_password = c.admin_password.clone().unwrap();
    let command = watch_command(&format!("--collector {} --user admin --host {host}", c.base));
    let admin_tmux = Tmux::start("remote-admin", &command, &[("PROCYON_PASSWORD", &admin_password)]).unwrap();
    // A viewer, who presses keys only at the start: renewed once at most, then the
    // session lapses.
    let command = watch_command(&format!("--collector {} --user watcher", c.base));
    let viewer_tmux = Tmux::start("remote-viewer", &command, &[("PROCYON_PASSWORD", &viewer_password)]).unwrap();

    for (tmux, who) in [(&admin_tmux, "admin (admin)"), (&viewer_tmux, "watcher (viewer)")] {
        let source = format!("{who} at {}", c.base);
        tmux.wait_for("the host's header and table", |p| {
            p.lines().next().is_some_and(|l| l.starts_with(&format!("{host}  {source}")))
                && p.contains("Mem[")
                && table_rows(p).len() > 3
        });
        tmux.keys(&["/"]);
        tmux.type_text(&name);
        tmux.keys(&["Enter"]);
        tmux.wait_for("only the marked process", |p| {
            let rows = table_rows(p);
            rows.len() == 1 && rows[0].trim_start().starts_with(&format!("{pid} "))
        });
    }

    // The viewer may look but not act: the collector's refusal is shown. (The admin
    // is there all along: a key now and then.)
    admin_tmux.keys(&["Home"]);
    viewer_tmux.keys(&["K"]);
    viewer_tmux.wait_for("the viewer's confirmation", |p| p.contains(&format!("Kill process {pid} (sleep)?")));
    viewer_tmux.keys(&["y"]);
    viewer_tmux.wait_for("the refusal", |p| {
        p.contains(&format!("Process {pid} (sleep) was not killed:")) && p.contains("operator")
    });
    assert!(child.try_wait().unwrap().is_none(), "a viewer's kill went through");
    admin_tmux.keys(&["Home"]);

    // Past the token's lifetime, with keys pressed now and then: the admin's view goes
    // on; the viewer's ends, saying why, with the terminal put back.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(16) {
        admin_tmux.keys(&["Home"]);
        std::thread::sleep(Duration::from_millis(700));
    }
    let pane =
        viewer_tmux.wait_for("the viewer's lapsed session", |p| p.contains("WATCH-ENDED") && p.contains("icanon"));
    assert!(pane.contains("sign-in expired"), "{pane}");
    assert!(pane.contains(" icanon") && !pane.contains("PID USER"), "{pane}");
    let before = admin_tmux.pane().lines().next().unwrap().to_owned();
    let pane = admin_tmux.wait_for("a newer snapshot after the renewal", |p| p.lines().next() != Some(before.as_str()));
    // The stream opened with the first token was closed at its expiry and opened again
    // with the renewed one, without a word: nothing was wrong.
    assert!(!pane.contains("Live stream of"), "{pane}");

    // The admin terminates the process through the collector.
    admin_tmux.keys(&["T"]);
    admin_tmux.wait_for("the confirmation", |p| p.contains(&format!("Terminate process {pid} (sleep)?")));
    admin_tmux.keys(&["y"]);
    let status = wait_exit(&mut child);
    assert_eq!(status.signal(), Some(15), "{status:?}");
    admin_tmux.wait_for("the result", |p| p.contains(&format!("Process {pid} (sleep) terminated on {host}.")));
    let (_, audit) = c.get("/api/audit", &c.admin_token().await).await;
    assert!(audit.to_string().contains("terminate"), "{audit}");
    admin_tmux.keys(&["q"]);
    admin_tmux.wait_for("the shell after quitting", |p| p.contains("WATCH-ENDED 0"));
}

#[test]
fn watch_refuses_plain_http_to_another_machine_and_names_a_missing_host() {
    let out = Command::new(BIN)
        .args(["watch", "--collector", "http://procyon.example.com:7450", "--user", "u", "--password-stdin"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("use https://") && err.contains("--allow-http"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_a_collector_without_host_offers_its_hosts() {
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("skipped: tmux is not installed (scripts/deps.sh test installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let c = common::collector::Collector::start(dir.path(), &["--interval", "1s"]);
    let admin = c.admin_token().await;
    let host = local_host(&c, &admin).await;
    // A second host: the seed API's example upload (MACHINE-01, explorer.exe and notepad.exe).
    let key = common::collector::new_key(dir.path(), "machine-01", None);
    assert_eq!(c.upload(&key, common::collector::SEED_EXAMPLE).await.0, 201);

    // Piped, it prints summaries of the host instead, the password read from stdin.
    // (MACHINE-01 reports no more, so the summary is read and the program stopped.)
    let mut piped = Command::new(BIN)
        .args(["watch", "--collector", &c.base, "--user", "admin", "--host", "MACHINE-01", "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        writeln!(piped.stdin.take().unwrap(), "{}", c.admin_password.as_deref().unwrap()).unwrap();
    }
    let stdout = piped.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut text = String::new();
    while !text.contains("notepad.exe") {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => text.push_str(&format!("{line}\n")),
            Err(e) => panic!("no summary of MACHINE-01 ({e}): {text}"),
        }
    }
    piped.kill().unwrap();
    piped.wait().unwrap();
    assert!(text.contains("MACHINE-01") && text.contains("explorer.exe"), "{text}");
    assert!(!text.contains('\u{1b}'), "{text:?}");
    // Several hosts and no --host: a pipe cannot show the list, so it says what to do.
    let out = Command::new(BIN)
        .args(["watch", "--collector", &c.base, "--user", "admin", "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            writeln!(child.stdin.take().unwrap(), "{}", c.admin_password.as_deref().unwrap())?;
            child.wait_with_output()
        })
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("choose one with --host") && err.contains("MACHINE-01"), "{err}");

    let command = watch_command(&format!("--collector {} --user admin", c.base));
    let tmux = Tmux::start("picker", &command, &[("PROCYON_PASSWORD", c.admin_password.as_deref().unwrap())]).unwrap();
    let pane =
        tmux.wait_for("the host list", |p| p.contains("Hosts") && p.contains("MACHINE-01") && p.contains("PID USER"));
    // The list opens on the host being shown.
    let shown = pane.lines().next().unwrap().split_whitespace().next().unwrap().to_owned();
    assert!(pane.contains(&format!("> {shown} ")), "{pane}");
    assert!(pane.contains(&format!("  {host} ")) || shown == host, "{pane}");
    let choose = |name: &str| {
        for key in ["Down", "Down", "Down", "Up", "Up", "Up", "Up", "Up"] {
            if tmux.pane().contains(&format!("> {name} ")) {
                break;
            }
            tmux.keys(&[key]);
            std::thread::sleep(Duration::from_millis(300));
        }
        tmux.keys(&["Enter"]);
    };
    choose("MACHINE-01");
    let pane = tmux.wait_for("the other host's processes", |p| {
        // (MACHINE-01 may be the host shown behind the list from the start.)
        !p.contains("┌ Hosts")
            && p.lines().next().is_some_and(|l| l.starts_with("MACHINE-01  admin (admin)"))
            && p.contains("notepad.exe")
    });
    assert!(pane.contains("explorer.exe"), "{pane}");
    // And back to this machine with H.
    tmux.keys(&["H"]);
    tmux.wait_for("the host list again", |p| p.contains("> MACHINE-01 "));
    choose(&host);
    tmux.wait_for("this machine again", |p| {
        !p.contains("┌ Hosts")
            && p.lines().next().is_some_and(|l| l.starts_with(&format!("{host}  admin")))
            && !p.contains("notepad.exe")
    });
    tmux.keys(&["q"]);
    tmux.wait_for("the shell after quitting", |p| p.contains("WATCH-ENDED 0"));
}
