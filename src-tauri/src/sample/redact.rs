//! Command lines with their secrets taken out.
//!
//! Command lines leave the machine (to a collector, to a browser), and people put secrets
//! on them: `mysql -pS3cret`, `--token=...`, `DB_PASSWORD=...`, `https://user:pass@host`.
//! [`command_line`] joins the arguments and replaces every value that looks like a secret
//! by `***`, then bounds the length. It errs on the side of hiding: `-p 8080` loses its
//! port too, because `-p` is also MySQL's password flag.

use crate::model::MAX_CMD_CHARS;

/// What a secret is replaced by.
pub const MASK: &str = "***";

/// Words that make an option or variable name secret, matched case-insensitively after
/// `-` and `_` are dropped (so `--api-key`, `API_KEY` and `apikey` all match).
const SECRET_WORDS: [&str; 9] =
    ["password", "passwd", "secret", "token", "apikey", "accesskey", "privatekey", "credential", "auth"];

/// Joins `args` into one line with secrets masked and at most [`MAX_CMD_CHARS`]
/// characters.
pub fn command_line<S: AsRef<str>>(args: &[S]) -> String {
    let mut out = String::new();
    let mut mask_next = false;
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        // Rules apply per word, not per argument: `sh -c "mysql -pX"` carries its
        // secrets inside one argument.
        for (j, word) in arg.as_ref().split(' ').enumerate() {
            if j > 0 {
                out.push(' ');
            }
            if word.is_empty() {
                continue;
            }
            if mask_next {
                out.push_str(MASK);
                mask_next = false;
                continue;
            }
            let (masked, next) = mask_argument(word);
            out.push_str(&masked);
            mask_next = next;
        }
        if out.len() > MAX_CMD_CHARS * 4 {
            break; // far past the limit already: stop joining
        }
    }
    truncate(out)
}

/// Masks one argument. The flag says whether the *next* argument is the secret value of
/// this one (`--password hunter2`, `-p hunter2`).
fn mask_argument(arg: &str) -> (String, bool) {
    let arg = mask_url_credentials(arg);
    if let Some(option) = arg.strip_prefix('-') {
        let long = option.strip_prefix('-');
        let body = long.unwrap_or(option);
        if let Some((name, _value)) = body.split_once('=') {
            if is_secret_name(name) {
                let keep = arg.len() - body.len() + name.len() + 1;
                return (format!("{}{MASK}", &arg[..keep]), false);
            }
            return (arg, false);
        }
        if long.is_some() {
            return (arg.clone(), is_secret_name(body));
        }
        // Short options: `-p` alone takes the next argument; `-pVALUE` holds it.
        if option == "p" {
            return (arg, true);
        }
        if let Some(value) = option.strip_prefix('p')
            && !value.is_empty()
            && !value.starts_with('-')
        {
            return (format!("-p{MASK}"), false);
        }
        return (arg, false);
    }
    // `Authorization: Bearer TOKEN`, `Basic BASE64`.
    if arg.eq_ignore_ascii_case("bearer") || arg.eq_ignore_ascii_case("basic") {
        return (arg, true);
    }
    // Environment-style assignments: `DB_PASSWORD=...`, `api_key=...`.
    if let Some((name, _)) = arg.split_once('=')
        && !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        && is_secret_name(name)
    {
        return (format!("{name}={MASK}"), false);
    }
    (arg, false)
}

fn is_secret_name(name: &str) -> bool {
    let folded: String =
        name.chars().filter(|c| *c != '-' && *c != '_' && *c != '.').map(|c| c.to_ascii_lowercase()).collect();
    SECRET_WORDS.iter().any(|w| folded.contains(w))
}

/// `scheme://user:password@host` becomes `scheme://user:***@host`, wherever it stands in
/// the argument (e.g. `--db=postgres://app:pw@db/app`).
fn mask_url_credentials(arg: &str) -> String {
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        // The authority ends at the first '/', '?', '#' or whitespace.
        let end = tail.find(['/', '?', '#', ' ']).unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(userinfo_end) => {
                let userinfo = &authority[..userinfo_end];
                match userinfo.split_once(':') {
                    Some((user, _password)) => {
                        out.push_str(user);
                        out.push(':');
                        out.push_str(MASK);
                    }
                    // A lone user part may itself be a token (`https://TOKEN@host`).
                    None => out.push_str(MASK),
                }
                out.push_str(&authority[userinfo_end..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// Text as it may travel and be shown: tabs and line breaks become spaces, other control
/// characters (terminal escapes, say) become `?`. Names and command lines are chosen by
/// whoever started a process, and a monitor must not pass their escapes on.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\t' | '\n' | '\r' => ' ',
            c if c.is_control() => '?',
            c => c,
        })
        .collect()
}

fn truncate(line: String) -> String {
    let mut line = if line.chars().any(char::is_control) { printable(&line) } else { line };
    if let Some((cut, _)) = line.char_indices().nth(MAX_CMD_CHARS) {
        line.truncate(cut);
        line.push('…');
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(args: &[&str]) -> String {
        command_line(args)
    }

    #[test]
    fn leaves_ordinary_command_lines_alone() {
        assert_eq!(line(&["nginx", "-g", "daemon off;"]), "nginx -g daemon off;");
        assert_eq!(line(&["ls", "--color=auto", "-la"]), "ls --color=auto -la");
        assert_eq!(line(&["curl", "https://example.com/a?b=c"]), "curl https://example.com/a?b=c");
    }

    #[test]
    fn masks_long_options_with_equals() {
        assert_eq!(line(&["app", "--password=hunter2"]), "app --password=***");
        assert_eq!(line(&["app", "--api-key=abc", "--db-token=x"]), "app --api-key=*** --db-token=***");
        assert_eq!(line(&["app", "-auth=xyz"]), "app -auth=***");
    }

    #[test]
    fn masks_the_argument_after_a_secret_option() {
        assert_eq!(line(&["app", "--token", "abc", "--port", "80"]), "app --token *** --port 80");
        assert_eq!(line(&["mysql", "-u", "root", "-p", "s3cret"]), "mysql -u root -p ***");
    }

    #[test]
    fn masks_attached_short_password() {
        assert_eq!(line(&["mysql", "-uroot", "-pS3cret", "db"]), "mysql -uroot -p*** db");
    }

    #[test]
    fn masks_environment_style_assignments() {
        assert_eq!(line(&["env", "DB_PASSWORD=x1", "HOME=/root"]), "env DB_PASSWORD=*** HOME=/root");
        assert_eq!(line(&["SECRET=1", "API_KEY=2", "my.secret.key=3"]), "SECRET=*** API_KEY=*** my.secret.key=***");
    }

    #[test]
    fn masks_url_credentials_anywhere() {
        assert_eq!(line(&["psql", "postgres://app:pw@db:5432/app"]), "psql postgres://app:***@db:5432/app");
        assert_eq!(line(&["git", "clone", "https://ghp_TOKEN@github.com/x/y"]), "git clone https://***@github.com/x/y");
        assert_eq!(line(&["app", "--upstream=http://u:p@a/ http://b/"]), "app --upstream=http://u:***@a/ http://b/");
    }

    #[test]
    fn masks_secrets_inside_a_shell_script_argument() {
        assert_eq!(
            line(&["sh", "-c", "mysql -uroot -pS3cret db && curl -H 'Authorization: Bearer abc.def' x"]),
            "sh -c mysql -uroot -p*** db && curl -H 'Authorization: Bearer *** x"
        );
    }

    #[test]
    fn control_characters_never_pass() {
        assert_eq!(line(&["python3", "-c", "import x\nprint(1)\x1b[31m"]), "python3 -c import x print(1)?[31m");
        assert_eq!(printable("a\tb\u{7}c"), "a b?c");
    }

    #[test]
    fn bounds_the_length_on_a_character_boundary() {
        let long = "é".repeat(MAX_CMD_CHARS + 10);
        let out = line(&[&long]);
        assert_eq!(out.chars().count(), MAX_CMD_CHARS + 1);
        assert!(out.ends_with('…'));
    }

    #[test]
    fn a_trailing_secret_option_masks_nothing_else() {
        assert_eq!(line(&["app", "--password"]), "app --password");
    }
}
