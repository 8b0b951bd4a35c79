//! Local APIC scenarios on one vCPU: self-IPIs (xAPIC ICR, x2APIC ICR and SELF IPI), TPR and
//! CR8 blocking, priority classes, the xAPIC → x2APIC switch and its #GPs, the three timer
//! modes, ESR, NMI.
//!
//! Each starts by software-enabling the LAPIC (SVR 0x1FF). Interrupts are raised with IF=0
//! and taken at `Wait`; "not delivered" is read from IRR/ISR/PPR. Timer scenarios assert
//! counts and order, never latency (periods of 2 ms).

use super::apic::*;
use super::snapshot;
use crate::scenario::Expect::{self, Exception, Irq, Nmi, Value};
use crate::scenario::{Device, EoiPolicy, HostOp, Op, Scenario};

/// The LAPIC scenarios.
pub fn all() -> Vec<Scenario> {
    vec![
        in_service(),
        self_ipi_xapic(),
        self_ipi_x2apic(),
        x2apic_transitions(),
        tpr_cr8(),
        priority_classes(),
        timer_one_shot(),
        timer_periodic(),
        timer_tsc_deadline(),
        timer_reserved_mode(),
        esr_illegal_vector(),
        nmi(),
    ]
}

/// #GP, as the probe logs it.
const GP: Expect = Exception(13);

/// The minimal scenario of the in-service state: a self-IPI taken with no EOI is in ISR and
/// raises PPR to its class until the EOI. (It also detects the host quirk of
/// [`crate::backend::host`], where both read 0 at once.)
pub fn in_service() -> Scenario {
    let ops = vec![
        lapic_enable(),
        self_ipi(0x60),
        Op::Wait,                    // no EOI by the handler
        lapic_read(reg::ISR + 0x30), // in service
        lapic_read(reg::PPR),        // at its class
        eoi(),
        lapic_read(reg::ISR + 0x30),
    ];
    Scenario::new(
        "lapic-in-service",
        "a vector taken and not yet EOI'd is in ISR and PPR is its class; the EOI ends it",
        EoiPolicy::None,
        ops,
    )
    .expect(vec![Irq(0x60), Value(1), Value(0x60), Value(0)])
}

fn self_ipi_xapic() -> Scenario {
    let ops = vec![
        lapic_enable(),
        self_ipi(0x60),              // shorthand self
        Op::Wait,                    // taken; the handler EOIs by MMIO
        lapic_write(reg::ICR2, 0),   // destination APIC 0 (this BSP)
        lapic_write(reg::ICR, 0x61), // fixed, physical, no shorthand
        Op::Wait,                    //
        lapic_read(reg::ICR),        // delivery status reads 0
        lapic_read(reg::ICR2),       //
        lapic_read(reg::ID),         // APIC ID 0
        lapic_read(reg::ISR + 0x30), // both EOI'd
        snapshot("end"),
    ];
    Scenario::new(
        "lapic-self-ipi-xapic",
        "xAPIC self-IPIs by ICR shorthand and by physical destination; ICR, ID and ISR read back",
        EoiPolicy::LapicMmio,
        ops,
    )
    .expect(vec![Irq(0x60), Irq(0x61), Value(0x61), Value(0), Value(0), Value(0)])
}

fn self_ipi_x2apic() -> Scenario {
    let ops = vec![
        Op::Rdmsr(msr::APIC_BASE),
        Op::Wrmsr(msr::APIC_BASE, base::X2APIC), // xAPIC -> x2APIC
        Op::Rdmsr(msr::APIC_BASE),
        Op::Rdmsr(msr::ID),  // the 32-bit x2APIC ID
        Op::Rdmsr(msr::LDR), // cluster 0, bit 0: derived from the ID
        Op::Wrmsr(msr::SVR, 0x1FF),
        Op::Wrmsr(msr::SELF_IPI, 0x62),
        Op::Wait, // EOI by MSR 0x80B
        Op::Wrmsr(msr::ICR, u64::from(icr::SELF) | 0x63),
        Op::Wait,
        Op::Rdmsr(msr::ICR),       // 64 bits
        Op::Wrmsr(msr::ICR, 0x64), // fixed, physical, to APIC 0: itself (IPI virtualization)
        Op::Wait,
        Op::Rdmsr(msr::APIC_BASE), // an exit, then the ICR the guest wrote
        Op::Rdmsr(msr::ICR),
        Op::Rdmsr(msr::PPR),
        lapic_read(reg::ID), // the MMIO page is not decoded in x2APIC mode: all ones
        snapshot("end"),
    ];
    Scenario::new(
        "lapic-self-ipi-x2apic",
        "xAPIC -> x2APIC switch; x2APIC ID and LDR; SELF IPI, ICR self-IPIs (shorthand, and physical to its own ID) with EOI by MSR, the ICR read back; the MMIO page reads all ones",
        EoiPolicy::X2apicMsr,
        ops,
    )
    .expect(vec![
        Value(base::XAPIC),
        Value(base::X2APIC),
        Value(0),
        Value(1),
        Irq(0x62),
        Irq(0x63),
        Value(u64::from(icr::SELF) | 0x63),
        Irq(0x64),
        Value(base::X2APIC),
        Value(0x64),
        Value(0),
        Value(0xFFFF_FFFF),
    ])
}

fn x2apic_transitions() -> Scenario {
    let ops = vec![
        Op::Wrmsr(msr::APIC_BASE, base::X2APIC),   // xAPIC -> x2APIC: legal
        Op::Wrmsr(msr::APIC_BASE, base::XAPIC),    // x2APIC -> xAPIC: #GP
        Op::Rdmsr(msr::APIC_BASE),                 // still x2APIC
        Op::Rdmsr(msr::RESERVED_0X40),             // reserved register: #GP
        Op::Rdmsr(msr::EOI),                       // write-only: #GP
        Op::Wrmsr(msr::ID, 1),                     // read-only: #GP
        Op::Wrmsr(msr::TPR, 1 << 32),              // bits 63:32 reserved: #GP
        Op::Wrmsr(msr::APIC_BASE, base::DISABLED), // x2APIC -> disabled: legal
        Op::Rdmsr(msr::ID),                        // no x2APIC MSRs when disabled: #GP
        Op::Wrmsr(msr::APIC_BASE, base::X2APIC),   // disabled -> x2APIC: #GP
        Op::Wrmsr(msr::APIC_BASE, base::XAPIC),    // disabled -> xAPIC: legal
        lapic_read(reg::ID),                       // the page is back
        Op::Rdmsr(msr::APIC_BASE),                 //
        Op::Wrmsr(msr::APIC_BASE, base::XAPIC | 1 << 63), // reserved address bit: #GP
        Op::Wrmsr(msr::APIC_BASE, base::INVALID),  // EXTD without EN: #GP
        Op::Rdmsr(msr::APIC_BASE),
        snapshot("end"),
    ];
    Scenario::new(
        "lapic-x2apic-transitions",
        "IA32_APIC_BASE mode transitions (legal ones and the #GPs), reserved, write-only and read-only x2APIC MSRs",
        EoiPolicy::None,
        ops,
    )
    .expect(vec![
        GP,
        Value(base::X2APIC),
        GP,
        GP,
        GP,
        GP,
        GP,
        GP,
        Value(0),
        Value(base::XAPIC),
        GP,
        GP,
        Value(base::XAPIC),
    ])
}

fn tpr_cr8() -> Scenario {
    let ops = vec![
        lapic_enable(),
        lapic_write(reg::TPR, 0x50),
        self_ipi(0x55),              // class 5 = TPR's class: blocked
        lapic_read(reg::IRR + 0x20), // requested
        lapic_read(reg::PPR),        //
        lapic_read(reg::ISR + 0x20), // not in service
        lapic_write(reg::TPR, 0x40), // class - 1: deliverable
        Op::Wait,
        Op::WriteCr8(6),             // CR8 = TPR bits 7:4
        self_ipi(0x65),              // blocked by CR8
        lapic_read(reg::TPR),        //
        lapic_read(reg::IRR + 0x30), //
        Op::WriteCr8(5),             // class - 1
        Op::Wait,
        lapic_write(reg::TPR, 0x34), // TPR by MMIO, read back through CR8
        Op::ReadCr8,
        lapic_read(reg::TPR), // the subclass survives
        Op::WriteCr8(0),
        lapic_read(reg::TPR),
        snapshot("end"),
    ];
    Scenario::new(
        "lapic-tpr-cr8",
        "TPR (MMIO) and CR8 block a vector of their class and let it in at class - 1; CR8 and TPR read each other's writes",
        EoiPolicy::LapicMmio,
        ops,
    )
    .expect(vec![
        Value(1 << (0x55 - 0x40)),
        Value(0x50),
        Value(0),
        Irq(0x55),
        Value(0x60),
        Value(1 << (0x65 - 0x60)),
        Irq(0x65),
        Value(3),
        Value(0x34),
        Value(0),
    ])
}

fn priority_classes() -> Scenario {
    let mut ops = vec![lapic_enable()];
    ops.extend([self_ipi(0x41), self_ipi(0x92), self_ipi(0x63), self_ipi(0x4A)]);
    ops.push(lapic_read(reg::IRR + 0x20)); // 0x41 and 0x4a
    ops.extend([Op::Wait, eoi()]); // 0x92, the highest class
    ops.extend([Op::Wait, eoi()]); // 0x63
    ops.push(Op::Wait); // 0x4a: highest of class 4
    ops.push(lapic_read(reg::ISR + 0x20));
    ops.push(lapic_read(reg::PPR)); // class 4 in service blocks 0x41, same class
    ops.push(lapic_read(reg::IRR + 0x20));
    ops.extend([eoi(), Op::Wait, eoi()]); // 0x41
    ops.push(lapic_read(reg::IRR + 0x20));
    ops.push(snapshot("end"));
    Scenario::new(
        "lapic-priority-classes",
        "four pending vectors are taken highest class first; an in-service vector blocks its own class until its EOI",
        EoiPolicy::None,
        ops,
    )
    .expect(vec![
        Value(1 << 1 | 1 << 10),
        Irq(0x92),
        Irq(0x63),
        Irq(0x4A),
        Value(1 << 10),
        Value(0x40),
        Value(1 << 1),
        Irq(0x41),
        Value(0),
    ])
}

fn timer_one_shot() -> Scenario {
    let ops = vec![
        lapic_enable(),
        lapic_write(reg::TDCR, 0xB), // divide by 1: one count per bus tick (1 GHz)
        lapic_write(reg::LVT_TIMER, 0x40), // one-shot, vector 0x40, unmasked
        lapic_write(reg::TMICT, 2_000_000), // 2 ms
        lapic_read(reg::TMICT),
        lapic_read(reg::TMCCT), // counting (time-dependent: compared as present)
        Op::Wait,
        lapic_read(reg::TMCCT), // expired: 0
        lapic_read(reg::LVT_TIMER),
        snapshot("end"),
    ];
    Scenario::new(
        "lapic-timer-one-shot",
        "a one-shot LAPIC timer of 2 ms fires once; the current count is 0 afterwards",
        EoiPolicy::LapicMmio,
        ops,
    )
    .expect(vec![Value(2_000_000), Expect::ValueIn(1, 2_000_000), Irq(0x40), Value(0), Value(0x40)])
}

fn timer_periodic() -> Scenario {
    let ticks = 3;
    let mut ops = vec![
        lapic_enable(),
        lapic_write(reg::TDCR, 0xB),
        lapic_write(reg::LVT_TIMER, 0x2_0041), // periodic, vector 0x41
        lapic_write(reg::TMICT, 2_000_000),    // every 2 ms
    ];
    ops.extend(std::iter::repeat_n(Op::Wait, ticks));
    ops.extend([
        lapic_write(reg::TMICT, 0),            // stops the timer
        lapic_write(reg::LVT_TIMER, 0x3_0041), // and masks it
        lapic_read(reg::TMCCT),
        Op::Record(ticks as u64),
        snapshot("end"),
    ]);
    let mut expect = vec![Irq(0x41); ticks];
    expect.extend([Value(0), Value(ticks as u64)]);
    Scenario::new(
        "lapic-timer-periodic",
        "a periodic LAPIC timer of 2 ms fires on every Wait until TMICT = 0 stops it",
        EoiPolicy::LapicMmio,
        ops,
    )
    .expect(expect)
    // A tick that came between the last Wait and the TMICT write is pending (IF=0) at `end`
    // or not, as the host's load decides: vector 0x41, IRR word 2 bit 1.
    .timing_dependent("end", "lapic.IRR2", 1 << 1)
}

/// 2 ms of the project's host TSC (2.596 GHz), for TSC-deadline writes relative to now.
const TSC_2MS: u64 = 5_200_000;

fn timer_tsc_deadline() -> Scenario {
    let ops = vec![
        lapic_enable(),
        lapic_write(reg::LVT_TIMER, 0x4_0042), // TSC-deadline mode, vector 0x42
        Op::WrmsrTscDelta(msr::TSC_DEADLINE, TSC_2MS),
        Op::Wait,
        Op::Rdmsr(msr::TSC_DEADLINE),    // fired: disarmed, reads 0
        Op::Wrmsr(msr::TSC_DEADLINE, 1), // a deadline in the past fires at once
        Op::Wait,
        Op::Rdmsr(msr::TSC_DEADLINE),
        Op::WrmsrTscDelta(msr::TSC_DEADLINE, 100 * TSC_2MS),
        Op::Wrmsr(msr::TSC_DEADLINE, 0), // 0 disarms
        Op::Rdmsr(msr::TSC_DEADLINE),
        lapic_write(reg::TMICT, 1000), // ignored in TSC-deadline mode
        lapic_read(reg::TMICT),
        lapic_read(reg::IRR + 0x20), // nothing fired
        snapshot("end"),
    ];
    Scenario::new(
        "lapic-timer-tsc-deadline",
        "TSC-deadline mode: a deadline 2 ms ahead fires once, one in the past at once, 0 disarms; TMICT is ignored",
        EoiPolicy::LapicMmio,
        ops,
    )
    .expect(vec![Irq(0x42), Value(0), Irq(0x42), Value(0), Value(0), Value(0), Value(0)])
}

/// Timer mode 11b is reserved: the timer does not fire. What TMCCT then reads after TMICT is
/// written again differs: KVM keeps the previous one-shot's countdown (its period and target
/// survive the mode change, `apic_get_tmcct` counts down to the old target), the model stops.
fn timer_reserved_mode() -> Scenario {
    let ops = vec![
        lapic_enable(),
        lapic_write(reg::TDCR, 0xB),
        lapic_write(reg::TMICT, 0x4000_0000), // one-shot (LVTT masked at reset): ~1 s
        lapic_write(reg::LVT_TIMER, 0x6_0020), // mode 11b (reserved), unmasked
        lapic_write(reg::TMICT, 0x4000_0000), // restart in the reserved mode
        lapic_read(reg::TMCCT),               // KVM: the old count, running; model: 0
        lapic_read(reg::LVT_TIMER),
        lapic_write(reg::TMICT, 0),
        snapshot("end"),
    ];
    Scenario::new(
        "lapic-timer-reserved-mode",
        "LVT timer mode 11b (reserved): a new TMICT does not stop KVM's previous countdown, TMCCT keeps counting",
        EoiPolicy::None,
        ops,
    )
    .expect(vec![Expect::ValueIn(1, 0x4000_0000), Value(0x6_0020)])
    .expect_datasheet(vec![Value(0), Value(0x6_0020)])
    .datasheet_follows(&[Device::Lapic])
}

fn esr_illegal_vector() -> Scenario {
    let ops = vec![
        lapic_enable(),
        lapic_write(reg::LVT_ERROR, 0x7E), // error interrupts at vector 0x7e
        lapic_write(reg::ESR, 0),
        self_ipi(0x05),           // vectors 0-15 are illegal
        lapic_write(reg::ESR, 0), // latch the errors since the last write
        lapic_read(reg::ESR),
        lapic_read(reg::IRR),        // vectors 0-31: KVM accepted vector 5
        lapic_read(reg::IRR + 0x30), // the SDM's error interrupt
        snapshot("end"),
    ];
    Scenario::new(
        "lapic-esr-illegal-vector",
        "a self-IPI with vector 5: the SDM's LAPIC records ESR 'send illegal vector' and raises the error LVT; KVM does not model ESR and accepts the vector",
        EoiPolicy::None,
        ops,
    )
    .expect(vec![Value(0), Value(1 << 5), Value(0)])
    .expect_datasheet(vec![Value(0x20), Value(0), Value(1 << (0x7E - 0x60))])
    .datasheet_follows(&[Device::Lapic])
}

fn nmi() -> Scenario {
    let mut ops = vec![lapic_enable()];
    ops.extend(ipi(0, icr::NMI | icr::ASSERT)); // NMI to APIC 0, this BSP
                                                // The NMI is taken at the next VM entry: a doorbell makes that the same place everywhere.
    ops.push(Op::Host(HostOp::Sleep(0)));
    ops.push(Op::Record(1));
    ops.push(Op::Wrmsr(msr::APIC_BASE, base::X2APIC));
    ops.push(Op::Wrmsr(msr::ICR, u64::from(icr::NMI | icr::ASSERT))); // x2APIC ICR, destination 0
    ops.push(Op::Host(HostOp::Sleep(0)));
    ops.push(Op::Record(2));
    ops.push(snapshot("end"));
    Scenario::new(
        "lapic-nmi",
        "an NMI by xAPIC ICR and one by x2APIC ICR to the BSP itself reach the NMI handler (vector 2), whatever IF",
        EoiPolicy::None,
        ops,
    )
    .expect(vec![Nmi, Value(1), Nmi, Value(2)])
}
