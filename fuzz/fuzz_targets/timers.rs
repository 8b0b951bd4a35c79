//! Fuzz target `timers`: structure-aware operation sequences on the TSC, the ARM generic timer
//! and the 8254 PIT (see `vm_irq_fuzz::timers`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vm_irq_fuzz::timers::run(data));
