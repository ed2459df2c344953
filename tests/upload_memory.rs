//! How much memory reading a hostile upload takes, measured as this test process's
//! peak resident memory: an upload is refused or read without building anything much
//! larger than its body. (One test only in this file: the peak is the whole process's.)

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

/// This process's peak resident memory (VmHWM), in bytes.
fn peak_rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<usize>().unwrap() * 1024
}

/// This process's resident memory now (VmRSS), in bytes.
fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<usize>().unwrap() * 1024
}

/// How far the resident memory rose above where it was while `f` ran (the kernel's
/// peak is reset first: writing 5 to `/proc/self/clear_refs`).
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let before = rss();
    let out = f();
    (out, peak_rss().saturating_sub(before))
}

/// A seed-style upload of `count` processes as small as they come (20 bytes each when
/// they all say pid 1), with pids 1, 2, ... when `unique`.
fn empty_processes(count: usize, unique: bool) -> Vec<u8> {
    let mut body = String::from(r#"{"hostname":"h","processes":["#);
    for i in 0..count {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&format!(r#"{{"pid":{},"name":""}}"#, if unique { i + 1 } else { 1 }));
    }
    body.push_str("]}");
    body.into_bytes()
}

#[test]
fn hostile_uploads_cost_about_their_size_to_refuse_or_read() {
    use procyon::server::upload::{MAX_BODY_BYTES, MAX_PROCESSES, parse};
    const MIB: usize = 1 << 20;

    // 800,000 empty processes in 16 MiB: refused, naming the list, with next to nothing
    // built (a tree of JSON values took about 300 MB).
    let body = empty_processes(800_000, false);
    assert!(body.len() <= MAX_BODY_BYTES, "{}", body.len());
    let (result, peak) = peak_of(|| parse(&body));
    let e = result.unwrap_err();
    let (status, answer) = e.parts();
    assert_eq!((status.as_u16(), answer.field.as_deref()), (422, Some("processes")), "{}", answer.message);
    assert!(peak < 16 * MIB, "refusing {} MiB took {} MiB", body.len() / MIB, peak / MIB);

    // Fields nobody reads are skipped, not built: a million empty objects under a key of
    // no meaning cost nothing.
    let mut junk = String::from(r#"{"hostname":"h","processes":[{"pid":1,"name":"a"}],"junk":["#);
    junk.push_str(&vec![r#"{"a":1}"#; 1_000_000].join(","));
    junk.push_str("]}");
    assert!(junk.len() <= MAX_BODY_BYTES);
    let (result, peak) = peak_of(|| parse(junk.as_bytes()));
    assert_eq!(result.unwrap().processes.len(), 1);
    assert!(peak < 16 * MIB, "reading {} MiB took {} MiB", junk.len() / MIB, peak / MIB);

    // The most processes accepted: read within a few times their size.
    let body = empty_processes(MAX_PROCESSES, true);
    let (result, peak) = peak_of(|| parse(&body));
    assert_eq!(result.unwrap().processes.len(), MAX_PROCESSES);
    assert!(peak < 32 * MIB, "reading {} KiB took {} MiB", body.len() >> 10, peak / MIB);
}
