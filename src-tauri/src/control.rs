//! Process actions: suspend, resume, terminate and kill, one process or a whole subtree.
//!
//! Every action names its target by pid *and* start time ([`Target`]). Pids are reused:
//! a person looking at a snapshot from two seconds ago may click "kill" on a pid that now
//! belongs to something else, so when the start time no longer matches the action is
//! refused ([`ActionErrorCode::PidReused`]).
//!
//! Some processes are never touched, whoever asks: pid 1 (killing it takes the machine
//! down), Procyon's own process (the monitor would cut off its own hands) and kernel
//! threads (they cannot be signalled meaningfully).
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
    Ok(process)
}

/// Carries out `action` on one process.
pub fn act(target: Target, action: ProcessAction) -> Result<Outcome, ActionError> {
    let process = check(target)?;
    send_signal(&process, action)?;
    Ok(Outcome { signalled: vec![process.pid], process, failed: Vec::new() })
}

/// Carries out `action` on a process and all its descendants, children first, so that
/// a parent cannot restart a child it has already lost. The whole subtree is refused if
/// it contains a protected process (Procyon itself, say).
pub fn act_tree(target: Target, action: ProcessAction) -> Result<Outcome, ActionError> {
    let root = check(target)?;
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
    if action == ProcessAction::Kill {
        // Freeze the root first: a stopped parent cannot fork replacements for the
        // children being killed below it. SIGKILL works on a stopped process.
        send_signal(&root, ProcessAction::Suspend)?;
    }
    let by_pid: HashMap<u32, &ProcessEntry> = table.iter().map(|p| (p.pid, p)).collect();
    let mut outcome = Outcome { process: root.clone(), signalled: Vec::new(), failed: Vec::new() };
    for pid in order {
        if pid == root.pid {
            continue;
        }
        let Some(child) = by_pid.get(&pid) else { continue };
        let child_target = Target { pid, start_time: Some(child.start_time) };
        match check(child_target).and_then(|p| send_signal(&p, action)) {
            Ok(()) => outcome.signalled.push(pid),
            // A child that exited meanwhile is what we wanted anyway.
            Err(e) if e.code == ActionErrorCode::NotFound => {}
            Err(e) => outcome.failed.push((pid, e)),
        }
    }
    send_signal(&root, action)?;
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

/// Sends the signal for `action` to `process`.
#[cfg(unix)]
fn send_signal(process: &ProcessEntry, action: ProcessAction) -> Result<(), ActionError> {
    use nix::errno::Errno;
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    let signal = match action {
        ProcessAction::Suspend => Signal::SIGSTOP,
        ProcessAction::Resume => Signal::SIGCONT,
        ProcessAction::Terminate => Signal::SIGTERM,
        ProcessAction::Kill => Signal::SIGKILL,
    };
    let pid = process.pid;
    let raw = i32::try_from(pid).map_err(|_| error(ActionErrorCode::NotFound, format!("No process {pid}.")))?;
    kill(Pid::from_raw(raw), signal).map_err(|errno| match errno {
        Errno::ESRCH => error(ActionErrorCode::NotFound, format!("No process {pid}: it has exited.")),
        Errno::EPERM => error(ActionErrorCode::PermissionDenied, permission_message(process, action)),
        other => error(ActionErrorCode::Failed, format!("Could not {} process {pid}: {other}.", action.as_str())),
    })
}

/// Sends the signal for `action` to `process`.
#[cfg(not(unix))]
fn send_signal(process: &ProcessEntry, action: ProcessAction) -> Result<(), ActionError> {
    Err(error(
        ActionErrorCode::Unsupported,
        format!("Procyon cannot {} process {} on this operating system yet.", action.as_str(), process.pid),
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
}
