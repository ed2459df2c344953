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
