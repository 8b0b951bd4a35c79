//! ICW3: a master programmed with no slave on IR2 (vm-pic quirk `ICW3_IGNORED`).

use super::{inb, out, pulse, MASTER_BASE, SLAVE_BASE};
use crate::scenario::Expect::{Irq, Value};
use crate::scenario::{EoiPolicy, Op, Scenario};

/// Master ICW3 = 0x00, then a slave IRQ. The datasheet: IR2 is an ordinary input, so the
/// master answers with base+2 and the slave is not acknowledged (IRR still set, ISR clear).
/// KVM ignores ICW3 and cascades IR2 anyway: the slave's vector, slave ISR set.
pub fn pic_icw3_no_slave() -> Scenario {
    let ops = vec![
        out(0x21, 0xFF),        // OCW1: mask all of the master while programming
        out(0xA1, 0xFF),        // OCW1: mask all of the slave
        out(0x20, 0x11),        // ICW1: edge triggered, cascade, ICW4 follows
        out(0x21, MASTER_BASE), // ICW2: IRQ0-7 at vectors 0x30-0x37
        out(0x21, 0x00),        // ICW3: no input has a slave, not even IR2
        out(0x21, 0x01),        // ICW4: 8086 mode, normal EOI
        out(0xA0, 0x11),        // ICW1
        out(0xA1, SLAVE_BASE),  // ICW2: IRQ8-15 at vectors 0x38-0x3f
        out(0xA1, 0x02),        // ICW3: slave ID 2
        out(0xA1, 0x01),        // ICW4: 8086 mode, normal EOI
        out(0x21, 0x00),        // OCW1: unmask the master (ICW1 already did; as Linux does)
        out(0xA1, 0x00),        // OCW1: unmask the slave
        pulse(10),              // slave IR2: the slave's INT drives master IR2
        Op::Wait,
        out(0xA0, 0x0B), // OCW3: read the slave's ISR
        inb(0xA0),
        out(0x20, 0x0B), // OCW3: read the master's ISR
        inb(0x20),
        out(0xA0, 0x0A), // OCW3: read the slave's IRR
        inb(0xA0),
        out(0xA1, 0xFF), // OCW1: mask the slave (the datasheet's IRQ10 is still pending)
        out(0xA0, 0x20), // OCW2: non-specific EOI to the slave (nothing there on the datasheet)
        out(0x20, 0x62), // OCW2: specific EOI of master IR2
        inb(0x20),       // the master's ISR (still selected)
    ];
    Scenario::new(
        "pic-icw3-no-slave",
        "master ICW3 0x00: the datasheet answers IR2 itself (0x32, slave untouched); KVM still cascades (quirk ICW3_IGNORED)",
        EoiPolicy::None,
        ops,
    )
    .expect(vec![Irq(SLAVE_BASE + 2), Value(0x04), Value(0x04), Value(0x00), Value(0x00)])
    .expect_datasheet(vec![Irq(MASTER_BASE + 2), Value(0x00), Value(0x04), Value(0x04), Value(0x00)])
}
