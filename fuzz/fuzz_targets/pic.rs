//! Fuzz target `pic`: structure-aware operation sequences on the 8259A pair (see `vm_irq_fuzz::pic`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vm_irq_fuzz::pic::run(data));
