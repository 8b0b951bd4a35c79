//! Fuzz target `apicv` (see `vm_irq_fuzz::apicv`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vm_irq_fuzz::apicv::run(data));
