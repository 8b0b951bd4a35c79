//! Timers for virtual machine monitors, as plain-data models with time as an input:
//!
//! * [`tsc`]: the x86 time-stamp counter as a guest sees it (offset and scaling, nested
//!   composition), IA32_TSC / IA32_TSC_ADJUST coupling, and TSC-deadline arithmetic.
//! * [`generic_timer`]: the ARMv8 generic timer: the VM's counter with CNTVOFF/CNTPOFF and
//!   each vCPU's virtual and physical timers, with system-register access by encoding.
//! * [`pit`]: the Intel 8254 programmable interval timer with the port 0x61 gate.
//!
//! Features: `serde` derives serialization of the state structs (restore still validates);
//! `kvm` (x86_64 Linux only) adds `pit::kvm`, the conversion of the PIT's state to and from
//! KVM's `kvm_pit_state2` (KVM_GET_PIT2 / KVM_SET_PIT2).
//!
//! No model reads a clock. Every call that depends on time takes `now` (host nanoseconds or
//! host counter ticks, as each method says), and every timer reports its next deadline so the
//! VMM can arm its own host timer.

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

pub mod generic_timer;
pub mod pit;
pub mod tsc;
