//! The daemon: wires broker, engine, sampler and store together.
