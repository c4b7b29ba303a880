//! The wire protocol: MessagePack (rmp-serde) inside a small versioned envelope.
//!
//! An envelope is `[version, kind, body]`. A receiver checks the version and
//! the kind before it looks at the body, so a message from a newer protocol, or
//! one sent to the wrong subject, is an error — never a panic or a misread.

use crate::model::{Checkpoint, ModelRun, NodeLog, RunError, RunStatus, Usage, WorkflowDefinition};
use crate::secret::SecretString;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use uuid::Uuid;

/// Deepest nesting a message may have (serde_json's own limit is 128).
pub const MAX_DEPTH: usize = 128;

/// The protocol version this build speaks.
///
/// 2: an assignment carries its definition pre-encoded ([`WireDefinition`]).
pub const PROTOCOL_VERSION: u16 = 2;

/// A message that can cross the wire.
pub trait Message: Serialize + DeserializeOwned {
    /// A short name that travels in the envelope.
    const KIND: &'static str;
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("could not decode message: {0}")]
    Decode(String),
    #[error("unsupported protocol version {0} (this build speaks {PROTOCOL_VERSION})")]
    Version(u16),
    #[error("expected a `{expected}` message, got `{got}`")]
    Kind { expected: &'static str, got: String },
    #[error("could not encode message: {0}")]
    Encode(String),
}

#[derive(Serialize)]
struct EnvelopeOut<'a, T> {
    v: u16,
    kind: &'a str,
    body: &'a T,
}

/// What the envelope of a message holds, read in one pass.
enum Checked<T> {
    Body(T),
    Version(u16),
    Kind(String),
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum EnvelopeField {
    V,
    Kind,
    Body,
    #[serde(other)]
    Other,
}

struct EnvelopeVisitor<T>(std::marker::PhantomData<T>);

impl<'de, T: Message> serde::de::Visitor<'de> for EnvelopeVisitor<T> {
    type Value = Checked<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a message envelope (v, kind, body)")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Checked<T>, A::Error> {
        use serde::de::Error;
        let (mut v, mut kind, mut body) = (None::<u16>, None::<String>, None::<T>);
        while let Some(field) = map.next_key::<EnvelopeField>()? {
            match field {
                EnvelopeField::V => v = Some(map.next_value()?),
                EnvelopeField::Kind => kind = Some(map.next_value()?),
                // Version and kind come first (as `encode` writes them): a
                // body of another kind or version is skipped, not read as
                // this one (and the envelope's other fields still are, so
                // the mismatch is reported, not a decoding error).
                EnvelopeField::Body
                    if v.is_some_and(|v| v != PROTOCOL_VERSION)
                        || kind.as_deref().is_some_and(|k| k != T::KIND) =>
                {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
                EnvelopeField::Body => body = Some(map.next_value()?),
                EnvelopeField::Other => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        let v = v.ok_or_else(|| A::Error::missing_field("v"))?;
        if v != PROTOCOL_VERSION {
            return Ok(Checked::Version(v));
        }
        let kind = kind.ok_or_else(|| A::Error::missing_field("kind"))?;
        if kind != T::KIND {
            return Ok(Checked::Kind(kind));
        }
        body.map(Checked::Body)
            .ok_or_else(|| A::Error::missing_field("body"))
    }
}

/// Encodes a message in its envelope.
pub fn encode<T: Message>(msg: &T) -> Result<bytes::Bytes, WireError> {
    let env = EnvelopeOut {
        v: PROTOCOL_VERSION,
        kind: T::KIND,
        body: msg,
    };
    rmp_serde::to_vec_named(&env)
        .map(bytes::Bytes::from)
        .map_err(|e| WireError::Encode(e.to_string()))
}

/// Decodes a message, checking version and kind before the body is read
/// (one pass over the bytes). Trailing fields are ignored.
pub fn decode<T: Message>(bytes: &[u8]) -> Result<T, WireError> {
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    let checked = serde::Deserializer::deserialize_map(
        &mut de,
        EnvelopeVisitor::<T>(std::marker::PhantomData),
    )
    .map_err(|e| WireError::Decode(e.to_string()))?;
    match checked {
        Checked::Body(body) => Ok(body),
        Checked::Version(v) => Err(WireError::Version(v)),
        Checked::Kind(got) => Err(WireError::Kind {
            expected: T::KIND,
            got: got.chars().take(64).collect(),
        }),
    }
}

/// A workflow definition as it rides in an assignment: MessagePack bytes,
/// encoded once per deployed version by the coordinator (not once per run)
/// and decoded by a worker only when it has no plan for that version yet —
/// on every other run the bytes are skipped, not parsed.
#[derive(Clone, PartialEq, Eq)]
pub struct WireDefinition(Arc<[u8]>);

impl WireDefinition {
    pub fn encode(def: &WorkflowDefinition) -> Result<WireDefinition, WireError> {
        rmp_serde::to_vec_named(def)
            .map(|b| WireDefinition(b.into()))
            .map_err(|e| WireError::Encode(e.to_string()))
    }

    pub fn decode(&self) -> Result<WorkflowDefinition, WireError> {
        rmp_serde::from_slice(&self.0).map_err(|e| WireError::Decode(format!("definition: {e}")))
    }
}

impl std::fmt::Debug for WireDefinition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WireDefinition({} bytes)", self.0.len())
    }
}

impl Serialize for WireDefinition {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for WireDefinition {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Bytes;
        impl<'de> serde::de::Visitor<'de> for Bytes {
            type Value = WireDefinition;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("the encoded definition's bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<WireDefinition, E> {
                Ok(WireDefinition(v.into()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<WireDefinition, E> {
                Ok(WireDefinition(v.into()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<WireDefinition, A::Error> {
                let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
                while let Some(b) = seq.next_element::<u8>()? {
                    v.push(b);
                }
                Ok(WireDefinition(v.into()))
            }
        }
        d.deserialize_byte_buf(Bytes)
    }
}

/// A worker's periodic announcement of itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub worker_id: String,
    /// Runs it will hold at once.
    pub capacity: u32,
    /// Runs it holds now.
    pub inflight: u32,
    /// True once it has been told to stop: place nothing new on it.
    pub draining: bool,
    /// Increases with each heartbeat of one worker process.
    pub seq: u64,
    /// When this worker process started (Unix ms): tells a restart from a
    /// late heartbeat.
    pub started_at_ms: u64,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}
impl Message for Heartbeat {
    const KIND: &'static str = "heartbeat";
}

/// A worker leaving cleanly after draining.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Deregister {
    pub worker_id: String,
}
impl Message for Deregister {
    const KIND: &'static str = "deregister";
}

/// A run placed on a worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Assign {
    pub run_id: Uuid,
    /// 1 for the first placement; each re-placement adds one.
    pub attempt: u32,
    pub workflow_id: String,
    pub version: u32,
    pub definition: WireDefinition,
    pub input: Value,
    /// The workflow deadline, fixed when the run was accepted (Unix ms).
    pub deadline_ms: u64,
    /// W3C `traceparent` of the request that started the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The environment variables the definition names, decrypted for this
    /// run only. They cross NATS in the message: run NATS with TLS.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, EnvValue>,
    /// Base URL of the coordinator's callback endpoint, for async API nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_base: Option<String>,
    /// A run that paused at `human` nodes and was resumed: go on from here
    /// (with the answers in `resumed`) rather than from the input node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<Checkpoint>,
}

/// One environment variable's value as a run sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnvValue {
    pub value: SecretString,
    /// Secure values are scrubbed from any error text the worker reports.
    pub secure: bool,
}
impl Message for Assign {
    const KIND: &'static str = "assign";
}

/// How long a worker may hold the answer to an assignment it took: a
/// refusal is answered at once; a run taken is answered once it has run this
/// long, unless its result (or checkpoint) went first — the coordinator takes
/// either as the answer. Most runs end sooner, and their assignment then
/// costs no answer at all. A coordinator's assignment timeout must be well
/// above it (see `assign_timeout_ms`).
pub const ANSWER_TAKEN_WITHIN: std::time::Duration = std::time::Duration::from_millis(20);

/// A worker's answer to an [`Assign`] (see [`ANSWER_TAKEN_WITHIN`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AssignReply {
    pub accepted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the run started on the worker (Unix ms), for a run taken: its
    /// answer may come [`ANSWER_TAKEN_WITHIN`] later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at_ms: Option<u64>,
}
impl Message for AssignReply {
    const KIND: &'static str = "assign_reply";
}

impl AssignReply {
    /// The run is taken; `started_at_ms` if it started then.
    pub fn taken(started_at_ms: Option<u64>) -> Self {
        AssignReply {
            accepted: true,
            reason: None,
            started_at_ms,
        }
    }

    pub fn refused(reason: impl Into<String>) -> Self {
        AssignReply {
            accepted: false,
            reason: Some(reason.into()),
            started_at_ms: None,
        }
    }
}

/// Stop a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cancel {
    pub run_id: Uuid,
}
impl Message for Cancel {
    const KIND: &'static str = "cancel";
}

/// How one placement of a run ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub run_id: Uuid,
    pub attempt: u32,
    pub worker_id: String,
    pub status: RunStatus,
    #[serde(default)]
    pub output: Option<Value>,
    #[serde(default)]
    pub error: Option<RunError>,
    pub nodes: Vec<NodeLog>,
    pub started_at_ms: u64,
    pub ended_at_ms: u64,
    /// Calls to models this attempt made.
    #[serde(default)]
    pub model_runs: Vec<ModelRun>,
    #[serde(default)]
    pub usage: Usage,
}
impl Message for RunResult {
    const KIND: &'static str = "run_result";
}

/// A run moving between `running` and `waiting` (for a callback or a person).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunProgress {
    pub run_id: Uuid,
    pub attempt: u32,
    pub worker_id: String,
    pub status: RunStatus,
    /// The node that waits (when `waiting`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
}
impl Message for RunProgress {
    const KIND: &'static str = "run_progress";
}

/// A callback for a waiting node, forwarded by the coordinator to the worker
/// that holds the run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Resume {
    pub run_id: Uuid,
    pub node_id: String,
    pub token: SecretString,
    pub payload: Value,
}
impl Message for Resume {
    const KIND: &'static str = "resume";
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResumeReply {
    /// `resumed`, `bad_token`, `not_waiting` or `unknown_run`.
    pub outcome: String,
}
impl Message for ResumeReply {
    const KIND: &'static str = "resume_reply";
}

/// A run paused at `human` nodes, nothing else left to do: the worker hands
/// it back with what it needs to go on, and forgets it. Sent until the
/// coordinator acknowledges it ([`ResultAcks`]) once it is durable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunCheckpoint {
    pub run_id: Uuid,
    pub attempt: u32,
    pub worker_id: String,
    pub checkpoint: Checkpoint,
    /// This attempt's node log, model calls and tokens, as in [`RunResult`].
    pub nodes: Vec<NodeLog>,
    #[serde(default)]
    pub model_runs: Vec<ModelRun>,
    #[serde(default)]
    pub usage: Usage,
    pub started_at_ms: u64,
    pub ended_at_ms: u64,
}
impl Message for RunCheckpoint {
    const KIND: &'static str = "run_checkpoint";
}

/// Which runs do you hold? (Sent by a coordinator when a worker joins it.)
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeldRunsQuery {}
impl Message for HeldRunsQuery {
    const KIND: &'static str = "held_runs_query";
}

/// The runs a worker holds, with the attempt of each.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeldRuns {
    pub worker_id: String,
    pub runs: Vec<(Uuid, u32)>,
}
impl Message for HeldRuns {
    const KIND: &'static str = "held_runs";
}

/// One result (or checkpoint) is durable: the answer to one sent by
/// request (an inbox reply subject, as workers before [`ResultAcks`] did).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResultAck {
    pub run_id: Uuid,
}
impl Message for ResultAck {
    const KIND: &'static str = "result_ack";
}

/// These results (or checkpoints), each named by (run, attempt), are
/// durable. A worker sends them with a reply subject of its own per NATS
/// connection ([`crate::subjects::Subjects::acks`]); the coordinator acks
/// all that one commit made durable for that subject in one message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResultAcks {
    pub runs: Vec<(Uuid, u32)>,
}
impl Message for ResultAcks {
    const KIND: &'static str = "result_acks";
}

/// Most (run, attempt) pairs in one [`ResultAcks`] (~24 bytes each).
pub const MAX_ACKS_PER_MESSAGE: usize = 4_096;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use crate::model::{DoneNode, HumanResume, HumanWait, NodeStatus, RunError};
    use crate::time::TimeoutLevel;
    use proptest::prelude::*;
    use serde_json::json;

    fn sample_assign() -> Assign {
        let def: WorkflowDefinition = serde_json::from_value(json!({
            "name": "w", "nodes": [{"id": "in", "kind": "input"}, {"id": "out", "kind": "output"}],
            "edges": [{"from": "in", "to": "out"}]
        }))
        .unwrap();
        Assign {
            run_id: Uuid::now_v7(),
            attempt: 2,
            workflow_id: "wf".into(),
            version: 3,
            definition: WireDefinition::encode(&def).unwrap(),
            input: json!({"a": [1, 2.5, "x", null, {"b": true}]}),
            deadline_ms: 123,
            traceparent: None,
            env: BTreeMap::from([(
                "K".into(),
                EnvValue {
                    value: SecretString::new("v"),
                    secure: true,
                },
            )]),
            callback_base: None,
            checkpoint: None,
        }
    }

    fn sample_checkpoint() -> Checkpoint {
        Checkpoint {
            done: vec![DoneNode {
                node_id: "in".into(),
                output: json!({"amount": 12.5, "tags": ["a", null]}),
                branch: Some("yes".into()),
            }],
            skipped: vec!["other".into()],
            waiting: vec![HumanWait {
                node_id: "ask".into(),
                prompt: "Approve 12.5?".into(),
                since_ms: 10,
                deadline_ms: 20,
                level: TimeoutLevel::Node,
            }],
            resumed: vec![HumanResume {
                node_id: "ask".into(),
                value: json!({"approved": true}),
                resumed_by: "alice".into(),
                resumed_at_ms: 15,
            }],
        }
    }

    #[test]
    fn messages_round_trip() {
        let a = sample_assign();
        assert_eq!(decode::<Assign>(&encode(&a).unwrap()).unwrap(), a);
        let r = RunResult {
            run_id: a.run_id,
            attempt: 1,
            worker_id: "w1".into(),
            status: RunStatus::TimedOut,
            output: None,
            error: Some(RunError::timed_out(TimeoutLevel::Node).at_node("x")),
            nodes: vec![NodeLog {
                node_id: "x".into(),
                kind: "script".into(),
                status: NodeStatus::TimedOut,
                run_attempt: 1,
                started_at_ms: 1,
                ended_at_ms: 2,
                attempts: 1,
                error: Some(RunError::new(ErrorCode::TimedOut, "node")),
                findings: vec![],
                resumed_by: None,
                resumed_at_ms: None,
            }],
            started_at_ms: 1,
            ended_at_ms: 2,
            model_runs: vec![],
            usage: Usage::default(),
        };
        assert_eq!(decode::<RunResult>(&encode(&r).unwrap()).unwrap(), r);
        let h = Heartbeat {
            worker_id: "w".into(),
            capacity: 10,
            inflight: 3,
            draining: false,
            seq: 9,
            started_at_ms: 5,
            labels: Default::default(),
        };
        assert_eq!(decode::<Heartbeat>(&encode(&h).unwrap()).unwrap(), h);
    }

    #[test]
    fn checkpoints_round_trip_alone_and_in_an_assignment() {
        let mut a = sample_assign();
        a.checkpoint = Some(sample_checkpoint());
        assert_eq!(decode::<Assign>(&encode(&a).unwrap()).unwrap(), a);
        let cp = RunCheckpoint {
            run_id: a.run_id,
            attempt: 1,
            worker_id: "w1".into(),
            checkpoint: sample_checkpoint(),
            nodes: vec![NodeLog {
                node_id: "in".into(),
                kind: "input".into(),
                status: NodeStatus::Succeeded,
                run_attempt: 1,
                started_at_ms: 1,
                ended_at_ms: 2,
                attempts: 1,
                error: None,
                findings: vec![],
                resumed_by: Some("bob".into()),
                resumed_at_ms: Some(3),
            }],
            model_runs: vec![],
            usage: Usage::default(),
            started_at_ms: 1,
            ended_at_ms: 2,
        };
        assert_eq!(decode::<RunCheckpoint>(&encode(&cp).unwrap()).unwrap(), cp);
        // A checkpoint is not a result, and the other way round.
        assert!(matches!(
            decode::<RunResult>(&encode(&cp).unwrap()),
            Err(WireError::Kind { .. })
        ));
        // An assignment without a checkpoint is the same bytes as before.
        let plain = sample_assign();
        let bytes = encode(&plain).unwrap();
        assert!(!bytes.windows(10).any(|w| w == b"checkpoint"));
    }

    #[test]
    fn wrong_kind_and_version_are_rejected() {
        let h = encode(&Cancel {
            run_id: Uuid::nil(),
        })
        .unwrap();
        assert!(matches!(decode::<Assign>(&h), Err(WireError::Kind { .. })));
        let future = rmp_serde::to_vec_named(&EnvelopeOut {
            v: 99,
            kind: "cancel",
            body: &Cancel {
                run_id: Uuid::nil(),
            },
        })
        .unwrap();
        assert!(matches!(
            decode::<Cancel>(&future),
            Err(WireError::Version(99))
        ));
        // Version and kind are judged before the body is read: a body that
        // would not decode does not hide them.
        for (v, kind) in [(99, "cancel"), (PROTOCOL_VERSION, "assign")] {
            let odd = rmp_serde::to_vec_named(&EnvelopeOut {
                v,
                kind,
                body: &"not a cancel",
            })
            .unwrap();
            match decode::<Cancel>(&odd) {
                Err(WireError::Version(99)) => assert_eq!(v, 99),
                Err(WireError::Kind { got, .. }) => assert_eq!(got, "assign"),
                other => panic!("{v} {kind}: {other:?}"),
            }
        }
        // A later version that adds a field after the body is still named
        // as the version it is.
        #[derive(Serialize)]
        struct Later<'a> {
            v: u16,
            kind: &'a str,
            body: &'a str,
            extra: u8,
        }
        let later = rmp_serde::to_vec_named(&Later {
            v: 99,
            kind: "cancel",
            body: "new",
            extra: 1,
        })
        .unwrap();
        assert!(matches!(
            decode::<Cancel>(&later),
            Err(WireError::Version(99))
        ));
        // A body that does not decode, of the right kind and version.
        let bad = rmp_serde::to_vec_named(&EnvelopeOut {
            v: PROTOCOL_VERSION,
            kind: "cancel",
            body: &"not a cancel",
        })
        .unwrap();
        assert!(matches!(decode::<Cancel>(&bad), Err(WireError::Decode(_))));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<Assign>(&bytes);
            let _ = decode::<RunResult>(&bytes);
            let _ = decode::<Heartbeat>(&bytes);
            let _ = decode::<RunCheckpoint>(&bytes);
        }

        #[test]
        fn truncated_messages_are_errors(cut in 0usize..200) {
            let bytes = encode(&sample_assign()).unwrap();
            let cut = cut.min(bytes.len().saturating_sub(1));
            prop_assert!(decode::<Assign>(&bytes[..cut]).is_err());
        }
    }
}
