//! A software model of Intel's APIC virtualization (SDM Vol. 3 "APIC Virtualization and Virtual
//! Interrupts"): the virtual-APIC page, the guest interrupt status (RVI/SVI), virtual-interrupt
//! delivery, TPR/EOI/self-IPI virtualization and posted-interrupt processing.

pub mod pid;

