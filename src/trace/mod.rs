//! Energy traces: samples + engine markers on one clock, energy math, storage, export.
