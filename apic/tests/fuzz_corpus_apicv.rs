//! Replays the seed corpus of the cargo-fuzz target `apicv` (`fuzz/corpus/apicv`) on stable, so
//! that `cargo test` checks every seed against the fuzz target's invariants without nightly
//! or libFuzzer. The checker is the fuzz crate's own `fuzz/src/apicv.rs`, included by path.

#[path = "../../fuzz/src/apicv.rs"]
mod apicv_fuzz;
#[path = "../../fuzz/src/corpus.rs"]
mod corpus;

/// Every seed decodes to an operation sequence that runs without a panic or an invariant
/// violation (see `fuzz/src/apicv.rs` for the list of invariants).
#[test]
fn fuzz_seed_corpus_replays_without_invariant_violations() {
    corpus::replay(env!("CARGO_MANIFEST_DIR"), "apicv", apicv_fuzz::run);
}
