//! Local APIC (xAPIC and x2APIC), IOAPIC, APIC-bus routing and the virtual-APIC page with
//! posted interrupts, for virtual machine monitors.
//!
//! Not built yet: this crate is a placeholder so that the workspace layout is complete.
//! The local APIC and IOAPIC arrive with the LAPIC/IOAPIC issue, the APICv model after it.

#![no_std]
#![deny(missing_docs)]
