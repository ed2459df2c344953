//! The blank or black window some Linux setups show with WebKitGTK, and its workaround.
//!
//! WebKitGTK draws through DMA-BUF buffers shared with the GPU driver. Where that path is
//! broken (NVIDIA's proprietary driver, some Wayland compositors, machines or virtual
//! machines without a GPU render node) the window stays blank or black while the page
//! runs. Setting `WEBKIT_DISABLE_DMABUF_RENDERER=1` before WebKit starts avoids it, at a
//! small cost in drawing speed. The variable must be in the environment before the
//! first GTK call, and changing our own environment at run time is not sound in a
//! threaded program, so when a risky setup is detected the app starts itself again
//! with the variable set (once: the variable being set stops a second round).
//!
//! `PROCYON_RENDERING=safe` forces the workaround (and also turns off WebKit's
//! compositing, the other usual cure); `PROCYON_RENDERING=gpu` turns detection off.

/// Why the workaround is needed here, if it is.
pub fn risky_setup(
    env: &dyn Fn(&str) -> Option<String>,
    exists: &dyn Fn(&str) -> bool,
    render_nodes: usize,
) -> Option<&'static str> {
    if env("WEBKIT_DISABLE_DMABUF_RENDERER").is_some() {
        return None;
    }
    match env("PROCYON_RENDERING").as_deref() {
        Some("gpu") => return None,
        Some("safe") => return Some("PROCYON_RENDERING=safe"),
        _ => {}
    }
    if exists("/proc/driver/nvidia/version") {
        return Some("the NVIDIA driver");
    }
    if render_nodes == 0 {
        return Some("no GPU render node (/dev/dri/renderD*)");
    }
    None
}

fn render_nodes() -> usize {
    std::fs::read_dir("/dev/dri")
        .map(|d| d.filter_map(Result::ok).filter(|e| e.file_name().to_string_lossy().starts_with("renderD")).count())
        .unwrap_or(0)
}

/// Starts the app again with the workaround when this setup needs it; returns only
/// when it does not (or when starting again failed, which is logged).
#[cfg(target_os = "linux")]
pub fn apply() {
    use std::os::unix::process::CommandExt;
    let env = |k: &str| std::env::var(k).ok();
    let exists = |p: &str| std::path::Path::new(p).exists();
    let Some(why) = risky_setup(&env, &exists, render_nodes()) else { return };
    let Ok(exe) = std::env::current_exe() else { return };
    tracing::info!("using WebKit's software path (WEBKIT_DISABLE_DMABUF_RENDERER=1): {why}");
    let mut command = std::process::Command::new(exe);
    command.args(std::env::args_os().skip(1)).env("WEBKIT_DISABLE_DMABUF_RENDERER", "1");
    if env("PROCYON_RENDERING").as_deref() == Some("safe") {
        command.env("WEBKIT_DISABLE_COMPOSITING_MODE", "1");
    }
    // `exec` only returns on failure.
    let e = command.exec();
    tracing::warn!("cannot restart with the rendering workaround: {e}");
}

/// Other platforms have no such problem.
#[cfg(not(target_os = "linux"))]
pub fn apply() {}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(vars: &[(&str, &str)], nvidia: bool, nodes: usize) -> Option<&'static str> {
        let env = |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned());
        let exists = |p: &str| nvidia && p == "/proc/driver/nvidia/version";
        risky_setup(&env, &exists, nodes)
    }

    #[test]
    fn the_workaround_is_chosen_only_where_needed() {
        assert_eq!(check(&[], false, 1), None);
        assert!(check(&[], true, 1).is_some());
        assert!(check(&[], false, 0).is_some());
        assert!(check(&[("PROCYON_RENDERING", "safe")], false, 1).is_some());
        assert_eq!(check(&[("PROCYON_RENDERING", "gpu")], true, 0), None);
        // Already applied (or set by the user): never again, so no restart loop.
        assert_eq!(check(&[("WEBKIT_DISABLE_DMABUF_RENDERER", "1")], true, 0), None);
        assert_eq!(check(&[("WEBKIT_DISABLE_DMABUF_RENDERER", "0")], true, 0), None);
    }
}
