//! Replays a target's checked-in seed corpus through its checker on stable, so that `cargo
//! test` covers every seed without nightly or libFuzzer. The device crates' tests include
//! this file by path next to the target's checker; it uses only `std`.

/// Runs `run` on every file of `fuzz/corpus/<target>` (relative to `manifest_dir`, the
/// including crate's directory), in name order, after checking there are at least ten seeds.
/// A failing seed is named in the captured output.
pub fn replay(manifest_dir: &str, target: &str, run: fn(&[u8])) {
    let dir = format!("{manifest_dir}/../fuzz/corpus/{target}");
    let mut seeds: Vec<_> = std::fs::read_dir(&dir)
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
        run(&data);
    }
}
