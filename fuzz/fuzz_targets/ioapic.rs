//! Fuzz target `ioapic` (see `vm_irq_fuzz::ioapic`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vm_irq_fuzz::ioapic::run(data));
