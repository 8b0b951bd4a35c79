//! Replays the seed corpus of the cargo-fuzz target `timers` (`fuzz/corpus/timers`) on
//! stable, so that `cargo test` checks every seed against the fuzz target's invariants without
//! nightly or libFuzzer. The checker is the fuzz crate's own `fuzz/src/timers.rs`, included by
//! path.

#[path = "../../fuzz/src/corpus.rs"]
mod corpus;
#[path = "../../fuzz/src/timers.rs"]
mod timers_fuzz;

/// Every seed decodes to an operation sequence on the TSC, the generic timer and the PIT that
/// runs without a panic or an invariant violation (see `fuzz/src/timers.rs` for the list of
/// invariants).
#[test]
fn fuzz_seed_corpus_replays_without_invariant_violations() {
    corpus::replay(env!("CARGO_MANIFEST_DIR"), "timers", timers_fuzz::run);
}
