//! What the coordinator and the worker share.
//!
//! - [`model`]: the workflow definition (the JSON users write) and run records.
//! - [`validate`]: turns a definition into a checked [`validate::Plan`], reporting
//!   every error at once, each with its node id.
//! - [`expr`] and [`script`]: CEL expressions and the JavaScript sandbox's compile check.
//! - [`wire`] and [`subjects`]: the one wire protocol (MessagePack in a versioned
//!   envelope) and every NATS subject Weft uses.
//! - [`config`]: layered configuration (defaults → file → `WEFT_` env → CLI).
//! - [`error`]: stable error codes shared by HTTP responses and run records.
//! - `testutil` (feature `test-util`): a real `nats-server` on a free port.

pub mod config;
pub mod error;
pub mod expr;
pub mod guardrails;
pub mod model;
pub mod script;
pub mod secret;
pub mod subjects;
pub mod telemetry;
pub mod template;
pub mod time;
pub mod trace;
pub mod validate;
pub mod wire;

#[cfg(feature = "test-util")]
pub mod testutil;
