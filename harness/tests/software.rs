//! The software backend: every built-in scenario, and the scenarios the harness had before
//! the KVM runner (Linux's PIC sequence, the 100 Hz PIT tick) on both PIC profiles.

use irq_harness::backend::software::Software;
use irq_harness::backend::{Backend, RunOptions};
use irq_harness::scenario::{Expect, Op, Profile, Scenario};
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
            let expect = scenario.expected(profile).expect("built-in scenarios have expectations");
            if let Err(e) = out.traces[0].check(expect) {
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
fn lapic_scenarios_say_why_they_cannot_run_yet() {
    let s = Scenario::new("lapic", "", irq_harness::scenario::EoiPolicy::LapicMmio, vec![Op::Wait]);
    let why = Software::new(Profile::Kvm).supports(&s).unwrap_err();
    assert!(why.0.contains("vm-apic"), "{}", why.0);
}
