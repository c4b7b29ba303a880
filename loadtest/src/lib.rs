//! Tools for measuring Weft: the load generator, local-cluster helpers and
//! mock servers that stand in for outside services.
//!
//! - [`mock_model`]: an OpenAI-compatible chat-completions server with
//!   configurable latency, errors and hangs, for integration and load tests.

pub mod mock_model;
