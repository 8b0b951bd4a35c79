//! Hot paths of the PIC pair as a VMM drives them.
//!
//! `cargo bench -p vm-pic --bench pic` (release profile, opt-level 3, no LTO).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use vm_pic::{regs::*, Pic, Quirks};

/// Linux's init sequence: vectors 0x30-0x3f, edge, normal EOI, nothing masked.
fn linux_pic(quirks: Quirks) -> Pic {
    let mut pic = Pic::new(quirks);
    for (port, value) in [
        (MASTER_COMMAND, 0x11), // ICW1: edge, cascade, ICW4 needed
        (MASTER_DATA, 0x30),    // ICW2: vector base 0x30
        (MASTER_DATA, 0x04),    // ICW3: slave on IR2
        (MASTER_DATA, 0x01),    // ICW4: 8086 mode
        (SLAVE_COMMAND, 0x11),  // ICW1
        (SLAVE_DATA, 0x38),     // ICW2: vector base 0x38
        (SLAVE_DATA, 0x02),     // ICW3: slave ID 2
        (SLAVE_DATA, 0x01),     // ICW4: 8086 mode
    ] {
        let _ = pic.write(port, value);
    }
    pic
}

/// One interrupt end to end: the device pulses IRQ4, the CPU acknowledges, the guest EOIs.
fn pulse_ack_eoi(c: &mut Criterion) {
    for (name, quirks) in [("datasheet", Quirks::DATASHEET), ("kvm", Quirks::KVM)] {
        let mut pic = linux_pic(quirks);
        c.bench_function(&format!("pic/pulse_ack_eoi/{name}"), |b| {
            b.iter(|| {
                let _ = pic.pulse_irq(black_box(4));
                let ack = pic.acknowledge();
                let _ = pic.write(MASTER_COMMAND, 0x20); // OCW2: non-specific EOI
                black_box(ack.vector)
            })
        });
    }
}

/// A slave interrupt with Linux's EOI sequence (specific EOI to the slave, then to IR2).
fn cascade_pulse_ack_eoi(c: &mut Criterion) {
    let mut pic = linux_pic(Quirks::DATASHEET);
    c.bench_function("pic/cascade_pulse_ack_eoi", |b| {
        b.iter(|| {
            let _ = pic.pulse_irq(black_box(12));
            let ack = pic.acknowledge();
            let _ = pic.write(SLAVE_COMMAND, 0x64); // specific EOI, IRQ12
            let _ = pic.write(MASTER_COMMAND, 0x62); // specific EOI, IR2
            black_box(ack.vector)
        })
    });
}

/// All fifteen device lines at once, then each taken and ended in priority order.
fn burst_16_lines(c: &mut Criterion) {
    let mut pic = linux_pic(Quirks::DATASHEET);
    c.bench_function("pic/burst_16_lines", |b| {
        b.iter(|| {
            for irq in (0..16).filter(|&irq| irq != 2) {
                let _ = pic.pulse_irq(black_box(irq));
            }
            let mut sum = 0u32;
            while pic.intr() {
                let ack = pic.acknowledge();
                sum += u32::from(ack.vector);
                if ack.irq >= 8 {
                    let _ = pic.write(SLAVE_COMMAND, 0x20);
                }
                let _ = pic.write(MASTER_COMMAND, 0x20);
            }
            black_box(sum)
        })
    });
}

/// The injection decision a VMM makes on every exit: is INT high, and with which vector.
fn pending_vector(c: &mut Criterion) {
    let mut pic = linux_pic(Quirks::DATASHEET);
    let _ = pic.pulse_irq(9);
    c.bench_function("pic/pending_vector", |b| b.iter(|| black_box(black_box(&pic).pending_vector())));
}

criterion_group!(benches, pulse_ack_eoi, cascade_pulse_ack_eoi, burst_16_lines, pending_vector);
criterion_main!(benches);
