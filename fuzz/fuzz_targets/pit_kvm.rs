//! Fuzz target `pit_kvm`: arbitrary `kvm_pit_state2` into the PIT model and back (see
//! `vm_irq_fuzz::pit_kvm`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vm_irq_fuzz::pit_kvm::run(data));
