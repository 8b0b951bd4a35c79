//! Replays the seed corpus of the cargo-fuzz target `ioapic` (`fuzz/corpus/ioapic`) on
//! stable, so that `cargo test` checks every seed against the fuzz target's invariants without
//! nightly or libFuzzer. The checker is the fuzz crate's own `fuzz/src/ioapic.rs`, included by
//! path.
//!
//! The named seeds (`seed-*`) are written by [`write_named_seeds`], an ignored test:
//! `cargo test -p vm-apic --test fuzz_corpus_ioapic -- --ignored` regenerates them from the
//! scenarios below, encoded the way `arbitrary` 1.x decodes an [`ioapic_fuzz::Input`].

#[path = "../../fuzz/src/corpus.rs"]
mod corpus;
#[path = "../../fuzz/src/ioapic.rs"]
mod ioapic_fuzz;

use arbitrary::{Arbitrary, Unstructured};
use ioapic_fuzz::{Input, Offset, Op, Profile, RawConfig, RawState};
use vm_apic::ioapic::regs::*;

/// Every seed decodes to an operation sequence that runs without a panic or an invariant
/// violation (see `fuzz/src/ioapic.rs` for the list of invariants).
#[test]
fn fuzz_seed_corpus_replays_without_invariant_violations() {
    corpus::replay(env!("CARGO_MANIFEST_DIR"), "ioapic", ioapic_fuzz::run);
}

/// Every named scenario encodes to bytes that decode back to it, and runs clean.
#[test]
fn named_seeds_encode_their_scenarios() {
    for (name, input) in scenarios() {
        let bytes = encode(&input);
        let decoded = Input::arbitrary_take_rest(Unstructured::new(&bytes)).unwrap();
        assert_eq!(format!("{decoded:?}"), format!("{input:?}"), "{name}");
        ioapic_fuzz::run(&bytes);
    }
}

/// Writes `fuzz/corpus/ioapic/seed-<scenario>-<profile>`.
#[test]
#[ignore = "regenerates the checked-in seeds"]
fn write_named_seeds() {
    let dir = format!("{}/../fuzz/corpus/ioapic", env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, input) in scenarios() {
        std::fs::write(format!("{dir}/seed-{name}"), encode(&input)).unwrap();
    }
}

// ----- scenarios -------------------------------------------------------------------------------

fn program(pin: u8, vector: u8, level: bool, masked: bool) -> Op {
    // `vector` indexes ioapic_fuzz::VECTORS; extra 0: fixed, physical; high: destination 1.
    Op::Program { pin, vector, level, masked, extra: 0, high: 0x0100_0000 }
}

fn line(pin: u8, source: u8, level: bool) -> Op {
    Op::Line { pin, source, level }
}

fn eoi(vector: u8) -> Op {
    Op::Eoi { selector: vector, vector: 0 }
}

fn write32(offset: u64, value: u32) -> Op {
    let mut bytes = [0; 9];
    bytes[..4].copy_from_slice(&value.to_le_bytes());
    Op::MmioWrite { offset: Offset(offset), len: 4, bytes }
}

fn read(offset: u64, len: u8) -> Op {
    Op::MmioRead { offset: Offset(offset), len }
}

fn state_with_level_pin() -> RawState {
    let mut redirtbl = [RTE_MASK; 24];
    redirtbl[9] = 0x90 | RTE_TRIGGER_LEVEL; // ioapic_fuzz::VECTORS[2]
    redirtbl[4] = 0x41;
    RawState {
        base_address: IOAPIC_DEFAULT_BASE,
        ioregsel: 0x12,
        id: 3,
        redirtbl,
        lines: 1 << 9 | 1 << 4,
        sources: 1,
        irr_delivered: 0,
    }
}

/// The scenarios, each in the datasheet and the KVM profile.
fn scenarios() -> Vec<(String, Input)> {
    let base: Vec<(&str, bool, u8, Vec<Op>)> = vec![
        (
            "edge-pulse-coalesce",
            false,
            0,
            vec![
                program(4, 1, false, false),
                line(4, 0, true),
                line(4, 1, true),
                line(4, 0, false),
                line(4, 1, false),
                Op::Pulse { pin: 4 },
                eoi(1),
            ],
        ),
        (
            "level-eoi-retrigger",
            false,
            0,
            vec![
                program(10, 2, true, false),
                line(10, 0, true),
                line(10, 1, true),
                eoi(2),
                line(10, 0, false),
                eoi(2),
                line(10, 1, false),
                eoi(2),
            ],
        ),
        (
            "mask-unmask",
            false,
            0,
            vec![
                program(3, 0, false, true),
                line(3, 0, true),
                program(3, 0, false, false),
                line(3, 0, false),
                program(5, 3, true, true),
                line(5, 0, true),
                program(5, 3, true, false),
                eoi(3),
            ],
        ),
        (
            "linux-eoi-trick",
            false,
            0,
            vec![
                program(11, 2, true, false),
                line(11, 0, true),
                program(11, 2, true, true),
                program(11, 2, false, true),
                program(11, 2, true, true),
                program(11, 2, true, false),
                line(11, 0, false),
                eoi(2),
            ],
        ),
        (
            "storm-threshold-3",
            false,
            3,
            vec![
                program(7, 0, true, false),
                line(7, 0, true),
                eoi(0),
                eoi(0),
                eoi(0),
                eoi(0),
                Op::DeliverDeferred,
                eoi(0),
                Op::WriteReg { index: IOREDTBL + 15, value: 0 },
                eoi(0),
            ],
        ),
        (
            "eoir-v20",
            true,
            0,
            vec![
                program(2, 1, true, false),
                line(2, 0, true),
                write32(EOIR, 0x41),
                line(2, 0, false),
                write32(EOIR, 0x41),
            ],
        ),
        (
            "registers-and-widths",
            false,
            0,
            vec![
                Op::WriteReg { index: IOAPICID, value: 0xFFFF_FFFF },
                Op::WriteReg { index: IOAPICVER, value: 0 },
                read(IOWIN, 4),
                write32(IOREGSEL, 0x05),
                read(IOWIN, 4),
                write32(IOREGSEL, 0x41),
                read(IOWIN, 8),
                write32(IOREGSEL, 0x10),
                Op::MmioWrite { offset: Offset(IOWIN), len: 1, bytes: [0x40, 0, 0, 0, 0, 0, 0, 0, 0] },
                Op::MmioWrite { offset: Offset(IOWIN), len: 2, bytes: [0x40, 0x80, 0, 0, 0, 0, 0, 0, 0] },
                read(IOWIN, 2),
                read(IOREGSEL, 1),
                read(0x20, 4),
                write32(0x30, 1),
            ],
        ),
        (
            "restore-and-set-irqchip",
            false,
            0,
            vec![
                Op::Restore { state: state_with_level_pin(), sanitize: true },
                Op::DeliverDeferred,
                Op::Snapshot,
                Op::SetIrqchip { state: state_with_level_pin(), sanitize: false },
                Op::GetSetIrqchip,
                Op::Restore { state: RawState { id: 0x20, ..state_with_level_pin() }, sanitize: false },
                Op::Reset,
            ],
        ),
        (
            "shared-line-sources",
            false,
            0,
            vec![
                program(16, 3, true, false),
                line(16, 0, true),
                line(16, 2, true),
                line(16, 0, false),
                eoi(3),
                line(16, 2, false),
                eoi(3),
                Op::RawLine { pin: 16, source: 40, level: true },
                Op::RawLine { pin: 30, source: 0, level: true },
            ],
        ),
        (
            "not-accepted-and-shared-vector",
            false,
            0,
            vec![
                program(1, 2, false, false),
                program(2, 2, true, false),
                line(1, 0, true),
                line(2, 0, true),
                Op::NotAccepted { pin: 2 },
                eoi(2),
                line(2, 1, true),
                Op::NotAccepted { pin: 24 },
            ],
        ),
        (
            "extended-destination",
            false,
            0,
            vec![
                Op::Program {
                    pin: 0,
                    vector: 0,
                    level: false,
                    masked: false,
                    extra: 0x08,
                    high: 0x12FE_0000,
                },
                line(0, 0, true),
                Op::Program {
                    pin: 6,
                    vector: 1,
                    level: false,
                    masked: false,
                    extra: 0x07,
                    high: 0xFF00_0000,
                },
                line(6, 0, true),
            ],
        ),
        (
            "rtc-coalesce-eoi",
            false,
            0,
            vec![
                program(8, 0, false, false),
                Op::Pulse { pin: 8 },
                Op::RtcDelivered { accepted: 0b11, minus_one: false },
                Op::Pulse { pin: 8 },
                Op::RtcEoi { vcpu: 0, selector: 0, vector: 0 },
                Op::RtcEoi { vcpu: 1, selector: 1, vector: 0 },
                line(8, 0, true),
                Op::RtcEoi { vcpu: 1, selector: 0, vector: 0 },
                line(8, 0, false),
                Op::Pulse { pin: 8 },
                Op::RtcDelivered { accepted: 0, minus_one: true },
                Op::Pulse { pin: 8 },
                Op::RtcDelivered { accepted: 0b1, minus_one: false },
                Op::Reset,
                Op::RtcEoi { vcpu: 0, selector: 0, vector: 0 },
            ],
        ),
    ];
    let mut out = Vec::new();
    for (name, v20, threshold, ops) in base {
        for (profile_name, profile) in [("datasheet", Profile::Datasheet), ("kvm", Profile::Kvm)] {
            let config =
                RawConfig { v20, profile, threshold, extended_destination: name == "extended-destination" };
            out.push((format!("{name}-{profile_name}"), Input { config, ops: ops.clone() }));
        }
    }
    out
}

// ----- an encoder for arbitrary 1.x's decoding ---------------------------------------------------

/// The `u32` that `arbitrary`'s derived enums decode as variant `index` of `count`
/// (`(u64::from(tag) * count) >> 32`).
fn tag(out: &mut Vec<u8>, index: u32, count: u32) {
    let tag = ((u64::from(index) << 32).div_ceil(u64::from(count))) as u32;
    out.extend_from_slice(&tag.to_le_bytes());
}

fn offset(out: &mut Vec<u8>, offset: &Offset) {
    match offset.0 {
        IOREGSEL => out.push(0x00),
        IOWIN => out.push(0x50),
        EOIR => out.push(0xB0),
        small if small <= 0xFF => out.extend_from_slice(&[0xE0, small as u8]),
        any => {
            out.push(0xF0);
            out.extend_from_slice(&any.to_le_bytes());
        }
    }
}

fn raw_state(out: &mut Vec<u8>, s: &RawState) {
    out.extend_from_slice(&s.base_address.to_le_bytes());
    out.extend_from_slice(&[s.ioregsel, s.id]);
    for e in s.redirtbl {
        out.extend_from_slice(&e.to_le_bytes());
    }
    out.extend_from_slice(&s.lines.to_le_bytes());
    out.extend_from_slice(&s.sources.to_le_bytes());
    out.extend_from_slice(&s.irr_delivered.to_le_bytes());
}

fn encode(input: &Input) -> Vec<u8> {
    const OPS: u32 = 18;
    let mut out = Vec::new();
    let c = &input.config;
    out.push(u8::from(c.v20));
    match c.profile {
        Profile::Datasheet => tag(&mut out, 0, 3),
        Profile::Kvm => tag(&mut out, 1, 3),
        Profile::Mixed(bits) => {
            tag(&mut out, 2, 3);
            out.extend_from_slice(&bits.to_le_bytes());
        }
    }
    out.extend_from_slice(&[c.threshold, u8::from(c.extended_destination)]);
    for op in &input.ops {
        out.push(1); // another element follows
        match op {
            Op::MmioWrite { offset: o, len, bytes } => {
                tag(&mut out, 0, OPS);
                offset(&mut out, o);
                out.push(*len);
                out.extend_from_slice(bytes);
            }
            Op::MmioRead { offset: o, len } => {
                tag(&mut out, 1, OPS);
                offset(&mut out, o);
                out.push(*len);
            }
            Op::WriteReg { index, value } => {
                tag(&mut out, 2, OPS);
                out.push(*index);
                out.extend_from_slice(&value.to_le_bytes());
            }
            Op::Program { pin, vector, level, masked, extra, high } => {
                tag(&mut out, 3, OPS);
                out.extend_from_slice(&[*pin, *vector, u8::from(*level), u8::from(*masked), *extra]);
                out.extend_from_slice(&high.to_le_bytes());
            }
            Op::Line { pin, source, level } => {
                tag(&mut out, 4, OPS);
                out.extend_from_slice(&[*pin, *source, u8::from(*level)]);
            }
            Op::RawLine { pin, source, level } => {
                tag(&mut out, 5, OPS);
                out.extend_from_slice(&[*pin, *source, u8::from(*level)]);
            }
            Op::Pulse { pin } => {
                tag(&mut out, 6, OPS);
                out.push(*pin);
            }
            Op::Eoi { selector, vector } => {
                tag(&mut out, 7, OPS);
                out.extend_from_slice(&[*selector, *vector]);
            }
            Op::Eoir { value } => {
                tag(&mut out, 8, OPS);
                out.extend_from_slice(&value.to_le_bytes());
            }
            Op::NotAccepted { pin } => {
                tag(&mut out, 9, OPS);
                out.push(*pin);
            }
            Op::DeliverDeferred => tag(&mut out, 10, OPS),
            Op::Restore { state, sanitize } => {
                tag(&mut out, 11, OPS);
                raw_state(&mut out, state);
                out.push(u8::from(*sanitize));
            }
            Op::SetIrqchip { state, sanitize } => {
                tag(&mut out, 12, OPS);
                raw_state(&mut out, state);
                out.push(u8::from(*sanitize));
            }
            Op::GetSetIrqchip => tag(&mut out, 13, OPS),
            Op::Snapshot => tag(&mut out, 14, OPS),
            Op::Reset => tag(&mut out, 15, OPS),
            Op::RtcDelivered { accepted, minus_one } => {
                tag(&mut out, 16, OPS);
                out.extend_from_slice(&[*accepted, u8::from(*minus_one)]);
            }
            Op::RtcEoi { vcpu, selector, vector } => {
                tag(&mut out, 17, OPS);
                out.extend_from_slice(&[*vcpu, *selector, *vector]);
            }
        }
    }
    out.push(0); // no more elements
    out
}
