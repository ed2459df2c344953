//! The agent channel (`WS /ws/agent`): what an agent and the collector say to each other.
//!
//! One WebSocket per agent, opened with `Authorization: Api-Key ...`. Two kinds of frame:
//!
//! - **binary** frames carry one snapshot each: a kind byte, then a zstd-compressed
//!   encoding of it ([`Frame`]). Kinds [`FRAME_FULL_PACKED`] and [`FRAME_FULL`] are a
//!   whole [`Snapshot`] (a keyframe; the bytes after the kind byte are exactly what the
//!   agent keeps in its spool, [`encode_snapshot`]); kinds [`FRAME_DELTA_PACKED`] and
//!   [`FRAME_DELTA`] a [`SnapshotDelta`] against a snapshot the collector has
//!   acknowledged on this connection. The packed kinds (protocol 3) are MessagePack, the
//!   others (protocol 2) JSON;
//! - **text** frames carry one JSON message: [`AgentMessage`] from the agent,
//!   [`CollectorMessage`] from the collector, tagged by `"type"`.
//!
//! A session: the agent sends `hello`; the collector answers `welcome` (or `error` and
//! closes, e.g. on a protocol mismatch); then the agent sends snapshots in `seq` order and
//! the collector answers each with `ack` once it is stored (or `rejected` if it never
//! will be). The agent deletes a snapshot from its spool only on `ack` or `rejected`, so
//! an outage loses nothing and a resend is stored once (the collector keys snapshots by
//! host and seq). The collector may send `action` at any time; the agent answers with
//! `action_result` carrying the same `request_id`. Likewise `details` (one process read
//! in depth), answered with `details_result`, sent only to agents whose hello says they
//! answer it.
//!
//! Deltas: the collector keeps, per connection, the last [`BASES_KEPT`] snapshots it
//! acknowledged, rebuilt in full. The agent sends a delta only against the newest
//! snapshot it has seen acknowledged on this connection, and only while fewer than
//! [`BASES_KEPT`] frames are unanswered, so that base is still kept; otherwise, at the
//! start of a connection, and every [`KEYFRAME_EVERY`] snapshots as a safety net, it
//! sends a keyframe. A
//! delta whose base the collector does not hold is answered with `resync`: nothing is
//! stored, and the agent sends that seq again as a keyframe.
//!
//! Changes are additive within a protocol version; a message type an agent does not
//! know is an error of the version, not of the agent. The collector accepts protocols
//! [`OLDEST_PROTOCOL`] to [`PROTOCOL_VERSION`]; an agent refused by an older collector
//! speaks the older protocol to it.
//!
//! Why MessagePack: measured on a 480-process snapshot with 400 sockets (the design's
//! reference host), MessagePack with field names encodes in 45 % and decodes in 48 % of
//! serde_json's time, and compresses 4 % smaller; CBOR (ciborium) encodes as fast but
//! decodes twice as slowly as JSON; postcard and the array form of MessagePack cannot
//! carry the deltas' optional fields or a field added later, which keeps agents and
//! collectors of neighbouring versions talking. Times travel as integers
//! ([`super::wire`]). `cargo run --release --example encodings` repeats the measurement.

use std::cell::RefCell;
use std::io::Read;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::delta::SnapshotDelta;
use super::details::ProcessDetails;
use super::{ActionError, HostInfo, ProcessAction, Snapshot};

/// The version of this protocol. Version 2 added snapshot deltas (kind-tagged binary
/// frames and `resync`); version 3 MessagePack frames instead of JSON.
pub const PROTOCOL_VERSION: u32 = 3;

/// The oldest protocol the collector still accepts (and an agent falls back to).
pub const OLDEST_PROTOCOL: u32 = 2;

/// Acknowledged snapshots the collector keeps per connection as delta bases.
pub const BASES_KEPT: usize = 4;

/// The agent sends a keyframe at least this often (in snapshots), even while deltas
/// work: it bounds how long any disagreement between the two sides could last.
pub const KEYFRAME_EVERY: u32 = 120;

/// Kind byte of a binary frame holding a whole snapshot.
pub const FRAME_FULL: u8 = 0;
/// Kind byte of a binary frame holding a [`SnapshotDelta`].
pub const FRAME_DELTA: u8 = 1;
/// Kind byte of a whole snapshot in MessagePack (protocol 3).
pub const FRAME_FULL_PACKED: u8 = 2;
/// Kind byte of a [`SnapshotDelta`] in MessagePack (protocol 3).
pub const FRAME_DELTA_PACKED: u8 = 3;

/// How a session's binary frames are encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// JSON (protocol 2).
    Json,
    /// MessagePack with field names (protocol 3).
    MessagePack,
}

impl Encoding {
    /// The encoding of protocol `version`.
    pub fn of_protocol(version: u32) -> Encoding {
        if version >= 3 { Encoding::MessagePack } else { Encoding::Json }
    }

    /// `value` in this encoding.
    pub fn encode<T: Serialize>(self, value: &T) -> std::io::Result<Vec<u8>> {
        match self {
            Encoding::Json => Ok(serde_json::to_vec(value)?),
            Encoding::MessagePack => rmp_serde::to_vec_named(value).map_err(std::io::Error::other),
        }
    }

    /// A value of this encoding back.
    pub fn decode<T: for<'de> Deserialize<'de>>(self, bytes: &[u8]) -> Result<T, String> {
        match self {
            Encoding::Json => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
            Encoding::MessagePack => rmp_serde::from_slice(bytes).map_err(|e| e.to_string()),
        }
    }

    /// Which encoding `bytes` are in: a JSON object starts with `{` (or white space), a
    /// MessagePack map with a map marker.
    pub fn sniff(bytes: &[u8]) -> Encoding {
        match bytes.first() {
            Some(b'{' | b' ' | b'\n' | b'\r' | b'\t') => Encoding::Json,
            _ => Encoding::MessagePack,
        }
    }
}

/// Largest frame either side accepts.
pub const MAX_FRAME_BYTES: usize = 32 * 1024 * 1024;

/// Largest snapshot JSON a compressed frame may expand to (against zstd bombs).
pub const MAX_SNAPSHOT_JSON_BYTES: u64 = 64 * 1024 * 1024;

/// zstd level for snapshots and deltas. Level 1 costs about two thirds of level 3's
/// CPU on a snapshot, and its output is as small within a few percent (snapshot JSON
/// repeats itself at short range, which the fastest level already finds): measured on a
/// 260 KB snapshot, 14.4 KB at level 1 and 14.9 KB at level 3.
pub const ZSTD_LEVEL: i32 = 1;

thread_local! {
    /// One compressor per thread, reused: a fresh context per frame costs its table
    /// allocation and set-up every tick.
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
}

/// zstd of `bytes` at [`ZSTD_LEVEL`], with this thread's compressor.
fn compress(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    COMPRESSOR.with_borrow_mut(|slot| {
        let compressor = match slot {
            Some(c) => c,
            None => slot.insert(zstd::bulk::Compressor::new(ZSTD_LEVEL)?),
        };
        compressor.compress(bytes)
    })
}

/// From the agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
// The hello is the large variant, and there is one per session: boxing it would save
// nothing that matters and change every place that builds or matches one.
#[allow(clippy::large_enum_variant)]
pub enum AgentMessage {
    /// First message of a session.
    Hello {
        /// [`PROTOCOL_VERSION`] of the agent.
        protocol: u32,
        /// The agent's program version.
        agent_version: String,
        /// The machine, as the agent reports it (host name included).
        host: HostInfo,
        /// Whether the agent's operator allows process actions.
        allow_control: bool,
        /// A fingerprint of the machine the agent runs on: the hex SHA-256 of `procyon:`
        /// and its machine id (`/etc/machine-id`), never the id itself
        /// ([`crate::sample::machine`]); `None` when the machine has none and the
        /// agent was given none (`--machine-id-file`).
        ///
        /// Host names are not unique: a cloned VM, or a second machine given the same
        /// `--hostname`, would interleave its snapshots with the first one's. The
        /// collector binds each host name to the machine that first reported it and
        /// refuses another machine reporting the same name. Absent from older agents'
        /// hellos (and then not checked); older collectors ignore it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        machine_id: Option<String>,
        /// The agent answers [`CollectorMessage::Details`]. Absent from older agents'
        /// hellos (`false`: the collector never asks them, and says the agent is too
        /// old); older collectors ignore it.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        details: bool,
        /// The host's labels as its operator gave them (`--label env=prod`): they
        /// replace the labels the host had from its agent, and those an admin set win
        /// over them per key ([`crate::model::labels`]). Absent from older agents'
        /// hellos (then the host has none from its agent); older collectors ignore it.
        #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        labels: crate::model::labels::Labels,
    },
    /// A snapshot sent as text (agents normally send binary frames instead).
    Snapshot {
        /// The snapshot.
        snapshot: Box<Snapshot>,
    },
    /// The spool dropped snapshots to stay within its limits: they will never arrive.
    Dropped {
        /// How many.
        count: u64,
        /// Why, in words.
        reason: String,
    },
    /// The answer to an [`CollectorMessage::Action`].
    ActionResult(ActionReply),
    /// The answer to a [`CollectorMessage::Details`].
    DetailsResult(DetailsReply),
}

/// From the collector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CollectorMessage {
    /// The session is open.
    Welcome {
        /// [`PROTOCOL_VERSION`] of the collector.
        protocol: u32,
        /// The collector's program version.
        collector_version: String,
        /// The highest seq stored for this host: the agent continues above it.
        last_seq: u64,
    },
    /// Snapshot `seq` is stored (or was already): the agent may forget it.
    Ack {
        /// Its seq.
        seq: u64,
    },
    /// Snapshot `seq` will never be stored (it is invalid): the agent should drop it.
    Rejected {
        /// Its seq.
        seq: u64,
        /// Why.
        message: String,
    },
    /// The delta for `seq` names a base this connection does not hold (or does not fit
    /// it): nothing was stored; send `seq` again as a keyframe.
    Resync {
        /// The seq to send again, whole.
        seq: u64,
        /// Why, for the agent's log.
        message: String,
    },
    /// Something is wrong with the session; for codes like `protocol_mismatch` the
    /// collector closes it after this.
    Error {
        /// Machine-readable kind: `protocol_mismatch`, `expected_hello`, `forbidden`,
        /// `bad_frame`, `invalid`.
        code: String,
        /// What happened and what to do, for the agent's log.
        message: String,
    },
    /// Carry out a process action.
    Action(ActionRequest),
    /// Read one process's details (read-only: always answered, whatever
    /// `--allow-control` says). Sent only to agents whose hello says `details`.
    Details(DetailsRequest),
}

/// A request for one process's details, relayed to an agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DetailsRequest {
    /// Echoed in the reply.
    pub request_id: u64,
    /// Target pid.
    pub pid: u32,
    /// Target start time, when the requester knew it (a reused pid is refused).
    pub start_time: Option<DateTime<Utc>>,
    /// Who asked (for the agent's log).
    pub actor: String,
}

/// What an agent read for a [`DetailsRequest`]: `details` or `error`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DetailsReply {
    /// The request's id.
    pub request_id: u64,
    /// The details read.
    pub details: Option<Box<ProcessDetails>>,
    /// Why there are none (`not_found`, `pid_reused`, `unsupported`, ...).
    pub error: Option<ActionError>,
}

/// A process action relayed to an agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionRequest {
    /// Echoed in the reply.
    pub request_id: u64,
    /// Target pid.
    pub pid: u32,
    /// Target start time, when the requester knew it.
    pub start_time: Option<DateTime<Utc>>,
    /// What to do.
    pub action: ProcessAction,
    /// The whole subtree, children first.
    pub tree: bool,
    /// Who asked (for the agent's log).
    pub actor: String,
}

/// What an agent did about an [`ActionRequest`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionReply {
    /// The request's id.
    pub request_id: u64,
    /// `Ok`: the process's name and how many processes were signalled.
    pub done: Option<ActionDone>,
    /// `Err`: why not.
    pub error: Option<ActionError>,
}

/// A carried-out action.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionDone {
    /// The process acted on.
    pub process_name: String,
    /// Processes signalled (more than one for a subtree).
    pub signalled: u32,
}

/// A binary frame, decoded.
#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    /// A keyframe: the whole snapshot.
    Full(Box<Snapshot>),
    /// The difference from an acknowledged snapshot.
    Delta(Box<SnapshotDelta>),
}

/// A snapshot as the spool keeps it: zstd-compressed MessagePack.
pub fn encode_snapshot(snapshot: &Snapshot) -> std::io::Result<Vec<u8>> {
    compress(&Encoding::MessagePack.encode(snapshot)?)
}

/// Reads [`encode_snapshot`]'s bytes back (or an older agent's zstd-compressed JSON),
/// refusing to expand past [`MAX_SNAPSHOT_JSON_BYTES`].
pub fn decode_snapshot(bytes: &[u8]) -> Result<Snapshot, String> {
    let inflated = inflate(bytes)?;
    Encoding::sniff(&inflated).decode(&inflated).map_err(|e| format!("not a snapshot: {e}"))
}

/// A keyframe in `encoding`, from the spool's bytes of `snapshot`: those bytes as they
/// are when they are in that encoding already (the usual case), else `snapshot`
/// encoded anew.
pub fn full_frame(spooled: &[u8], snapshot: &Snapshot, encoding: Encoding) -> std::io::Result<Vec<u8>> {
    let spooled_as = std::io::Read::bytes(zstd::stream::read::Decoder::new(spooled)?).next().transpose()?;
    let body = if spooled_as.map(|b| Encoding::sniff(&[b])) == Some(encoding) {
        spooled.to_vec()
    } else {
        compress(&encoding.encode(snapshot)?)?
    };
    let kind = match encoding {
        Encoding::Json => FRAME_FULL,
        Encoding::MessagePack => FRAME_FULL_PACKED,
    };
    let mut frame = Vec::with_capacity(body.len() + 1);
    frame.push(kind);
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// A delta as a binary frame in `encoding`.
pub fn delta_frame(delta: &SnapshotDelta, encoding: Encoding) -> std::io::Result<Vec<u8>> {
    let kind = match encoding {
        Encoding::Json => FRAME_DELTA,
        Encoding::MessagePack => FRAME_DELTA_PACKED,
    };
    let mut frame = vec![kind];
    frame.extend_from_slice(&compress(&encoding.encode(delta)?)?);
    Ok(frame)
}

/// Reads a binary frame of either protocol, refusing to expand past
/// [`MAX_SNAPSHOT_JSON_BYTES`].
pub fn decode_frame(frame: &[u8]) -> Result<Frame, String> {
    let snapshot = |encoding: Encoding, rest: &[u8]| {
        encoding.decode(&inflate(rest)?).map(|s| Frame::Full(Box::new(s))).map_err(|e| format!("not a snapshot: {e}"))
    };
    let delta = |encoding: Encoding, rest: &[u8]| {
        encoding
            .decode(&inflate(rest)?)
            .map(|d| Frame::Delta(Box::new(d)))
            .map_err(|e| format!("not a snapshot delta: {e}"))
    };
    match frame.split_first() {
        Some((&FRAME_FULL, rest)) => snapshot(Encoding::Json, rest),
        Some((&FRAME_DELTA, rest)) => delta(Encoding::Json, rest),
        Some((&FRAME_FULL_PACKED, rest)) => snapshot(Encoding::MessagePack, rest),
        Some((&FRAME_DELTA_PACKED, rest)) => delta(Encoding::MessagePack, rest),
        Some((kind, _)) => Err(format!("unknown frame kind {kind}")),
        None => Err("an empty frame".into()),
    }
}

/// Decompresses a zstd frame of at most [`MAX_SNAPSHOT_JSON_BYTES`].
fn inflate(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut json = Vec::new();
    zstd::stream::read::Decoder::new(bytes)
        .map_err(|e| format!("not a zstd frame: {e}"))?
        .take(MAX_SNAPSHOT_JSON_BYTES + 1)
        .read_to_end(&mut json)
        .map_err(|e| format!("not a zstd frame: {e}"))?;
    if json.len() as u64 > MAX_SNAPSHOT_JSON_BYTES {
        return Err(format!("a snapshot expands to more than {} MiB", MAX_SNAPSHOT_JSON_BYTES >> 20));
    }
    Ok(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_round_trip_through_frames_and_shrink() {
        let snap = crate::sample::Sampler::new(Default::default()).sample();
        let frame = encode_snapshot(&snap).unwrap();
        assert_eq!(decode_snapshot(&frame).unwrap(), snap);
        assert!(frame.len() * 4 < serde_json::to_vec(&snap).unwrap().len());
        let mut next = snap.clone();
        next.seq += 1;
        let delta = SnapshotDelta::between(&snap, &next);
        for (encoding, full, partial) in
            [(Encoding::MessagePack, FRAME_FULL_PACKED, FRAME_DELTA_PACKED), (Encoding::Json, FRAME_FULL, FRAME_DELTA)]
        {
            let keyframe = full_frame(&frame, &snap, encoding).unwrap();
            assert_eq!(keyframe[0], full);
            assert_eq!(decode_frame(&keyframe).unwrap(), Frame::Full(Box::new(snap.clone())));
            let delta_bytes = delta_frame(&delta, encoding).unwrap();
            assert_eq!(delta_bytes[0], partial);
            assert_eq!(decode_frame(&delta_bytes).unwrap(), Frame::Delta(Box::new(delta.clone())));
        }
        // The packed keyframe is the spool's bytes as they are.
        assert_eq!(&full_frame(&frame, &snap, Encoding::MessagePack).unwrap()[1..], &frame[..]);
        // A spool written by an older agent (zstd JSON) still reads, and goes out packed.
        let old = zstd::bulk::compress(&serde_json::to_vec(&snap).unwrap(), 1).unwrap();
        assert_eq!(decode_snapshot(&old).unwrap(), snap);
        let upgraded = full_frame(&old, &snap, Encoding::MessagePack).unwrap();
        assert_eq!(decode_frame(&upgraded).unwrap(), Frame::Full(Box::new(snap.clone())));
    }

    #[test]
    fn garbage_and_bombs_are_refused() {
        assert!(decode_snapshot(b"garbage").is_err());
        let bomb = zstd::bulk::compress(&vec![b' '; (MAX_SNAPSHOT_JSON_BYTES + 10) as usize], 1).unwrap();
        assert!(decode_snapshot(&bomb).unwrap_err().contains("more than"));
        let not_a_snapshot = zstd::bulk::compress(b"{\"a\":1}", 1).unwrap();
        assert!(decode_snapshot(&not_a_snapshot).unwrap_err().starts_with("not a snapshot"));
        assert!(decode_frame(&[FRAME_DELTA, 1, 2]).unwrap_err().contains("zstd"));
        assert!(decode_frame(&[9]).unwrap_err().contains("kind 9"));
        assert!(decode_frame(&[]).is_err());
        let mut wrapped = vec![FRAME_DELTA];
        wrapped.extend_from_slice(&not_a_snapshot);
        assert!(decode_frame(&wrapped).unwrap_err().starts_with("not a snapshot delta"));
        for kind in [FRAME_FULL_PACKED, FRAME_DELTA_PACKED] {
            let mut garbage = vec![kind];
            garbage.extend_from_slice(&zstd::bulk::compress(&[0xc1, 0xff, 0x00, 0x93], 1).unwrap());
            assert!(decode_frame(&garbage).unwrap_err().starts_with("not a snapshot"), "kind {kind}");
        }
    }

    #[test]
    fn the_machine_id_is_optional_both_ways() {
        let host = crate::sample::Sampler::new(Default::default()).host().clone();
        let hello = |machine_id: Option<&str>| AgentMessage::Hello {
            protocol: PROTOCOL_VERSION,
            agent_version: "1".into(),
            host: host.clone(),
            allow_control: false,
            machine_id: machine_id.map(str::to_owned),
            details: false,
            labels: Default::default(),
        };
        // An agent without one sends what older agents sent, and their hellos still read.
        let old = serde_json::to_value(hello(None)).unwrap();
        assert!(old.get("machine_id").is_none(), "{old}");
        assert!(old.get("labels").is_none(), "no labels: the field is left out, as older agents did");
        assert_eq!(serde_json::from_value::<AgentMessage>(old).unwrap(), hello(None));
        let new = serde_json::to_value(hello(Some("ab12"))).unwrap();
        assert_eq!(new["machine_id"], "ab12");
        assert_eq!(serde_json::from_value::<AgentMessage>(new).unwrap(), hello(Some("ab12")));
    }

    #[test]
    fn older_hellos_answer_no_details_and_newer_ones_say_so() {
        let host = crate::sample::Sampler::new(Default::default()).host().clone();
        let hello = |details| AgentMessage::Hello {
            protocol: PROTOCOL_VERSION,
            agent_version: "1".into(),
            host: host.clone(),
            allow_control: false,
            machine_id: None,
            details,
            labels: Default::default(),
        };
        let old = serde_json::to_value(hello(false)).unwrap();
        assert!(old.get("details").is_none(), "{old}");
        assert_eq!(serde_json::from_value::<AgentMessage>(old).unwrap(), hello(false));
        let new = serde_json::to_value(hello(true)).unwrap();
        assert_eq!(new["details"], true);
        assert_eq!(serde_json::from_value::<AgentMessage>(new).unwrap(), hello(true));
        let request =
            CollectorMessage::Details(DetailsRequest { request_id: 3, pid: 9, start_time: None, actor: "a".into() });
        assert!(serde_json::to_string(&request).unwrap().starts_with(r#"{"type":"details","request_id":3"#));
    }

    #[test]
    fn messages_are_tagged_by_type() {
        let ack = serde_json::to_string(&CollectorMessage::Ack { seq: 7 }).unwrap();
        assert_eq!(ack, r#"{"type":"ack","seq":7}"#);
        let dropped: AgentMessage =
            serde_json::from_str(r#"{"type":"dropped","count":3,"reason":"spool full"}"#).unwrap();
        assert_eq!(dropped, AgentMessage::Dropped { count: 3, reason: "spool full".into() });
        let reply = AgentMessage::ActionResult(ActionReply { request_id: 1, done: None, error: None });
        assert!(serde_json::to_string(&reply).unwrap().starts_with(r#"{"type":"action_result","request_id":1"#));
    }
}

/// Fuzz targets for what crosses the agent channel: binary frames of every kind (JSON
/// and MessagePack, zstd-wrapped), spooled snapshots and text messages. Each is decoded
/// or refused with a message, never a panic. See `crate::fuzzing`.
#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::fuzzing::{config, json_value, mutated_bytes, mutated_json};
    use proptest::prelude::*;
    use std::sync::OnceLock;

    /// Two real snapshots of this machine a moment apart (a few processes and sockets
    /// each, to keep cases fast), made once.
    fn real() -> &'static (Snapshot, Snapshot) {
        static REAL: OnceLock<(Snapshot, Snapshot)> = OnceLock::new();
        REAL.get_or_init(|| {
            let mut sampler = crate::sample::Sampler::new(Default::default());
            let trim = |mut s: Snapshot| {
                s.processes.truncate(8);
                s.connections.truncate(8);
                s
            };
            let a = trim(sampler.sample());
            let mut b = trim(sampler.sample());
            b.seq = a.seq + 1;
            (a, b)
        })
    }

    fn real_delta() -> SnapshotDelta {
        let (a, b) = real();
        SnapshotDelta::between(a, b)
    }

    /// The real snapshot and delta as frames of all four kinds.
    fn real_frames() -> Vec<Vec<u8>> {
        let (a, _) = real();
        let (spooled, d) = (encode_snapshot(a).unwrap(), real_delta());
        vec![
            full_frame(&spooled, a, Encoding::Json).unwrap(),
            delta_frame(&d, Encoding::Json).unwrap(),
            full_frame(&spooled, a, Encoding::MessagePack).unwrap(),
            delta_frame(&d, Encoding::MessagePack).unwrap(),
        ]
    }

    /// One text message of each kind, as JSON values.
    fn text_messages() -> Vec<serde_json::Value> {
        let (a, _) = real();
        let agent = [
            AgentMessage::Hello {
                protocol: PROTOCOL_VERSION,
                agent_version: "1".into(),
                host: a.host.clone(),
                allow_control: true,
                machine_id: Some("ab12".into()),
                details: true,
                labels: [("env".to_owned(), "prod".to_owned())].into(),
            },
            AgentMessage::Snapshot { snapshot: Box::new(a.clone()) },
            AgentMessage::Dropped { count: 3, reason: "the spool is full".into() },
            AgentMessage::ActionResult(ActionReply {
                request_id: 7,
                done: Some(ActionDone { process_name: "sleep".into(), signalled: 1 }),
                error: None,
            }),
            AgentMessage::DetailsResult(DetailsReply {
                request_id: 8,
                details: None,
                error: Some(ActionError { code: crate::model::ActionErrorCode::NotFound, message: "gone".into() }),
            }),
        ];
        let collector = [
            CollectorMessage::Welcome { protocol: PROTOCOL_VERSION, collector_version: "1".into(), last_seq: 9 },
            CollectorMessage::Ack { seq: 9 },
            CollectorMessage::Resync { seq: 9, message: "m".into() },
            CollectorMessage::Action(ActionRequest {
                request_id: 7,
                pid: 42,
                start_time: a.processes.first().and_then(|p| p.start_time),
                action: crate::model::ProcessAction::Terminate,
                tree: true,
                actor: "admin".into(),
            }),
            CollectorMessage::Details(DetailsRequest {
                request_id: 8,
                pid: 42,
                start_time: a.processes.first().and_then(|p| p.start_time),
                actor: "viewer".into(),
            }),
        ];
        agent
            .iter()
            .map(|m| serde_json::to_value(m).unwrap())
            .chain(collector.iter().map(|m| serde_json::to_value(m).unwrap()))
            .collect()
    }

    fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![kind];
        f.extend_from_slice(&zstd::bulk::compress(payload, 1).unwrap());
        f
    }

    /// A decode that ends in a value or in a message saying what was wrong.
    fn check<T>(result: Result<T, String>) -> Result<(), TestCaseError> {
        if let Err(message) = result {
            prop_assert!(!message.is_empty());
        }
        Ok(())
    }

    fn kind() -> impl Strategy<Value = u8> {
        prop_oneof![4 => 0u8..4, 1 => any::<u8>()]
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn any_bytes_as_a_frame_or_a_spool_file(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            check(decode_frame(&bytes))?;
            check(decode_snapshot(&bytes))?;
        }

        /// Valid zstd around anything: the decoders behind the decompression are reached.
        #[test]
        fn any_payload_in_a_frame(kind in kind(), payload in prop::collection::vec(any::<u8>(), 0..256)) {
            check(decode_frame(&frame(kind, &payload)))?;
            check(decode_snapshot(&zstd::bulk::compress(&payload, 1).unwrap()))?;
        }

        #[test]
        fn any_json_value_in_a_frame(kind in kind(), v in json_value()) {
            check(decode_frame(&frame(kind, &serde_json::to_vec(&v).unwrap())))?;
            check(decode_frame(&frame(kind, &rmp_serde::to_vec_named(&v).unwrap())))?;
        }

        #[test]
        fn real_frames_with_bytes_changed(f in prop::sample::select(real_frames()).prop_flat_map(mutated_bytes)) {
            check(decode_frame(&f))?;
        }

        /// Changes inside the compression, where they reach the decoders: the real
        /// snapshot and delta with fields changed, then re-encoded both ways.
        #[test]
        fn real_snapshots_with_fields_changed(v in mutated_json(serde_json::to_value(&real().0).unwrap())) {
            check(decode_frame(&frame(FRAME_FULL, &serde_json::to_vec(&v).unwrap())))?;
            check(decode_frame(&frame(FRAME_FULL_PACKED, &rmp_serde::to_vec_named(&v).unwrap())))?;
        }

        #[test]
        fn real_deltas_with_fields_changed(v in mutated_json(serde_json::to_value(real_delta()).unwrap())) {
            check(decode_frame(&frame(FRAME_DELTA, &serde_json::to_vec(&v).unwrap())))?;
            check(decode_frame(&frame(FRAME_DELTA_PACKED, &rmp_serde::to_vec_named(&v).unwrap())))?;
        }

        #[test]
        fn real_messagepack_with_bytes_changed(
            packed in mutated_bytes(rmp_serde::to_vec_named(&real().0).unwrap()),
        ) {
            check(decode_frame(&frame(FRAME_FULL_PACKED, &packed)))?;
            check(decode_snapshot(&zstd::bulk::compress(&packed, 1).unwrap()))?;
        }

        /// Every kind of text message either side sends, with fields changed, read as
        /// both sides read them.
        #[test]
        fn text_messages_with_fields_changed(v in prop::sample::select(text_messages()).prop_flat_map(mutated_json)) {
            let text = serde_json::to_string(&v).unwrap();
            check(serde_json::from_str::<AgentMessage>(&text).map_err(|e| e.to_string()))?;
            check(serde_json::from_str::<CollectorMessage>(&text).map_err(|e| e.to_string()))?;
        }
    }
}
