//! Property tests of the IOAPIC: random guest, device and VMM operation sequences under any
//! quirk mix, checked against rules re-derived here from the 82093AA datasheet (and KVM's
//! `arch/x86/kvm/ioapic.c` for the quirks) using only the public API.
//!
//! 1. A level-triggered entry never delivers while its Remote IRR is set (only an EOI of its
//!    vector in the same call can clear it first).
//! 2. A masked edge is never delivered.
//! 3. Every asserted, unmasked level entry with Remote IRR clear is delivered by the time the
//!    call returns, unless the storm throttle deferred it (then `deliver_deferred` delivers
//!    it), `not_accepted` cleared its Remote IRR, or a restore installed it.
//! 4. `restore(&state())` is the identity; refused restores leave the model unchanged.
//! 5. The KVM conversion round-trips (feature `kvm`).

use proptest::prelude::*;
use vm_apic::ioapic::regs::*;
use vm_apic::ioapic::{
    Effects, IoApic, IoApicConfig, IoApicState, LineStatus, PinSet, Quirks, RedirectionEntry, StateError,
    Version,
};

/// The vectors entries are programmed with, so that EOIs hit them.
const VECTORS: [u8; 4] = [0x40, 0x41, 0x42, 0x43];

#[derive(Clone, Debug)]
enum Op {
    /// IOREGSEL, then a 32-bit IOWIN write.
    WriteReg(u8, u32),
    /// A device drives a pin.
    Line { pin: u8, source: u8, level: bool },
    /// The LAPIC EOI broadcast.
    Eoi(u8),
    /// A 32-bit EOIR write.
    Eoir(u8),
    /// The bus found no LAPIC to accept pin's message.
    NotAccepted(u8),
    /// The storm timer fired.
    DeliverDeferred,
    /// Restore of the current state with one field spoiled (or not).
    Restore { spoil: u8, pin: u8 },
    /// KVM_SET_IRQCHIP of the current state.
    SetIrqchip,
}

/// A redirection-entry low dword that exercises every interesting field.
fn low_dword() -> impl Strategy<Value = u32> {
    (0..4usize, any::<bool>(), any::<bool>(), any::<u8>(), any::<u32>()).prop_map(
        |(v, level, masked, noise, raw)| {
            if noise < 16 {
                return raw; // now and then any value at all
            }
            u32::from(VECTORS[v])
                | if level { RTE_TRIGGER_LEVEL as u32 } else { 0 }
                | if masked { RTE_MASK as u32 } else { 0 }
                | u32::from(noise & 0x3) << 13 // polarity, Remote IRR (read-only)
        },
    )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..24u8, low_dword()).prop_map(|(pin, v)| Op::WriteReg(IOREDTBL + 2 * pin, v)),
        1 => (0..24u8, any::<u32>()).prop_map(|(pin, v)| Op::WriteReg(IOREDTBL + 2 * pin + 1, v)),
        1 => (any::<u8>(), any::<u32>()).prop_map(|(i, v)| Op::WriteReg(i, v)),
        6 => (0..24u8, 0..3u8, any::<bool>()).prop_map(|(pin, source, level)| Op::Line { pin, source, level }),
        4 => (0..4usize).prop_map(|v| Op::Eoi(VECTORS[v])),
        1 => (0..4usize).prop_map(|v| Op::Eoir(VECTORS[v])),
        1 => (0..24u8).prop_map(Op::NotAccepted),
        1 => Just(Op::DeliverDeferred),
        1 => (any::<u8>(), 0..24u8).prop_map(|(spoil, pin)| Op::Restore { spoil, pin }),
        1 => Just(Op::SetIrqchip),
    ]
}

fn config() -> impl Strategy<Value = IoApicConfig> {
    (any::<u16>(), any::<bool>(), 0..4u32).prop_map(|(quirks, v20, threshold)| IoApicConfig {
        version: if v20 { Version::V20 } else { Version::V11 },
        quirks: Quirks::from_bits_truncate(quirks),
        storm_threshold: threshold,
        ..IoApicConfig::DATASHEET
    })
}

/// Level pins that are asserted, unmasked and have Remote IRR clear: the ones that must have
/// been delivered.
fn eligible(state: &IoApicState) -> u32 {
    let lines = state.lines();
    let mut pins = 0;
    for (pin, e) in state.redirtbl.iter().enumerate() {
        if e.is_level() && !e.masked() && !e.remote_irr() && lines & (1 << pin) != 0 {
            pins |= 1 << pin;
        }
    }
    pins
}

/// Runs `ops` and checks properties 1–4 after every one. Returns the IOAPIC.
fn run(config: IoApicConfig, ops: &[Op]) -> Result<IoApic, TestCaseError> {
    let mut io = IoApic::new(config);
    // Pins allowed to sit eligible and undelivered (property 3's exceptions).
    let mut excused = 0u32;
    for (n, op) in ops.iter().enumerate() {
        let before = io.state();
        let mut eoi_vector = None;
        let mut restored = false;
        let delivered: PinSet = match op {
            Op::WriteReg(index, value) => {
                let _ = io.mmio_write(IOREGSEL, &u32::from(*index).to_le_bytes());
                let effects = io.mmio_write(IOWIN, &value.to_le_bytes());
                // Only a level entry's own write can deliver it.
                prop_assert!(effects.deliver.is_empty() || effects.deliver.len() == 1, "op {n}");
                effects.deliver
            }
            Op::Line { pin, source, level } => {
                let result = io.set_irq_source(*pin, *source, *level).unwrap();
                prop_assert_eq!(result.message.is_some(), result.status == LineStatus::Delivered);
                if let Some(msg) = result.message {
                    prop_assert_eq!(Some(msg), io.message(*pin), "op {}", n);
                    PinSet(1 << pin)
                } else {
                    PinSet::EMPTY
                }
            }
            Op::Eoi(vector) => {
                eoi_vector = Some(*vector);
                let effects = io.end_of_interrupt(*vector);
                check_storm(&io, &effects, &mut excused)?;
                effects.deliver
            }
            Op::Eoir(vector) => {
                let effects = io.mmio_write(EOIR, &u32::from(*vector).to_le_bytes());
                if config.version == Version::V20 {
                    eoi_vector = Some(*vector);
                    check_storm(&io, &effects, &mut excused)?;
                } else {
                    prop_assert_eq!(effects.deliver, PinSet::EMPTY);
                }
                effects.deliver
            }
            Op::NotAccepted(pin) => {
                if io.not_accepted(*pin) {
                    prop_assert!(config.quirks.contains(Quirks::REMOTE_IRR_NEEDS_ACCEPT));
                    excused |= 1 << pin;
                }
                PinSet::EMPTY
            }
            Op::DeliverDeferred => {
                let effects = io.deliver_deferred();
                prop_assert_eq!(effects.deliver, PinSet(eligible(&before)), "op {}", n);
                excused = 0;
                effects.deliver
            }
            Op::Restore { spoil, pin } => {
                let mut state = io.state();
                let p = usize::from(*pin);
                let expected = match spoil % 6 {
                    0 => {
                        state.id = 16 | spoil;
                        Err(StateError::Id(u32::from(state.id)))
                    }
                    1 => {
                        state.redirtbl[p].0 |= RTE_DELIVERY_STATUS;
                        Err(StateError::DeliveryStatus { pin: *pin })
                    }
                    2 => {
                        state.redirtbl[p].0 = (state.redirtbl[p].0 & !RTE_TRIGGER_LEVEL) | RTE_REMOTE_IRR;
                        Err(StateError::RemoteIrrOnEdge { pin: *pin })
                    }
                    3 => {
                        state.irr_delivered |= 1 << (24 + spoil % 8);
                        Err(StateError::NoSuchPins(state.irr_delivered & !0xFF_FFFF))
                    }
                    _ => Ok(()),
                };
                let old = io.clone();
                let result = io.restore(&state);
                prop_assert_eq!(result, expected, "op {}", n);
                if result.is_ok() {
                    // Property 4: identity.
                    prop_assert_eq!(io.state(), state);
                    excused = eligible(&state);
                    restored = true;
                } else {
                    prop_assert_eq!(&io, &old, "op {}: a refused restore changed the model", n);
                }
                PinSet::EMPTY
            }
            Op::SetIrqchip => {
                let effects = io.set_irqchip(&before).unwrap();
                excused = 0;
                restored = true;
                effects.deliver
            }
        };
        let after = io.state();
        prop_assert_eq!(after.validate(), Ok(()), "op {}", n);
        for pin in delivered {
            let p = usize::from(pin);
            let entry = after.redirtbl[p];
            // Property 2: a masked entry (edge or level) never delivers.
            prop_assert!(!entry.masked(), "op {n} {op:?}: masked pin {pin} delivered");
            if entry.is_level() {
                // Property 1: not while Remote IRR was set, unless this call's EOI cleared it.
                let was_in_service = before.redirtbl[p].remote_irr();
                let cleared = eoi_vector == Some(before.redirtbl[p].vector());
                prop_assert!(
                    !was_in_service || cleared || restored,
                    "op {n} {op:?}: level pin {pin} delivered twice while Remote IRR set"
                );
                prop_assert!(entry.remote_irr(), "op {n}: delivered level pin {pin} has no Remote IRR");
            }
        }
        // Property 3.
        excused &= eligible(&after);
        prop_assert_eq!(
            eligible(&after) & !excused,
            0,
            "op {} {:?}: eligible level pins not delivered",
            n,
            op
        );
        // Property 4, for every state reached: restore into a fresh model gives it back.
        let mut copy = IoApic::new(config);
        copy.restore(&after).unwrap();
        prop_assert_eq!(copy.state(), after);
    }
    Ok(io)
}

/// A deferred pin must be an eligible level (or, with `EOI_ANY_TRIGGER_MODE`, edge) pin
/// and comes with the callback delay; it is then excused until delivered.
fn check_storm(io: &IoApic, effects: &Effects, excused: &mut u32) -> Result<(), TestCaseError> {
    prop_assert_eq!(effects.deferred.is_empty(), effects.recheck_after_ns.is_none());
    prop_assert_eq!(effects.deliver.0 & effects.deferred.0, 0);
    prop_assert_eq!(effects.deferred.0 & !effects.eoi.0, 0);
    for pin in effects.deferred {
        prop_assert!(io.line(pin) && !io.entry(pin).unwrap().masked());
    }
    *excused |= effects.deferred.0;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_for_every_operation_sequence(config in config(), ops in prop::collection::vec(op(), 1..80)) {
        run(config, &ops)?;
    }

    /// Property 3's storm exception is temporary: after the storm timer nothing eligible is
    /// left undelivered.
    #[test]
    fn deliver_deferred_leaves_no_eligible_pin(config in config(), ops in prop::collection::vec(op(), 1..80)) {
        let mut io = run(config, &ops)?;
        let _ = io.deliver_deferred();
        prop_assert_eq!(eligible(&io.state()), 0);
    }

    /// A level line held by a guest that EOIs without silencing the device: exactly every
    /// `threshold`-th EOI is deferred, the others re-deliver at once.
    #[test]
    fn storm_throttle_defers_exactly_every_threshold_th_eoi(threshold in 1..20u32, eois in 1..100u32) {
        let mut io = IoApic::new(IoApicConfig { storm_threshold: threshold, ..IoApicConfig::DATASHEET });
        let _ = io.write_register(IOREDTBL + 6, 0x40 | RTE_TRIGGER_LEVEL as u32);
        let _ = io.set_irq(3, true).unwrap();
        let mut deferred = 0;
        for n in 1..=eois {
            let effects = io.end_of_interrupt(0x40);
            if n % threshold == 0 {
                prop_assert_eq!(effects.deferred, PinSet(1 << 3), "EOI {}", n);
                deferred += 1;
                prop_assert_eq!(io.deliver_deferred().deliver, PinSet(1 << 3));
            } else {
                prop_assert_eq!(effects.deliver, PinSet(1 << 3), "EOI {}", n);
            }
        }
        prop_assert_eq!(deferred, eois / threshold);
    }

    /// Any state that validates restores exactly; any that does not is refused without effect.
    #[test]
    fn restore_accepts_exactly_the_valid_states(
        id in 0..20u8, ioregsel in any::<u8>(), entries in any::<[u64; 24]>(),
        sources in any::<[u32; 24]>(), irr_delivered in any::<u32>(), clean in any::<bool>(),
    ) {
        let mut redirtbl = [RedirectionEntry::POWER_ON; 24];
        for (out, mut e) in redirtbl.iter_mut().zip(entries) {
            if clean {
                e &= !RTE_DELIVERY_STATUS;
                if e & RTE_TRIGGER_LEVEL == 0 { e &= !RTE_REMOTE_IRR; }
            }
            *out = RedirectionEntry(e);
        }
        let irr_delivered = if clean { irr_delivered & 0xFF_FFFF } else { irr_delivered };
        let state = IoApicState { base_address: IOAPIC_DEFAULT_BASE, ioregsel, id, redirtbl, sources, irr_delivered };
        let valid = id < 16
            && irr_delivered < 1 << 24
            && redirtbl.iter().all(|e| !e.delivery_status() && (e.is_level() || !e.remote_irr()));
        let mut io = IoApic::new(IoApicConfig::KVM);
        let _ = io.set_irq(5, true);
        let old = io.clone();
        let result = io.restore(&state);
        prop_assert_eq!(result.is_ok(), valid);
        if valid {
            prop_assert_eq!(io.state(), state);
        } else {
            prop_assert_eq!(io, old);
        }
    }
}

#[cfg(all(feature = "kvm", target_arch = "x86_64", target_os = "linux"))]
mod kvm {
    use super::*;
    use kvm_bindings::kvm_ioapic_state;
    use vm_apic::ioapic::kvm::KVM_IOAPIC_STATE_SIZE;

    /// The bytes of KVM's struct (this test crate may look at a C union; the library may not).
    fn bytes_of(state: &kvm_ioapic_state) -> [u8; KVM_IOAPIC_STATE_SIZE] {
        // SAFETY: `kvm_ioapic_state` is a 216-byte `repr(C)` struct of integers and
        // integer-only unions with no padding, so every byte is initialised.
        unsafe { core::mem::transmute::<kvm_ioapic_state, [u8; KVM_IOAPIC_STATE_SIZE]>(*state) }
    }

    proptest! {
        /// Property 5: every state the model reaches converts to KVM's struct and back to a
        /// model that KVM would report identically; `to_kvm` and `to_kvm_bytes` agree.
        #[test]
        fn kvm_conversion_round_trips(config in config(), ops in prop::collection::vec(op(), 1..60)) {
            let io = run(config, &ops)?;
            let state = io.state();
            let kvm = state.to_kvm();
            prop_assert_eq!(bytes_of(&kvm), state.to_kvm_bytes());
            let back = IoApicState::from_kvm_bytes(&bytes_of(&kvm)).unwrap();
            prop_assert_eq!(back.to_kvm_bytes(), state.to_kvm_bytes());
            prop_assert_eq!(back.redirtbl, state.redirtbl);
            prop_assert_eq!(back.lines(), state.kvm_irr());
        }
    }
}
