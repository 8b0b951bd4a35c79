//! Hot paths of the ARMv8 generic timer model: what a VMM runs after every trapped timer write
//! (update the register, resample the PPI level, re-arm the host timer) and on every GIC
//! resample.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use vm_timer::generic_timer::{Access, Counter, El, Features, SysReg, TimerCtl, TimerId, VcpuTimers};

fn setup() -> (Counter, VcpuTimers, u64) {
    let mut counter = Counter::new(24_000_000, Features::default()).unwrap();
    let mut vcpu = VcpuTimers::new();
    let now = 1 << 40;
    counter.set_virtual_count(1 << 20, now, [&vcpu], &mut []);
    vcpu.write_ctl(&counter, TimerId::Virt, TimerCtl::ENABLE.bits(), now);
    vcpu.write_ctl(&counter, TimerId::Phys, TimerCtl::ENABLE.bits(), now);
    vcpu.write_cval(&counter, TimerId::Phys, now + 10_000_000, now);
    (counter, vcpu, now)
}

fn bench(c: &mut Criterion) {
    let (counter, mut vcpu, now) = setup();
    let mut cval = (1u64 << 20) + 24_000;

    c.bench_function("generic_timer/write_cval+level+next_deadline", |b| {
        b.iter(|| {
            cval = cval.wrapping_add(1) & 0xff_ffff; // alternate future/past compare values
            let out = vcpu.write_cval(black_box(&counter), TimerId::Virt, black_box(cval), black_box(now));
            let deadline = vcpu.next_deadline(&counter, black_box(now));
            black_box((out, deadline))
        })
    });

    c.bench_function("generic_timer/msr_cntv_tval+next_deadline", |b| {
        let enc = SysReg::CNTV_TVAL_EL0.encoding();
        b.iter(|| {
            let r = vcpu.access(
                black_box(&counter),
                black_box(enc),
                El::El1,
                Access::Write(black_box(24_000)),
                now,
            );
            black_box((r, vcpu.next_deadline(&counter, black_box(now))))
        })
    });

    c.bench_function("generic_timer/level_resample", |b| {
        b.iter(|| black_box(vcpu.level(black_box(&counter), black_box(now))))
    });

    c.bench_function("generic_timer/set_offset_8_vcpus", |b| {
        let vcpus = [vcpu; 8];
        let mut counter = counter;
        let mut changes = [Default::default(); 8];
        let mut off = 0u64;
        b.iter(|| {
            off = off.wrapping_add(7919);
            let n = counter.set_offset(
                vm_timer::generic_timer::Offset::Virtual,
                black_box(off),
                now,
                vcpus.iter(),
                &mut changes,
            );
            black_box((n, changes[0]))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
