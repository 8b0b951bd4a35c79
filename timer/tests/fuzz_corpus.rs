//! Replays the seed corpus of the cargo-fuzz target `timers` (`fuzz/corpus/timers`) on
//! stable, so that `cargo test` checks every seed against the fuzz target's invariants without
//! nightly or libFuzzer. The checker is the fuzz crate's own `fuzz/src/timers.rs`, included by
//! path.

#[path = "../../fuzz/src/timers.rs"]
mod timers_fuzz;

/// Every seed decodes to an operation sequence on the TSC, the generic timer and the PIT that
/// runs without a panic or an invariant violation (see `fuzz/src/timers.rs` for the list of
/// invariants).
#[test]
fn fuzz_seed_corpus_replays_without_invariant_violations() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus/timers");
    let mut seeds: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("cannot list {dir}: {error}"))
        .map(|entry| entry.expect("corpus directory entry").path())
        .collect();
    seeds.sort();
    assert!(seeds.len() >= 10, "only {} seeds in {dir}", seeds.len());
    for seed in &seeds {
        // Printed only if a seed fails, to name it.
        println!("replaying {}", seed.display());
        let data =
            std::fs::read(seed).unwrap_or_else(|error| panic!("cannot read {}: {error}", seed.display()));
        timers_fuzz::run(&data);
    }
}
