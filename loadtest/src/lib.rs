//! Tools for measuring Weft: the load generator, local-cluster helpers and
//! mock servers that stand in for outside services.
//!
//! - [`mock_model`]: an OpenAI-compatible chat-completions server with
//!   configurable latency, errors and hangs, for integration and load tests.
//! - The load generator behind `weft-load` ([`cli`] has the commands):
//!   [`scenario`] (the workflows it deploys), [`api`] (Weft's API and the
//!   requests it measures), [`baseline`] (NATS request/reply and HTTP hello,
//!   the limits Weft is judged against), [`driver`] (open and closed loop),
//!   [`schedule`] (the open loop's arrival times), [`recorder`] (HDR
//!   histogram and errors by kind), [`report`] (tables, JSON, ratios),
//!   [`capacity`] (in-flight AI runs and memory per run), [`chaos`] (a load
//!   with faults injected: nothing accepted may be lost).

pub mod api;
pub mod baseline;
pub mod capacity;
pub mod chaos;
pub mod cli;
pub mod driver;
pub mod duration;
pub mod error;
pub mod mock_model;
pub mod recorder;
pub mod report;
pub mod scenario;
pub mod schedule;
