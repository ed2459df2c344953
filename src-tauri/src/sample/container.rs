//! Which container a process runs in, read from its control group paths
//! (`/proc/PID/cgroup`).
//!
//! Container runtimes put each container's processes in a control group named after the
//! container, each in its own way: Docker `docker-ID.scope` (systemd driver) or
//! `/docker/ID` (cgroupfs driver), Podman `libpod-ID.scope`, containerd
//! `cri-containerd-ID.scope`, CRI-O `crio-ID.scope`, systemd-nspawn
//! `systemd-nspawn@NAME.service` or `machine-NAME.scope`, LXC `lxc.payload.NAME` or
//! `/lxc/NAME`; Kubernetes adds a pod level (`kubepods-…-podUID.slice`,
//! `kubepods/…/podUID`). [`parse`] recognises these names in the text alone (no
//! runtime is asked), so it works the same for a process on the collector's machine and
//! on an agent's, and it is a pure function, tested on lines taken from real machines.
//!
//! The innermost container wins (a container in a pod in a VM scope is that container).
//! Helper processes that only look after a container (`libpod-conmon-…`,
//! `crio-conmon-…`, `lxc.monitor.…`) are not in it.

use crate::model::details::{ContainerRef, ContainerRuntime};

/// The container named by the control group lines `text` (the contents of
/// `/proc/PID/cgroup`), or `None` when the process is in none.
pub fn parse(text: &str) -> Option<ContainerRef> {
    // Every line names the same container when there is one; v2 has one line (`0::/…`),
    // v1 one per controller. The first line that names one is taken.
    text.lines().find_map(|line| {
        let path = line.splitn(3, ':').nth(2)?;
        of_path(path)
    })
}

/// The container named by one control group path.
fn of_path(path: &str) -> Option<ContainerRef> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let pod = segments.iter().find_map(|s| pod_uid(s));
    // Innermost first.
    for (i, segment) in segments.iter().enumerate().rev() {
        let parent = i.checked_sub(1).map(|p| segments[p]);
        if let Some((runtime, id)) = named(segment, parent) {
            // nspawn and LXC name their control groups after the container's name.
            let name = matches!(runtime, ContainerRuntime::SystemdNspawn | ContainerRuntime::Lxc).then(|| id.clone());
            return Some(ContainerRef { runtime, id, pod, name });
        }
    }
    // A pod's container under the cgroupfs driver: `kubepods/QOS/podUID/ID`.
    if pod.is_some()
        && let Some(last) = segments.last()
        && is_container_id(last)
    {
        return Some(ContainerRef { runtime: ContainerRuntime::Kubernetes, id: (*last).to_owned(), pod, name: None });
    }
    None
}

/// A segment that names a container by itself (or with its parent segment).
fn named(segment: &str, parent: Option<&str>) -> Option<(ContainerRuntime, String)> {
    use ContainerRuntime as R;
    let scope = segment.strip_suffix(".scope");
    if let Some(unit) = scope {
        for (prefix, runtime) in
            [("docker-", R::Docker), ("libpod-", R::Podman), ("cri-containerd-", R::Containerd), ("crio-", R::CriO)]
        {
            if let Some(id) = unit.strip_prefix(prefix)
                && is_container_id(id)
            {
                return Some((runtime, id.to_owned()));
            }
        }
        // systemd-machined's scope for a container it registered (nspawn), unless it is
        // a virtual machine's (libvirt's `machine-qemu…`) or Podman's own.
        if parent == Some("machine.slice")
            && let Some(name) = unit.strip_prefix("machine-")
            && !name.starts_with("qemu")
            && !name.starts_with("libpod")
            && !name.is_empty()
        {
            return Some((R::SystemdNspawn, unescape(name)));
        }
    }
    if let Some(name) = segment.strip_prefix("systemd-nspawn@").and_then(|s| s.strip_suffix(".service"))
        && !name.is_empty()
    {
        return Some((R::SystemdNspawn, unescape(name)));
    }
    if let Some(name) = segment.strip_prefix("lxc.payload.")
        && !name.is_empty()
    {
        return Some((R::Lxc, name.to_owned()));
    }
    match parent {
        Some("docker") if is_container_id(segment) => Some((R::Docker, segment.to_owned())),
        Some("lxc") if !segment.is_empty() && !segment.starts_with("lxc.") => Some((R::Lxc, segment.to_owned())),
        Some("libpod_parent") if is_container_id(segment) => Some((R::Podman, segment.to_owned())),
        _ => None,
    }
}

/// The pod uid a Kubernetes segment names: `podUID` (cgroupfs driver) or
/// `kubepods-QOS-podUID.slice` with `_` for `-` (systemd driver).
fn pod_uid(segment: &str) -> Option<String> {
    if let Some(slice) = segment.strip_suffix(".slice")
        && slice.starts_with("kubepods")
        && let Some(at) = slice.rfind("-pod")
    {
        let uid = &slice[at + 4..];
        return is_uid(uid).then(|| uid.replace('_', "-"));
    }
    let uid = segment.strip_prefix("pod")?;
    is_uid(uid).then(|| uid.to_owned())
}

/// A pod uid: hex digits with `-` or `_` between groups.
fn is_uid(text: &str) -> bool {
    text.len() >= 8 && text.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-' || b == b'_')
}

/// A container id as runtimes make them: 12 to 64 hex digits.
fn is_container_id(text: &str) -> bool {
    (12..=64).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A systemd unit name part with its `\x2d`-style escapes undone.
fn unescape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find("\\x") {
        out.push_str(&rest[..at]);
        let code = rest.get(at + 2..at + 4).and_then(|h| u8::from_str_radix(h, 16).ok());
        match code {
            Some(c) if c.is_ascii() && !c.is_ascii_control() => {
                out.push(c as char);
                rest = &rest[at + 4..];
            }
            _ => {
                out.push_str("\\x");
                rest = &rest[at + 2..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ContainerRuntime as R;

    const ID: &str = "3f4e8a1c9b2d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f";

    fn container(text: &str) -> Option<(R, String, Option<String>)> {
        parse(text).map(|c| (c.runtime, c.id, c.pod))
    }

    #[test]
    fn docker_under_either_driver_and_either_cgroup_version() {
        let expected = Some((R::Docker, ID.to_owned(), None));
        assert_eq!(container(&format!("0::/system.slice/docker-{ID}.scope\n")), expected);
        assert_eq!(container(&format!("0::/docker/{ID}\n")), expected);
        // cgroup v1: one line per controller, all naming it.
        let v1 = format!(
            "12:pids:/docker/{ID}\n11:memory:/docker/{ID}\n1:name=systemd:/docker/{ID}\n0::/system.slice/containerd.service\n"
        );
        assert_eq!(container(&v1), expected);
    }

    #[test]
    fn podman_rootful_and_rootless_but_not_its_monitor() {
        assert_eq!(
            container(&format!("0::/machine.slice/libpod-{ID}.scope/container\n")),
            Some((R::Podman, ID.to_owned(), None))
        );
        let rootless =
            format!("0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container\n");
        assert_eq!(container(&rootless).map(|c| c.0), Some(R::Podman));
        assert_eq!(container(&format!("0::/machine.slice/libpod-conmon-{ID}.scope\n")), None);
        assert_eq!(container(&format!("0::/libpod_parent/{ID}\n")).map(|c| c.0), Some(R::Podman));
    }

    #[test]
    fn kubernetes_pods_with_their_runtime() {
        let uid = "6a1b2c3d_4e5f_6a7b_8c9d_0e1f2a3b4c5d";
        let pod = Some("6a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d".to_owned());
        let containerd = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice/cri-containerd-{ID}.scope\n"
        );
        assert_eq!(container(&containerd), Some((R::Containerd, ID.to_owned(), pod.clone())));
        let crio = format!(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid}.slice/crio-{ID}.scope\n"
        );
        assert_eq!(container(&crio), Some((R::CriO, ID.to_owned(), pod.clone())));
        assert_eq!(container(&format!("0::/kubepods.slice/kubepods-pod{uid}.slice/crio-conmon-{ID}.scope\n")), None);
        // cgroupfs driver: the runtime is not in the path.
        let cgroupfs = format!("0::/kubepods/burstable/pod6a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d/{ID}\n");
        assert_eq!(container(&cgroupfs), Some((R::Kubernetes, ID.to_owned(), pod.clone())));
        // The pod's own slice, with no container below: no container.
        assert_eq!(container(&format!("0::/kubepods.slice/kubepods-pod{uid}.slice\n")), None);
    }

    #[test]
    fn nspawn_and_lxc_by_name() {
        assert_eq!(
            container("0::/machine.slice/systemd-nspawn@debian\\x2dbuild.service/payload/system.slice/cron.service\n"),
            Some((R::SystemdNspawn, "debian-build".into(), None))
        );
        assert_eq!(
            container("0::/machine.slice/machine-web1.scope/payload\n"),
            Some((R::SystemdNspawn, "web1".into(), None))
        );
        assert_eq!(container("0::/machine.slice/machine-qemu\\x2d1\\x2dvm.scope/vcpu0\n"), None);
        assert_eq!(
            container("0::/lxc.payload.db/system.slice/postgresql.service\n"),
            Some((R::Lxc, "db".into(), None))
        );
        assert_eq!(container("4:memory:/lxc/db\n"), Some((R::Lxc, "db".into(), None)));
        assert_eq!(container("0::/lxc.monitor.db\n"), None);
    }

    #[test]
    fn ordinary_processes_are_in_no_container() {
        for text in [
            "0::/user.slice/user-1000.slice/session-2.scope\n",
            "0::/system.slice/docker.service\n",
            "0::/system.slice/containerd.service\n",
            "0::/init.scope\n",
            "0::/\n",
            "",
            "garbage",
            "0::/docker/not-hex\n",
            "0::/system.slice/docker-abc.scope\n",
        ] {
            assert_eq!(container(text), None, "{text:?}");
        }
    }
}
