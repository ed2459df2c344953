//! Who may report as a host: the rule that keeps one machine from posing as another.
//!
//! A host name is bound when it is first seen: to the API key that reported it and, when
//! the agent sent one, to its machine's fingerprint (`machine_id` in the hello, or the
//! `Procyon-Machine-Id` header on REST uploads). From then on:
//!
//! - the same key may keep reporting it (a machine that gains a fingerprint has it
//!   recorded; once a host has one, reports without it are refused, so leaving it out is
//!   no way around it). A fingerprint is what an agent says of itself: a fleet key is
//!   trusted by all of its hosts, and a host that must not be impersonated by another
//!   holder of the same key gets a key of its own (`--host`);
//! - another machine (a different fingerprint) may not, whatever its key: two machines
//!   that share a name (a cloned VM) are refused, naming the conflict and the fix;
//! - another key may take the host over only when the bound key is revoked or deleted
//!   and the newcomer proves the same machine (same fingerprint) or holds a key made for
//!   exactly this host name: that is how a host's key is rotated;
//! - the collector's own host name is never accepted from an agent;
//! - one key may bind at most [`MAX_HOSTS_PER_KEY`] hosts (by default; `Settings`).
//!
//! - a host bound without a fingerprint (by a seed-style upload, or an agent that has
//!   none) takes the first fingerprint reported for it only while no agent session is
//!   live for it; that is logged and audited. Nothing proves the newcomer is the same
//!   machine, so it may never take over a live session (see `agents.rs`);
//! - a new host whose name equals an existing one but for case is refused.
//!
//! Who may report is settled ([`check`]) before anything else about a report is said,
//! and the binding is recorded ([`Admission::commit`]) only once the report passed
//! everything: a sender learns nothing of a host it may not report as.
//!
//! A key made for one host (`procyon apikey create --host NAME`) reserves the host when
//! it is made (the store binds it then), and holds it while it is live even when the
//! binding is gone: no other key may bind that name first.
//!
//! Admins see a binding at `GET /api/hosts/{server_id}/binding`, move a host to a key
//! with `PUT` (`{"key": NAME}`; `procyon host bind NAME --key KEY`) and reset it with
//! `DELETE` (`procyon host unbind NAME`: a machine that was really replaced); both are
//! audited.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::AppState;
use super::error::ApiError;
use super::upload;
use crate::model::api::{ApiKeySummary, AuditAction};
use crate::store::{HostBinding, NewAuditEntry};

/// Most hosts one API key may bind by default (a fleet key enrols many agents; not
/// without end).
pub const MAX_HOSTS_PER_KEY: i64 = 10_000;
/// Longest machine fingerprint accepted (a hex SHA-256 is 64).
const MAX_MACHINE_ID: usize = 128;

/// How long a settled binding is trusted without asking the database again (a binding
/// reset from the CLI, or by another collector, is noticed within this time).
const SETTLED_FOR: Duration = Duration::from_secs(60);

/// A settled binding: the key, the machine, and when it was last confirmed.
type Settled = (i64, Option<String>, Instant);

/// How often a host's refused reports are logged at most: an agent that retries every
/// second (two cloned VMs fighting over one name) must not fill the log.
pub const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);

/// Bindings known to be settled, so that uploads do not ask the database each time.
#[derive(Default)]
pub struct Bindings {
    settled: Mutex<HashMap<String, Settled>>,
    /// Per host: when a refusal was last logged, and how many were not logged since.
    refusals: Mutex<HashMap<String, (Instant, u64)>>,
    /// Hosts warned of as bound to a fleet key without a fingerprint (warned once each).
    unfingerprinted: Mutex<std::collections::HashSet<String>>,
    /// Held while a fingerprint is claimed for a host bound without one (after seeing
    /// that no agent session is live for it), and while a session registers for such a
    /// host: the two never interleave, so a claim never slips in beside a live session.
    pub claims: tokio::sync::Mutex<()>,
}

impl Bindings {
    fn settled(&self, hostname: &str, key_id: i64, machine_id: Option<&str>) -> bool {
        let settled = self.settled.lock().unwrap_or_else(|p| p.into_inner());
        settled
            .get(hostname)
            .is_some_and(|(k, m, at)| *k == key_id && m.as_deref() == machine_id && at.elapsed() < SETTLED_FOR)
    }

    fn settle(&self, hostname: &str, key_id: i64, machine_id: Option<String>) {
        let mut settled = self.settled.lock().unwrap_or_else(|p| p.into_inner());
        if settled.len() >= 100_000 {
            settled.clear();
        }
        settled.insert(hostname.to_owned(), (key_id, machine_id, Instant::now()));
    }

    /// Forgets what is known of `hostname` (its binding was reset or the host deleted).
    pub fn forget_host(&self, hostname: &str) {
        self.settled.lock().unwrap_or_else(|p| p.into_inner()).remove(hostname);
    }

    /// Logs a refused report for `hostname`, at most once per [`REFUSAL_LOG_EVERY`] per
    /// host, saying how many were refused unlogged since the last line.
    fn log_refusal(&self, hostname: &str, key: &str, message: &str) {
        let unlogged = {
            let mut refusals = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
            match refusals.get_mut(hostname) {
                Some((at, count)) if at.elapsed() < REFUSAL_LOG_EVERY => {
                    *count += 1;
                    return;
                }
                Some(entry) => std::mem::replace(entry, (Instant::now(), 0)).1,
                None => {
                    if refusals.len() >= 10_000 {
                        refusals.retain(|_, (at, _)| at.elapsed() < REFUSAL_LOG_EVERY);
                    }
                    if refusals.len() >= 10_000 {
                        refusals.clear();
                    }
                    refusals.insert(hostname.to_owned(), (Instant::now(), 0));
                    0
                }
            }
        };
        tracing::warn!(
            %hostname,
            key,
            refused_unlogged_since = unlogged,
            "host binding refused a report (logged at most once a minute per host): {message}"
        );
    }

    /// Warns, once per host (while this collector runs), that `hostname` is bound to a
    /// fleet key and no machine fingerprint: any machine holding that key may report as
    /// it while its agent is offline, so it is only as safe as the key.
    fn warn_unfingerprinted(&self, hostname: &str, key: &str) {
        {
            let mut warned = self.unfingerprinted.lock().unwrap_or_else(|p| p.into_inner());
            if warned.contains(hostname) {
                return;
            }
            if warned.len() >= 100_000 {
                warned.clear();
            }
            warned.insert(hostname.to_owned());
        }
        tracing::warn!(
            %hostname,
            key,
            "host is bound to a fleet key without a machine fingerprint: any machine holding that key may report as \
             it while its agent is not connected, so it is only as safe as the key. Give it a key of its own \
             (`procyon apikey create --name NAME --host {hostname}`), or give its agent a fingerprint \
             (`--machine-id-file PATH`)"
        );
    }

    /// Forgets every host bound to `key_id` (the key was revoked).
    pub fn forget_key(&self, key_id: i64) {
        self.settled.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, (k, _, _)| *k != key_id);
    }
}

/// Checks a machine fingerprint's form.
pub fn validate_machine_id(machine_id: &str) -> Result<(), ApiError> {
    if machine_id.is_empty() || machine_id.len() > MAX_MACHINE_ID || !machine_id.chars().all(|c| c.is_ascii_hexdigit())
    {
        return Err(ApiError::invalid(
            "machine_id",
            format!("machine_id must be 1 to {MAX_MACHINE_ID} hexadecimal digits (a hash of the machine id)."),
        ));
    }
    Ok(())
}

/// What to do with a report, given the host's binding.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Bound as it should be: nothing to change.
    Keep,
    /// Bind (or rebind) the host to the reporter.
    Claim,
    /// Refused, with the reason.
    Refuse(String),
}

fn short(machine_id: &str) -> &str {
    &machine_id[..machine_id.len().min(12)]
}

/// The rule itself, apart from storage.
fn judge(binding: Option<&HostBinding>, key: &ApiKeySummary, hostname: &str, machine_id: Option<&str>) -> Verdict {
    let Some(b) = binding else { return Verdict::Claim };
    let reset = format!(
        "If this machine really replaced the old one, an admin can reset the binding \
         (DELETE /api/hosts/{hostname}/binding, or `procyon host unbind {hostname}`)."
    );
    let same_machine = matches!((b.machine_id.as_deref(), machine_id), (Some(a), Some(m)) if a == m);
    let other_machine = matches!((b.machine_id.as_deref(), machine_id), (Some(a), Some(m)) if a != m);
    if other_machine {
        return Verdict::Refuse(format!(
            "Host `{hostname}` is already reported by another machine (fingerprint {}…; this one is {}…). Two \
             machines share this host name (a cloned VM?): give this one its own name with `--hostname NAME`. {reset}",
            short(b.machine_id.as_deref().unwrap_or_default()),
            short(machine_id.unwrap_or_default()),
        ));
    }
    if b.machine_id.is_some() && machine_id.is_none() {
        // Leaving the fingerprint out must not be a way around it.
        return Verdict::Refuse(format!(
            "Host `{hostname}` is bound to a machine fingerprint, and this report carries none. Agents send it \
             (an older agent: update it); a seed-style upload cannot report for such a host. {reset}"
        ));
    }
    if b.key_id == key.id {
        return if b.machine_id.is_none() && machine_id.is_some() { Verdict::Claim } else { Verdict::Keep };
    }
    let key_for_this_host = key.hostname.as_deref() == Some(hostname);
    if !b.key_live && (same_machine || key_for_this_host) {
        // The old key is gone and the newcomer is the same machine, or holds a key
        // made for this host: a rotated key.
        return Verdict::Claim;
    }
    let old = b.key_name.as_deref().map_or_else(|| format!("id {}", b.key_id), |n| format!("`{n}`"));
    Verdict::Refuse(format!(
        "Host `{hostname}` belongs to another API key ({old}{}). To move it to this key, revoke the old one \
         and use a key made for this host (`procyon apikey create --name NAME --host {hostname}`). {reset}",
        if b.key_live { "" } else { ", revoked" },
    ))
}

/// A report's standing, judged before anything is stored: who may report as the host
/// is settled first ([`check`]), then the report's other checks run (its sequence
/// number, say), and only then is the binding recorded ([`Admission::commit`]). So a
/// sender learns nothing of a host it may not report as, and a refused report binds
/// nothing.
#[derive(Debug)]
pub struct Admission {
    key: ApiKeySummary,
    hostname: String,
    machine_id: Option<String>,
    /// The binding as judged (`None`: a new host).
    binding: Option<HostBinding>,
    /// Already known to be bound so (nothing read, nothing to write).
    settled: bool,
    claim: bool,
}

impl Admission {
    /// Whether committing this gives a host that is bound without a machine fingerprint
    /// the fingerprint this report carries. Nothing proves that the reporter is the
    /// machine that reported before, so that is allowed only while no agent session is
    /// live for the host (the callers see to it), and it is logged and audited.
    pub fn claims_fingerprint(&self) -> bool {
        self.claim && self.machine_id.is_some() && self.binding.as_ref().is_some_and(|b| b.machine_id.is_none())
    }

    /// Whether the host is known to be bound to a machine fingerprint (then only that
    /// machine gets past [`check`]; otherwise registering a session and committing
    /// must not interleave with a fingerprint claim: see `Bindings::claims`).
    pub fn machine_bound(&self) -> bool {
        if self.settled {
            return self.machine_id.is_some();
        }
        self.binding.as_ref().is_some_and(|b| b.machine_id.is_some())
    }

    /// Records the binding (a new host, a fingerprint, a rotated key), or confirms it.
    /// A binding changed by someone else since [`check`] is judged again once.
    pub async fn commit(self, state: &AppState) -> Result<(), ApiError> {
        let mut admission = self;
        for _ in 0..2 {
            if admission.settled {
                return Ok(());
            }
            let claimed = !admission.claim
                || state
                    .store
                    .claim_host(
                        &admission.hostname,
                        admission.key.id,
                        admission.machine_id.as_deref(),
                        admission.binding.as_ref(),
                    )
                    .await?;
            if claimed {
                if admission.claims_fingerprint() {
                    audit_fingerprint_claim(state, &admission).await;
                }
                let machine = admission.machine_id.clone().or_else(|| admission.binding.and_then(|b| b.machine_id));
                if machine.is_none() && admission.key.hostname.is_none() {
                    state.bindings.warn_unfingerprinted(&admission.hostname, &admission.key.name);
                }
                state.bindings.settle(&admission.hostname, admission.key.id, machine);
                return Ok(());
            }
            admission = check(state, &admission.key, &admission.hostname, admission.machine_id.as_deref()).await?;
        }
        Err(ApiError::Conflict {
            code: "binding_race",
            message: format!("Host `{}` was bound by another agent at the same moment; try again.", admission.hostname),
        })
    }
}

/// Logs and audits a fingerprint given to a host that was bound without one.
async fn audit_fingerprint_claim(state: &AppState, admission: &Admission) {
    let fingerprint = short(admission.machine_id.as_deref().unwrap_or_default());
    tracing::warn!(
        hostname = %admission.hostname,
        key = %admission.key.name,
        %fingerprint,
        "a host bound without a machine fingerprint is now bound to the fingerprint of the agent that reported it"
    );
    let entry = NewAuditEntry::host_change(
        // Not a user: `:` is never in a user name.
        format!("apikey:{}", admission.key.name),
        admission.hostname.clone(),
        AuditAction::BindMachine,
        format!(
            "Host {} (bound without a machine fingerprint) bound to fingerprint {fingerprint}… reported with key {}; \
                 if that is not the host's machine, reset it: procyon host unbind {}",
            admission.hostname, admission.key.name, admission.hostname
        ),
    );
    if let Err(e) = state.store.audit(entry).await {
        tracing::error!("cannot write the audit log: {e}");
    }
}

/// Judges whether `key` (from the machine `machine_id`, when known) may report as
/// `hostname`; 403 naming the conflict, or 422 for a name or fingerprint that cannot be
/// one. Nothing is written: [`Admission::commit`] does that. A 403 is logged here, at
/// most once a minute per host (callers need not log it again).
pub async fn check(
    state: &AppState,
    key: &ApiKeySummary,
    hostname: &str,
    machine_id: Option<&str>,
) -> Result<Admission, ApiError> {
    let judged = admission(state, key, hostname, machine_id).await;
    if let Err(ApiError::Forbidden(message)) = &judged {
        // Only a valid host name gets this far.
        state.bindings.log_refusal(hostname, &key.name, message);
    }
    judged
}

async fn admission(
    state: &AppState,
    key: &ApiKeySummary,
    hostname: &str,
    machine_id: Option<&str>,
) -> Result<Admission, ApiError> {
    upload::validate_hostname(hostname)?;
    if let Some(m) = machine_id {
        validate_machine_id(m)?;
    }
    if let Some(bound) = &key.hostname
        && bound != hostname
    {
        return Err(ApiError::Forbidden(format!(
            "This API key is bound to host `{bound}` and may not report as `{hostname}`."
        )));
    }
    if state.settings.local_hostname.as_deref().is_some_and(|local| local.eq_ignore_ascii_case(hostname)) {
        return Err(ApiError::Forbidden(format!(
            "`{hostname}` is this collector's own machine, which it samples itself; an agent may not report as it. \
             Give the agent another name with `--hostname NAME`."
        )));
    }
    let admission = |binding: Option<HostBinding>, settled: bool, claim: bool| Admission {
        key: key.clone(),
        hostname: hostname.to_owned(),
        machine_id: machine_id.map(str::to_owned),
        binding,
        settled,
        claim,
    };
    if state.bindings.settled(hostname, key.id, machine_id) {
        return Ok(admission(None, true, false));
    }
    let binding = state.store.host_binding(hostname).await?;
    match judge(binding.as_ref(), key, hostname, machine_id) {
        Verdict::Refuse(message) => Err(ApiError::Forbidden(message)),
        Verdict::Keep => Ok(admission(binding, false, false)),
        Verdict::Claim => {
            if binding.is_none()
                && let Some((id, name)) = state.store.key_made_for(hostname).await?
                && id != key.id
            {
                // A key made for this host holds it, bound or not (after an unbind, or a
                // key made before keys reserved their host at creation).
                return Err(ApiError::Forbidden(format!(
                    "Host `{hostname}` is reserved for the API key `{name}`, made for it; this key may not report as \
                     it. Give this agent its own name with `--hostname NAME`, or use that key."
                )));
            }
            if binding.is_none()
                && let Some(existing) = state.store.host_named_alike(hostname).await?
                && existing != hostname
            {
                return Err(ApiError::invalid(
                    "hostname",
                    format!(
                        "`{hostname}` differs from the existing host `{existing}` only in case, and host names are \
                         compared ignoring case (as the DNS does): report as `{existing}`, or give this machine a \
                         name of its own with `--hostname NAME`."
                    ),
                ));
            }
            if binding.as_ref().is_none_or(|b| b.key_id != key.id)
                && state.store.hosts_bound_to(key.id).await? >= state.settings.max_hosts_per_key
            {
                return Err(ApiError::Forbidden(format!(
                    "The API key `{}` already reports for {} hosts, the most one key may; make another key for \
                     more.",
                    key.name, state.settings.max_hosts_per_key
                )));
            }
            Ok(admission(binding, false, true))
        }
    }
}

/// [`check`] and [`Admission::commit`] at once, for callers with nothing to check in
/// between.
pub async fn admit(
    state: &AppState,
    key: &ApiKeySummary,
    hostname: &str,
    machine_id: Option<&str>,
) -> Result<(), ApiError> {
    check(state, key, hostname, machine_id).await?.commit(state).await
}

/// The refusal of a REST upload for a host whose agent is streaming it now. The agent's
/// session owns the host's sequence numbers while it lasts (its own agent never uploads
/// over REST while its WebSocket is up), so an upload then is another machine's: were it
/// stored, it would take the agent's next numbers and the agent's own snapshots would be
/// refused. Whatever the upload's key and fingerprint: for a host bound without a
/// fingerprint, a fleet key is all a sibling machine would need.
pub fn agent_streaming(hostname: &str) -> ApiError {
    ApiError::Conflict {
        code: "agent_streaming",
        message: format!(
            "Host `{hostname}` is being streamed by its agent over the WebSocket now; uploads for it are refused while \
             that session lasts. If this is another machine, give it its own name (`--hostname NAME` on the agent). \
             If the host really moved to this machine, an admin can reset it (`procyon host unbind {hostname}`, or \
             DELETE /api/hosts/{hostname}/binding)."
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: i64, hostname: Option<&str>) -> ApiKeySummary {
        ApiKeySummary {
            id,
            name: format!("key{id}"),
            prefix: "pk_x".into(),
            scope: Default::default(),
            hostname: hostname.map(str::to_owned),
            created_at: chrono::Utc::now(),
            last_used_at: None,
            revoked_at: None,
        }
    }

    fn bound(key_id: i64, live: bool, machine: Option<&str>) -> HostBinding {
        HostBinding {
            hostname: "web-1".into(),
            key_id,
            key_name: Some(format!("key{key_id}")),
            key_live: live,
            machine_id: machine.map(str::to_owned),
            bound_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn the_binding_rule() {
        let (m1, m2) = (Some("aaaa"), Some("bbbb"));
        let claim = Verdict::Claim;
        let keep = Verdict::Keep;
        let refused = |v: &Verdict| matches!(v, Verdict::Refuse(_));
        // First sight binds.
        assert_eq!(judge(None, &key(1, None), "web-1", m1), claim);
        assert_eq!(judge(None, &key(1, None), "web-1", None), claim);
        // The same key and machine keep reporting; a fingerprint is recorded when it comes.
        assert_eq!(judge(Some(&bound(1, true, m1)), &key(1, None), "web-1", m1), keep);
        // A fingerprinted host does not take reports without one, not even from its key.
        assert!(refused(&judge(Some(&bound(1, true, m1)), &key(1, None), "web-1", None)));
        assert_eq!(judge(Some(&bound(1, true, None)), &key(1, None), "web-1", m1), claim);
        // Another machine never, whichever key it holds.
        assert!(refused(&judge(Some(&bound(1, true, m1)), &key(1, None), "web-1", m2)));
        assert!(refused(&judge(Some(&bound(1, false, m1)), &key(2, Some("web-1")), "web-1", m2)));
        // Another key (a fleet key on some other machine) may not take a bound host ...
        assert!(refused(&judge(Some(&bound(1, true, m1)), &key(2, None), "web-1", None)));
        assert!(refused(&judge(Some(&bound(1, true, None)), &key(2, None), "web-1", None)));
        // ... not even a key made for this host while the old key is live ...
        assert!(refused(&judge(Some(&bound(1, true, m1)), &key(2, Some("web-1")), "web-1", m1)));
        // ... but once the old key is revoked, the same machine or a key made for this
        // host takes it over (key rotation).
        assert_eq!(judge(Some(&bound(1, false, m1)), &key(2, None), "web-1", m1), claim);
        assert_eq!(judge(Some(&bound(1, false, None)), &key(2, Some("web-1")), "web-1", None), claim);
        assert!(refused(&judge(Some(&bound(1, false, None)), &key(2, None), "web-1", None)));
    }

    #[test]
    fn machine_ids_are_hex() {
        assert!(validate_machine_id(&"ab".repeat(32)).is_ok());
        assert!(validate_machine_id("").is_err());
        assert!(validate_machine_id("not hex!").is_err());
        assert!(validate_machine_id(&"a".repeat(129)).is_err());
    }
}
