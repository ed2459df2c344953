//! Host labels: `key=value` pairs that group and filter hosts (`env=prod`, `role=db`).
//!
//! A host gets labels from two places: its agent (`procyon-agent --label env=prod`, sent
//! in the hello) and an admin (`PUT /api/hosts/{server_id}/labels`). The host's labels
//! are the agent's with the admin's laid over them key by key: an admin's value wins
//! for its key, and the agent's other keys stay. The agent's operator describes the
//! machine; an admin corrects or adds without touching the machine, and the agent's next
//! start does not undo it.
//!
//! This module owns the rules both sides check (the agent at start, the collector on
//! every hello and edit): what a key and a value may hold, and how many a host may
//! carry. Labels end up in URLs, filters and log lines, so they are plain, short tokens.

use std::collections::BTreeMap;

/// Labels by key, in key order.
pub type Labels = BTreeMap<String, String>;

/// The most labels one host may carry from one source.
pub const MAX_LABELS: usize = 32;
/// The longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 63;
/// The longest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 128;

/// Why a label is refused, in words that name it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LabelError(pub String);

/// Whether `key` may be a label's key: 1 to [`MAX_KEY_BYTES`] ASCII letters, digits,
/// `_`, `-`, `.` and `/`, starting with a letter or a digit.
pub fn check_key(key: &str) -> Result<(), LabelError> {
    let shown: String = key.chars().take(40).collect();
    if key.is_empty() {
        return Err(LabelError("A label's key is empty.".into()));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(LabelError(format!("The label key `{shown}…` is longer than {MAX_KEY_BYTES} bytes.")));
    }
    if !key.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(LabelError(format!(
            "The label key `{}` must start with a letter or a digit.",
            shown.escape_debug()
        )));
    }
    if let Some(bad) = key.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))) {
        return Err(LabelError(format!(
            "The label key `{}` holds `{}`; keys are letters, digits, `_`, `-`, `.` and `/`.",
            shown.escape_debug(),
            bad.escape_debug()
        )));
    }
    Ok(())
}

/// Whether `value` may be a label's value: 1 to [`MAX_VALUE_BYTES`] ASCII letters,
/// digits, `_`, `-`, `.`, `/`, `:` and `@`.
pub fn check_value(key: &str, value: &str) -> Result<(), LabelError> {
    let shown: String = value.chars().take(40).collect();
    if value.is_empty() {
        return Err(LabelError(format!("The label `{key}` has an empty value.")));
    }
    if value.len() > MAX_VALUE_BYTES {
        return Err(LabelError(format!("The value of label `{key}` is longer than {MAX_VALUE_BYTES} bytes.")));
    }
    if let Some(bad) =
        value.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | ':' | '@')))
    {
        return Err(LabelError(format!(
            "The value `{}` of label `{key}` holds `{}`; values are letters, digits, `_`, `-`, `.`, `/`, `:` and `@`.",
            shown.escape_debug(),
            bad.escape_debug()
        )));
    }
    Ok(())
}

/// Whether every label of `labels` is valid, and there are at most [`MAX_LABELS`].
pub fn check(labels: &Labels) -> Result<(), LabelError> {
    if labels.len() > MAX_LABELS {
        return Err(LabelError(format!("{} labels; a host carries at most {MAX_LABELS}.", labels.len())));
    }
    for (key, value) in labels {
        check_key(key)?;
        check_value(key, value)?;
    }
    Ok(())
}

/// One `key=value` argument (`--label env=prod`), checked.
pub fn parse_pair(pair: &str) -> Result<(String, String), LabelError> {
    let Some((key, value)) = pair.split_once('=') else {
        return Err(LabelError(format!(
            "`{}` is not a label: write `key=value`, e.g. `env=prod`.",
            pair.escape_debug()
        )));
    };
    let (key, value) = (key.trim(), value.trim());
    check_key(key)?;
    check_value(key, value)?;
    Ok((key.to_owned(), value.to_owned()))
}

/// The host's labels: `agent`'s with `admin`'s laid over them, key by key.
pub fn merged(agent: &Labels, admin: &Labels) -> Labels {
    let mut out = agent.clone();
    out.extend(admin.iter().map(|(k, v)| (k.clone(), v.clone())));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_are_short_plain_tokens() {
        assert!(check_key("env").is_ok());
        assert!(check_key("team.io/owner").is_ok());
        assert!(check_key("").is_err());
        assert!(check_key("-x").is_err());
        assert!(check_key("a b").is_err());
        assert!(check_key("<b>").is_err());
        assert!(check_key(&"k".repeat(MAX_KEY_BYTES)).is_ok());
        assert!(check_key(&"k".repeat(MAX_KEY_BYTES + 1)).is_err());
        assert!(check_value("env", "prod").is_ok());
        assert!(check_value("owner", "ops@example.org").is_ok());
        assert!(check_value("env", "").is_err());
        assert!(check_value("env", "pröd").is_err());
        assert!(check_value("env", &"v".repeat(MAX_VALUE_BYTES + 1)).is_err());
        let many: Labels = (0..=MAX_LABELS).map(|i| (format!("k{i}"), "v".into())).collect();
        assert!(check(&many).unwrap_err().0.contains("at most"));
    }

    #[test]
    fn pairs_parse_and_admin_values_win_per_key() {
        assert_eq!(parse_pair("env=prod").unwrap(), ("env".into(), "prod".into()));
        assert_eq!(parse_pair(" role = db ").unwrap(), ("role".into(), "db".into()));
        assert!(parse_pair("env").unwrap_err().0.contains("key=value"));
        assert!(parse_pair("=prod").is_err());
        let agent: Labels = [("env".into(), "staging".into()), ("role".into(), "db".into())].into();
        let admin: Labels = [("env".into(), "prod".into()), ("rack".into(), "r1".into())].into();
        let all = merged(&agent, &admin);
        assert_eq!(all.get("env").map(String::as_str), Some("prod"));
        assert_eq!(all.get("role").map(String::as_str), Some("db"));
        assert_eq!(all.len(), 3);
    }
}
