//! Replays the seed corpus of the cargo-fuzz target `pic` (`fuzz/corpus/pic`) on stable, so
//! that `cargo test` checks every seed against the fuzz target's invariants without nightly
//! or libFuzzer. The checker is the fuzz crate's own `fuzz/src/pic.rs`, included by path.

#[path = "../../fuzz/src/corpus.rs"]
mod corpus;
#[path = "../../fuzz/src/pic.rs"]
mod pic_fuzz;

/// Every seed decodes to an operation sequence that runs without a panic or an invariant
/// violation (see `fuzz/src/pic.rs` for the list of invariants).
#[test]
fn fuzz_seed_corpus_replays_without_invariant_violations() {
    corpus::replay(env!("CARGO_MANIFEST_DIR"), "pic", pic_fuzz::run);
}
