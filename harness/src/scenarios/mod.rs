//! The built-in scenarios, each with the trace it must produce: the PIC, PIT and TSC ones
//! here, and [`ioapic`], [`lapic`], [`smp`], [`migrate`] and [`posted`] (built from [`apic`]).
//!
//! Vector bases are Linux's: master 0x30 (IRQ0–7 → 0x30–0x37), slave 0x38 (IRQ8–15 →
//! 0x38–0x3f). Interrupts are taken only at `Wait`, and every `Wait` has exactly one
//! interrupt to take: where several requests are pending, the handler does not EOI (the
//! in-service level blocks the others) and the program ends each interrupt with IF=0. On the
//! project's hosts KVM delivers an interrupt at a VM entry or in `hlt`, not the instant IF
//! becomes 1 (guest code is emulated in batches), so an `Sti` … `Cli` window proves nothing;
//! "not delivered" is checked through IRR/ISR reads and snapshots instead.
//! Where KVM's in-kernel PIC and the datasheet disagree, the scenario has a second
//! expectation for the datasheet profile; each such difference is a named vm-pic quirk.

pub mod apic;
pub mod ioapic;
pub mod lapic;
pub mod lapic_odd;
pub mod migrate;
pub mod pic_icw3;
pub mod posted;
pub mod smp;

use crate::scenario::Expect::{self, Irq, Value};
use crate::scenario::{EoiPolicy, HostOp, IoWidth, Op, Scenario};

/// Master vector base (ICW2).
pub const MASTER_BASE: u8 = 0x30;
/// Slave vector base (ICW2).
pub const SLAVE_BASE: u8 = 0x38;
/// The interrupt handler's EOI by port for these bases.
pub const PIC_EOI: EoiPolicy = EoiPolicy::Pic { slave_base: SLAVE_BASE };

/// `out` of one byte.
pub fn out(port: u16, value: u8) -> Op {
    Op::Out { port, width: IoWidth::Byte, value: u32::from(value) }
}

/// `in` of one byte (logged).
pub fn inb(port: u16) -> Op {
    Op::In { port, width: IoWidth::Byte }
}

/// Host: an edge on IRQ `irq`.
pub fn pulse(irq: u8) -> Op {
    Op::Host(HostOp::PulseIrq(irq))
}

/// Host: drive IRQ `irq` to `level`.
pub fn line(irq: u8, level: bool) -> Op {
    Op::Host(HostOp::SetIrq { irq, level })
}

/// Host: snapshot under `label`.
pub fn snapshot(label: &str) -> Op {
    Op::Host(HostOp::Snapshot(label.to_string()))
}

/// Linux's PIC bring-up (`arch/x86/kernel/i8259.c` `init_8259A`); `icw4_master` is normally
/// 0x01. ICW1 clears the mask register, so every line is unmasked afterwards (Linux writes its
/// cached masks next; scenarios write theirs).
pub fn linux_init_with(icw4_master: u8) -> Vec<Op> {
    vec![
        out(0x21, 0xFF),        // OCW1: mask all of the master while programming
        out(0xA1, 0xFF),        // OCW1: mask all of the slave
        out(0x20, 0x11),        // ICW1: edge triggered, cascade, ICW4 follows
        out(0x21, MASTER_BASE), // ICW2: IRQ0-7 at vectors 0x30-0x37
        out(0x21, 0x04),        // ICW3: a slave on IR2
        out(0x21, icw4_master), // ICW4: 8086 mode (0x01), + AEOI (0x03)
        out(0xA0, 0x11),        // ICW1
        out(0xA1, SLAVE_BASE),  // ICW2: IRQ8-15 at vectors 0x38-0x3f
        out(0xA1, 0x02),        // ICW3: slave ID 2
        out(0xA1, 0x01),        // ICW4: 8086 mode, normal EOI
    ]
}

/// [`linux_init_with`] with normal EOI.
pub fn linux_init() -> Vec<Op> {
    linux_init_with(0x01)
}

/// Linux's init, then every line unmasked.
fn init_unmasked() -> Vec<Op> {
    let mut ops = linux_init();
    ops.extend([out(0x21, 0x00), out(0xA1, 0x00)]);
    ops
}

/// Reads ISR (OCW3 0x0B) of the chip at `command`.
fn read_isr(command: u16) -> [Op; 2] {
    [out(command, 0x0B), inb(command)]
}

/// Reads IRR (OCW3 0x0A) of the chip at `command`.
fn read_irr(command: u16) -> [Op; 2] {
    [out(command, 0x0A), inb(command)]
}

/// The PIT's counter 0 in mode 2 with `count` (1193182 Hz clocks per IRQ0).
pub fn pit_periodic_program(count: u16) -> Vec<Op> {
    let [lsb, msb] = count.to_le_bytes();
    vec![
        out(0x43, 0x34), // control word: counter 0, LSB then MSB, mode 2 (rate generator), binary
        out(0x40, lsb),  // count LSB
        out(0x40, msb),  // count MSB: counting starts
    ]
}

/// PIT counter 0 at `count` clocks per tick, `ticks` IRQ0s taken one per `Wait` and ended
/// by an explicit EOI with IF=0 (so each `Wait` takes exactly one, however late the host).
/// The PIT is programmed before the PIC's ICW1, which drops any edge it raised.
pub fn pit_periodic(name: &str, count: u16, ticks: usize) -> Scenario {
    let mut ops = pit_periodic_program(count);
    ops.extend(linux_init());
    ops.push(out(0x21, 0xFE)); // OCW1: IRQ0 only
    for _ in 0..ticks {
        ops.push(Op::Wait);
        ops.push(out(0x20, 0x20)); // OCW2: non-specific EOI
    }
    ops.push(out(0x21, 0xFF)); // mask IRQ0 again
    ops.push(Op::Record(ticks as u64));
    let mut expect = vec![Irq(MASTER_BASE); ticks];
    expect.push(Value(ticks as u64));
    Scenario::new(
        name,
        "PIT counter 0 mode 2 delivers periodic IRQ0 through the PIC (counts and order, not latency)",
        EoiPolicy::None,
        ops,
    )
    .expect(expect)
}

/// Every built-in scenario.
pub fn all() -> Vec<Scenario> {
    let mut all = pic_pit_tsc();
    all.extend(ioapic::all());
    all.extend(lapic::all());
    all.extend(lapic_odd::all());
    all.extend(smp::all());
    all.extend(migrate::all());
    all.extend(posted::all());
    all
}

/// The PIC, PIT and TSC scenarios.
fn pic_pit_tsc() -> Vec<Scenario> {
    vec![
        pic_linux_init(),
        pic_irq_lines(),
        pic_priority_order(),
        pic_masks(),
        pic_eoi(),
        pic_aeoi(),
        pic_rotation(),
        pic_poll(),
        pic_elcr_level(),
        pic_elcr_resample(),
        pic_spurious_irq7(),
        pic_spurious_irq15(),
        pic_sti_boundary(),
        pic_icw3::pic_icw3_no_slave(),
        pit_periodic("pit-periodic", 2386, 5), // 2386 clocks = 2.0 ms
        tsc_virtual(),
        exceptions(),
    ]
}

/// The built-in scenario called `name`.
pub fn by_name(name: &str) -> Option<Scenario> {
    all().into_iter().find(|s| s.name == name)
}

fn pic_linux_init() -> Scenario {
    let mut ops = linux_init();
    ops.extend([out(0x21, 0xFB), out(0xA1, 0xFF)]); // Linux's masks: only the cascade open
    ops.extend([inb(0x21), inb(0xA1)]);
    ops.extend(read_irr(0x20));
    ops.extend(read_isr(0x20));
    ops.extend([inb(0x4D0), inb(0x4D1)]);
    ops.push(snapshot("after-init"));
    Scenario::new(
        "pic-linux-init",
        "Linux's 8259A bring-up; masks, IRR, ISR and ELCR read back",
        EoiPolicy::None,
        ops,
    )
    .expect(vec![Value(0xFB), Value(0xFF), Value(0), Value(0), Value(0), Value(0)])
}

fn pic_irq_lines() -> Scenario {
    let mut ops = init_unmasked();
    let mut expect = Vec::new();
    for irq in (0..16).filter(|&irq| irq != 2) {
        ops.extend([pulse(irq), Op::Wait]);
        expect.push(Irq(if irq < 8 { MASTER_BASE + irq } else { SLAVE_BASE + irq - 8 }));
    }
    ops.push(snapshot("end"));
    Scenario::new(
        "pic-irq-lines",
        "an edge on each of IRQ0-15 (the slave's through the cascade) reaches its vector; EOI by port",
        PIC_EOI,
        ops,
    )
    .expect(expect)
}

fn pic_priority_order() -> Scenario {
    let mut ops = init_unmasked();
    ops.extend([pulse(5), pulse(12), pulse(3), pulse(0)]);
    ops.extend(read_irr(0x20));
    ops.extend([Op::Wait, out(0x20, 0x20)]); // IRQ0; non-specific EOI
    ops.extend([Op::Wait, out(0xA0, 0x20), out(0x20, 0x20)]); // IRQ12 via IR2: EOI slave, master
    ops.extend([Op::Wait, out(0x20, 0x20), Op::Wait, out(0x20, 0x20)]); // IRQ3, IRQ5
    ops.extend(read_irr(0x20));
    ops.push(snapshot("end"));
    Scenario::new(
        "pic-priority-order",
        "four pending requests are taken in fully nested priority order, IRQ12 at the cascade's rank",
        EoiPolicy::None,
        ops,
    )
    // IRQ12 (slave level 4, vector 0x3c) ranks at master IR2: between IRQ0 and IRQ3.
    .expect(vec![Value(0x2D), Irq(0x30), Irq(0x3C), Irq(0x33), Irq(0x35), Value(0)])
}

fn pic_masks() -> Scenario {
    let mut ops = linux_init();
    ops.extend([out(0x21, 0xFB), out(0xA1, 0xFF)]); // only the cascade unmasked
    ops.extend([pulse(3), pulse(10)]);
    ops.extend(read_irr(0x20));
    ops.extend(read_irr(0xA0));
    ops.extend(read_isr(0x20)); // nothing was delivered
    ops.extend([out(0xA1, 0xFB), Op::Wait]); // unmask IRQ10
    ops.extend([out(0x21, 0xF3), Op::Wait]); // unmask IRQ3
    ops.push(snapshot("end"));
    Scenario::new(
        "pic-masks",
        "masked edges stay in IRR and are delivered when unmasked, slave mask behind an open cascade",
        PIC_EOI,
        ops,
    )
    .expect(vec![Value(0x08), Value(0x04), Value(0), Irq(0x3A), Irq(0x33)])
}

fn pic_eoi() -> Scenario {
    let mut ops = init_unmasked();
    ops.extend([pulse(5), Op::Wait, pulse(3), Op::Wait]); // IRQ3 nests in IRQ5
    ops.extend(read_isr(0x20));
    ops.push(out(0x20, 0x20)); // non-specific EOI: ends IRQ3, the highest in service
    ops.push(inb(0x20));
    ops.push(pulse(6)); // IRQ6 is blocked by IRQ5 in service
    ops.extend(read_irr(0x20));
    ops.push(snapshot("irq6-blocked"));
    ops.extend([out(0x20, 0x65), Op::Wait]); // specific EOI of IRQ5 lets IRQ6 in
    ops.extend([out(0x20, 0x66)]);
    ops.extend(read_isr(0x20));
    Scenario::new(
        "pic-eoi",
        "nested in-service levels; non-specific EOI ends the highest, specific EOI a named one",
        EoiPolicy::None,
        ops,
    )
    .expect(vec![Irq(0x35), Irq(0x33), Value(0x28), Value(0x20), Value(0x40), Irq(0x36), Value(0)])
}

fn pic_aeoi() -> Scenario {
    let mut ops = linux_init_with(0x03); // master ICW4: 8086 mode + automatic EOI
    ops.extend([out(0x21, 0x00), out(0xA1, 0x00)]);
    ops.extend([pulse(4), Op::Wait]);
    ops.extend(read_isr(0x20));
    ops.extend([pulse(4), Op::Wait, pulse(1), Op::Wait]);
    ops.push(snapshot("end"));
    Scenario::new(
        "pic-aeoi",
        "automatic EOI: in-service is never set, so the same line interrupts again with no EOI",
        EoiPolicy::None,
        ops,
    )
    .expect(vec![Irq(0x34), Value(0), Irq(0x34), Irq(0x31)])
}

fn pic_rotation() -> Scenario {
    let mut ops = init_unmasked();
    ops.extend([pulse(1), pulse(3), pulse(6)]);
    ops.push(out(0x20, 0xC3)); // OCW2 set priority: IR3 lowest, so IR4 highest
    ops.extend([Op::Wait, out(0x20, 0x20), Op::Wait, out(0x20, 0x20), Op::Wait]);
    ops.push(out(0x20, 0xA0)); // rotate on non-specific EOI: ends IR3, which becomes lowest
    ops.push(snapshot("rotated"));
    ops.extend([pulse(0), pulse(5), Op::Wait, out(0x20, 0xE5)]); // rotate on specific EOI 5
    ops.extend([Op::Wait, out(0x20, 0x20)]);
    ops.push(snapshot("end"));
    Scenario::new(
        "pic-rotation",
        "set priority, rotate on non-specific and on specific EOI change the delivery order",
        EoiPolicy::None,
        ops,
    )
    .expect(vec![Irq(0x36), Irq(0x31), Irq(0x33), Irq(0x35), Irq(0x30)])
}

fn pic_poll() -> Scenario {
    let mut ops = init_unmasked();
    ops.push(pulse(4));
    ops.extend([out(0x20, 0x0C), inb(0x20)]); // OCW3 poll, then the poll byte
    ops.extend(read_isr(0x20));
    ops.push(out(0x20, 0x64)); // specific EOI of IR4 (the datasheet's poll left it in service)
    ops.extend([out(0x20, 0x0C), inb(0x20)]); // poll with nothing pending
    ops.push(snapshot("end"));
    Scenario::new(
        "pic-poll",
        "OCW3 poll: 0x80|level; KVM ends the level at once and answers 0x07 when idle (quirk POLL_ACKS_AND_ENDS)",
        EoiPolicy::None,
        ops,
    )
    .expect(vec![Value(0x84), Value(0x00), Value(0x07)])
    .expect_datasheet(vec![Value(0x84), Value(0x10), Value(0x00)])
}

fn pic_elcr_level() -> Scenario {
    let mut ops = init_unmasked();
    ops.push(out(0x4D1, 0x08)); // ELCR2: IRQ11 level triggered
    let eoi11 = [out(0xA0, 0x63), out(0x20, 0x62)]; // Linux: specific EOI slave 3, master 2
    ops.extend([line(11, true), Op::Wait, line(11, false)]);
    ops.extend(eoi11.clone());
    ops.extend(read_irr(0xA0)); // the line is low: no request
    ops.extend([line(11, true), Op::Wait]);
    ops.extend(eoi11.clone()); // EOI while the line is still high: it interrupts again
    ops.extend([Op::Wait, line(11, false)]);
    ops.extend(eoi11);
    ops.extend(read_irr(0xA0));
    ops.push(inb(0x4D1));
    ops.push(snapshot("end"));
    Scenario::new(
        "pic-elcr-level",
        "a level line (ELCR) interrupts while high: once if lowered before EOI, again if not",
        EoiPolicy::None,
        ops,
    )
    .expect(vec![Irq(0x3B), Value(0), Irq(0x3B), Irq(0x3B), Value(0), Value(0x08)])
}

fn pic_elcr_resample() -> Scenario {
    let mut ops = init_unmasked();
    ops.push(pulse(10)); // an edge request on IRQ10; the line is low again
    ops.push(out(0x4D1, 0x04)); // ELCR2: IRQ10 becomes level triggered
    ops.extend(read_irr(0xA0));
    ops.extend(read_irr(0x20)); // KVM latched the slave's request into master IRR2 too
    ops.push(snapshot("after-elcr"));
    ops.push(line(10, false)); // a level change: now both sample the low line
    ops.extend(read_irr(0xA0));
    ops.push(snapshot("after-line"));
    Scenario::new(
        "pic-elcr-resample",
        "making a latched edge level-triggered: the datasheet resamples the low line, KVM keeps IRR (quirk ELCR_NO_RESAMPLE)",
        EoiPolicy::None,
        ops,
    )
    .expect(vec![Value(0x04), Value(0x04), Value(0)])
    .expect_datasheet(vec![Value(0x00), Value(0x00), Value(0)])
}

fn pic_spurious_irq7() -> Scenario {
    let mut ops = init_unmasked();
    ops.push(pulse(4)); // IRQ4 pending, IF=0: INT is high
    ops.extend([out(0x20, 0x11), out(0x21, MASTER_BASE), out(0x21, 0x04), out(0x21, 0x01)]); // master ICW1-4 again
                                                                                             // A one-shot IRQ0 20 ms later, so that the Wait ends on the datasheet profile too.
    ops.extend([out(0x43, 0x30), out(0x40, 0x37), out(0x40, 0x5D)]); // counter 0, mode 0, count 23863
    ops.extend([Op::Wait, Op::Record(1)]);
    ops.extend(read_isr(0x20));
    ops.push(out(0x21, 0xFF)); // mask the PIT's IRQ0 (KVM profile: it is still to come)
    Scenario::new(
        "pic-spurious-irq7",
        "ICW1 drops the pending edge but KVM's latched INT still interrupts: spurious IRQ7, no ISR (quirks ICW1_RETAINS_STATE, INT_LATCHED); the datasheet waits for the PIT",
        EoiPolicy::None,
        ops,
    )
    .expect(vec![Irq(0x37), Value(1), Value(0)])
    .expect_datasheet(vec![Irq(0x30), Value(1), Value(0x01)])
}

fn pic_spurious_irq15() -> Scenario {
    let mut ops = init_unmasked();
    ops.extend([pulse(2), Op::Wait]); // a request on master IR2 itself: the slave has none
    ops.extend(read_isr(0x20));
    ops.extend(read_isr(0xA0));
    ops.push(out(0x20, 0x62)); // end the master's IR2 only, as Linux does for IRQ15 spurious
    ops.push(inb(0x20));
    ops.push(snapshot("end"));
    Scenario::new(
        "pic-spurious-irq15",
        "the master acknowledges IR2 with nothing on the slave: vector 0x3f, master ISR2 set, slave ISR clear",
        EoiPolicy::None,
        ops,
    )
    .expect(vec![Irq(0x3F), Value(0x04), Value(0x00), Value(0x00)])
}

/// TSC values: offsets far above anything the host TSC reaches, and a generous bound for the
/// time a run takes (60 s at 5 GHz).
const V0: u64 = 1 << 40;
const X: u64 = 1 << 36;
const V1: u64 = 1 << 44;
const SLACK: u64 = 60 * 5_000_000_000;

/// An interrupt raised while IF=1 is taken at the next instruction boundary, not at the
/// next `Wait`: after `sti` the guest rings for an edge on IRQ3, and the interrupt comes
/// before the marker the guest records next (the VM entry after the doorbell injects it).
fn pic_sti_boundary() -> Scenario {
    let mut ops = init_unmasked();
    ops.extend([Op::Sti, pulse(3), Op::Record(1), Op::Cli, Op::Record(2)]);
    Scenario::new(
        "pic-sti-boundary",
        "with IF=1 an edge is taken at the next instruction boundary, before the next operation, not at a wait",
        PIC_EOI,
        ops,
    )
    .expect(vec![Irq(MASTER_BASE + 3), Value(1), Value(2)])
}

fn tsc_virtual() -> Scenario {
    let ops = vec![
        Op::Host(HostOp::SetGuestTsc(V0)), // host write of IA32_TSC: TSC_ADJUST stays 0
        Op::Rdmsr(0x10),
        Op::Rdmsr(0x3B),
        Op::Wrmsr(0x3B, X), // guest TSC_ADJUST write: the TSC moves by X
        Op::Rdmsr(0x3B),
        Op::Rdmsr(0x10),
        Op::Wrmsr(0x10, V1), // guest TSC write: TSC_ADJUST moves by the same amount
        Op::Rdmsr(0x10),
        Op::Rdmsr(0x3B),
    ];
    Scenario::new(
        "tsc-virtual",
        "rdmsr IA32_TSC returns the model's virtual TSC; guest writes couple IA32_TSC and TSC_ADJUST",
        EoiPolicy::None,
        ops,
    )
    .expect(vec![
        Expect::ValueIn(V0, V0 + SLACK),
        Value(0),
        Value(X),
        Expect::ValueIn(V0 + X, V0 + X + SLACK),
        Expect::ValueIn(V1, V1 + SLACK),
        Expect::ValueIn(V1 - V0 - SLACK, V1 - V0),
    ])
}

fn exceptions() -> Scenario {
    let ops = vec![Op::Wrmsr(0xDEAD, 1), Op::Rdmsr(0xDEAD), Op::Ud2, Op::Record(0x600D)];
    Scenario::new(
        "exceptions",
        "an unknown MSR #GPs on wrmsr and rdmsr, ud2 #UDs, and the program continues",
        EoiPolicy::None,
        ops,
    )
    .expect(vec![Expect::Exception(13), Expect::Exception(13), Expect::Exception(6), Value(0x600D)])
}
