//! Process actions on real child processes, with their real state read back from the OS.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use common::{Sleeper, children_of, is_gone, marker, state, wait_for};
use procyon::control::{self, Target};
use procyon::model::{ActionErrorCode, ProcessAction};

fn target_of(pid: u32) -> Target {
    Target { pid, start_time: Some(procyon::sample::identify(pid).unwrap().start_time) }
}

const LIMIT: Duration = Duration::from_secs(5);

#[test]
fn suspend_then_resume() {
    let child = Sleeper::start(&marker("suspend"));
    let pid = child.pid();
    control::act(target_of(pid), ProcessAction::Suspend).unwrap();
    assert!(wait_for(LIMIT, || state(pid) == Some('T')), "stopped, was {:?}", state(pid));
    // The sampler reports it stopped too.
    let snap = procyon::sample::Sampler::new(Default::default()).sample();
    let p = snap.processes.iter().find(|p| p.pid == pid).unwrap();
    assert_eq!(p.status, procyon::model::ProcessStatus::Stopped);
    control::act(target_of(pid), ProcessAction::Resume).unwrap();
    assert!(wait_for(LIMIT, || matches!(state(pid), Some('S' | 'R'))), "running again, was {:?}", state(pid));
}

#[test]
fn terminate_and_kill_end_their_process() {
    for (action, signal) in [(ProcessAction::Terminate, 15), (ProcessAction::Kill, 9)] {
        let mut child = Sleeper::start(&marker(action.as_str()));
        let outcome = control::act(target_of(child.pid()), action).unwrap();
        assert_eq!(outcome.signalled, vec![child.pid()]);
        let status = child.child.wait().unwrap();
        assert_eq!(status.signal(), Some(signal), "{action:?}");
    }
}

#[test]
fn killing_a_tree_leaves_no_child_behind() {
    let child = Sleeper::start(&marker("tree"));
    let root = child.pid();
    let grandchildren = children_of(root);
    assert!(!grandchildren.is_empty());
    let outcome = control::act_tree(target_of(root), ProcessAction::Kill).unwrap();
    assert_eq!(*outcome.signalled.last().unwrap(), root, "root last");
    for g in &grandchildren {
        assert!(outcome.signalled.contains(g));
        assert!(wait_for(LIMIT, || is_gone(*g)), "grandchild {g} still {:?}", state(*g));
    }
    assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
    assert!(wait_for(LIMIT, || is_gone(root)));
}

#[test]
fn a_wrong_start_time_is_refused_and_the_process_lives() {
    let child = Sleeper::start(&marker("reuse"));
    let pid = child.pid();
    let real = procyon::sample::identify(pid).unwrap().start_time;
    let stale = Target { pid, start_time: Some(real - chrono::TimeDelta::seconds(30)) };
    let err = control::act(stale, ProcessAction::Kill).unwrap_err();
    assert_eq!(err.code, ActionErrorCode::PidReused);
    assert!(err.message.contains("no longer the one you saw"), "{}", err.message);
    let err = control::act_tree(stale, ProcessAction::Kill).unwrap_err();
    assert_eq!(err.code, ActionErrorCode::PidReused);
    std::thread::sleep(Duration::from_millis(100));
    assert!(matches!(state(pid), Some('S' | 'R')), "still alive and untouched: {:?}", state(pid));
}

#[test]
fn init_itself_and_kernel_threads_are_protected() {
    for pid in [1, std::process::id()] {
        for action in ProcessAction::ALL {
            let err = control::act(Target { pid, start_time: None }, action).unwrap_err();
            assert_eq!(err.code, ActionErrorCode::Protected, "pid {pid} {action:?}");
        }
    }
    // kthreadd (pid 2) is the parent of kernel threads on Linux.
    if let Some(kthreadd) = procyon::sample::identify(2).filter(|p| p.kernel_thread) {
        let err =
            control::act(Target { pid: 2, start_time: Some(kthreadd.start_time) }, ProcessAction::Kill).unwrap_err();
        assert_eq!(err.code, ActionErrorCode::Protected);
    }
    // A tree that holds the test process itself is refused whole.
    let parent = procyon::sample::identify(std::process::id()).unwrap().ppid.unwrap();
    if parent != 1 {
        let err = control::act_tree(Target { pid: parent, start_time: None }, ProcessAction::Suspend).unwrap_err();
        assert_eq!(err.code, ActionErrorCode::Protected);
    }
}

#[test]
fn a_missing_pid_is_not_found() {
    let mut child = Sleeper::start(&marker("gone"));
    let pid = child.pid();
    let target = target_of(pid);
    for g in children_of(pid) {
        let _ = std::process::Command::new("kill").arg("-9").arg(g.to_string()).status();
    }
    child.child.kill().unwrap();
    child.child.wait().unwrap();
    let err = control::act(target, ProcessAction::Terminate).unwrap_err();
    assert_eq!(err.code, ActionErrorCode::NotFound);
}

#[test]
fn permission_denied_says_what_to_do() {
    // Run the `procyon act` command as a user who may not signal the target: as root,
    // drop to `nobody` and aim at our own child; otherwise aim at a root process.
    let child = Sleeper::start(&marker("perm"));
    let bin = env!("CARGO_BIN_EXE_procyon");
    let output = if common::me() == "root" {
        // `nobody` may not enter the build directory (often under /root): run a copy.
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(marker("bin"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let copy = dir.join("procyon");
        std::fs::copy(bin, &copy).unwrap();
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
        let output = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&copy)
            .args(["act", "suspend"])
            .arg(child.pid().to_string())
            .output()
            .expect("setpriv (util-linux)");
        let _ = std::fs::remove_dir_all(&dir);
        output
    } else {
        let snap = procyon::sample::Sampler::new(Default::default()).sample();
        let root_owned = snap
            .processes
            .iter()
            .find(|p| p.user.as_deref() == Some("root") && !p.kernel_thread && p.pid != 1)
            .expect("a root-owned process");
        std::process::Command::new(bin).args(["act", "suspend"]).arg(root_owned.pid.to_string()).output().unwrap()
    };
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Permission denied"), "{stderr}");
    assert!(stderr.contains("or as root"), "says what to do: {stderr}");
    assert!(matches!(state(child.pid()), Some('S' | 'R')), "untouched: {:?}", state(child.pid()));
}

/// Whether `pid` runs (has exec'd) a file called `name`.
fn runs(pid: u32, name: &str) -> bool {
    procyon::sample::executable(pid).is_ok_and(|e| e.file_name == name)
}

/// `procyon serve` started from the built binary: a real collector, as another program
/// (the test harness is not it).
fn collector(dir: &std::path::Path) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_procyon"))
        .args(["serve", "--no-local", "--bind", "127.0.0.1:0", "--data"])
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn no_action_touches_a_procyon_program_and_impostors_are_not_spared() {
    let dir = tempfile::tempdir().unwrap();
    let mut serve = collector(&dir.path().join("data"));
    let pid = serve.id();
    assert!(wait_for(LIMIT, || runs(pid, "procyon")));
    for action in ProcessAction::ALL {
        let err = control::act(target_of(pid), action).unwrap_err();
        assert_eq!(err.code, ActionErrorCode::Protected, "{action:?}");
        assert!(err.message.contains("is a Procyon program"), "{}", err.message);
    }
    // Through the command line too (another process of the same binary).
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_procyon"))
        .args(["act", "suspend"])
        .arg(pid.to_string())
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("is a Procyon program"));
    std::thread::sleep(Duration::from_millis(100));
    assert!(matches!(state(pid), Some('S' | 'R')), "the collector runs on: {:?}", state(pid));

    // A process that only calls itself procyon is not one.
    let mut impostor = std::process::Command::new("bash").args(["-c", "exec -a procyon sleep 600"]).spawn().unwrap();
    let ipid = impostor.id();
    assert!(wait_for(LIMIT, || runs(ipid, "sleep")));
    control::act(target_of(ipid), ProcessAction::Kill).unwrap();
    assert_eq!(impostor.wait().unwrap().signal(), Some(9));

    // A copy of another program named procyon-agent: spared only when root or this
    // user (who could have installed Procyon) owns it, not when anyone else does.
    if common::me() == "root" {
        use std::os::unix::fs::PermissionsExt;
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let copy = bin.join("procyon-agent");
        std::fs::copy("/bin/sleep", &copy).unwrap();
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
        for (owner, protected) in [(0, true), (65534, false)] {
            std::os::unix::fs::chown(&copy, Some(owner), Some(owner)).unwrap();
            let mut child = std::process::Command::new(&copy).arg("600").spawn().unwrap();
            let cpid = child.id();
            assert!(wait_for(LIMIT, || runs(cpid, "procyon-agent")));
            let result = control::act(target_of(cpid), ProcessAction::Kill);
            assert_eq!(result.is_err(), protected, "owner {owner}: {result:?}");
            let _ = child.kill();
            child.wait().unwrap();
        }
    }
    serve.kill().unwrap();
    serve.wait().unwrap();
}

#[test]
fn a_tree_action_leaves_the_procyon_programs_in_it_alone() {
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "'{}' serve --no-local --bind 127.0.0.1:0 --data '{}' >/dev/null 2>&1 & sleep 600 & wait; true {}",
        env!("CARGO_BIN_EXE_procyon"),
        dir.path().join("data").display(),
        marker("tree-spares")
    );
    let mut shell = std::process::Command::new("sh").arg("-c").arg(script).spawn().unwrap();
    let root = shell.id();
    let named = |name: &str| children_of(root).into_iter().find(|c| runs(*c, name));
    assert!(wait_for(LIMIT, || named("procyon").is_some() && named("sleep").is_some()));
    let (serve, sleep) = (named("procyon").unwrap(), named("sleep").unwrap());

    let outcome = control::act_tree(target_of(root), ProcessAction::Kill).unwrap();
    assert!(outcome.signalled.contains(&sleep) && outcome.signalled.contains(&root), "{outcome:?}");
    assert!(!outcome.signalled.contains(&serve));
    let (pid, why) = outcome.failed.iter().find(|(p, _)| *p == serve).expect("the collector is reported");
    assert_eq!((*pid, why.code), (serve, ActionErrorCode::Protected));
    assert!(wait_for(LIMIT, || is_gone(sleep)));
    shell.wait().unwrap();
    assert!(matches!(state(serve), Some('S' | 'R')), "the collector runs on: {:?}", state(serve));
    let _ = std::process::Command::new("kill").arg("-9").arg(serve.to_string()).status();
}
