//! Process actions: suspend, resume, terminate and kill, one process or a whole subtree.
//!
//! Every action names its target by pid *and* start time ([`Target`]). Pids are reused:
//! a person looking at a snapshot from two seconds ago may click "kill" on a pid that now
//! belongs to something else, so when the start time no longer matches the action is
//! refused ([`ActionErrorCode::PidReused`]).
//!
//! Some processes are never touched, whoever asks: pid 1 (killing it takes the machine
//! down), Procyon's own programs (the collector, agents, the desktop app: an operator
//! could otherwise freeze the fleet's monitoring through an agent on the collector's
//! machine; see [`is_procyon_program`]) and kernel threads (they cannot be signalled
//! meaningfully). Tree actions skip them and what runs under them.
//!
//! Between the check and the signal a pid could change hands. On Linux the process is
//! held by a pidfd opened *before* the checks, and the signal goes through it, so it
//! reaches the process that was checked or none; where pidfds are missing (kernels
//! before 5.3, or a system-call filter) it is `kill` after the same checks.
//!
//! Errors are [`ActionError`]s: a code for programs and a sentence for people, which
//! the UI shows as it is. The one OS call, the signal, is behind [`send_signal`], with
//! the same signature everywhere.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::model::{ActionError, ActionErrorCode, ProcessAction};
use crate::sample::{self, ProcessEntry};

/// The process an action is meant for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Target {
    /// Its pid.
    pub pid: u32,
    /// Its start time as a snapshot showed it. `None` acts on whatever process has the
    /// pid now (the seed API's callers do not know start times); callers that have a
    /// snapshot should always pass it.
    pub start_time: Option<DateTime<Utc>>,
}

/// What an action did.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// The process acted on (its root, for a subtree).
    pub process: ProcessEntry,
    /// Every pid signalled, children before parents.
    pub signalled: Vec<u32>,
    /// Descendants that could not be signalled, with why. The root's own failure is an
    /// `Err` instead.
    pub failed: Vec<(u32, ActionError)>,
}

fn error(code: ActionErrorCode, message: impl Into<String>) -> ActionError {
    ActionError { code, message: message.into() }
}

/// Checks that `target` names a process Procyon may act on, and returns it.
pub fn check(target: Target) -> Result<ProcessEntry, ActionError> {
    let pid = target.pid;
    if pid == 0 {
        return Err(error(ActionErrorCode::NotFound, "No process has pid 0."));
    }
    if pid == 1 {
        return Err(error(
            ActionErrorCode::Protected,
            "Process 1 is the system's init process; Procyon never acts on it.",
        ));
    }
    if pid == std::process::id() {
        return Err(error(
            ActionErrorCode::Protected,
            format!("Process {pid} is Procyon itself; stop it through its service or window instead."),
        ));
    }
    let process = sample::identify(pid)
        .ok_or_else(|| error(ActionErrorCode::NotFound, format!("No process {pid}: it has exited.")))?;
    if let Some(expected) = target.start_time
        && expected != process.start_time
    {
        return Err(error(
            ActionErrorCode::PidReused,
            format!(
                "Process {pid} is no longer the one you saw: it is now `{}`, started at {}. Nothing was done; refresh and try again.",
                process.name,
                process.start_time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            ),
        ));
    }
    if process.kernel_thread {
        return Err(error(
            ActionErrorCode::Protected,
            format!("Process {pid} (`{}`) is a kernel thread; it cannot be signalled.", process.name),
        ));
    }
    if is_procyon_program(&process) {
        return Err(error(
            ActionErrorCode::Protected,
            format!(
                "Process {pid} (`{}`) is a Procyon program (a collector, an agent or the desktop app); Procyon never \
                 acts on one, so that monitoring cannot be stopped through it. Stop it through its own service or \
                 window instead.",
                process.name
            ),
        ));
    }
    Ok(process)
}

/// The names of Procyon's programs: `procyon` (the collector and the desktop app) and
/// `procyon-agent`.
const PROGRAM_NAMES: [&str; 2] = ["procyon", "procyon-agent"];

/// Whether `process` is one of Procyon's programs: a collector, an agent or the desktop
/// app on this machine, which no action may touch.
///
/// The rule: it runs the very file this process runs (same device and inode, whatever
/// its name); or the file it runs (the kernel's `/proc/PID/exe`, not the name the
/// process gives itself) is named `procyon` or `procyon-agent` *and* is owned by root or
/// by the user Procyon runs as, and writable by nobody else.
///
/// Why not the name alone: any process can call itself `procyon`, and any user can copy
/// `sleep` to `~/procyon`; if that made a process untouchable, anyone could hide a
/// runaway process from the operators. A file with our name that only root (the
/// installer) or Procyon's own user can have put there is ours: no other user can make
/// one. A user running a copy of Procyon's binary runs a Procyon program, which is
/// protected like any other.
///
/// When the file cannot be looked at (another user's process, and Procyon lacks the
/// right to inspect it, e.g. an agent without `CAP_SYS_PTRACE`), the name decides: the
/// mistake it may make is sparing an impostor, never freezing the monitor.
pub fn is_procyon_program(process: &ProcessEntry) -> bool {
    let named_like_ours = |name: &str| PROGRAM_NAMES.contains(&name);
    match sample::executable(process.pid) {
        Ok(exe) => exe.is_ours || (named_like_ours(&exe.file_name) && exe.owned_by_us_or_root),
        // Gone, a zombie or a kernel thread: it runs nothing to protect.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(_) => named_like_ours(&process.name),
    }
}

/// Checks `target` and sends it the signal for `action`, the one way this module
/// signals a process; returns the process signalled.
fn checked_signal(target: Target, action: ProcessAction) -> Result<ProcessEntry, ActionError> {
    send_signal(target.pid, action, || check(target))
}

/// Carries out `action` on one process.
pub fn act(target: Target, action: ProcessAction) -> Result<Outcome, ActionError> {
    let process = checked_signal(target, action)?;
    Ok(Outcome { signalled: vec![process.pid], process, failed: Vec::new() })
}

/// Carries out `action` on a process and all its descendants, children first, so that
/// a parent cannot restart a child it has already lost. The whole subtree is refused if
/// it contains Procyon's own process. Other protected processes in it (another Procyon
/// program, with whatever runs under it, such as the desktop app's web view) are left
/// alone and listed in [`Outcome::failed`].
pub fn act_tree(target: Target, action: ProcessAction) -> Result<Outcome, ActionError> {
    let root = check(target)?;
    // From here on the root is the process just checked, even if the caller gave no
    // start time: a pid that changes hands midway is refused.
    let root_target = Target { pid: root.pid, start_time: Some(root.start_time) };
    let table = sample::process_table().map_err(|e| {
        error(ActionErrorCode::Failed, format!("Cannot list processes to find the children of {}: {e}", root.pid))
    })?;
    let order = children_first(&table, root.pid);
    if order.contains(&std::process::id()) {
        return Err(error(
            ActionErrorCode::Protected,
            format!("The tree under process {} contains Procyon itself; act on its parts instead.", root.pid),
        ));
    }
    let by_pid: HashMap<u32, &ProcessEntry> = table.iter().map(|p| (p.pid, p)).collect();
    // Procyon programs in the tree, and what runs under each (their own helpers).
    let mut spared: HashMap<u32, u32> = HashMap::new();
    for &pid in order.iter().filter(|&&pid| pid != root.pid) {
        if !spared.contains_key(&pid) && by_pid.get(&pid).is_some_and(|p| is_procyon_program(p)) {
            for below in children_first(&table, pid) {
                spared.insert(below, pid);
            }
        }
    }
    if action == ProcessAction::Kill {
        // Freeze the root first: a stopped parent cannot fork replacements for the
        // children being killed below it. SIGKILL works on a stopped process.
        checked_signal(root_target, ProcessAction::Suspend)?;
    }
    let mut outcome = Outcome { process: root.clone(), signalled: Vec::new(), failed: Vec::new() };
    for pid in order {
        if pid == root.pid {
            continue;
        }
        let Some(child) = by_pid.get(&pid) else { continue };
        // (A Procyon program itself goes on to `check`, which refuses it and says why.)
        if let Some(&program) = spared.get(&pid)
            && program != pid
        {
            let message = format!("Process {pid} (`{}`) runs under Procyon process {program}; left alone.", child.name);
            outcome.failed.push((pid, error(ActionErrorCode::Protected, message)));
            continue;
        }
        let child_target = Target { pid, start_time: Some(child.start_time) };
        match checked_signal(child_target, action) {
            Ok(_) => outcome.signalled.push(pid),
            // A child that exited meanwhile is what we wanted anyway.
            Err(e) if e.code == ActionErrorCode::NotFound => {}
            Err(e) => outcome.failed.push((pid, e)),
        }
    }
    checked_signal(root_target, action)?;
    outcome.signalled.push(root.pid);
    Ok(outcome)
}

/// The pids of `root`'s subtree in post-order: every child before its parent, `root`
/// last. Robust against cycles in a racy table.
pub fn children_first(table: &[ProcessEntry], root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for p in table {
        if let Some(ppid) = p.ppid
            && ppid != p.pid
        {
            children.entry(ppid).or_default().push(p.pid);
        }
    }
    let mut order = Vec::new();
    let mut seen = std::collections::HashSet::new();
    // Iterative post-order: (pid, children pushed yet?)
    let mut stack = vec![(root, false)];
    while let Some((pid, expanded)) = stack.pop() {
        if expanded {
            order.push(pid);
            continue;
        }
        if !seen.insert(pid) {
            continue;
        }
        stack.push((pid, true));
        for child in children.get(&pid).into_iter().flatten() {
            stack.push((*child, false));
        }
    }
    order
}

/// Sends the signal for `action` to process `pid` if `check` (run after the process is
/// held, see below) accepts what has that pid; returns what `check` returned.
///
/// On Linux the process is held by a pidfd opened before `check` runs: if the pid
/// changed hands before the pidfd was opened, `check` sees the newcomer (its start time
/// differs) and refuses; if it changes hands after, the pidfd still names the process
/// that was checked, which has exited, and the signal goes nowhere. Where pidfds are
/// unavailable, `kill` after the same check (the window between them stays open).
#[cfg(unix)]
fn send_signal(
    pid: u32,
    action: ProcessAction,
    check: impl FnOnce() -> Result<ProcessEntry, ActionError>,
) -> Result<ProcessEntry, ActionError> {
    use nix::errno::Errno;
    use nix::sys::signal::{Signal, kill};

    let gone = || error(ActionErrorCode::NotFound, format!("No process {pid}: it has exited."));
    let raw = i32::try_from(pid).map_err(|_| error(ActionErrorCode::NotFound, format!("No process {pid}.")))?;
    let failed = |process: &ProcessEntry, errno: Errno| match errno {
        Errno::ESRCH => gone(),
        Errno::EPERM => error(ActionErrorCode::PermissionDenied, permission_message(process, action)),
        other => error(ActionErrorCode::Failed, format!("Could not {} process {pid}: {other}.", action.as_str())),
    };

    #[cfg(target_os = "linux")]
    {
        use rustix::process::{Pid, PidfdFlags, Signal as PidfdSignal, pidfd_open, pidfd_send_signal};
        let signal = match action {
            ProcessAction::Suspend => PidfdSignal::STOP,
            ProcessAction::Resume => PidfdSignal::CONT,
            ProcessAction::Terminate => PidfdSignal::TERM,
            ProcessAction::Kill => PidfdSignal::KILL,
        };
        let Some(target) = Pid::from_raw(raw) else { return Err(gone()) };
        match pidfd_open(target, PidfdFlags::empty()) {
            Ok(pidfd) => {
                let process = check()?;
                return pidfd_send_signal(&pidfd, signal)
                    .map(|()| process.clone())
                    .map_err(|errno| failed(&process, Errno::from_raw(errno.raw_os_error())));
            }
            Err(errno) if errno == rustix::io::Errno::SRCH => return Err(gone()),
            // No pidfds here (ENOSYS before Linux 5.3, EPERM under a system-call
            // filter): the same checks, then kill.
            Err(_) => {}
        }
    }

    let signal = match action {
        ProcessAction::Suspend => Signal::SIGSTOP,
        ProcessAction::Resume => Signal::SIGCONT,
        ProcessAction::Terminate => Signal::SIGTERM,
        ProcessAction::Kill => Signal::SIGKILL,
    };
    let process = check()?;
    kill(nix::unistd::Pid::from_raw(raw), signal).map(|()| process.clone()).map_err(|errno| failed(&process, errno))
}

/// Sends the signal for `action` to process `pid` if `check` accepts it.
#[cfg(not(unix))]
fn send_signal(
    pid: u32,
    action: ProcessAction,
    check: impl FnOnce() -> Result<ProcessEntry, ActionError>,
) -> Result<ProcessEntry, ActionError> {
    check()?;
    Err(error(
        ActionErrorCode::Unsupported,
        format!("Procyon cannot {} process {pid} on this operating system yet.", action.as_str()),
    ))
}

#[cfg(unix)]
fn permission_message(process: &ProcessEntry, action: ProcessAction) -> String {
    let me = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map_or_else(|| nix::unistd::geteuid().to_string(), |u| u.name);
    let owner = process.user.as_deref().unwrap_or("another user");
    format!(
        "Permission denied: Procyon runs as `{me}` and may not {} process {} (`{}`), which belongs to `{owner}`. \
         Run Procyon (or the agent on that machine) as `{owner}` or as root to act on it.",
        action.as_str(),
        process.pid,
        process.name
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(pid: u32, ppid: u32) -> ProcessEntry {
        ProcessEntry {
            pid,
            ppid: Some(ppid),
            name: format!("p{pid}"),
            start_time: Utc::now(),
            kernel_thread: false,
            user: None,
        }
    }

    #[test]
    fn children_come_before_parents() {
        let table = vec![entry(10, 1), entry(11, 10), entry(12, 10), entry(13, 11), entry(20, 1)];
        let order = children_first(&table, 10);
        assert_eq!(order.len(), 4);
        assert_eq!(*order.last().unwrap(), 10);
        let pos = |p| order.iter().position(|x| *x == p).unwrap();
        assert!(pos(13) < pos(11));
        assert!(pos(11) < pos(10) && pos(12) < pos(10));
        assert!(!order.contains(&20));
    }

    #[test]
    fn a_cycle_in_a_racy_table_terminates() {
        let table = vec![entry(10, 11), entry(11, 10)];
        let order = children_first(&table, 10);
        assert_eq!(order, vec![11, 10]);
    }

    #[test]
    fn refuses_pid_0_1_and_itself() {
        let t = |pid| Target { pid, start_time: None };
        assert_eq!(check(t(0)).unwrap_err().code, ActionErrorCode::NotFound);
        assert_eq!(check(t(1)).unwrap_err().code, ActionErrorCode::Protected);
        assert_eq!(check(t(std::process::id())).unwrap_err().code, ActionErrorCode::Protected);
    }

    /// Whether this process holds a pidfd now.
    #[cfg(target_os = "linux")]
    fn holds_a_pidfd() -> bool {
        std::fs::read_dir("/proc/self/fd").unwrap().flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|target| target.to_string_lossy() == "anon_inode:[pidfd]")
        })
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_check_runs_while_the_process_is_held_and_a_lost_one_is_not_signalled() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        let entry = sample::identify(pid).unwrap();
        let mut held = false;
        let err = send_signal(pid, ProcessAction::Kill, || {
            held = holds_a_pidfd();
            // The process ends and its pid is free between the check and the signal.
            child.kill().unwrap();
            child.wait().unwrap();
            Ok(entry.clone())
        })
        .unwrap_err();
        assert!(held, "the pidfd is open before the check");
        assert_eq!(err.code, ActionErrorCode::NotFound, "{}", err.message);
        assert!(!holds_a_pidfd(), "and closed after");

        // A refusing check: nothing is sent.
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        let err = send_signal(pid, ProcessAction::Kill, || Err(error(ActionErrorCode::PidReused, "no"))).unwrap_err();
        assert_eq!(err.code, ActionErrorCode::PidReused);
        assert!(child.try_wait().unwrap().is_none(), "still running");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
