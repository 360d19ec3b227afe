//! The daemon: wires broker, engine, sampler and store together.
pub mod logging;
pub mod systemd;
