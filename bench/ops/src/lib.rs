//! Holds the per-operation benchmarks in `benches/ops.rs` (nothing to link against).
