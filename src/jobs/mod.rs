//! MQTT jobs: protocol types and validation, journal, broker session.
