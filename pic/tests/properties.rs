//! Property tests of the 8259A pair: random guest and device op sequences, checked against
//! rules re-derived here from the datasheet (and from KVM's `arch/x86/kvm/i8259.c` for the
//! KVM profile) using only the public API and the public [`PicState`] fields.
//!
//! The generator mixes byte accesses to the six ports (weighted towards meaningful ICW, OCW
//! and ELCR bytes), wide accesses, shared-line changes, pulses, acknowledges, resets and
//! KVM's output update. Most sequences start with Linux's `init_8259A` so that the
//! interesting states are reached.

use std::fmt;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{FileFailurePersistence, TestRunner};
use vm_pic::regs::{ELCR1, ELCR2, MASTER_COMMAND, MASTER_DATA, SLAVE_COMMAND, SLAVE_DATA};
use vm_pic::{
    Ack, Chip, ChipState, Effects, InitState, LineError, LineStatus, Pic, PicState, Quirks, StateError,
};

// ----- ops and their results ------------------------------------------------------------------

/// One thing a guest, a device or the CPU does to the PIC pair.
#[derive(Clone, PartialEq, Eq)]
enum Op {
    /// A one-byte guest write (`outb`).
    Out(u16, u8),
    /// A one-byte guest read (`inb`).
    In(u16),
    /// A guest write of any width other than one byte.
    OutWide(u16, Vec<u8>),
    /// A guest read of this many bytes (not one).
    InWide(u16, usize),
    /// Source `source` drives IRQ line `irq` to `level`.
    Line { irq: u8, source: u8, level: bool },
    /// An edge on IRQ line `irq` from source 0.
    Pulse(u8),
    /// The CPU's interrupt acknowledge cycles.
    Ack,
    /// System reset (`Pic::reset`).
    Reset,
    /// KVM_SET_IRQCHIP's re-evaluation (`Pic::update_output`).
    UpdateOutput,
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Out(port, value) => write!(f, "out({port:#x}, {value:#04x})"),
            Op::In(port) => write!(f, "in({port:#x})"),
            Op::OutWide(port, data) => write!(f, "out_wide({port:#x}, {data:02x?})"),
            Op::InWide(port, len) => write!(f, "in_wide({port:#x}, {len})"),
            Op::Line { irq, source, level } => {
                write!(f, "line(irq {irq}, source {source}, {})", if *level { "high" } else { "low" })
            }
            Op::Pulse(irq) => write!(f, "pulse({irq})"),
            Op::Ack => write!(f, "ack"),
            Op::Reset => write!(f, "reset"),
            Op::UpdateOutput => write!(f, "update_output"),
        }
    }
}

/// What an op returned.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Write(Effects),
    Read(Vec<u8>, Effects),
    Line(Result<LineStatus, LineError>),
    Ack(Ack),
    Nothing,
}

/// An op's full result: what it returned and everything the VMM can observe afterwards.
#[derive(Clone, Debug, PartialEq, Eq)]
struct StepResult {
    outcome: Outcome,
    state: PicState,
    pending_vector: Option<u8>,
    intr: bool,
}

/// Performs `op` on `pic`.
fn apply(pic: &mut Pic, op: &Op) -> Outcome {
    match *op {
        Op::Out(port, value) => Outcome::Write(pic.write(port, value)),
        Op::In(port) => {
            let (value, effects) = pic.read(port);
            Outcome::Read(vec![value], effects)
        }
        Op::OutWide(port, ref data) => Outcome::Write(pic.pio_write(port, data)),
        Op::InWide(port, len) => {
            let mut data = vec![0xA5; len];
            let effects = pic.pio_read(port, &mut data);
            Outcome::Read(data, effects)
        }
        Op::Line { irq, source, level } => Outcome::Line(pic.set_irq_source(irq, source, level)),
        Op::Pulse(irq) => Outcome::Line(pic.pulse_irq(irq)),
        Op::Ack => Outcome::Ack(pic.acknowledge()),
        Op::Reset => Outcome::Write(pic.reset()),
        Op::UpdateOutput => {
            pic.update_output();
            Outcome::Nothing
        }
    }
}

/// Performs `op` on `pic` and records its full result.
fn step(pic: &mut Pic, op: &Op) -> StepResult {
    let outcome = apply(pic, op);
    StepResult { outcome, state: pic.state(), pending_vector: pic.pending_vector(), intr: pic.intr() }
}

// ----- named op sequences -----------------------------------------------------------------------

/// Linux's `init_8259A` (`arch/x86/kernel/i8259.c`): vectors 0x30–0x3f, slave on IR2,
/// edge-triggered, normal EOI, both chips unmasked at the end.
fn linux_init() -> Vec<Op> {
    vec![
        Op::Out(MASTER_COMMAND, 0x11), // ICW1: edge, cascade, ICW4 needed
        Op::Out(MASTER_DATA, 0x30),    // ICW2: IR0-7 at vectors 0x30-0x37
        Op::Out(MASTER_DATA, 0x04),    // ICW3: a slave on IR2
        Op::Out(MASTER_DATA, 0x01),    // ICW4: 8086 mode, normal EOI
        Op::Out(SLAVE_COMMAND, 0x11),  // ICW1: edge, cascade, ICW4 needed
        Op::Out(SLAVE_DATA, 0x38),     // ICW2: IR0-7 at vectors 0x38-0x3f
        Op::Out(SLAVE_DATA, 0x02),     // ICW3: slave ID 2
        Op::Out(SLAVE_DATA, 0x01),     // ICW4: 8086 mode, normal EOI
        Op::Out(MASTER_DATA, 0x00),    // OCW1: unmask every master line
        Op::Out(SLAVE_DATA, 0x00),     // OCW1: unmask every slave line
    ]
}

/// Linux's end of interrupt for `irq` (`mask_and_ack_8259A` without the masking): a specific
/// EOI to the slave for IRQ8–15 followed by one for the cascade level on the master.
fn linux_eoi(irq: u8) -> Vec<Op> {
    if irq >= 8 {
        vec![
            Op::Out(SLAVE_COMMAND, 0x60 | (irq & 7)), // OCW2: specific EOI of the slave level
            Op::Out(MASTER_COMMAND, 0x62),            // OCW2: specific EOI of master IR2
        ]
    } else {
        vec![Op::Out(MASTER_COMMAND, 0x60 | irq)] // OCW2: specific EOI of the master level
    }
}

/// The mode bits of one chip's initialisation sequence.
#[derive(Clone, Copy, Debug)]
struct InitModes {
    slave: bool,
    ic4: bool,
    single: bool,
    ltim: bool,
    base: u8,
    icw3: u8,
    icw4: u8,
    mask: Option<u8>,
}

/// A complete initialisation of one chip as the datasheet sequences it: ICW1, ICW2, ICW3
/// unless ICW1.SNGL, ICW4 if ICW1.IC4, then optionally OCW1. (KVM ignores SNGL and so still
/// expects ICW3: the sequence then leaves it one ICW short, which is part of the point.)
fn chip_init(m: InitModes) -> Vec<Op> {
    let (command, data) = if m.slave { (SLAVE_COMMAND, SLAVE_DATA) } else { (MASTER_COMMAND, MASTER_DATA) };
    let icw1 = 0x10 // D4: this is ICW1
        | u8::from(m.ic4) // IC4: ICW4 follows
        | (u8::from(m.single) << 1) // SNGL: no slave, no ICW3
        | (u8::from(m.ltim) << 3); // LTIM: every input level-triggered
    let mut ops = vec![
        Op::Out(command, icw1), // ICW1
        Op::Out(data, m.base),  // ICW2: vector base
    ];
    if !m.single {
        ops.push(Op::Out(data, m.icw3)); // ICW3: slave map / slave ID, mostly the PC's
    }
    if m.ic4 {
        ops.push(Op::Out(data, m.icw4)); // ICW4: 8086 mode plus AEOI/SFNM as generated
    }
    if let Some(mask) = m.mask {
        ops.push(Op::Out(data, mask)); // OCW1
    }
    ops
}

// ----- generators -------------------------------------------------------------------------------

/// The A0=0 port of either chip.
fn command_port() -> impl Strategy<Value = u16> {
    prop_oneof![Just(MASTER_COMMAND), Just(SLAVE_COMMAND)]
}

/// The A0=1 port of either chip.
fn data_port() -> impl Strategy<Value = u16> {
    prop_oneof![Just(MASTER_DATA), Just(SLAVE_DATA)]
}

/// Either edge/level control register.
fn elcr_port() -> impl Strategy<Value = u16> {
    prop_oneof![Just(ELCR1), Just(ELCR2)]
}

/// Any OCW2: the command in D7:5 and the level in D2:0 (D4:3 = 00).
fn ocw2_byte() -> impl Strategy<Value = u8> {
    (0..8u8, 0..8u8).prop_map(|(command, level)| (command << 5) | level)
}

/// An OCW3 (D4:3 = 01): read IRR, read ISR, poll, set or clear special mask mode, or any
/// combination of its bits.
fn ocw3_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        2 => Just(0x0A), // OCW3: read IRR
        2 => Just(0x0B), // OCW3: read ISR
        3 => Just(0x0C), // OCW3: poll
        2 => Just(0x68), // OCW3: set special mask mode
        1 => Just(0x48), // OCW3: clear special mask mode
        2 => any::<u8>().prop_map(|bits| 0x08 | (bits & 0x67)), // any OCW3
    ]
}

/// An ICW1 (D4 = 1), mostly Linux's; LTIM, SNGL and no-IC4 variants too.
fn icw1_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        3 => Just(0x11), // ICW1: edge, cascade, IC4
        1 => Just(0x19), // ICW1: LTIM, cascade, IC4
        1 => Just(0x13), // ICW1: edge, single, IC4
        1 => any::<u8>().prop_map(|bits| 0x10 | (bits & 0x0F)), // any ICW1
    ]
}

/// A byte for an A0=0 port.
fn command_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        4 => ocw2_byte(),
        3 => ocw3_byte(),
        1 => icw1_byte(),
        1 => any::<u8>(),
    ]
}

/// A byte for an A0=1 port: OCW1 masks, or ICW2–ICW4 when a chip is initialising.
fn data_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        3 => Just(0x00),                                // OCW1: unmask all
        1 => Just(0xFF),                                // OCW1: mask all
        2 => (0..8u8).prop_map(|l| 1 << l),             // OCW1: mask one level
        2 => (0..8u8).prop_map(|l| !(1 << l)),          // OCW1: only one level unmasked
        1 => prop_oneof![Just(0x30), Just(0x38)],       // ICW2: Linux's bases
        1 => prop_oneof![Just(0x04), Just(0x02)],       // ICW3: slave on IR2 / ID 2
        1 => prop_oneof![Just(0x01), Just(0x03), Just(0x11), Just(0x13)], // ICW4: 8086 [+AEOI] [+SFNM]
        2 => any::<u8>(),
    ]
}

/// An ELCR byte: a single level-capable line, all of them, none, or anything (the
/// hard-wired edge bits are dropped by the model).
fn elcr_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        3 => (0..8u8).prop_map(|l| 1 << l),
        1 => Just(0x00),
        1 => Just(0xFF),
        2 => any::<u8>(),
    ]
}

/// Ports for wide accesses: the PIC ports and their neighbours, so a split access may
/// straddle a decoded and an undecoded port.
fn wide_port() -> impl Strategy<Value = u16> {
    prop::sample::select(vec![0x1F, 0x20, 0x21, 0x9F, 0xA0, 0xA1, 0x4CF, 0x4D0, 0x4D1])
}

/// A port no PIC decodes (or, rarely, any port).
fn other_port() -> impl Strategy<Value = u16> {
    prop_oneof![
        3 => prop::sample::select(vec![0x22, 0x1F, 0xA2, 0x9F, 0x4D2, 0x4CF]),
        1 => any::<u16>(),
    ]
}

/// Any port the PIC pair decodes, for a byte read.
fn read_port() -> impl Strategy<Value = u16> {
    prop_oneof![
        4 => command_port(),
        2 => data_port(),
        1 => elcr_port(),
    ]
}

/// A single op.
fn single_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (command_port(), command_byte()).prop_map(|(p, v)| Op::Out(p, v)),
        4 => (data_port(), data_byte()).prop_map(|(p, v)| Op::Out(p, v)),
        2 => (elcr_port(), elcr_byte()).prop_map(|(p, v)| Op::Out(p, v)),
        5 => read_port().prop_map(Op::In),
        1 => (other_port(), any::<u8>()).prop_map(|(p, v)| Op::Out(p, v)),
        1 => other_port().prop_map(Op::In),
        1 => (
            wide_port(),
            prop_oneof![Just(Vec::new()), prop::collection::vec(prop_oneof![command_byte(), data_byte()], 2..=4)]
        )
            .prop_map(|(p, data)| Op::OutWide(p, data)),
        1 => (wide_port(), prop::sample::select(vec![0usize, 2, 3, 4])).prop_map(|(p, len)| Op::InWide(p, len)),
        9 => (0..16u8, 0..4u8, any::<bool>()).prop_map(|(irq, source, level)| Op::Line { irq, source, level }),
        4 => (0..16u8).prop_map(Op::Pulse),
        7 => Just(Op::Ack),
        1 => Just(Op::Reset),
        1 => Just(Op::UpdateOutput),
    ]
}

/// Initialisation modes of one chip: mostly Linux's, sometimes LTIM, SNGL, no ICW4, AEOI
/// or SFNM (the ICW4 byte is always 8086 mode), and sometimes another ICW3: no slave on IR2
/// (master 0x00), another slave ID, or any byte.
fn init_modes(slave: bool) -> impl Strategy<Value = InitModes> {
    let pc_icw3 = if slave { 0x02 } else { 0x04 };
    (
        prop::bool::weighted(0.85),
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.2),
        prop_oneof![Just(if slave { 0x38 } else { 0x30 }), any::<u8>().prop_map(|b| b & 0xF8)],
        prop_oneof![5 => Just(pc_icw3), 1 => Just(0x00), 1 => 0..8u8, 1 => any::<u8>()],
        prop_oneof![3 => Just(0x01), 1 => Just(0x03), 2 => Just(0x11), 1 => Just(0x13), 1 => any::<u8>()],
        prop::option::weighted(0.7, data_byte()),
    )
        .prop_map(move |(ic4, single, ltim, base, icw3, icw4, mask)| InitModes {
            slave,
            ic4,
            single,
            ltim,
            base,
            icw3,
            icw4,
            mask,
        })
}

/// Level-capable lines (ELCR1 0xF8, ELCR2 0xDE on PIIX).
const LEVEL_CAPABLE: [u8; 11] = [3, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15];

/// The port and bit of `irq` in its ELCR.
fn elcr_port_and_bit(irq: u8) -> (u16, u8) {
    (if irq < 8 { ELCR1 } else { ELCR2 }, 1 << (irq & 7))
}

/// A line held high while its trigger mode is changed, so that ELCR resampling matters.
fn held_line_then_elcr() -> impl Strategy<Value = Vec<Op>> {
    (prop::sample::select(LEVEL_CAPABLE.to_vec()), 0..4u8, any::<bool>(), any::<bool>()).prop_map(
        |(irq, source, ack_between, level_mode)| {
            let (port, bit) = elcr_port_and_bit(irq);
            let mut ops = vec![Op::Line { irq, source, level: true }];
            if ack_between {
                ops.push(Op::Ack);
            }
            ops.push(Op::Out(port, if level_mode { bit } else { 0 }));
            ops
        },
    )
}

/// A step of a sequence: usually one op, sometimes a group that only means something as a
/// whole (an EOI pair, a chip's initialisation, an ELCR change under a held line).
fn op_group() -> impl Strategy<Value = Vec<Op>> {
    prop_oneof![
        40 => single_op().prop_map(|op| vec![op]),
        4 => (0..16u8).prop_map(linux_eoi),
        2 => any::<bool>().prop_flat_map(init_modes).prop_map(chip_init),
        2 => held_line_then_elcr(),
    ]
}

/// How a sequence starts: Linux's init (most often), a generated init of both chips, or
/// the power-on state.
fn prefix() -> impl Strategy<Value = Vec<Op>> {
    prop_oneof![
        7 => Just(linux_init()),
        2 => (init_modes(false), init_modes(true)).prop_map(|(m, s)| [chip_init(m), chip_init(s)].concat()),
        1 => Just(Vec::new()),
    ]
}

/// Longest generated sequence.
const MAX_OPS: usize = 200;

/// A random op sequence of up to [`MAX_OPS`] ops.
fn op_sequence() -> impl Strategy<Value = Vec<Op>> {
    (prefix(), prop::collection::vec(op_group(), 0..150)).prop_map(|(mut ops, groups)| {
        ops.extend(groups.into_iter().flatten());
        ops.truncate(MAX_OPS);
        ops
    })
}

// ----- the oracle: priority resolution from the datasheet ----------------------------------------

/// The resolution rules of one profile, spelt out independently of [`Quirks`].
#[derive(Clone, Copy, Debug)]
struct Rules {
    /// Special mask mode works: an in-service level masked in IMR does not block.
    special_mask_works: bool,
    /// In special fully nested mode master ISR2 blocks nothing (KVM), instead of only not
    /// blocking the slave's own IR2 requests (datasheet).
    sfnm_for_every_request: bool,
    /// Master IR2 is a wire from the slave's INT (datasheet), rather than an edge KVM
    /// latched into IRR2 earlier.
    cascade_is_a_wire: bool,
    /// A chip resolves requests while between ICW1 and its last ICW (KVM).
    live_during_init: bool,
    /// INT is the output KVM latched at its last update point, not the current resolution.
    int_latched: bool,
    /// ICW3 means nothing: IR2 always cascades and the slave always answers (KVM).
    icw3_ignored: bool,
}

impl Rules {
    const DATASHEET: Rules = Rules {
        special_mask_works: true,
        sfnm_for_every_request: false,
        cascade_is_a_wire: true,
        live_during_init: false,
        int_latched: false,
        icw3_ignored: false,
    };
    const KVM: Rules = Rules {
        special_mask_works: false,
        sfnm_for_every_request: true,
        cascade_is_a_wire: false,
        live_during_init: true,
        int_latched: true,
        icw3_ignored: true,
    };
}

/// Both profiles with the oracle rules that describe them.
const PROFILES: [(Quirks, Rules); 2] = [(Quirks::DATASHEET, Rules::DATASHEET), (Quirks::KVM, Rules::KVM)];

/// The levels of a chip from highest to lowest priority: `priority_add` first, rotating.
fn priority_order(chip: &ChipState) -> impl Iterator<Item = u8> {
    let first = chip.priority_add;
    (0..8u8).map(move |k| (first + k) & 7)
}

/// Priority rank of `level` on `chip`: 0 highest, 7 lowest.
fn rank(chip: &ChipState, level: u8) -> u8 {
    level.wrapping_sub(chip.priority_add) & 7
}

/// Whether in-service level `in_service` of `chip` holds off a request for level
/// `requested` of equal or lower priority. Special mask mode: a level masked in IMR holds
/// off nothing. Special fully nested mode (master only): ISR2 does not hold off the
/// slave's own requests on IR2 (KVM: any request).
fn in_service_blocks(chip: &ChipState, master: bool, in_service: u8, requested: u8, rules: Rules) -> bool {
    let b = 1u8 << in_service;
    if chip.isr & b == 0 {
        return false;
    }
    if rules.special_mask_works && chip.special_mask && chip.imr & b != 0 {
        return false;
    }
    let sfnm_bypass = master
        && chip.special_fully_nested_mode
        && in_service == 2
        && (requested == 2 || rules.sfnm_for_every_request);
    !sfnm_bypass
}

/// The level one chip presents on INT: walking from the highest priority down, the first
/// unmasked request wins unless an in-service level at or above it blocks it first. A chip
/// that is initialising presents nothing (datasheet). `inputs` is IRR plus any wired input.
fn resolve(chip: &ChipState, master: bool, inputs: u8, rules: Rules) -> Option<u8> {
    if chip.init_state != InitState::Ready && !rules.live_during_init {
        return None;
    }
    let requests = inputs & !chip.imr;
    for level in priority_order(chip) {
        let requested = requests & (1 << level) != 0;
        // Equal priority blocks too: a level in service is not requested again until its EOI.
        let candidate = if requested { level } else { 0xFF };
        if chip.isr & (1 << level) != 0 && in_service_blocks(chip, master, level, candidate, rules) {
            return None;
        }
        if requested {
            return Some(level);
        }
    }
    None
}

/// What the oracle expects of an acknowledge in state `s`: (vector, irq, spurious).
///
/// Master IR2 is master IRR2 ORed with "the slave presents a request" (datasheet; the PC
/// wiring is fixed, so this holds in single mode too), or just the latched IRR2 (KVM). A
/// master level cascades when its ICW3 bit is set (KVM: IR2 only) unless the master is in
/// single mode; otherwise it is an ordinary input with a master vector. A cascaded level is
/// answered by the slave when the slave's ID (ICW3 bits 2:0) is the level (KVM: always);
/// nobody answering leaves the bus floating at 0xFF, with the master level as the IRQ. No
/// master request: spurious IRQ7 (master IR7 vector). Cascade with nothing on the slave:
/// spurious IRQ15 (slave IR7 vector).
fn expected_ack(s: &PicState, rules: Rules) -> (u8, u8, bool) {
    let slave = resolve(&s.slave, false, s.slave.irr, rules);
    let Some(level) = master_request(s, rules) else { return (s.master.irq_base | 7, 7, true) };
    let cascaded = !s.master.single_mode
        && if rules.icw3_ignored { level == 2 } else { s.master.icw3 & (1 << level) != 0 };
    let answered = rules.icw3_ignored || s.slave.icw3 & 7 == level;
    match (cascaded, answered, slave) {
        (false, _, _) => (s.master.irq_base | level, level, false),
        (true, true, Some(l)) => (s.slave.irq_base | l, 8 | l, false),
        (true, true, None) => (s.slave.irq_base | 7, 15, true),
        (true, false, _) => (0xFF, level, false),
    }
}

/// What master IR2 sees of the slave besides IRR2: the slave's INT on the datasheet's wire
/// (bit 2), nothing where KVM latches it into IRR2 instead.
fn cascade_wire(s: &PicState, rules: Rules) -> u8 {
    let slave = resolve(&s.slave, false, s.slave.irr, rules);
    if rules.cascade_is_a_wire && slave.is_some() {
        1 << 2
    } else {
        0
    }
}

/// The level the master resolves in state `s` ("the master has a request" when `Some`).
fn master_request(s: &PicState, rules: Rules) -> Option<u8> {
    resolve(&s.master, true, s.master.irr | cascade_wire(s, rules), rules)
}

/// The INT output in state `s`: the master's resolution, or what KVM latched.
fn expected_intr(s: &PicState, rules: Rules) -> bool {
    if rules.int_latched {
        s.output
    } else {
        master_request(s, rules).is_some()
    }
}

/// Whether `op` from state `s` reaches one of the points where KVM runs `pic_update_irq`
/// (KVM profile): a line change, the acknowledge, OCW1 (A0=1 write to a ready chip), an
/// OCW2 that acts (a non-specific EOI with some level in service, special mask mode being
/// ignored; a specific EOI; a priority command), a poll read except a master poll that
/// answers IR2, reset and `update_output`. Wide accesses are dropped by KVM.
fn kvm_update_point(s: &PicState, op: &Op) -> bool {
    let chip_of = |port: u16| match port {
        MASTER_COMMAND | MASTER_DATA => Some((&s.master, true)),
        SLAVE_COMMAND | SLAVE_DATA => Some((&s.slave, false)),
        _ => None,
    };
    match *op {
        Op::Out(port, value) => match chip_of(port) {
            Some((chip, _)) if port == MASTER_DATA || port == SLAVE_DATA => {
                chip.init_state == InitState::Ready
            }
            Some((chip, _)) if value & 0x18 == 0 => match value >> 5 {
                1 | 5 => chip.isr != 0,
                3 | 6 | 7 => true,
                _ => false,
            },
            _ => false,
        },
        Op::In(port) => match chip_of(port) {
            Some((chip, true)) => chip.poll && master_request(s, Rules::KVM) != Some(2),
            Some((chip, false)) => chip.poll,
            None => false,
        },
        Op::OutWide(..) | Op::InWide(..) => false,
        Op::Line { irq, source, .. } => irq < 16 && source < 32,
        Op::Pulse(irq) => irq < 16,
        Op::Ack | Op::Reset | Op::UpdateOutput => true,
    }
}

// ----- helpers of the individual properties ---------------------------------------------------

/// The ports a guest read `op` actually reaches in profile `quirks` (a wide read is split
/// into consecutive byte reads on the datasheet profile and dropped by KVM).
fn ports_read(op: &Op, quirks: Quirks) -> Vec<u16> {
    match *op {
        Op::In(port) => vec![port],
        Op::InWide(port, len) if !quirks.contains(Quirks::WIDE_ACCESS_IGNORED) => {
            (0..len as u16).map(|i| port.wrapping_add(i)).collect()
        }
        _ => Vec::new(),
    }
}

/// A chip's ISR can gain a bit only by an interrupt acknowledge: the CPU's INTA cycles, or
/// the read that follows an OCW3 poll command (the chip's own ports, poll flag set).
fn may_set_isr(op: &Op, quirks: Quirks, before: &ChipState, ports: [u16; 2]) -> bool {
    *op == Op::Ack || (before.poll && ports_read(op, quirks).iter().any(|p| ports.contains(p)))
}

/// The full result of `op` from state `s` in the profile `quirks`, or the refusal of `s`
/// (a profile without a latched cascade refuses a KVM state whose slave request KVM has not
/// latched into IRR2 yet; that is a divergence of `CASCADE_LATCHED`).
fn result_in(quirks: Quirks, s: &PicState, op: &Op) -> Result<StepResult, StateError> {
    let mut pic = Pic::new(quirks);
    pic.restore(s)?;
    Ok(step(&mut pic, op))
}

/// A step-wise comparison of the two profiles from one KVM-profile state.
struct Attribution {
    kvm: StepResult,
    datasheet: Result<StepResult, StateError>,
    /// Quirks decisive on the KVM side: removing just this one from [`Quirks::KVM`] changes
    /// the result. Only computed when the profiles disagree.
    removal: Vec<&'static str>,
    /// Quirks decisive on the datasheet side: adding just this one to
    /// [`Quirks::DATASHEET`] changes the result. Only computed when no quirk is decisive on
    /// the KVM side (a divergence that needs two KVM quirks together, see
    /// [`profiles_differ_only_where_a_named_quirk_applies`]).
    addition: Vec<&'static str>,
}

impl Attribution {
    /// Whether the profiles disagree and no single named quirk accounts for it.
    fn unexplained(&self) -> bool {
        self.diverges() && self.removal.is_empty() && self.addition.is_empty()
    }

    /// Whether the profiles answer differently.
    fn diverges(&self) -> bool {
        self.datasheet.as_ref() != Ok(&self.kvm)
    }
}

/// Applies `op` to both profiles restored to `s`; when they differ, finds every single KVM
/// quirk whose removal changes the KVM profile's full result for `op`, and failing that
/// every single quirk whose addition changes the datasheet profile's.
fn attribute(s: &PicState, op: &Op) -> Attribution {
    let kvm = result_in(Quirks::KVM, s, op).expect("a KVM-profile state restores into the KVM profile");
    let datasheet = result_in(Quirks::DATASHEET, s, op);
    let mut removal = Vec::new();
    let mut addition = Vec::new();
    if datasheet.as_ref() != Ok(&kvm) {
        removal = Quirks::KVM
            .iter_names()
            .filter(|(_, q)| result_in(Quirks::KVM - *q, s, op).as_ref() != Ok(&kvm))
            .map(|(name, _)| name)
            .collect();
        if removal.is_empty() {
            addition = Quirks::KVM
                .iter_names()
                .filter(|(_, q)| result_in(Quirks::DATASHEET | *q, s, op) != datasheet)
                .map(|(name, _)| name)
                .collect();
        }
    }
    Attribution { kvm, datasheet, removal, addition }
}

/// A level-triggered line shared by several sources, and the steps taken on it.
#[derive(Clone, Debug)]
enum SharedStep {
    /// A source asserts (true) or releases (false) the line.
    Source(u8, bool),
    /// The CPU takes whatever is pending and the handler EOIs it Linux's way.
    AckAndEoi,
}

/// Sets `irq`'s ELCR bit (PIIX: a level-triggered, active-high-to-the-8259 line).
fn make_level_triggered(pic: &mut Pic, irq: u8) {
    let (port, bit) = elcr_port_and_bit(irq);
    let (current, _) = pic.read(port);
    let _ = pic.write(port, current | bit);
}

/// The IRR of the chip owning `irq` as the guest reads it: OCW3 read-IRR, then a command
/// port read.
fn read_irr(pic: &mut Pic, irq: u8) -> u8 {
    let port = if irq < 8 { MASTER_COMMAND } else { SLAVE_COMMAND };
    let _ = pic.write(port, 0x0A); // OCW3: read IRR on A0=0
    pic.read(port).0
}

/// A pic of profile `quirks` after `ops` from power-on.
fn fresh(quirks: Quirks, ops: &[Op]) -> Pic {
    let mut pic = Pic::new(quirks);
    for op in ops {
        apply(&mut pic, op);
    }
    pic
}

/// Few enough cases for the whole file to run in seconds in a debug build.
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        // Failing seeds go to `properties.regressions` next to this file (an integration
        // test has no lib.rs for the default `proptest-regressions/` tree).
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    }
}

// ----- properties ------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// ISR bits are set by the acknowledge (INTA) and by nothing else: not by commands,
    /// line changes, mask or ELCR writes, and not by reads other than a poll.
    #[test]
    fn isr_bits_appear_only_through_acknowledge(ops in op_sequence()) {
        for (quirks, _) in PROFILES {
            let mut pic = Pic::new(quirks);
            for (i, op) in ops.iter().enumerate() {
                let before = pic.state();
                apply(&mut pic, op);
                let after = pic.state();
                for (name, b, a, ports) in [
                    ("master", &before.master, &after.master, [MASTER_COMMAND, MASTER_DATA]),
                    ("slave", &before.slave, &after.slave, [SLAVE_COMMAND, SLAVE_DATA]),
                ] {
                    let gained = a.isr & !b.isr;
                    prop_assert!(
                        gained == 0 || may_set_isr(op, quirks, b, ports),
                        "{quirks:?}: op #{i} {op:?} set {name} ISR bits {gained:#04x}\nbefore: {before:#?}"
                    );
                }
            }
        }
    }

    /// The acknowledge returns exactly what an independent datasheet (or KVM) priority
    /// resolver predicts from the state, INT is the master's resolution (datasheet) or the
    /// latched output (KVM), and `pending_vector` predicts the acknowledge whenever INT is
    /// high (with KVM's INT latched high over nothing: spurious IRQ7) and is `None` otherwise.
    #[test]
    fn acknowledged_vector_is_the_highest_priority_unblocked_request(ops in op_sequence()) {
        for (quirks, rules) in PROFILES {
            let mut pic = Pic::new(quirks);
            for (i, op) in ops.iter().enumerate() {
                let s = pic.state();
                let expected = expected_ack(&s, rules);
                let intr = expected_intr(&s, rules);
                prop_assert_eq!(
                    pic.intr(), intr,
                    "{:?}: intr before op #{} {:?}\nstate: {:#?}", quirks, i, op, s
                );
                prop_assert_eq!(
                    pic.pending_vector(), intr.then_some(expected.0),
                    "{:?}: pending_vector before op #{} {:?}\nstate: {:#?}", quirks, i, op, s
                );
                if let Outcome::Ack(ack) = apply(&mut pic, op) {
                    prop_assert_eq!(
                        (ack.vector, ack.irq, ack.spurious), expected,
                        "{:?}: op #{} ack\nstate: {:#?}", quirks, i, s
                    );
                }
            }
        }
    }

    /// A delivered (non-spurious) level ranks strictly above every in-service level of its
    /// chip that could block it; for a slave level, master IR2 does too on the master.
    #[test]
    fn delivered_vectors_never_exceed_in_service_priority(ops in op_sequence()) {
        for (quirks, rules) in PROFILES {
            let mut pic = Pic::new(quirks);
            for (i, op) in ops.iter().enumerate() {
                let s = pic.state();
                let Outcome::Ack(ack) = apply(&mut pic, op) else { continue };
                if ack.spurious {
                    continue;
                }
                let mut delivered = vec![(true, &s.master, if ack.irq >= 8 { 2 } else { ack.irq })];
                if ack.irq >= 8 {
                    delivered.push((false, &s.slave, ack.irq & 7));
                }
                for (master, chip, level) in delivered {
                    for in_service in 0..8u8 {
                        if in_service_blocks(chip, master, in_service, level, rules) {
                            prop_assert!(
                                rank(chip, level) < rank(chip, in_service),
                                "{:?}: op #{} delivered {:?} over in-service level {} (master: {})\nstate: {:#?}",
                                quirks, i, ack, in_service, master, s
                            );
                        }
                    }
                }
            }
        }
    }

    /// A snapshot restored into a fresh pic is that pic, and both continue identically.
    #[test]
    fn restore_of_state_is_the_identity(ops in op_sequence(), split in any::<prop::sample::Index>()) {
        let k = split.index(ops.len() + 1);
        let (prefix, rest) = ops.split_at(k);
        for (quirks, _) in PROFILES {
            let mut pic = fresh(quirks, prefix);
            let mut copy = Pic::new(quirks);
            copy.restore(&pic.state()).unwrap();
            prop_assert_eq!(&copy, &pic);
            for (i, op) in rest.iter().enumerate() {
                let original = step(&mut pic, op);
                let restored = step(&mut copy, op);
                prop_assert_eq!(&restored, &original, "{:?}: op #{} after the split: {:?}", quirks, k + i, op);
            }
            prop_assert_eq!(copy, pic);
        }
    }

    /// Wherever the KVM and datasheet profiles answer an op differently from the same state,
    /// one named quirk is decisive: removing it alone from the KVM profile changes the
    /// answer, or (for a divergence that needs two KVM quirks together, such as a
    /// request special mask mode lets through on the slave that KVM neither resolves nor
    /// latched into master IRR2) adding it alone to the datasheet profile does.
    #[test]
    fn profiles_differ_only_where_a_named_quirk_applies(ops in op_sequence()) {
        let mut s = Pic::new(Quirks::KVM).state();
        for (i, op) in ops.iter().enumerate() {
            let a = attribute(&s, op);
            prop_assert!(
                !a.unexplained(),
                "op #{} {:?} diverges with no single quirk to blame\nstate S: {:#?}\nKVM: {:#?}\ndatasheet: {:#?}",
                i, op, s, a.kvm, a.datasheet
            );
            s = a.kvm.state;
        }
    }

    /// A level-triggered line shared by several sources reads as requested in IRR exactly
    /// while at least one source asserts it, acknowledges and EOIs notwithstanding.
    #[test]
    fn shared_line_is_high_while_any_source_asserts(
        irq in prop::sample::select(LEVEL_CAPABLE.to_vec()),
        steps in prop::collection::vec(
            prop_oneof![6 => (0..4u8, any::<bool>()).prop_map(|(s, l)| SharedStep::Source(s, l)),
                        1 => Just(SharedStep::AckAndEoi)],
            1..100,
        ),
    ) {
        for (quirks, _) in PROFILES {
            let mut pic = fresh(quirks, &linux_init());
            make_level_triggered(&mut pic, irq);
            let mut asserted = [false; 4];
            for (i, st) in steps.iter().enumerate() {
                match *st {
                    SharedStep::Source(source, level) => {
                        pic.set_irq_source(irq, source, level).unwrap();
                        asserted[usize::from(source)] = level;
                    }
                    SharedStep::AckAndEoi => {
                        let ack = pic.acknowledge();
                        if !ack.spurious {
                            for op in linux_eoi(ack.irq) {
                                apply(&mut pic, &op);
                            }
                        } else if ack.irq == 15 {
                            apply(&mut pic, &Op::Out(MASTER_COMMAND, 0x62)); // OCW2: EOI of IR2
                        }
                    }
                }
                let irr = read_irr(&mut pic, irq);
                prop_assert_eq!(
                    irr & (1 << (irq & 7)) != 0, asserted.iter().any(|&a| a),
                    "{:?}: IRQ{} after step #{} {:?}, sources {:?}", quirks, irq, i, st, asserted
                );
            }
        }
    }

    /// KVM profile: right after every op that reaches one of KVM's `pic_update_irq` points,
    /// INT is "the master would resolve a request" (by the independent oracle, on the latched
    /// IRR2); after every other op INT is unchanged, whatever the registers now say.
    #[test]
    fn kvm_int_is_latched_exactly_at_its_update_points(ops in op_sequence()) {
        let mut pic = Pic::new(Quirks::KVM);
        for (i, op) in ops.iter().enumerate() {
            let before = pic.state();
            apply(&mut pic, op);
            let after = pic.state();
            prop_assert_eq!(pic.intr(), after.output, "op #{} {:?}: intr() is not the latched output", i, op);
            if kvm_update_point(&before, op) {
                let request = master_request(&after, Rules::KVM);
                prop_assert_eq!(
                    pic.intr(), request.is_some(),
                    "op #{} {:?} is an update point; master request {:?}\nbefore: {:#?}\nafter: {:#?}",
                    i, op, request, before, after
                );
            } else {
                prop_assert_eq!(
                    pic.intr(), before.output,
                    "op #{} {:?} is no update point but moved INT\nbefore: {:#?}\nafter: {:#?}",
                    i, op, before, after
                );
            }
        }
    }

    /// A byte read without a pending poll changes nothing and returns the selected register:
    /// A0=0 reads ISR or IRR (the master's IRR with the slave's INT on IR2 where the cascade
    /// is a wire), A0=1 reads IMR, the ELCR ports read ELCR.
    #[test]
    fn reads_return_the_selected_register(ops in op_sequence()) {
        for (quirks, rules) in PROFILES {
            let mut pic = Pic::new(quirks);
            for (i, op) in ops.iter().enumerate() {
                let s = pic.state();
                let expected = match *op {
                    Op::In(MASTER_COMMAND) if !s.master.poll => Some(if s.master.read_reg_select {
                        s.master.isr
                    } else {
                        s.master.irr | cascade_wire(&s, rules)
                    }),
                    Op::In(SLAVE_COMMAND) if !s.slave.poll => {
                        Some(if s.slave.read_reg_select { s.slave.isr } else { s.slave.irr })
                    }
                    Op::In(MASTER_DATA) if !s.master.poll => Some(s.master.imr),
                    Op::In(SLAVE_DATA) if !s.slave.poll => Some(s.slave.imr),
                    Op::In(ELCR1) => Some(s.master.elcr),
                    Op::In(ELCR2) => Some(s.slave.elcr),
                    _ => None,
                };
                let before = pic.clone();
                let outcome = apply(&mut pic, op);
                if let Some(value) = expected {
                    prop_assert_eq!(
                        outcome, Outcome::Read(vec![value], Effects::default()),
                        "{:?}: op #{} {:?}\nstate: {:#?}", quirks, i, op, s
                    );
                    prop_assert_eq!(&pic, &before, "{:?}: op #{} {:?} changed the PIC", quirks, i, op);
                }
            }
        }
    }

    /// Restore refuses a state with SNGL or LTIM set, or an ICW3 other than the PC's,
    /// exactly in a profile that ignores that mode or ICW3 (the first offending field, master
    /// first, SNGL before LTIM before ICW3), leaving the PIC unchanged; otherwise it installs
    /// the state as it is.
    #[test]
    fn restore_refuses_exactly_the_modes_the_profile_ignores(ops in op_sequence(), modes in 0..16u8) {
        let mut s = fresh(Quirks::DATASHEET, &ops).state();
        s.master.single_mode |= modes & 1 != 0;
        s.master.ltim |= modes & 2 != 0;
        s.slave.single_mode |= modes & 4 != 0;
        s.slave.ltim |= modes & 8 != 0;
        for quirks in [
            Quirks::DATASHEET,
            Quirks::KVM,
            Quirks::SNGL_IGNORED,
            Quirks::LTIM_IGNORED,
            Quirks::KVM - Quirks::SNGL_IGNORED,
            Quirks::KVM - Quirks::LTIM_IGNORED,
            Quirks::ICW3_IGNORED,
            Quirks::KVM - Quirks::ICW3_IGNORED,
        ] {
            let pc_icw3 = |chip: Chip| if chip == Chip::Master { 0x04 } else { 0x02 };
            let ignored = [(Chip::Master, &s.master), (Chip::Slave, &s.slave)].into_iter().find_map(|(chip, c)| {
                if c.single_mode && quirks.contains(Quirks::SNGL_IGNORED) {
                    Some(StateError::IgnoredMode { chip, field: "single_mode" })
                } else if c.ltim && quirks.contains(Quirks::LTIM_IGNORED) {
                    Some(StateError::IgnoredMode { chip, field: "ltim" })
                } else if c.icw3 != pc_icw3(chip) && quirks.contains(Quirks::ICW3_IGNORED) {
                    Some(StateError::IgnoredMode { chip, field: "icw3" })
                } else {
                    None
                }
            });
            let mut pic = fresh(quirks, &linux_init());
            let old = pic.clone();
            let result = pic.restore(&s);
            prop_assert_eq!(result, ignored.map_or(Ok(()), Err), "{:?}\nstate: {:#?}", quirks, s);
            if result.is_ok() {
                prop_assert_eq!(pic.state(), s);
            } else {
                prop_assert_eq!(&pic, &old, "{:?}: a refused restore changed the PIC", quirks);
            }
        }
    }
}

/// The attribution property is not vacuous: over 2000 generated sequences, every one of
/// the twelve quirks is, alone, decisive on the KVM side for at least one divergence.
#[test]
fn every_quirk_is_exercised_by_the_generator() {
    let mut runner = TestRunner::deterministic();
    let strategy = op_sequence();
    let names: Vec<&'static str> = Quirks::KVM.iter_names().map(|(n, _)| n).collect();
    let mut removal = vec![0usize; names.len()];
    let mut addition = vec![0usize; names.len()];
    let (mut ops_run, mut divergent, mut joint) = (0usize, 0usize, 0usize);
    for _ in 0..2000 {
        let ops = strategy.new_tree(&mut runner).expect("generate").current();
        let mut s = Pic::new(Quirks::KVM).state();
        for op in &ops {
            let a = attribute(&s, op);
            assert!(!a.unexplained(), "unattributed divergence: {op:?} from {s:#?}");
            ops_run += 1;
            if a.diverges() {
                divergent += 1;
                joint += usize::from(a.removal.is_empty());
            }
            for (counts, blamed) in [(&mut removal, &a.removal), (&mut addition, &a.addition)] {
                for name in blamed {
                    let index = names.iter().position(|n| n == name).expect("a KVM quirk");
                    counts[index] += 1;
                }
            }
            s = a.kvm.state;
        }
    }
    println!("{ops_run} ops, {divergent} divergent, {joint} needing two KVM quirks together");
    println!("{:<24} {:>8} {:>8}", "quirk", "removal", "addition");
    for (i, name) in names.iter().enumerate() {
        println!("{name:<24} {:>8} {:>8}", removal[i], addition[i]);
    }
    let missing: Vec<_> = names.iter().zip(&removal).filter(|(_, c)| **c == 0).map(|(n, _)| n).collect();
    assert!(missing.is_empty(), "quirks never decisive: {missing:?}");
}
