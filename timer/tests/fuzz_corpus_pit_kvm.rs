//! Replays the seed corpus of the cargo-fuzz target `pit_kvm` (`fuzz/corpus/pit_kvm`) on
//! stable: every seed's `kvm_pit_state2` converts or is refused without a panic, and what
//! converts restores and converts back, also after guest accesses (see `fuzz/src/pit_kvm.rs`).
//! The checker is the fuzz crate's own, included by path.

#[path = "../../fuzz/src/corpus.rs"]
mod corpus;
#[path = "../../fuzz/src/pit_kvm.rs"]
mod pit_kvm_fuzz;

#[test]
fn fuzz_seed_corpus_replays_without_invariant_violations() {
    corpus::replay(env!("CARGO_MANIFEST_DIR"), "pit_kvm", pit_kvm_fuzz::run);
}
