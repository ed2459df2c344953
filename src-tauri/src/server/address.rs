//! A collector's address as its clients take it (the desktop app's remote mode and
//! `procyon watch --collector`): one set of rules, so the two cannot drift apart.
//!
//! The address is reduced to `scheme://host[:port]`. Plain `http://` goes only to this
//! machine (127.0.0.0/8, ::1, localhost) unless the caller allows it: a password and a
//! session token would otherwise cross the network readable by anyone on the way.

/// Who asks, for the wording of the refusals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Asker {
    /// The desktop app's sign-in form.
    Desktop,
    /// `procyon watch --collector` on the command line.
    Terminal,
}

/// `url` reduced to `scheme://host[:port]`, or a sentence saying why it cannot be a
/// collector's address.
pub fn collector_base(url: &str, allow_http: bool, asker: Asker) -> Result<String, String> {
    let invalid = |why: &str| format!("`{url}` is not a collector address: {why}");
    let parsed = reqwest::Url::parse(url.trim()).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid("it must start with http:// or https://"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid(match asker {
            Asker::Desktop => "leave the user name out of the address; sign in below instead",
            Asker::Terminal => "leave the user name out of the address; give it with --user",
        }));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() || !matches!(parsed.path(), "" | "/") {
        return Err(invalid("give only the scheme, host and port, e.g. https://procyon.example.com:7450"));
    }
    let host = parsed.host_str().ok_or_else(|| invalid("it has no host"))?;
    if parsed.scheme() == "http" && !allow_http && !is_loopback(host) {
        return Err(invalid(match asker {
            Asker::Desktop => {
                "plain http:// to another machine would send your password and session unencrypted; use https:// \
                 (the collector serves it with --tls-cert and --tls-key). Plain http:// is only for a collector on \
                 this machine (127.0.0.1, ::1, localhost)"
            }
            Asker::Terminal => {
                "plain http:// to another machine would send your password and session unencrypted; use https:// \
                 (the collector serves it with --tls-cert and --tls-key), or pass --allow-http if the network is yours"
            }
        }));
    }
    Ok(match parsed.port() {
        Some(port) => format!("{}://{host}:{port}", parsed.scheme()),
        None => format!("{}://{host}", parsed.scheme()),
    })
}

/// `127.0.0.0/8`, `::1` (also as a v4-mapped address), `localhost`. The agent applies
/// the same rule to its collector URL.
fn is_loopback(host: &str) -> bool {
    match host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => ip.is_loopback(),
        Ok(std::net::IpAddr::V6(ip)) => ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
        Err(_) => matches!(host.to_ascii_lowercase().as_str(), "localhost" | "localhost."),
    }
}
