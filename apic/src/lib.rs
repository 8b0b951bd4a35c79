//! Local APIC (xAPIC and x2APIC), IOAPIC and APIC-bus routing for virtual machine monitors, as
//! plain-data models with time as an input.
//!
//! * [`apicv`]: the virtual-APIC page and posted interrupts (Intel APICv), as a simulator and as
//!   the data structures a VMM hands to hardware.
//! * [`lapic`]: the local APIC (xAPIC MMIO and x2APIC MSRs, timer, acceptance, INTA, EOI).
//! * [`bus`]: the APIC bus that delivers one message to the APICs it addresses.
//! * [`msi`]: the interrupt message every source speaks ([`Interrupt`]) and its MSI encoding.
//! * [`ioapic`]: the 82093AA I/O APIC (version 0x11, or 0x20 with the EOI register).
//! * [`VectorSet`]: 256-bit vector sets (IRR, ISR, TMR, EOI-exit bitmaps).
//!
//! No guest input can panic a model: every offset, width and value has a defined answer.

#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects
    )
)]

pub mod apicv;
pub mod bus;
pub mod ioapic;
pub mod lapic;
pub mod msi;
mod vectors;

pub use bus::ApicBus;
pub use ioapic::{IoApic, IoApicConfig, IoApicState};
pub use lapic::{LapicConfig, LocalApic, LocalApicState};
pub use msi::{DeliveryMode, DestinationMode, Interrupt, MsiFormat, MsiMessage, Shorthand, TriggerMode};
pub use vectors::VectorSet;
