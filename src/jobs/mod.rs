//! MQTT jobs: the wire protocol and its validation, the SQLite journal and result
//! outbox, the broker session, and the local queue.
//!
//! - [`protocol`] — topics, job parsing/validation with error codes, status/result messages
//! - [`client`]   — the submitting side: board statuses, publish a job, follow it to its result
//! - [`journal`]  — jobs journaled before they are acked; the outbox of unsent results
//! - [`mqtt`]     — rumqttc v5 session: persistent, manual acks, PUBACK-confirmed publishes, backoff
//! - [`queue`]    — bounded local queue, one job at a time, cancel queued or running
pub mod client;
pub mod journal;
pub mod mqtt;
pub mod protocol;
pub mod queue;
