//! Fuzz target `lapic` (see `vm_irq_fuzz::lapic`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vm_irq_fuzz::lapic::run(data));
