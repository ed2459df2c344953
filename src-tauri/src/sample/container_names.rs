//! Docker's and Podman's names for the containers the control groups point at, asked of
//! their API sockets on this machine.
//!
//! A control group names a Docker or Podman container by its id only; the name people
//! know it by (`docker ps`'s NAMES) is the runtime's. The runtime's API socket tells it:
//! one read-only `GET /containers/json?all=true` (the Docker API, which Podman serves as well),
//! nothing else is ever asked or sent. The sockets looked at are Docker's
//! (`$DOCKER_HOST` when it is a `unix://` path, `/var/run/docker.sock`, rootless
//! `/run/user/UID/docker.sock`) and Podman's (`/run/podman/podman.sock`, rootless
//! `/run/user/UID/podman/podman.sock`); a socket that is absent or refuses costs one
//! failed `connect`.
//!
//! The sampler never waits for a runtime: [`Names`] answers from what it has, and a
//! thread of its own asks the sockets when a container it has no name for shows up (at
//! most once in [`MIN_GAP`]) and again every [`REFRESH`] while there are any (a renamed
//! container), so a new container's name shows a tick or two after its processes do.
//! No thread is started and no socket is touched on a machine without such containers.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::model::ProcessSample;
use crate::model::details::ContainerRuntime;

/// Unknown ids are asked about at most this often.
pub const MIN_GAP: Duration = Duration::from_secs(10);
/// Known names are asked again this often, while there are containers.
pub const REFRESH: Duration = Duration::from_secs(120);
/// How long one socket may take to connect, answer or be read.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Largest answer read: a listing of thousands of containers is well under it.
const MAX_ANSWER_BYTES: u64 = 8 << 20;
/// Most names kept (ids of containers that are gone are forgotten at each refresh).
const MAX_NAMES: usize = 100_000;

/// Names of Docker and Podman containers by id, filled in the background.
pub struct Names {
    known: Arc<Mutex<HashMap<String, String>>>,
    /// Ids already asked about without an answer: not asked again before [`REFRESH`].
    asked: HashSet<String>,
    ask: Option<mpsc::SyncSender<()>>,
    last_ask: Option<Instant>,
    sockets: fn() -> Vec<PathBuf>,
}

impl Default for Names {
    fn default() -> Names {
        Names::with_sockets(default_sockets)
    }
}

impl Names {
    /// Asks the sockets `sockets` lists (read afresh at each refresh: a runtime may
    /// start after the sampler).
    pub fn with_sockets(sockets: fn() -> Vec<PathBuf>) -> Names {
        Names { known: Arc::default(), asked: HashSet::new(), ask: None, last_ask: None, sockets }
    }

    /// Puts the known names on the Docker and Podman containers of `processes`, and
    /// has the sockets asked when one is not known and it is time to.
    pub fn name(&mut self, processes: &mut [ProcessSample]) {
        let mut unknown = Vec::new();
        let mut any = false;
        {
            let Ok(known) = self.known.lock() else { return };
            for c in processes.iter_mut().filter_map(|p| p.container.as_mut()) {
                if !matches!(c.runtime, ContainerRuntime::Docker | ContainerRuntime::Podman) {
                    continue;
                }
                any = true;
                match known.get(&c.id) {
                    Some(name) => c.name = Some(name.clone()),
                    None if !self.asked.contains(&c.id) => unknown.push(c.id.clone()),
                    None => {}
                }
            }
        }
        if !any {
            return;
        }
        let since = self.last_ask.map(|t| t.elapsed());
        let refresh = since.is_none_or(|s| s >= REFRESH);
        if refresh || (!unknown.is_empty() && since.is_some_and(|s| s >= MIN_GAP)) {
            if refresh {
                self.asked.clear();
            }
            self.asked.extend(unknown);
            self.last_ask = Some(Instant::now());
            self.start_asking();
        }
    }

    /// Wakes the asking thread, starting it the first time.
    fn start_asking(&mut self) {
        if self.ask.is_none() {
            let (tx, rx) = mpsc::sync_channel::<()>(1);
            let known = Arc::clone(&self.known);
            let sockets = self.sockets;
            let spawned = thread::Builder::new().name("procyon-containers".into()).spawn(move || {
                while rx.recv().is_ok() {
                    let names = ask_all(&sockets());
                    if let Ok(mut known) = known.lock() {
                        *known = names;
                    }
                }
            });
            if let Err(e) = spawned {
                tracing::warn!("cannot start the container name thread: {e}");
                return;
            }
            self.ask = Some(tx);
        }
        if let Some(tx) = &self.ask {
            // Full: a question is already waiting, which will do.
            let _ = tx.try_send(());
        }
    }

    /// Waits until the names of `ids` are known or `deadline` passes (for tests).
    #[cfg(test)]
    fn wait_for(&self, ids: &[&str], deadline: Duration) -> bool {
        let end = Instant::now() + deadline;
        while Instant::now() < end {
            if self.known.lock().is_ok_and(|k| ids.iter().all(|id| k.contains_key(*id))) {
                return true;
            }
            thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

/// The API sockets of Docker and Podman where this machine would have them.
pub fn default_sockets() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(host) = std::env::var("DOCKER_HOST")
        && let Some(path) = host.strip_prefix("unix://")
    {
        out.push(PathBuf::from(path));
    }
    out.push(PathBuf::from("/var/run/docker.sock"));
    out.push(PathBuf::from("/run/podman/podman.sock"));
    if let Ok(dir) = std::env::var("XDG_RUNTIME_DIR") {
        out.push(Path::new(&dir).join("podman/podman.sock"));
        out.push(Path::new(&dir).join("docker.sock"));
    }
    // Rootless runtimes of every user, when we may look (run as root).
    if let Ok(users) = std::fs::read_dir("/run/user") {
        for user in users.flatten().take(1_000) {
            out.push(user.path().join("podman/podman.sock"));
            out.push(user.path().join("docker.sock"));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Every name every socket gives, by full id. A socket that fails is skipped.
fn ask_all(sockets: &[PathBuf]) -> HashMap<String, String> {
    let mut names = HashMap::new();
    for socket in sockets {
        if !socket.exists() {
            continue;
        }
        match list(socket) {
            Ok(found) => {
                for (id, name) in found {
                    if names.len() < MAX_NAMES {
                        names.insert(id, name);
                    }
                }
            }
            Err(e) => tracing::debug!("no container names from {}: {e}", socket.display()),
        }
    }
    names
}

/// `GET /containers/json?all=true` on one socket: (id, name) of each container (all of
/// them: one that is starting may not count as running yet when its processes show).
pub fn list(socket: &Path) -> io::Result<Vec<(String, String)>> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    // HTTP/1.0: the runtime answers with the whole body and closes, no keep-alive.
    stream
        .write_all(b"GET /containers/json?all=true HTTP/1.0\r\nHost: localhost\r\nAccept: application/json\r\n\r\n")?;
    let mut answer = Vec::new();
    stream.take(MAX_ANSWER_BYTES).read_to_end(&mut answer)?;
    let body = http_body(&answer).map_err(io::Error::other)?;
    parse_list(&body).map_err(io::Error::other)
}

/// The body of a whole HTTP answer, when its status is 200 (chunked or not).
fn http_body(answer: &[u8]) -> Result<Vec<u8>, String> {
    let end = answer.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no end of headers in the answer")?;
    let head = String::from_utf8_lossy(&answer[..end]);
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("the runtime answered {status:?}"));
    }
    let chunked = lines.any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding") && v.trim().eq_ignore_ascii_case("chunked")
        })
    });
    let body = &answer[end + 4..];
    if !chunked {
        return Ok(body.to_vec());
    }
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n").ok_or("a chunk without its size line")?;
        let size_text = String::from_utf8_lossy(&rest[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("a chunk size {size_text:?}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest.get(..size).ok_or("a chunk cut short")?;
        out.extend_from_slice(chunk);
        rest = rest.get(size + 2..).ok_or("a chunk cut short")?;
    }
}

/// One container of `GET /containers/json`; only what we use.
#[derive(Deserialize)]
struct Listed {
    #[serde(rename = "Id")]
    id: String,
    #[serde(rename = "Names", default)]
    names: Vec<String>,
}

/// (id, name) of each container in a `/containers/json` answer. Docker writes names
/// with a leading `/` (`/web`); Podman's compatible answer does too, its own does not.
fn parse_list(body: &[u8]) -> Result<Vec<(String, String)>, String> {
    let listed: Vec<Listed> = serde_json::from_slice(body).map_err(|e| format!("not a container list: {e}"))?;
    Ok(listed
        .into_iter()
        .filter_map(|c| {
            let name = c.names.into_iter().next()?;
            let name = name.strip_prefix('/').unwrap_or(&name).to_owned();
            (!name.is_empty()).then_some((c.id, name))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Docker Engine 24's answer to `GET /containers/json` with one container, as
    /// recorded (trimmed of fields we do not read, with its chunked framing).
    const DOCKER_ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\nApi-Version: 1.43\r\nContent-Type: application/json\r\nDocker-Experimental: false\r\nOstype: linux\r\nServer: Docker/24.0.7 (linux)\r\nDate: Mon, 07 Dec 2026 18:00:00 GMT\r\nTransfer-Encoding: chunked\r\n\r\n10f\r\n[{\"Id\":\"3f4e8a1c9b2d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f\",\"Names\":[\"/web-frontend\"],\"Image\":\"nginx:1.25\",\"ImageID\":\"sha256:a8758716bb\",\"Command\":\"/docker-entrypoint.sh nginx -g 'daemon off;'\",\"Created\":1765130000,\"State\":\"running\",\"Status\":\"Up 2 hours\"}]\n\r\n0\r\n\r\n";

    #[test]
    fn a_recorded_docker_answer_gives_its_names() {
        let body = http_body(DOCKER_ANSWER).unwrap();
        assert_eq!(
            parse_list(&body).unwrap(),
            [(
                "3f4e8a1c9b2d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f".to_owned(),
                "web-frontend".to_owned()
            )]
        );
    }

    #[test]
    fn bad_answers_are_errors_not_names() {
        assert!(http_body(b"HTTP/1.0 403 Forbidden\r\n\r\n[]").is_err());
        assert!(http_body(b"garbage").is_err());
        assert!(http_body(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err());
        assert!(http_body(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nff\r\nshort").is_err());
        assert!(parse_list(b"{\"message\":\"page not found\"}").is_err());
        assert_eq!(
            parse_list(br#"[{"Id":"a","Names":[]},{"Id":"b","Names":["c"]}]"#).unwrap(),
            [("b".into(), "c".into())]
        );
    }

    #[test]
    fn no_socket_means_no_thread_and_no_names() {
        let mut names = Names::with_sockets(Vec::new);
        let mut processes = Vec::new();
        names.name(&mut processes);
        assert!(names.ask.is_none(), "nothing to name: nothing started");
        let _ = names.wait_for(&[], Duration::ZERO);
    }

    /// Podman's own API service, started by the test on a socket of its own, names a
    /// container the test creates (from an empty image it imports: nothing is pulled,
    /// nothing runs). Skipped where Podman is not installed or cannot store an image.
    #[test]
    fn podman_names_a_container_over_its_socket() {
        use std::process::{Command, Stdio};
        let podman = |args: &[&str]| Command::new("podman").args(args).stderr(Stdio::null()).output();
        if podman(&["--version"]).is_err() {
            eprintln!("podman is not installed: skipped");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let tag = format!("procyon-test-{}", std::process::id());
        let tar = dir.path().join("empty.tar");
        // An empty tar archive: two blocks of zeros.
        std::fs::write(&tar, [0u8; 1024]).unwrap();
        let out = podman(&["import", "-q", tar.to_str().unwrap(), &tag]).unwrap();
        if !out.status.success() {
            // Installed but not usable by this user (no storage, no subordinate ids).
            eprintln!("podman cannot import an image here: skipped");
            return;
        }
        let out = podman(&["create", "-q", "--name", &tag, "--network", "none", &tag, "/none"]).unwrap();
        let id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        let socket = dir.path().join("podman.sock");
        let mut service = Command::new("podman")
            .args(["system", "service", "--time", "0", &format!("unix://{}", socket.display())])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let end = Instant::now() + Duration::from_secs(60);
        let mut listed = Err(io::Error::other("not asked"));
        while Instant::now() < end {
            listed = list(&socket);
            if listed.is_ok() {
                break;
            }
            thread::sleep(Duration::from_millis(200));
        }
        // The whole way, where the test may make control groups: a process in the
        // container's control group (as Podman names it) gets the container's name.
        let named = listed.is_ok().then(|| name_through_a_control_group(&id, &socket)).flatten();
        let _ = service.kill();
        let _ = service.wait();
        let _ = podman(&["rm", "-f", &tag]);
        let _ = podman(&["rmi", "-f", &tag]);
        assert!(id.len() == 64, "podman create gave {id:?}");
        if let Some(named) = named {
            assert_eq!(named.as_deref(), Some(tag.as_str()), "the sampler named the process's container");
        }
        assert!(listed.unwrap().contains(&(id, tag)), "the created container is listed by its name");
    }

    /// The socket [`name_through_a_control_group`] has its [`Names`] ask.
    static TEST_SOCKET: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

    /// Puts a child in a control group `libpod-ID.scope` (before it starts its program,
    /// as runtimes do), samples it, and has [`Names`] ask `socket` until the child's
    /// container has a name or a minute passes. `None` where no control group can be
    /// made here (not root): skipped.
    fn name_through_a_control_group(id: &str, socket: &Path) -> Option<Option<String>> {
        use std::process::{Command, Stdio};
        let root = ["/sys/fs/cgroup/pids", "/sys/fs/cgroup"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.join("cgroup.procs").exists())?;
        let base = root.join(format!("procyon-names-{}", std::process::id()));
        let group = base.join(format!("libpod-{id}.scope"));
        if std::fs::create_dir_all(&group).is_err() {
            eprintln!("cannot make control groups here: the sampler part is skipped");
            return None;
        }
        TEST_SOCKET.set(socket.to_owned()).ok()?;
        let mut child = Command::new("sh")
            .args(["-c", &format!("echo $$ > {}; exec sleep 60", group.join("cgroup.procs").display())])
            .stdin(Stdio::null())
            .spawn()
            .ok()?;
        thread::sleep(Duration::from_millis(300));
        let mut processes = super::super::linux::Processes::new(Default::default());
        let mut names = Names::with_sockets(|| TEST_SOCKET.get().cloned().into_iter().collect());
        let end = Instant::now() + Duration::from_secs(60);
        let mut name = None;
        while Instant::now() < end && name.is_none() {
            thread::sleep(Duration::from_millis(200));
            let mut list = processes.read(Some(1)).unwrap_or_default();
            names.name(&mut list);
            // Until it has started its program, it may not be in the group yet.
            let Some(ours) = list.iter().find(|p| p.pid == child.id() && p.name == "sleep") else { continue };
            let ours = ours.container.clone();
            assert_eq!(ours.as_ref().map(|c| (c.runtime, c.id.as_str())), Some((ContainerRuntime::Podman, id)));
            name = ours.and_then(|c| c.name);
        }
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir(&group);
        let _ = std::fs::remove_dir(&base);
        Some(name)
    }
}
