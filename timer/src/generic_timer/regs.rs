//! Register fields, timers and interrupt IDs of the generic timer, as the Arm ARM (DDI0487,
//! chapter D11) and the register descriptions (DDI0601) name them.

use bitflags::bitflags;

bitflags! {
    /// CNTP_CTL_EL0 / CNTV_CTL_EL0 / CNTHP_CTL_EL2 / CNTHV_CTL_EL2: a timer's control register.
    /// Bits 63:3 are RES0.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct TimerCtl: u64 {
        /// ENABLE: the timer is enabled. While it is clear the timer condition is not met
        /// (ISTATUS reads 0 in this model) and the interrupt output is low.
        const ENABLE = 1 << 0;
        /// IMASK: the timer interrupt is masked. It gates only the output, never ISTATUS.
        const IMASK = 1 << 1;
        /// ISTATUS (read-only): the timer condition is met. Writes ignore this bit.
        const ISTATUS = 1 << 2;
    }
}

impl TimerCtl {
    /// The bits a register write can change (ENABLE and IMASK); everything else a write
    /// carries is ignored.
    pub const WRITABLE: TimerCtl = TimerCtl::ENABLE.union(TimerCtl::IMASK);
}

bitflags! {
    /// CNTKCTL_EL1: EL0 access to the counters and EL1 timers, and the event stream generated
    /// from the virtual count.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct Cntkctl: u64 {
        /// EL0PCTEN: EL0 may read CNTPCT_EL0 (and CNTPCTSS_EL0); with EL0VCTEN, CNTFRQ_EL0.
        const EL0PCTEN = 1 << 0;
        /// EL0VCTEN: EL0 may read CNTVCT_EL0 (and CNTVCTSS_EL0); with EL0PCTEN, CNTFRQ_EL0.
        const EL0VCTEN = 1 << 1;
        /// EVNTEN: generate an event stream from the virtual count.
        const EVNTEN = 1 << 2;
        /// EVNTDIR: the stream triggers on the 1→0 transition of the selected bit (0: on 0→1).
        const EVNTDIR = 1 << 3;
        /// EVNTI (bits 7:4): which bit of the virtual count drives the stream.
        const EVNTI = 0xf << 4;
        /// EL0VTEN: EL0 may access CNTV_CTL_EL0, CNTV_CVAL_EL0 and CNTV_TVAL_EL0.
        const EL0VTEN = 1 << 8;
        /// EL0PTEN: EL0 may access CNTP_CTL_EL0, CNTP_CVAL_EL0 and CNTP_TVAL_EL0.
        const EL0PTEN = 1 << 9;
        /// EVNTIS (FEAT_ECV): EVNTI selects bit EVNTI + 8 instead of bit EVNTI.
        const EVNTIS = 1 << 17;
    }
}

impl Cntkctl {
    /// The bits that exist without FEAT_ECV (9:0); the rest are RES0 and writes ignore them.
    pub const WRITABLE: Cntkctl = Cntkctl::EL0PCTEN
        .union(Cntkctl::EL0VCTEN)
        .union(Cntkctl::EVNTEN)
        .union(Cntkctl::EVNTDIR)
        .union(Cntkctl::EVNTI)
        .union(Cntkctl::EL0VTEN)
        .union(Cntkctl::EL0PTEN);
    /// The bits that exist with FEAT_ECV: [`Cntkctl::WRITABLE`] and EVNTIS.
    pub const WRITABLE_ECV: Cntkctl = Cntkctl::WRITABLE.union(Cntkctl::EVNTIS);

    /// The bits a write can set, given whether FEAT_ECV is implemented.
    pub const fn writable(ecv: bool) -> Cntkctl {
        if ecv {
            Cntkctl::WRITABLE_ECV
        } else {
            Cntkctl::WRITABLE
        }
    }

    /// The bit of the virtual count the event stream watches: EVNTI, plus 8 when EVNTIS is
    /// set (0–23).
    pub const fn event_bit(self) -> u32 {
        // EVNTI is a 4-bit field, so the result is at most 15 + 8.
        let evnti = ((self.bits() >> 4) & 0xf) as u32;
        if self.contains(Cntkctl::EVNTIS) {
            evnti.wrapping_add(8)
        } else {
            evnti
        }
    }
}

bitflags! {
    /// A set of timer interrupt lines, one bit per GIC INTID (bit n = INTID n), using the PPIs
    /// that the Server Base System Architecture and Linux KVM assign to the timers.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct Ppis: u32 {
        /// INTID 26: the EL2 physical timer (CNTHP).
        const CNTHP = 1 << 26;
        /// INTID 27: the EL1 virtual timer (CNTV).
        const CNTV = 1 << 27;
        /// INTID 28: the EL2 virtual timer (CNTHV, FEAT_VHE).
        const CNTHV = 1 << 28;
        /// INTID 30: the EL1 physical timer (CNTP).
        const CNTP = 1 << 30;
    }
}

/// One of a PE's timers. Each has CTL, CVAL and TVAL registers, compares against its own view
/// of the count, and drives one level-sensitive PPI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum TimerId {
    /// The EL1 physical timer (CNTP_*_EL0): compares against the physical count minus
    /// CNTPOFF_EL2. PPI 30.
    Phys,
    /// The EL1 virtual timer (CNTV_*_EL0): compares against the virtual count (physical count
    /// minus CNTVOFF_EL2). PPI 27.
    Virt,
    /// The EL2 physical timer (CNTHP_*_EL2): compares against the physical count, no offset.
    /// PPI 26. Present only when the VM has EL2 ([`Features::el2`](super::Features::el2)).
    HypPhys,
    /// The EL2 virtual timer (CNTHV_*_EL2, FEAT_VHE): compares against the count with a virtual
    /// offset of zero. PPI 28. Present only when the VM has EL2.
    HypVirt,
}

impl TimerId {
    /// Every timer, in the order of their slots in the model.
    pub const ALL: [TimerId; 4] = [TimerId::Phys, TimerId::Virt, TimerId::HypPhys, TimerId::HypVirt];

    /// The INTID of the timer's PPI (30, 27, 26, 28).
    pub const fn ppi(self) -> u32 {
        match self {
            TimerId::Phys => 30,
            TimerId::Virt => 27,
            TimerId::HypPhys => 26,
            TimerId::HypVirt => 28,
        }
    }

    /// The timer's PPI as a one-bit [`Ppis`].
    pub const fn ppi_bit(self) -> Ppis {
        match self {
            TimerId::Phys => Ppis::CNTP,
            TimerId::Virt => Ppis::CNTV,
            TimerId::HypPhys => Ppis::CNTHP,
            TimerId::HypVirt => Ppis::CNTHV,
        }
    }

    /// Whether this is one of the EL2 timers, which exist only when the VM has EL2.
    pub const fn is_el2(self) -> bool {
        matches!(self, TimerId::HypPhys | TimerId::HypVirt)
    }

    pub(crate) const fn index(self) -> usize {
        match self {
            TimerId::Phys => 0,
            TimerId::Virt => 1,
            TimerId::HypPhys => 2,
            TimerId::HypVirt => 3,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ppis_match_the_kvm_defaults() {
        assert_eq!(TimerId::ALL.map(TimerId::ppi), [30, 27, 26, 28]);
        for id in TimerId::ALL {
            assert_eq!(id.ppi_bit().bits(), 1 << id.ppi());
            assert_eq!(TimerId::ALL.get(id.index()), Some(&id));
        }
    }

    #[test]
    fn event_bit_is_evnti_plus_eight_with_evntis() {
        for evnti in 0..16u64 {
            let ctl = Cntkctl::from_bits_retain(evnti << 4);
            assert_eq!(ctl.event_bit(), evnti as u32);
            assert_eq!((ctl | Cntkctl::EVNTIS).event_bit(), evnti as u32 + 8);
        }
    }

    #[test]
    fn writable_cntkctl_bits_depend_on_ecv() {
        assert_eq!(Cntkctl::writable(false).bits(), 0x3ff);
        assert_eq!(Cntkctl::writable(true).bits(), 0x2_03ff);
    }
}
