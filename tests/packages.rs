//! The Debian packages of the collector (`procyon`) and the agent (`procyon-agent`), as
//! `make deb` makes them (scripts/deb.sh, cargo-deb), but from the binaries this test run
//! built, so no release build is needed: each package is built, its contents listed and
//! checked (binary, systemd unit, man pages, completions, default config and its
//! conffile entry, maintainer scripts), its binary extracted and run, a man page
//! rendered and a completion script loaded in bash.
//!
//! Nothing is installed: the machine that runs the tests is left as it was. The
//! install, upgrade, remove and purge steps belong on a machine that may be changed.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::collector::{BIN, agent_bin};

/// What one package must hold.
struct Expected {
    /// The package and its binary.
    name: &'static str,
    /// Its systemd unit, and the user it runs as.
    unit: &'static str,
    user: &'static str,
    /// Its default config: where it goes, the file in the repository, its mode.
    config: &'static str,
    config_source: &'static str,
    config_mode: &'static str,
    /// A subcommand with its own man page, and an option that page documents.
    subcommand: &'static str,
    option: &'static str,
    /// What the purge removes.
    data: &'static str,
}

const COLLECTOR: Expected = Expected {
    name: "procyon",
    unit: "procyon.service",
    user: "procyon",
    config: "/etc/procyon/collector.env",
    config_source: "packaging/collector.env",
    config_mode: "-rw-r--r--",
    subcommand: "serve",
    option: "--bind",
    data: "/var/lib/procyon",
};

const AGENT: Expected = Expected {
    name: "procyon-agent",
    unit: "procyon-agent.service",
    user: "root",
    config: "/etc/procyon/agent.toml",
    config_source: "packaging/agent.toml",
    config_mode: "-rw-------",
    subcommand: "login",
    option: "--replace",
    data: "/var/lib/procyon-agent",
};

#[test]
fn the_collector_package_holds_what_it_promises() {
    let bin = PathBuf::from(BIN);
    check_package(&COLLECTOR, &bin);
}

#[test]
fn the_agent_package_holds_what_it_promises() {
    let bin = agent_bin();
    check_package(&AGENT, &bin);
}

/// The service's settings file (packaging/collector.env) lists every variable of
/// `procyon serve` but PROCYON_DATA (the unit gives --data), and each one it lists is
/// read: a bad value in it is refused, naming its flag.
#[test]
fn the_collector_settings_file_has_every_variable_of_procyon_serve() {
    let help = run(Command::new(BIN).args(["serve", "--help"]));
    let mut read: Vec<&str> = help.split("[env: ").skip(1).filter_map(|s| s.split(['=', ']']).next()).collect();
    read.retain(|v| *v != "PROCYON_DATA");
    read.sort();
    let file = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/collector.env")).unwrap();
    let mut listed: Vec<&str> = file
        .lines()
        .filter_map(|l| l.trim_start_matches('#').split_once('=').map(|(name, _)| name))
        .filter(|name| name.starts_with("PROCYON_"))
        .collect();
    listed.sort();
    assert_eq!(listed, read);
    for var in listed {
        let flag = format!("--{}", var.trim_start_matches("PROCYON_").to_lowercase().replace('_', "-"));
        let data = tempfile::tempdir().unwrap();
        let mut serve = Command::new(BIN);
        serve.arg("serve").arg("--data").arg(data.path()).env(var, "%bogus");
        if var != "PROCYON_BIND" {
            // A flag would hide the variable.
            serve.args(["--bind", "127.0.0.1:0"]);
        }
        let mut child = serve.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                child.kill().unwrap();
                panic!("{var}=%bogus: procyon serve started anyway");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(&flag), "{var}=%bogus: {stderr}");
    }
}

fn check_package(expected: &Expected, bin: &Path) {
    let name = expected.name;
    let work = tempfile::tempdir().unwrap();
    let deb = build(name, bin.parent().unwrap(), &work.path().join("out"));

    // --- Control fields --------------------------------------------------------------
    let field = |f: &str| run(Command::new("dpkg-deb").arg("--field").arg(&deb).arg(f)).trim().to_owned();
    assert_eq!(field("Package"), name);
    assert_eq!(field("Version"), format!("{}-1", env!("CARGO_PKG_VERSION")));
    if name == "procyon" {
        // postinst runs systemd-sysusers to make the user.
        assert!(field("Depends").contains("systemd | systemd-standalone-sysusers"), "{}", field("Depends"));
    }

    // --- Contents ----------------------------------------------------------------------
    let listing = run(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    let files = parse_listing(&listing);
    let mode = |path: &str| files.get(path).map(String::as_str).unwrap_or_else(|| panic!("{path} missing:\n{listing}"));
    assert_eq!(mode(&format!("/usr/bin/{name}")), "-rwxr-xr-x");
    assert_eq!(mode(&format!("/usr/lib/systemd/system/{}", expected.unit)), "-rw-r--r--");
    assert_eq!(mode(expected.config), expected.config_mode);
    for completion in [
        format!("/usr/share/bash-completion/completions/{name}"),
        format!("/usr/share/zsh/vendor-completions/_{name}"),
        format!("/usr/share/fish/vendor_completions.d/{name}.fish"),
    ] {
        assert_eq!(mode(&completion), "-rw-r--r--");
    }
    if name == "procyon" {
        assert_eq!(mode("/usr/lib/sysusers.d/procyon.conf"), "-rw-r--r--");
    }
    // A page for the program and for every subcommand it has: the same set the binary
    // itself writes, compressed.
    let pages_dir = work.path().join("pages");
    run(Command::new(bin).args(["generate", "man"]).arg(&pages_dir));
    let mut generated: Vec<String> = std::fs::read_dir(&pages_dir)
        .unwrap()
        .map(|e| format!("/usr/share/man/man1/{}.gz", e.unwrap().file_name().to_string_lossy()))
        .collect();
    generated.sort();
    let packaged: Vec<String> = files.keys().filter(|p| p.starts_with("/usr/share/man/")).cloned().collect();
    assert_eq!(packaged, generated);
    assert!(packaged.contains(&format!("/usr/share/man/man1/{name}-{}.1.gz", expected.subcommand)), "{packaged:?}");
    assert!(!packaged.iter().any(|p| p.contains("generate")), "the hidden subcommand has no page: {packaged:?}");

    // --- The config is a conffile (an upgrade keeps local edits), as in the repository --
    let control = work.path().join("control");
    run(Command::new("dpkg-deb").arg("--control").arg(&deb).arg(&control));
    let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap();
    assert_eq!(conffiles.lines().collect::<Vec<_>>(), [expected.config], "{conffiles}");

    // --- Maintainer scripts ---------------------------------------------------------------
    let script = |s: &str| {
        let path = control.join(s);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{s}: {e}"));
        use std::os::unix::fs::PermissionsExt;
        assert_ne!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o111, 0, "{s} is not executable");
        let syntax = Command::new("sh").arg("-n").arg(&path).output().unwrap();
        assert!(syntax.status.success(), "{s}: {}\n{text}", String::from_utf8_lossy(&syntax.stderr));
        text
    };
    let postinst = script("postinst");
    let prerm = script("prerm");
    let postrm = script("postrm");
    let unit = expected.unit;
    // An upgrade restarts the service only if it runs; a fresh install neither enables
    // nor starts it, and says how to.
    assert!(postinst.contains(&format!("deb-systemd-invoke try-restart {unit}")), "{postinst}");
    assert!(!postinst.contains("_dh_action=start") && !postinst.contains("was-enabled defaults to true"), "{postinst}");
    assert!(postinst.contains(&format!("systemctl enable --now {}", unit.trim_end_matches(".service"))), "{postinst}");
    assert!(prerm.contains(&format!("deb-systemd-invoke stop {unit}")), "{prerm}");
    // The data stays on remove and goes on purge only.
    let purge =
        postrm.split(r#"if [ "$1" = purge ]; then"#).nth(1).unwrap_or_else(|| panic!("no purge branch: {postrm}"));
    assert!(purge.contains(&format!("rm -rf {}\n", expected.data)), "{postrm}");
    assert_eq!(postrm.matches(&format!("rm -rf {}", expected.data)).count(), 1, "{postrm}");
    if name == "procyon" {
        assert!(postinst.contains("systemd-sysusers") && postinst.contains("procyon.conf"), "{postinst}");
    }

    // --- Extracted: the binary runs, the unit points at it, the config is the repository's ----
    let root = work.path().join("root");
    run(Command::new("dpkg-deb").arg("--extract").arg(&deb).arg(&root));
    let version = run(Command::new(root.join("usr/bin").join(name)).arg("--version"));
    assert_eq!(version.trim(), format!("{name} {}", env!("CARGO_PKG_VERSION")));
    let unit_text = std::fs::read_to_string(root.join("usr/lib/systemd/system").join(unit)).unwrap();
    let exec = unit_text.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("ExecStart");
    assert!(exec.starts_with(&format!("/usr/bin/{name} ")), "{exec}");
    for line in [&format!("User={}", expected.user), "NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes"] {
        assert!(unit_text.lines().any(|l| l == line), "{unit}: no {line}");
    }
    if name == "procyon" {
        assert!(unit_text.lines().any(|l| l == format!("EnvironmentFile=-{}", expected.config)), "{unit_text}");
        let sysusers = std::fs::read_to_string(root.join("usr/lib/sysusers.d/procyon.conf")).unwrap();
        assert!(
            sysusers.lines().any(|l| l.starts_with("u procyon ") && l.ends_with(" /var/lib/procyon")),
            "{sysusers}"
        );
    } else {
        assert!(exec.contains(&format!("--config {}", expected.config)), "{exec}");
    }
    let packaged_config = std::fs::read(root.join(expected.config.trim_start_matches('/'))).unwrap();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(expected.config_source);
    assert!(
        packaged_config == std::fs::read(&source).unwrap(),
        "{} differs from {}",
        expected.config,
        source.display()
    );

    // --- The man pages render ------------------------------------------------------------
    let man1 = root.join("usr/share/man/man1");
    let main_page = render_man(&man1.join(format!("{name}.1.gz")));
    for part in ["NAME", "SYNOPSIS", "OPTIONS", "FILES", expected.config, expected.data] {
        assert!(main_page.contains(part), "{part} missing from {name}(1):\n{main_page}");
    }
    let sub_page = render_man(&man1.join(format!("{name}-{}.1.gz", expected.subcommand)));
    assert!(sub_page.contains(expected.option), "{sub_page}");

    // --- The bash completion loads and completes ------------------------------------------
    let bash = root.join("usr/share/bash-completion/completions").join(name);
    let words = complete_in_bash(&bash, name);
    assert!(words.iter().any(|w| w == expected.subcommand), "{words:?}");
    assert!(words.iter().any(|w| w == "--help"), "{words:?}");
    assert!(!words.iter().any(|w| w == "generate"), "the hidden subcommand is not offered: {words:?}");
    let zsh = std::fs::read_to_string(root.join("usr/share/zsh/vendor-completions").join(format!("_{name}"))).unwrap();
    assert!(zsh.starts_with(&format!("#compdef {name}")), "{zsh}");
    let fish = std::fs::read_to_string(root.join(format!("usr/share/fish/vendor_completions.d/{name}.fish"))).unwrap();
    assert!(fish.contains(&format!("complete -c {name} ")), "{fish}");
}

/// Builds one package from the binaries in `from` (no release build), into `out`.
fn build(name: &str, from: &Path, out: &Path) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/deb.sh");
    // --fast: less compression; the test reads the package once.
    let printed = run(Command::new(script).arg("--from").arg(from).arg("--out").arg(out).args([name, "--", "--fast"]));
    let deb = PathBuf::from(printed.lines().last().unwrap_or_default());
    assert!(deb.starts_with(out) && deb.is_file(), "deb.sh printed {printed:?}");
    deb
}

/// `dpkg-deb --contents` as path (without the leading `.`) to mode, files only.
fn parse_listing(listing: &str) -> BTreeMap<String, String> {
    listing
        .lines()
        .filter(|l| !l.starts_with('d'))
        .map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let path = fields.last().unwrap().trim_start_matches('.');
            (path.to_owned(), fields[0].to_owned())
        })
        .collect()
}

/// The page as `man` shows it, or as groff formats it where there is no `man`.
fn render_man(page: &Path) -> String {
    let out = if has("man") {
        Command::new("man")
            .arg("-l")
            .arg(page)
            .env("MANWIDTH", "200")
            .env("MANPAGER", "cat")
            .env("LC_ALL", "C")
            .output()
            .unwrap()
    } else {
        assert!(has("groff"), "neither man nor groff to render man pages with (Debian: man-db)");
        Command::new("sh")
            .arg("-c")
            .arg(r#"gzip -dc "$1" | groff -man -Tutf8 -P-cbou"#)
            .arg("sh")
            .arg(page)
            .output()
            .unwrap()
    };
    assert!(out.status.success(), "rendering {}: {}", page.display(), String::from_utf8_lossy(&out.stderr));
    // Hyphens as typed, whatever the formatter's idea of a minus sign.
    String::from_utf8(out.stdout).unwrap().replace(['\u{2010}', '\u{2212}'], "-")
}

/// Loads `script` in bash and asks its completion function what follows `name `.
fn complete_in_bash(script: &Path, name: &str) -> Vec<String> {
    let probe = r#"
        source "$1" || exit 1
        spec=$(complete -p "$2") || exit 1
        func=$(printf '%s\n' "$spec" | sed -n 's/.* -F \([^ ]*\) .*/\1/p')
        [ -n "$func" ] || { echo "no completion function in: $spec" >&2; exit 1; }
        COMP_WORDS=("$2" "")
        COMP_CWORD=1
        COMP_LINE="$2 "
        COMP_POINT=${#COMP_LINE}
        "$func" "$2" "" "$2"
        printf '%s\n' "${COMPREPLY[@]}"
    "#;
    let out = run(Command::new("bash").arg("--norc").arg("-c").arg(probe).arg("bash").arg(script).arg(name));
    out.lines().map(str::to_owned).collect()
}

fn has(program: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {program}")).output().is_ok_and(|o| o.status.success())
}

/// Runs `cmd`, fails the test with its stderr unless it succeeds, returns its stdout.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
