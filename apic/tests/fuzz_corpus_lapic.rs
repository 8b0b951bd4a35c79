//! Replays the seed corpus of the cargo-fuzz target `lapic` (`fuzz/corpus/lapic`) on stable, so
//! that `cargo test` checks every seed against the fuzz target's invariants without nightly
//! or libFuzzer. The checker is the fuzz crate's own `fuzz/src/lapic.rs`, included by path.

#[path = "../../fuzz/src/corpus.rs"]
mod corpus;
#[path = "../../fuzz/src/lapic.rs"]
mod lapic_fuzz;

/// Every seed decodes to an operation sequence that runs without a panic or an invariant
/// violation (see `fuzz/src/lapic.rs` for the list of invariants).
#[test]
fn fuzz_seed_corpus_replays_without_invariant_violations() {
    corpus::replay(env!("CARGO_MANIFEST_DIR"), "lapic", lapic_fuzz::run);
}
