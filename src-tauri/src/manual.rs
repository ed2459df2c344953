//! Man pages and shell completion scripts, made from a program's clap definition so that
//! they cannot drift from the flags it takes.
//!
//! `procyon` and `procyon-agent` both parse their command line with [`parse`], which adds
//! a hidden `generate` subcommand to the program's own definition:
//!
//! ```text
//! procyon generate man DIR            # procyon.1, procyon-serve.1, ... into DIR
//! procyon generate completion bash    # to standard output (also zsh, fish, ...)
//! ```
//!
//! The packaging script (`scripts/deb.sh`) runs these with the binaries it packages. The
//! pages and scripts are made from the definition *without* `generate`, so it shows in
//! neither, and ordinary builds do no extra work: the output is only made when asked.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap::{Command, CommandFactory, FromArgMatches, Parser, Subcommand};
use clap_complete::Shell;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, roman};

/// The name of the hidden subcommand.
const SUBCOMMAND: &str = "generate";

/// What `generate` makes.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum Generate {
    /// Write the man pages of the program and of each of its subcommands into DIR
    /// (created if missing): `procyon.1`, `procyon-serve.1`, ...
    Man {
        /// The directory to write into.
        dir: PathBuf,
    },
    /// Print a shell's completion script.
    Completion {
        /// bash, zsh, fish, elvish or powershell.
        shell: Shell,
    },
}

/// A file the program reads or writes, for the FILES section of its main man page.
#[derive(Debug, Clone, Copy)]
pub struct File {
    /// Where it is.
    pub path: &'static str,
    /// What it holds, in a sentence or two.
    pub what: &'static str,
}

/// A parsed command line: what the program was asked to do, or a request for its
/// documentation.
#[derive(Debug)]
pub enum Parsed<P> {
    /// The program's own command line.
    Run(P),
    /// `generate ...`: call [`Generate::run`].
    Generate(Generate),
}

/// Parses the process's arguments as `P` plus the hidden `generate` subcommand, exiting
/// with clap's message on a bad argument or `--help`, as [`Parser::parse`] does.
pub fn parse<P: Parser>() -> Parsed<P> {
    parse_from(std::env::args_os()).unwrap_or_else(|e| e.exit())
}

/// [`parse`] from given arguments (the program's name first), returning clap's error.
pub fn parse_from<P, I, T>(args: I) -> Result<Parsed<P>, clap::Error>
where
    P: Parser,
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let generate = Generate::augment_subcommands(
        Command::new(SUBCOMMAND).about("Man pages and shell completions of this program").subcommand_required(true),
    )
    .hide(true);
    let matches = P::command().subcommand(generate).try_get_matches_from(args)?;
    if let Some((SUBCOMMAND, sub)) = matches.subcommand() {
        return Generate::from_arg_matches(sub).map(Parsed::Generate);
    }
    // The same formatting of errors as `P::parse` (usage and all).
    P::from_arg_matches(&matches).map(Parsed::Run).map_err(|e| e.format(&mut P::command()))
}

impl Generate {
    /// Makes what was asked for `P`'s definition: man pages (with `files` in the main
    /// page's FILES section) or a completion script on standard output.
    pub fn run<P: CommandFactory>(&self, files: &[File]) -> io::Result<()> {
        match self {
            Generate::Man { dir } => {
                for path in man_pages(P::command(), files, dir)? {
                    println!("{}", path.display());
                }
                Ok(())
            }
            Generate::Completion { shell } => completion(P::command(), *shell, &mut io::stdout().lock()),
        }
    }
}

/// Writes the man page of `cmd` and of each of its visible subcommands (nested ones
/// too) into `dir`, named as `man` looks them up (`procyon-user-add.1`). Returns the
/// files written.
pub fn man_pages(cmd: Command, files: &[File], dir: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    // `procyon help` needs no page of its own.
    let mut cmd = cmd.disable_help_subcommand(true);
    // Building gives each subcommand its full name (`procyon-serve`), which names its page.
    cmd.build();
    let mut written = Vec::new();
    write_pages(&cmd, files, dir, &mut written)?;
    Ok(written)
}

fn write_pages(cmd: &Command, files: &[File], dir: &Path, written: &mut Vec<PathBuf>) -> io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, &[], dir, written)?;
    }
    let man = Man::new(cmd.clone());
    let mut page = Vec::new();
    render(&man, cmd, files, &mut page)?;
    let path = dir.join(man.get_filename());
    std::fs::write(&path, page)?;
    written.push(path);
    Ok(())
}

/// clap_mangen's sections in its own order, with FILES before VERSION.
fn render(man: &Man, cmd: &Command, files: &[File], out: &mut dyn Write) -> io::Result<()> {
    if files.is_empty() {
        return man.render(out);
    }
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(out)?;
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        man.render_subcommands_section(out)?;
    }
    if cmd.get_after_long_help().is_some() || cmd.get_after_help().is_some() {
        man.render_extra_section(out)?;
    }
    let mut roff = Roff::new();
    roff.control("SH", ["FILES"]);
    for file in files {
        roff.control("TP", []);
        roff.text([bold(file.path)]);
        roff.text([roman(file.what)]);
    }
    roff.to_writer(out)?;
    if cmd.get_version().is_some() || cmd.get_long_version().is_some() {
        man.render_version_section(out)?;
    }
    Ok(())
}

/// Writes `shell`'s completion script for `cmd`, registered under the command's name.
pub fn completion(cmd: Command, shell: Shell, out: &mut dyn Write) -> io::Result<()> {
    let mut cmd = cmd;
    let name = cmd.get_name().to_owned();
    clap_complete::generate(shell, &mut cmd, name, out);
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A program with a subcommand of its own, as `procyon` and `procyon-agent` are.
    #[derive(Parser, Debug, PartialEq)]
    #[command(name = "demo", version = "1.2.3", about = "A demo program")]
    struct Demo {
        /// How often.
        #[arg(long, env = "DEMO_INTERVAL")]
        interval: Option<u32>,
        #[command(subcommand)]
        command: Option<DemoCommand>,
    }

    #[derive(Subcommand, Debug, PartialEq)]
    enum DemoCommand {
        /// Serve things.
        Serve {
            /// Where to listen.
            #[arg(long)]
            bind: Option<String>,
        },
    }

    const FILES: &[File] = &[File { path: "/etc/demo.toml", what: "The settings." }];

    #[test]
    fn the_program_parses_as_before_and_generate_is_recognised() {
        let parsed = parse_from::<Demo, _, _>(["demo", "--interval", "3", "serve"]).unwrap();
        assert!(matches!(parsed, Parsed::Run(Demo { interval: Some(3), command: Some(DemoCommand::Serve { .. }) })));
        let parsed = parse_from::<Demo, _, _>(["demo", "generate", "completion", "fish"]).unwrap();
        assert!(matches!(parsed, Parsed::Generate(Generate::Completion { shell: Shell::Fish })));
        assert!(parse_from::<Demo, _, _>(["demo", "generate"]).is_err(), "generate needs to know what");
        assert!(parse_from::<Demo, _, _>(["demo", "--bogus"]).is_err());
    }

    #[test]
    fn generate_is_in_neither_the_help_nor_the_pages_nor_the_completions() {
        let Err(help) = parse_from::<Demo, _, _>(["demo", "--help"]) else { panic!("--help is an early exit") };
        assert!(!help.to_string().contains("generate"), "{help}");
        let dir = tempfile::tempdir().unwrap();
        let pages = man_pages(Demo::command(), FILES, dir.path()).unwrap();
        let mut names: Vec<_> = pages.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        names.sort();
        assert_eq!(names, ["demo-serve.1", "demo.1"]);
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut script = Vec::new();
            completion(Demo::command(), shell, &mut script).unwrap();
            let script = String::from_utf8(script).unwrap();
            assert!(script.contains("serve") && script.contains("interval"), "{shell}: {script}");
            assert!(!script.contains("generate"), "{shell}: {script}");
        }
    }

    #[test]
    fn the_main_page_has_its_files_and_options_and_the_subcommand_pages_theirs() {
        let dir = tempfile::tempdir().unwrap();
        man_pages(Demo::command(), FILES, dir.path()).unwrap();
        let main = std::fs::read_to_string(dir.path().join("demo.1")).unwrap();
        for part in [".TH demo 1", ".SH NAME", ".SH SYNOPSIS", "\\-\\-interval", "DEMO_INTERVAL", ".SH FILES"] {
            assert!(main.contains(part), "{part} missing from:\n{main}");
        }
        assert!(main.contains("/etc/demo.toml") && main.contains("The settings."), "{main}");
        assert!(main.find(".SH FILES") < main.find(".SH VERSION"), "{main}");
        let serve = std::fs::read_to_string(dir.path().join("demo-serve.1")).unwrap();
        assert!(serve.contains("\\-\\-bind") && !serve.contains(".SH FILES"), "{serve}");
    }
}
