//! The software backend: every built-in scenario, and the scenarios the harness had before
//! the KVM runner (Linux's PIC sequence, the 100 Hz PIT tick) on both PIC profiles.

use irq_harness::backend::software::Software;
use irq_harness::backend::{Backend, RunOptions};
use irq_harness::scenario::{EoiPolicy, Expect, Op, Profile, Scenario};
use irq_harness::scenarios::{self, inb, line, linux_init, out, pulse, PIC_EOI};

#[test]
fn every_builtin_scenario_produces_its_trace_on_both_profiles() {
    for profile in [Profile::Kvm, Profile::Datasheet] {
        let backend = Software::new(profile);
        for scenario in scenarios::all() {
            backend.supports(&scenario).unwrap_or_else(|e| panic!("{}: {}", scenario.name, e.0));
            let out = backend
                .run(&scenario, &RunOptions::default())
                .unwrap_or_else(|e| panic!("{}: {e}", scenario.name));
            assert!(scenario.expected(profile).is_some(), "built-in scenarios have expectations");
            let (verdict, _) = irq_harness::known::judge(&scenario, profile, backend.id(), &Ok(out));
            // Passes, or differs by exactly a documented model divergence from KVM.
            if let irq_harness::known::Verdict::Fail(e) = verdict {
                panic!("{} on {profile:?}: {e}", scenario.name);
            }
        }
    }
}

/// The sequence of the harness's first `pic-linux` scenario: edges on IRQ0, 12, 1 and a
/// masked IRQ4, all taken at one wait; IRQ4 once unmasked; a level IRQ11 whose driver
/// quiets the line before the EOI.
#[test]
fn linux_pic_sequence_takes_the_expected_vectors_on_both_profiles() {
    let mut ops = linux_init();
    ops.extend([out(0x4D1, 0x08), out(0x21, 0x10), out(0xA1, 0x00)]); // IRQ11 level; IRQ4 masked
    ops.extend([pulse(0), pulse(12), pulse(1), pulse(4), Op::Wait]);
    ops.extend([out(0x21, 0x00), Op::Wait]);
    ops.extend([
        Op::SetEoi(irq_harness::scenario::EoiPolicy::None),
        line(11, true),
        Op::Wait,
        line(11, false),
    ]);
    ops.extend([out(0xA0, 0x63), out(0x20, 0x62), inb(0xA0)]);
    let scenario = Scenario::new("pic-linux", "", PIC_EOI, ops).expect(
        [0x30, 0x31, 0x3c, 0x34, 0x3b].map(Expect::Irq).into_iter().chain([Expect::Value(0)]).collect(),
    );
    for profile in [Profile::Kvm, Profile::Datasheet] {
        let out = Software::new(profile).run(&scenario, &RunOptions::default()).unwrap();
        out.traces[0].check(scenario.expected(profile).unwrap()).unwrap();
    }
}

#[test]
fn pit_tick_reaches_the_cpu_every_11932_pit_clocks() {
    let scenario = scenarios::pit_periodic("pit-tick", 11932, 100); // Linux's HZ=100
    for profile in [Profile::Kvm, Profile::Datasheet] {
        let out = Software::new(profile).run(&scenario, &RunOptions::default()).unwrap();
        let times = &out.traces[0].irq_times_ns;
        assert_eq!(times.len(), 100);
        for pair in times.windows(2) {
            // 11932 clocks of 1193182 Hz are 10000150.9 ns; each edge is reported at the first
            // whole ns at or after it, so consecutive periods are 10000150 or 10000151 ns.
            assert!((10_000_150..=10_000_151).contains(&(pair[1] - pair[0])), "{pair:?}");
        }
    }
}

#[test]
fn a_wait_with_nothing_pending_or_scheduled_is_a_lost_interrupt() {
    let mut ops = linux_init();
    ops.push(Op::Wait);
    let err = Software::new(Profile::Kvm)
        .run(&Scenario::new("lost", "", PIC_EOI, ops), &RunOptions::default())
        .unwrap_err();
    assert!(err.message.contains("lost interrupt"), "{err}");
}

#[test]
fn an_unknown_port_is_a_reported_error_not_a_panic() {
    let ops = vec![out(0x80, 1)];
    let err = Software::new(Profile::Kvm)
        .run(&Scenario::new("p80", "", PIC_EOI, ops), &RunOptions::default())
        .unwrap_err();
    assert!(err.message.contains("port 0x80"), "{err}");
}

#[test]
fn the_periodic_lapic_timer_fires_every_two_ms_of_virtual_time() {
    let scenario = scenarios::by_name("lapic-timer-periodic").unwrap();
    for profile in [Profile::Kvm, Profile::Datasheet] {
        let out = Software::new(profile).run(&scenario, &RunOptions::default()).unwrap();
        let times = &out.traces[0].irq_times_ns;
        assert_eq!(times.len(), 3);
        for pair in times.windows(2) {
            // 2_000_000 bus ticks at 1 GHz, counted against a 2.596132 GHz TSC: 2 ms, to the
            // nanosecond the TSC grid allows.
            assert!((1_999_999..=2_000_001).contains(&(pair[1] - pair[0])), "{pair:?}");
        }
    }
}

#[test]
fn an_ioapic_level_interrupt_to_a_software_disabled_lapic_is_dropped_and_leaves_remote_irr_clear_on_kvm() {
    use irq_harness::scenarios::apic::{ioapic_read, ioreg, route, rte};
    let mut ops = linux_init();
    ops.extend([out(0x21, 0xFF), out(0xA1, 0xFF)]); // the LAPIC stays software-disabled
    ops.extend(route(18, rte::LEVEL | 0x72));
    ops.push(line(18, true));
    ops.extend(ioapic_read(ioreg::low(18)));
    let scenario = Scenario::new("disabled", "", EoiPolicy::None, ops);
    let kvm = Software::new(Profile::Kvm).run(&scenario, &RunOptions::default()).unwrap();
    let sdm = Software::new(Profile::Datasheet).run(&scenario, &RunOptions::default()).unwrap();
    // KVM sets Remote IRR only when a LAPIC accepted the message; the datasheet always.
    assert_eq!(kvm.traces[0].summary(), "val:0x8072");
    assert_eq!(sdm.traces[0].summary(), "val:0xc072");
}

#[test]
fn two_vcpus_take_turns_and_each_logs_its_own_interrupts() {
    let scenario = scenarios::by_name("smp-ipi-broadcast").unwrap();
    let out = Software::new(Profile::Kvm).run(&scenario, &RunOptions::default()).unwrap();
    assert_eq!(out.traces[0].summary(), "irq:0x7f irq:0x7e irq:0x7d irq:0x7c irq:0x7b irq:0x7a");
    assert_eq!(out.traces[1].summary(), "irq:0x6f irq:0x7d irq:0x7b");
}

#[test]
fn a_start_up_ipi_with_another_vector_is_a_reported_error() {
    use irq_harness::scenarios::apic::{icr, ipi, lapic_enable, lapic_write, reg};
    let mut ops = vec![lapic_enable()];
    ops.extend(ipi(1, icr::INIT | icr::ASSERT));
    ops.push(lapic_write(reg::ICR, icr::STARTUP | icr::ASSERT | 0x10)); // vector 0x10
    let scenario =
        Scenario::new("bad-sipi", "", EoiPolicy::None, ops).ap(vec![Op::Record(1)]).aps_wait_for_sipi();
    let err = Software::new(Profile::Kvm).run(&scenario, &RunOptions::default()).unwrap_err();
    assert!(err.message.contains("vector 0x10"), "{err}");
}

#[test]
fn an_ap_that_never_gets_its_start_up_ipi_is_a_lost_interrupt() {
    let scenario = Scenario::new("no-sipi", "", EoiPolicy::None, vec![Op::Record(1)])
        .ap(vec![Op::Record(2)])
        .aps_wait_for_sipi();
    let err = Software::new(Profile::Kvm).run(&scenario, &RunOptions::default()).unwrap_err();
    assert!(err.message.contains("vCPU 1 waits for its start-up IPI"), "{err}");
    assert_eq!(err.partial[0].summary(), "val:0x1");
}
