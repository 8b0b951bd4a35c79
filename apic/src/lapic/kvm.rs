//! Conversion to and from KVM's `kvm_lapic_state`, the 1 KiB register page of
//! KVM_GET_LAPIC / KVM_SET_LAPIC.
//!
//! The page holds each register at its xAPIC offset (0x000–0x3FF), as KVM keeps it:
//! * the ID at 0x20: `id << 24` in xAPIC mode; in x2APIC mode the 32-bit x2APIC ID, shifted
//!   left by 24 unless userspace enabled `KVM_X2APIC_API_USE_32BIT_IDS` (`x2apic_format`);
//! * the x2APIC ICR split into ICR (0x300, bits 31:0) and ICR2 (0x310, bits 63:32), the xAPIC
//!   ICR2 holding the destination in bits 31:24; where KVM keeps the x2APIC ICR as one 64-bit
//!   register (`x2apic_icr_is_split` false: VMX and this project's hosts), its high half is also
//!   at 0x304 ([`KvmLapicFormat`]);
//! * the timer current count (0x390) computed at the time of the snapshot; KVM_SET_LAPIC
//!   restarts the countdown from it;
//! * PPR (0xA0) as last computed; APR, EOI and RRD slots 0.
//!
//! Outside the page: IA32_APIC_BASE and IA32_TSC_DEADLINE are MSRs (KVM_GET/SET_MSRS), the
//! latched NMI/SMI are vCPU events and INIT/SIPI are the MP state; they are passed separately
//! or kept. Going to KVM drops the timer's sub-count phase (the ticks below one divided count),
//! the ESR accumulator and the LINT pin levels, which KVM does not keep.

use kvm_bindings::kvm_lapic_state;

use super::regs::{self, LvtEntry, TimerMode};
use super::{ApicMode, LocalApic, LocalApicState, StateError};

/// How a KVM host lays out the x2APIC parts of `kvm_lapic_state`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct KvmLapicFormat {
    /// The VMM enabled `KVM_X2APIC_API_USE_32BIT_IDS`: the x2APIC ID is at 0x20 unshifted
    /// (else shifted left by 24).
    pub x2apic_ids_32bit: bool,
    /// KVM keeps the x2APIC ICR split in two 32-bit registers (`x2apic_icr_is_split`, SVM with
    /// AVIC); else it is one 64-bit register at 0x300 and its high half reads at 0x304 too.
    pub x2apic_icr_split: bool,
}

fn get(page: &kvm_lapic_state, offset: u32) -> u32 {
    let at = offset as usize;
    let mut bytes = [0u8; 4];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = page.regs.get(at.saturating_add(i)).map_or(0, |&c| c as u8);
    }
    u32::from_le_bytes(bytes)
}

fn set(page: &mut kvm_lapic_state, offset: u32, value: u32) {
    let at = offset as usize;
    for (i, b) in value.to_le_bytes().into_iter().enumerate() {
        if let Some(slot) = page.regs.get_mut(at.saturating_add(i)) {
            *slot = b as _;
        }
    }
}

impl LocalApic {
    /// The register page as KVM_GET_LAPIC returns it at host TSC `now` (the current count is
    /// computed for `now`) on a host with `format`.
    pub fn to_kvm(&self, now: u64, format: KvmLapicFormat) -> kvm_lapic_state {
        let s = &self.state;
        let mut page = kvm_lapic_state { regs: [0; 1024] };
        let x2apic = s.mode() == ApicMode::X2Apic;
        let id = if x2apic && format.x2apic_ids_32bit {
            self.config.id
        } else if x2apic {
            self.config.id << 24
        } else {
            u32::from(s.xapic_id) << 24
        };
        set(&mut page, regs::ID, id);
        set(&mut page, regs::VERSION, self.config.version());
        set(&mut page, regs::TPR, u32::from(s.tpr));
        set(&mut page, regs::PPR, u32::from(self.ppr()));
        set(&mut page, regs::LDR, s.ldr);
        set(&mut page, regs::DFR, s.dfr);
        set(&mut page, regs::SVR, s.svr);
        for i in 0..8u32 {
            let word = i as usize;
            set(&mut page, regs::ISR | (i << 4), s.isr.word32(word));
            set(&mut page, regs::TMR | (i << 4), s.tmr.word32(word));
            set(&mut page, regs::IRR | (i << 4), s.irr.word32(word));
        }
        set(&mut page, regs::ESR, s.esr);
        set(&mut page, regs::ICR_LOW, s.icr as u32);
        set(&mut page, regs::ICR_HIGH, (s.icr >> 32) as u32);
        if x2apic && !format.x2apic_icr_split {
            set(&mut page, regs::ICR_LOW | 4, (s.icr >> 32) as u32);
        }
        for entry in LvtEntry::ALL {
            set(&mut page, entry.offset(), s.lvt(entry));
        }
        set(&mut page, regs::TIMER_INITIAL_COUNT, s.timer.initial_count);
        let count = s.timer.current_count(self.timer_mode(), self.bus_ticks(now), self.config.min_period());
        set(&mut page, regs::TIMER_CURRENT_COUNT, count);
        set(&mut page, regs::TIMER_DIVIDE_CONFIG, s.timer.divide_config);
        page
    }

    /// Replaces the state with KVM's register page, IA32_APIC_BASE `apic_base` and
    /// IA32_TSC_DEADLINE `tsc_deadline`, as KVM_SET_MSRS + KVM_SET_LAPIC do at host TSC `now`.
    /// A running one-shot or periodic count restarts from the page's current count (a periodic
    /// timer at count 0 restarts a full period; a one-shot at 0 with a non-zero initial count
    /// fires at the next [`LocalApic::advance`], as KVM_SET_LAPIC does — so a one-shot that had
    /// already expired fires again). The latched
    /// events, wait-for-SIPI, the ESR accumulator and the LINT levels are kept. The state is
    /// validated like [`LocalApic::restore`]; on error nothing changes.
    ///
    /// In x2APIC mode the page's ID and LDR are ignored (the x2APIC ID is read-only and the
    /// LDR derived from it), as KVM ignores them.
    pub fn restore_kvm(
        &mut self,
        page: &kvm_lapic_state,
        apic_base: u64,
        tsc_deadline: u64,
        now: u64,
    ) -> Result<(), StateError> {
        let mut s: LocalApicState = self.state;
        s.apic_base = apic_base;
        let x2apic = s.mode() == ApicMode::X2Apic;
        if x2apic {
            s.ldr = super::x2apic_ldr(self.config.id);
        } else {
            s.xapic_id = (get(page, regs::ID) >> 24) as u8;
            s.ldr = get(page, regs::LDR);
        }
        s.tpr = get(page, regs::TPR) as u8;
        s.dfr = get(page, regs::DFR);
        s.svr = get(page, regs::SVR);
        for i in 0..8u32 {
            let word = i as usize;
            s.isr.set_word32(word, get(page, regs::ISR | (i << 4)));
            s.tmr.set_word32(word, get(page, regs::TMR | (i << 4)));
            s.irr.set_word32(word, get(page, regs::IRR | (i << 4)));
        }
        s.esr = get(page, regs::ESR);
        s.icr = u64::from(get(page, regs::ICR_HIGH)) << 32 | u64::from(get(page, regs::ICR_LOW));
        for entry in LvtEntry::ALL {
            s.set_lvt(entry, get(page, entry.offset()));
        }
        s.timer.initial_count = get(page, regs::TIMER_INITIAL_COUNT);
        s.timer.divide_config = get(page, regs::TIMER_DIVIDE_CONFIG);
        let mode = TimerMode::of(s.lvt(LvtEntry::Timer));
        s.timer.tsc_deadline = if mode == TimerMode::TscDeadline { tsc_deadline } else { 0 };
        let period = s.timer.period(mode, self.config.min_period());
        let count = u64::from(get(page, regs::TIMER_CURRENT_COUNT)) << s.timer.divide_shift();
        let bus = self.bus_ticks(now);
        s.timer.expiry = match mode {
            _ if period == 0 => None,
            // KVM clamps a current count above the initial count to the initial count. A
            // one-shot at count 0 with a non-zero initial count is due at once, as KVM restarts
            // it: the page cannot tell "expired" from "in its last count" (the count rounds
            // down), and an interrupt delivered twice is better than one lost.
            TimerMode::OneShot => Some(bus.saturating_add(count.min(period))),
            TimerMode::Periodic => {
                Some(bus.saturating_add(if count == 0 { period } else { count.min(period) }))
            }
            _ => None,
        };
        s.validate(&self.config)?;
        self.state = s;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(unused_must_use)]

    use super::*;
    use crate::lapic::{LapicConfig, Quirks};
    use crate::Interrupt;

    fn busy_apic(quirks: Quirks) -> LocalApic {
        let mut apic = LocalApic::new(LapicConfig { id: 2, quirks, cmci: true, ..LapicConfig::default() });
        let w = |apic: &mut LocalApic, offset: u32, value: u32| {
            apic.mmio_write(offset.into(), &value.to_le_bytes(), 1000);
        };
        w(&mut apic, regs::SVR, 0x1FF);
        w(&mut apic, regs::TPR, 0x21);
        w(&mut apic, regs::LDR, 0x0400_0000);
        w(&mut apic, regs::LVT_LINT0, 0x700);
        w(&mut apic, regs::LVT_CMCI, 0x42);
        w(&mut apic, regs::TIMER_DIVIDE_CONFIG, 0xB);
        w(&mut apic, regs::LVT_TIMER, 0x00EC); // one-shot
        w(&mut apic, regs::TIMER_INITIAL_COUNT, 5000);
        w(&mut apic, regs::ICR_HIGH, 0x0100_0000);
        assert!(apic.accept(&Interrupt { vector: 0x80, level: true, ..Interrupt::default() }));
        let _ = apic.acknowledge();
        assert!(apic.accept(&Interrupt {
            vector: 0x91,
            level: true,
            trigger_mode: crate::TriggerMode::Level,
            ..Interrupt::default()
        }));
        apic
    }

    #[test]
    fn the_page_has_every_register_at_its_offset() {
        let apic = busy_apic(Quirks::KVM);
        let page = apic.to_kvm(3000, KvmLapicFormat::default());
        assert_eq!(get(&page, regs::ID), 2 << 24);
        assert_eq!(get(&page, regs::VERSION), 0x0006_0014);
        assert_eq!(get(&page, regs::TPR), 0x21);
        assert_eq!(get(&page, regs::PPR), 0x80);
        assert_eq!(get(&page, regs::LDR), 0x0400_0000);
        assert_eq!(get(&page, regs::SVR), 0x1FF);
        assert_eq!(get(&page, regs::ISR + 0x40), 1, "vector 0x80 in ISR4");
        assert_eq!(get(&page, regs::IRR + 0x40), 1 << 17, "vector 0x91 in IRR4");
        assert_eq!(get(&page, regs::TMR + 0x40), 1 << 17);
        assert_eq!(get(&page, regs::ICR_HIGH), 0x0100_0000);
        assert_eq!(get(&page, regs::LVT_LINT0), 0x700);
        assert_eq!(get(&page, regs::LVT_CMCI), 0x42);
        assert_eq!(get(&page, regs::TIMER_INITIAL_COUNT), 5000);
        assert_eq!(get(&page, regs::TIMER_CURRENT_COUNT), 3000, "2000 of 5000 ticks elapsed");
        assert_eq!(get(&page, regs::TIMER_DIVIDE_CONFIG), 0xB);
    }

    #[test]
    fn a_page_from_the_model_restores_the_same_apic() {
        for quirks in [Quirks::SDM, Quirks::KVM] {
            let apic = busy_apic(quirks);
            let page = apic.to_kvm(3000, KvmLapicFormat::default());
            let mut copy = LocalApic::new(*apic.config());
            copy.restore_kvm(&page, apic.apic_base(), 0, 3000).unwrap();
            assert_eq!(copy, apic, "{quirks:?}");
            assert_eq!(copy.to_kvm(3000, KvmLapicFormat::default()).regs, page.regs);
        }
    }

    #[test]
    fn x2apic_pages_carry_the_id_in_either_format_and_split_the_icr() {
        let mut apic = LocalApic::new(LapicConfig { id: 0x105, ..LapicConfig::default() });
        apic.host_write_apic_base(0xFEE0_0D00).unwrap();
        apic.wrmsr(0x80F, 0x1FF, 0).unwrap();
        apic.wrmsr(0x830, 0x0000_0105_0000_4041, 0).unwrap();
        let ids = KvmLapicFormat { x2apic_ids_32bit: true, x2apic_icr_split: true };
        let page = apic.to_kvm(0, ids);
        assert_eq!(get(&page, regs::ID), 0x105);
        assert_eq!(get(&apic.to_kvm(0, KvmLapicFormat::default()), regs::ID), 0x105 << 24);
        assert_eq!((get(&page, regs::ICR_LOW), get(&page, regs::ICR_HIGH)), (0x4041, 0x105));
        assert_eq!(get(&page, regs::ICR_LOW | 4), 0, "split: nothing at 0x304");
        // Unsplit (VMX): the 64-bit register at 0x300, its high half also at 0x310.
        let unsplit = apic.to_kvm(0, KvmLapicFormat::default());
        assert_eq!(get(&unsplit, regs::ICR_LOW | 4), 0x105);
        assert_eq!(get(&unsplit, regs::ICR_HIGH), 0x105);
        assert_eq!(get(&page, regs::LDR), 0x0010_0020);
        let mut copy = LocalApic::new(*apic.config());
        copy.restore_kvm(&page, apic.apic_base(), 0, 0).unwrap();
        assert_eq!(copy, apic);
    }

    #[test]
    fn a_restored_periodic_timer_restarts_from_the_current_count() {
        let mut apic = LocalApic::new(LapicConfig::default());
        let mut page = apic.to_kvm(0, KvmLapicFormat::default());
        set(&mut page, regs::SVR, 0x1FF);
        set(&mut page, regs::TIMER_DIVIDE_CONFIG, 0xB);
        set(&mut page, regs::LVT_TIMER, 0x2_0030);
        set(&mut page, regs::TIMER_INITIAL_COUNT, 100);
        set(&mut page, regs::TIMER_CURRENT_COUNT, 40);
        apic.restore_kvm(&page, 0xFEE0_0900, 0, 10_000).unwrap();
        assert_eq!(apic.next_deadline(10_000), Some(10_040));
        // A count above the initial count is clamped, as KVM does.
        set(&mut page, regs::TIMER_CURRENT_COUNT, 500);
        apic.restore_kvm(&page, 0xFEE0_0900, 0, 10_000).unwrap();
        assert_eq!(apic.next_deadline(10_000), Some(10_100));
    }

    #[test]
    fn a_one_shot_in_its_last_count_still_fires_after_a_round_trip() {
        // ÷128, 10 counts: due at tick 1280; at 1200 the current count already reads 0.
        let mut apic = LocalApic::new(LapicConfig::default());
        for (offset, value) in
            [(regs::SVR, 0x1FFu32), (regs::TIMER_DIVIDE_CONFIG, 0xA), (regs::LVT_TIMER, 0x30)]
        {
            apic.mmio_write(offset.into(), &value.to_le_bytes(), 0);
        }
        apic.mmio_write(regs::TIMER_INITIAL_COUNT.into(), &10u32.to_le_bytes(), 0);
        let page = apic.to_kvm(1200, KvmLapicFormat::default());
        assert_eq!(get(&page, regs::TIMER_CURRENT_COUNT), 0);
        let mut copy = LocalApic::new(*apic.config());
        copy.restore_kvm(&page, apic.apic_base(), 0, 1200).unwrap();
        assert!(copy.advance(1200), "due at once, not lost");
        assert_eq!(copy.pending_interrupt(), Some(0x30));
    }

    #[test]
    fn an_invalid_page_is_refused_and_changes_nothing() {
        let mut apic = busy_apic(Quirks::SDM);
        let before = apic.clone();
        let mut page = apic.to_kvm(3000, KvmLapicFormat::default());
        set(&mut page, regs::DFR, 0);
        assert_eq!(apic.restore_kvm(&page, apic.apic_base(), 0, 3000), Err(StateError::Dfr(0)));
        assert_eq!(apic, before);
    }
}
