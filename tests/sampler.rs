//! The sampler against the real OS: real child processes, a real listening socket, the
//! real CPU and network counters.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::net::TcpListener;
use std::time::Duration;

use std::collections::HashSet;

use common::load::Load;
use common::{Sleeper, marker};
use procyon::model::{ProcessStatus, Protocol, TcpState};
use procyon::sample::{CmdlineMode, Sampler, SamplerOptions};

#[test]
fn a_spawned_child_appears_with_its_facts() {
    let tag = marker("child");
    let child = Sleeper::start(&tag);
    let snap = Sampler::new(SamplerOptions::default()).sample();
    let p = snap.processes.iter().find(|p| p.pid == child.pid()).expect("child listed");
    assert_eq!(p.ppid, Some(std::process::id()));
    assert_eq!(p.name, "sh");
    assert!(p.cmd.contains(&tag), "command line {:?} lacks the marker", p.cmd);
    assert_eq!(p.user.as_deref(), Some(common::me().as_str()));
    assert!(matches!(p.status, ProcessStatus::Sleeping | ProcessStatus::Running), "{:?}", p.status);
    // A sampler knows every figure: none is null.
    let (rss, virt) = (p.rss_bytes.unwrap(), p.virtual_bytes.unwrap());
    assert!(rss > 0 && virt >= rss);
    assert_eq!(p.threads, Some(1));
    assert!(!p.kernel_thread);
    // Its start time is recent and matches what the control guard sees.
    let start = p.start_time.unwrap();
    let age = chrono::Utc::now() - start;
    assert!(age >= chrono::TimeDelta::zero() && age < chrono::TimeDelta::seconds(60), "start time {start}");
    assert_eq!(procyon::sample::identify(child.pid()).unwrap().start_time, start);
    // The sleeping grandchild is there too, under it.
    assert!(snap.processes.iter().any(|q| q.ppid == Some(child.pid()) && q.name == "sleep"));
}

#[test]
fn every_process_is_listed_not_a_top_n() {
    let snap = Sampler::new(SamplerOptions::default()).sample();
    let in_proc = std::fs::read_dir("/proc")
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_str().unwrap().parse::<u32>().is_ok())
        .count();
    // Processes come and go between the two listings; allow a little slack.
    assert!(snap.processes.len() + 5 >= in_proc, "{} listed, {} in /proc", snap.processes.len(), in_proc);
    assert!(snap.processes.windows(2).all(|w| w[0].pid < w[1].pid), "sorted by pid");
}

#[test]
fn secrets_on_a_command_line_never_reach_the_json() {
    let secrets = ["hunter2-pw-7731", "tok-9d8e7f", "envsecret-5521", "urlpass-3342", "mysqlpw-1199"];
    let line = format!(
        "--password={} --token {} DB_PASSWORD={} postgres://app:{}@db/x -p{}",
        secrets[0], secrets[1], secrets[2], secrets[3], secrets[4]
    );
    let tag = marker("secret");
    let child = Sleeper::start(&format!("{tag} {line}"));
    let snap = Sampler::new(SamplerOptions::default()).sample();
    let p = snap.processes.iter().find(|p| p.pid == child.pid()).expect("child listed");
    assert!(p.cmd.contains(&tag), "the rest of the command line stays: {}", p.cmd);
    assert!(p.cmd.contains("--password=***"));
    let json = serde_json::to_string(&snap).unwrap();
    for s in secrets {
        assert!(!json.contains(s), "secret {s} leaked");
    }
}

#[test]
fn a_secret_argument_with_spaces_is_masked_whole() {
    let tag = marker("phrase");
    // `sh -c SCRIPT NAME ARGS...`: the arguments stay on the shell's command line as
    // they were given, one of them with spaces.
    let mut child = std::process::Command::new("sh")
        .args(["-c", "sleep 600 & wait", &tag, "--passphrase", "correct horse battery staple", "-v"])
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    common::wait_for(Duration::from_secs(5), || !common::children_of(child.id()).is_empty());
    let snap = Sampler::new(SamplerOptions::default()).sample();
    let cmd = snap.processes.iter().find(|p| p.pid == child.id()).map(|p| p.cmd.clone());
    for pid in common::children_of(child.id()) {
        let _ = std::process::Command::new("kill").arg("-9").arg(pid.to_string()).status();
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(cmd.expect("child listed"), format!("sh -c sleep 600 & wait {tag} --passphrase *** -v"));
}

#[test]
fn command_lines_can_be_cut_to_the_program_or_left_out() {
    let tag = marker("mode");
    let child = Sleeper::start(&format!("{tag} --password hunter2"));
    let cmd_with = |cmdline| {
        let snap = Sampler::new(SamplerOptions { cmdline, ..SamplerOptions::default() }).sample();
        let p = snap.processes.iter().find(|p| p.pid == child.pid()).expect("child listed");
        (p.cmd.clone(), snap)
    };
    let (full, _) = cmd_with(CmdlineMode::Full);
    assert!(full.starts_with("sh -c ") && full.contains(&tag) && full.ends_with("--password ***"), "{full}");
    let (exe, _) = cmd_with(CmdlineMode::Exe);
    assert_eq!(exe, "sh");
    let (none, snap) = cmd_with(CmdlineMode::None);
    assert_eq!(none, "");
    assert!(snap.processes.iter().all(|p| p.cmd.is_empty()), "no command line at all");
    assert!(snap.processes.iter().any(|p| p.name == "sh"), "the processes themselves are still there");
}

#[test]
fn control_characters_in_command_lines_are_made_printable() {
    let tag = marker("ctl");
    let child = Sleeper::start(&format!("{tag} 'line one\nline two\u{1b}[31m'"));
    let snap = Sampler::new(SamplerOptions::default()).sample();
    let p = snap.processes.iter().find(|p| p.pid == child.pid()).expect("child listed");
    assert!(!p.cmd.chars().any(char::is_control), "{:?}", p.cmd);
    assert!(p.cmd.contains("line one line two"), "{:?}", p.cmd);
    // Such a snapshot is one the collector accepts as it is.
    assert!(snap.processes.iter().all(|p| !p.name.chars().any(char::is_control)));
}

#[test]
fn a_listening_socket_appears_with_its_pid() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let v6 = TcpListener::bind("[::1]:0").ok();
    let snap = Sampler::new(SamplerOptions::default()).sample();
    let me = std::process::id();
    let c =
        snap.connections.iter().find(|c| c.protocol == Protocol::Tcp && c.local_port == port).expect("socket listed");
    assert_eq!(c.state, Some(TcpState::Listen));
    assert_eq!(c.pid, Some(me));
    assert_eq!(c.local_address.to_string(), "127.0.0.1");
    assert_eq!(c.remote_address, None);
    let l = snap.ports.listening.iter().find(|l| l.port == port).expect("listening port listed");
    assert_eq!(l.pid, Some(me));
    assert!(l.process_name.is_some());
    if let Some(v6) = v6 {
        let port6 = v6.local_addr().unwrap().port();
        assert!(snap.connections.iter().any(|c| c.local_port == port6 && c.local_address.is_ipv6()));
    }
}

#[test]
fn an_established_connection_shows_both_ends() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (_server_side, _) = listener.accept().unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_port = udp.local_addr().unwrap().port();
    let snap = Sampler::new(SamplerOptions::default()).sample();
    let est: Vec<_> = snap
        .connections
        .iter()
        .filter(|c| c.state == Some(TcpState::Established) && (c.local_port == port || c.remote_port == Some(port)))
        .collect();
    assert_eq!(est.len(), 2, "both ends of the loopback connection");
    assert!(est.iter().all(|c| c.pid == Some(std::process::id())));
    let u = snap.connections.iter().find(|c| c.protocol == Protocol::Udp && c.local_port == udp_port).unwrap();
    assert_eq!(u.state, None);
    let usage = snap.ports.by_local_port.iter().find(|p| p.port == port && p.protocol == Protocol::Tcp).unwrap();
    assert_eq!(usage.connections, 2, "listener plus the accepted side");
}

#[test]
fn cpu_memory_and_network_figures_are_sane() {
    let mut sampler = Sampler::new(SamplerOptions::default());
    let first = sampler.sample();
    let cores = std::fs::read_to_string("/proc/stat")
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    assert_eq!(first.cpu.per_core_percent.len(), cores);
    assert_eq!(first.host.logical_cores.map(|c| c as usize), Some(cores));
    assert!(first.cpu.load_average.is_some());
    // A busy thread makes the very first snapshot's CPU figures real, not zero.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spin = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::hint::black_box(0u64.wrapping_add(1));
            }
        })
    };
    let busy = Sampler::new(SamplerOptions::default()).sample();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    spin.join().unwrap();
    // Not more than "clearly above zero": on a loaded machine the spinning thread may
    // get a small share of a core while the sampler measures.
    assert!(busy.cpu.total_percent > 5.0, "a spinning thread shows: {}", busy.cpu.total_percent);
    let me = busy.processes.iter().find(|p| p.pid == std::process::id()).unwrap();
    assert!(me.cpu_percent.unwrap() > 5.0, "our own process shows the spin: {:?}", me.cpu_percent);

    std::thread::sleep(Duration::from_millis(300));
    let second = sampler.sample();
    assert_eq!(second.seq, first.seq + 1);
    assert!(second.taken_at > first.taken_at);
    assert!(second.interval_ms >= 200);
    for s in [&first, &second] {
        let total = s.memory.total_bytes.unwrap();
        assert!(total > 0 && s.memory.used_bytes <= total);
        assert!(s.memory.available_bytes.is_some() && s.memory.swap_total_bytes.is_some());
        assert!((0.0..=100.0).contains(&s.cpu.total_percent));
        assert!(s.cpu.per_core_percent.iter().all(|c| (0.0..=100.0).contains(c)));
        assert!(s.errors.is_empty(), "errors: {:?}", s.errors);
        let t = s.network.total.as_ref().unwrap();
        for rate in [t.sent_bytes_per_sec, t.received_bytes_per_sec, t.sent_packets_per_sec, t.received_packets_per_sec]
        {
            assert!(rate.is_finite() && rate >= 0.0);
        }
        assert!(s.network.interfaces.iter().any(|i| i.name == "lo"));
        for p in &s.processes {
            let cpu = p.cpu_percent.unwrap();
            assert!(cpu.is_finite() && cpu >= 0.0);
            assert!((0.0..=100.0).contains(&p.memory_percent.unwrap()));
            assert!(p.start_time.is_some() && p.rss_bytes.is_some() && p.virtual_bytes.is_some());
        }
    }
}

/// How many of the `pids` this process has files open on in `/proc` (the sampler keeps
/// some open between ticks).
fn processes_with_files_open(pids: &[u32]) -> usize {
    let targets: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .map(|t| t.to_string_lossy().into_owned())
        .collect();
    pids.iter().filter(|pid| targets.iter().any(|t| t.starts_with(&format!("/proc/{pid}/")))).count()
}

/// Runs in a process of its own: the files open in this test binary are counted, and the
/// samplers of tests running beside it keep files open on the same processes.
#[test]
fn a_loaded_machine_is_listed_whole_and_gone_processes_let_go_of_their_files() {
    let name = "a_loaded_machine_alone";
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", name, "--test-threads=1", "--nocapture"])
        .output()
        .unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{report}");
    assert!(report.contains("1 passed"), "the test ran: {report}");
}

#[test]
#[ignore = "run by a_loaded_machine_is_listed_whole_and_gone_processes_let_go_of_their_files, alone"]
fn a_loaded_machine_alone() {
    let mut sampler = Sampler::new(SamplerOptions::default());
    let load = Load::start(100, 100).unwrap();
    let snap = sampler.sample();
    let pids = load.pids();
    for pid in &pids {
        let p = snap.processes.iter().find(|p| p.pid == *pid).expect("load process listed");
        assert_eq!((p.name.as_str(), p.ppid), ("cat", Some(std::process::id())));
    }
    // Each load process holds one end of a loopback connection: each is an owner.
    let port = load.port();
    let owners: HashSet<u32> = snap
        .connections
        .iter()
        .filter(|c| c.local_port == port || c.remote_port == Some(port))
        .filter_map(|c| c.pid)
        .collect();
    assert!(pids.iter().all(|pid| owners.contains(pid)), "owners {owners:?}");
    // The sampler keeps their files open (at most half the limit on open files).
    let kept = processes_with_files_open(&pids);
    assert!(kept >= 90, "files kept open for {kept} of the 100 new processes");

    drop(load);
    let snap = sampler.sample();
    assert!(pids.iter().all(|pid| snap.processes.iter().all(|p| p.pid != *pid)), "the load is gone");
    assert_eq!(processes_with_files_open(&pids), 0, "files of gone processes are closed");
}

#[test]
fn the_hostname_can_be_overridden() {
    let snap = Sampler::new(SamplerOptions { hostname: Some("web-1".into()), ..SamplerOptions::default() }).sample();
    assert_eq!(snap.host.hostname, "web-1");
}

#[test]
fn the_live_sampler_publishes_and_stops_with_its_readers() {
    let rx = procyon::sample::spawn(Sampler::new(SamplerOptions::default()), Duration::from_millis(250));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let seqs = runtime.block_on(async {
        let mut rx = rx;
        let mut seqs = Vec::new();
        while seqs.len() < 3 {
            tokio::time::timeout(Duration::from_secs(5), rx.changed()).await.unwrap().unwrap();
            if let Some(s) = rx.borrow_and_update().as_ref() {
                seqs.push(s.seq);
            }
        }
        seqs
    });
    assert!(seqs.windows(2).all(|w| w[1] > w[0]), "increasing: {seqs:?}");
}
