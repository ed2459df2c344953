//! Signing in to a collector and following one of its hosts live, for `procyon watch --collector`.

/// What `procyon watch --collector` was given.
#[derive(Debug)]
pub struct Options {
    /// The collector's address.
    pub url: String,
    /// User to sign in as.
    pub user: Option<String>,
    /// Host to follow.
    pub host: Option<String>,
    /// Read the password from standard input.
    pub password_stdin: bool,
    /// Allow plain http:// to another machine.
    pub allow_http: bool,
    /// Busiest processes listed per summary when not on a terminal.
    pub top: usize,
    /// Standard output is a terminal: the full-screen UI, else plain summaries.
    pub interactive: bool,
}

/// Signs in and follows a host until the person quits.
pub fn watch(_options: Options) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
