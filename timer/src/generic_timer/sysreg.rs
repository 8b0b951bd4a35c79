//! System-register access by AArch64 encoding, so a VMM can forward a trapped MRS/MSR.
//!
//! Encodings are `(op0, op1, CRn, CRm, op2)` as DDI0601 gives them. [`SysReg::decode`] knows the
//! generic-timer registers a guest at EL0/EL1 can name: the EL0/EL1 ones, which the model
//! implements, and the EL2, EL02/EL12 and secure ones, which are UNDEFINED from EL0 and EL1
//! (the Arm pseudocode: without FEAT_NV, EL1 accesses to EL2 registers are UNDEFINED).

use super::regs::{Cntkctl, TimerId};
use super::{Counter, Output, VcpuTimers};

/// The operands of an MRS/MSR system-register encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Encoding {
    /// op0 (2 bits; 3 for these registers).
    pub op0: u8,
    /// op1 (3 bits).
    pub op1: u8,
    /// CRn (4 bits; 14 for the generic timer).
    pub crn: u8,
    /// CRm (4 bits).
    pub crm: u8,
    /// op2 (3 bits).
    pub op2: u8,
}

impl Encoding {
    /// The encoding `(op0, op1, CRn, CRm, op2)`.
    pub const fn new(op0: u8, op1: u8, crn: u8, crm: u8, op2: u8) -> Self {
        Encoding { op0, op1, crn, crm, op2 }
    }

    /// The encoding in the ISS of an ESR_ELx with EC 0x18 (trapped MSR/MRS): Op0 bits 21:20,
    /// Op2 19:17, Op1 16:14, CRn 13:10, CRm 4:1.
    pub const fn from_iss(iss: u32) -> Self {
        Encoding {
            op0: ((iss >> 20) & 0x3) as u8,
            op1: ((iss >> 14) & 0x7) as u8,
            crn: ((iss >> 10) & 0xf) as u8,
            crm: ((iss >> 1) & 0xf) as u8,
            op2: ((iss >> 17) & 0x7) as u8,
        }
    }

    /// The ISS fields of this encoding (Rt and Direction left 0), the inverse of
    /// [`Encoding::from_iss`].
    pub const fn to_iss(self) -> u32 {
        ((self.op0 as u32 & 0x3) << 20)
            | ((self.op2 as u32 & 0x7) << 17)
            | ((self.op1 as u32 & 0x7) << 14)
            | ((self.crn as u32 & 0xf) << 10)
            | ((self.crm as u32 & 0xf) << 1)
    }
}

/// The direction of an access: MRS reads, MSR writes a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// MRS: read the register.
    Read,
    /// MSR: write this value.
    Write(u64),
}

impl Access {
    /// The access an ESR_ELx ISS with EC 0x18 describes (Direction, bit 0: 1 = read), writing
    /// `rt_value`, the content of the register the ISS names in bits 9:5.
    pub const fn from_iss(iss: u32, rt_value: u64) -> Self {
        if iss & 1 == 1 {
            Access::Read
        } else {
            Access::Write(rt_value)
        }
    }
}

/// The Exception level the guest made the access from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum El {
    /// EL0 (applications): subject to CNTKCTL_EL1.
    El0,
    /// EL1 (the guest kernel).
    El1,
}

/// The exception the VMM must inject instead of completing the access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Exception {
    /// UNDEFINED (EC 0x00), taken to EL1: a write to a read-only register or to CNTFRQ_EL0, an
    /// access to a register that is absent or belongs to a higher Exception level, or an EL0
    /// access to CNTKCTL_EL1.
    Undefined,
    /// A system access trap to EL1 (EC 0x18, with the access's ISS): an EL0 access that
    /// CNTKCTL_EL1 does not allow. This is what the Arm pseudocode does
    /// (`AArch64.SystemAccessTrap(EL1, 0x18)`); it is not UNDEFINED.
    TrapToEl1,
}

impl Exception {
    /// The exception class to report in ESR_EL1.
    pub const fn ec(self) -> u8 {
        match self {
            Exception::Undefined => 0x00,
            Exception::TrapToEl1 => 0x18,
        }
    }
}

/// The outcome of a forwarded MRS/MSR.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SysRegResult {
    /// The read completed: write this to the destination register and step over the MRS.
    Value(u64),
    /// The write completed: step over the MSR. Carries the PPI levels after it.
    Done(Output),
    /// Inject this exception instead; the access had no effect.
    Exception(Exception),
    /// Not a generic-timer register: the VMM should try its other system-register handlers.
    NotGenericTimer,
}

macro_rules! sysregs {
    ($($(#[$doc:meta])* $name:ident = ($op0:literal, $op1:literal, $crn:literal, $crm:literal, $op2:literal),)*) => {
        /// A generic-timer system register, named as the Arm ARM names it.
        #[allow(non_camel_case_types)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
        pub enum SysReg {
            $($(#[$doc])* $name,)*
        }

        impl SysReg {
            /// Every register [`SysReg::decode`] knows.
            pub const ALL: &'static [SysReg] = &[$(SysReg::$name,)*];

            /// The register's AArch64 encoding (DDI0601).
            pub const fn encoding(self) -> Encoding {
                match self {
                    $(SysReg::$name => Encoding::new($op0, $op1, $crn, $crm, $op2),)*
                }
            }

            /// The generic-timer register with this encoding, if any.
            pub const fn decode(e: Encoding) -> Option<SysReg> {
                match (e.op0, e.op1, e.crn, e.crm, e.op2) {
                    $(($op0, $op1, $crn, $crm, $op2) => Some(SysReg::$name),)*
                    _ => None,
                }
            }
        }
    };
}

sysregs! {
    /// Counter-timer Frequency register (RO below the highest EL).
    CNTFRQ_EL0 = (3, 3, 14, 0, 0),
    /// Counter-timer Physical Count register (RO).
    CNTPCT_EL0 = (3, 3, 14, 0, 1),
    /// Counter-timer Virtual Count register (RO).
    CNTVCT_EL0 = (3, 3, 14, 0, 2),
    /// Self-synchronized physical count (FEAT_ECV, RO).
    CNTPCTSS_EL0 = (3, 3, 14, 0, 5),
    /// Self-synchronized virtual count (FEAT_ECV, RO).
    CNTVCTSS_EL0 = (3, 3, 14, 0, 6),
    /// Counter-timer Kernel Control register (EL1).
    CNTKCTL_EL1 = (3, 0, 14, 1, 0),
    /// EL1 physical timer TimerValue.
    CNTP_TVAL_EL0 = (3, 3, 14, 2, 0),
    /// EL1 physical timer Control.
    CNTP_CTL_EL0 = (3, 3, 14, 2, 1),
    /// EL1 physical timer CompareValue.
    CNTP_CVAL_EL0 = (3, 3, 14, 2, 2),
    /// EL1 virtual timer TimerValue.
    CNTV_TVAL_EL0 = (3, 3, 14, 3, 0),
    /// EL1 virtual timer Control.
    CNTV_CTL_EL0 = (3, 3, 14, 3, 1),
    /// EL1 virtual timer CompareValue.
    CNTV_CVAL_EL0 = (3, 3, 14, 3, 2),
    /// Counter-timer Virtual Offset register (EL2).
    CNTVOFF_EL2 = (3, 4, 14, 0, 3),
    /// Counter-timer Physical Offset register (EL2, FEAT_ECV).
    CNTPOFF_EL2 = (3, 4, 14, 0, 6),
    /// Counter-timer Hypervisor Control register (EL2).
    CNTHCTL_EL2 = (3, 4, 14, 1, 0),
    /// EL2 physical timer TimerValue.
    CNTHP_TVAL_EL2 = (3, 4, 14, 2, 0),
    /// EL2 physical timer Control.
    CNTHP_CTL_EL2 = (3, 4, 14, 2, 1),
    /// EL2 physical timer CompareValue.
    CNTHP_CVAL_EL2 = (3, 4, 14, 2, 2),
    /// EL2 virtual timer TimerValue (FEAT_VHE).
    CNTHV_TVAL_EL2 = (3, 4, 14, 3, 0),
    /// EL2 virtual timer Control (FEAT_VHE).
    CNTHV_CTL_EL2 = (3, 4, 14, 3, 1),
    /// EL2 virtual timer CompareValue (FEAT_VHE).
    CNTHV_CVAL_EL2 = (3, 4, 14, 3, 2),
    /// CNTKCTL_EL1 as EL2 names it with HCR_EL2.E2H=1.
    CNTKCTL_EL12 = (3, 5, 14, 1, 0),
    /// CNTP_TVAL_EL0 as EL2 names it with HCR_EL2.E2H=1.
    CNTP_TVAL_EL02 = (3, 5, 14, 2, 0),
    /// CNTP_CTL_EL0 as EL2 names it with HCR_EL2.E2H=1.
    CNTP_CTL_EL02 = (3, 5, 14, 2, 1),
    /// CNTP_CVAL_EL0 as EL2 names it with HCR_EL2.E2H=1.
    CNTP_CVAL_EL02 = (3, 5, 14, 2, 2),
    /// CNTV_TVAL_EL0 as EL2 names it with HCR_EL2.E2H=1.
    CNTV_TVAL_EL02 = (3, 5, 14, 3, 0),
    /// CNTV_CTL_EL0 as EL2 names it with HCR_EL2.E2H=1.
    CNTV_CTL_EL02 = (3, 5, 14, 3, 1),
    /// CNTV_CVAL_EL0 as EL2 names it with HCR_EL2.E2H=1.
    CNTV_CVAL_EL02 = (3, 5, 14, 3, 2),
    /// Secure EL1 physical timer TimerValue (UNDEFINED in Non-secure state).
    CNTPS_TVAL_EL1 = (3, 7, 14, 2, 0),
    /// Secure EL1 physical timer Control (UNDEFINED in Non-secure state).
    CNTPS_CTL_EL1 = (3, 7, 14, 2, 1),
    /// Secure EL1 physical timer CompareValue (UNDEFINED in Non-secure state).
    CNTPS_CVAL_EL1 = (3, 7, 14, 2, 2),
}

/// Which register of a timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimerField {
    /// CTL.
    Ctl,
    /// CVAL.
    Cval,
    /// TVAL.
    Tval,
}

/// What a [`SysReg`] is, for access decisions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// CNTFRQ_EL0.
    Frequency,
    /// CNTPCT_EL0 / CNTVCT_EL0 and their self-synchronized views.
    Count {
        /// The virtual count (else the physical one).
        virtual_count: bool,
        /// The FEAT_ECV self-synchronized view.
        self_synchronized: bool,
    },
    /// CNTKCTL_EL1.
    KernelControl,
    /// One of a timer's registers.
    Timer(TimerId, TimerField),
    /// An EL2, EL02/EL12 or secure register: never accessible from Non-secure EL0/EL1.
    Higher,
}

impl SysReg {
    /// What the register is: which counter, which timer and field, or a register of a higher
    /// Exception level or of Secure state.
    pub const fn kind(self) -> Kind {
        use SysReg::*;
        match self {
            CNTFRQ_EL0 => Kind::Frequency,
            CNTPCT_EL0 => Kind::Count { virtual_count: false, self_synchronized: false },
            CNTVCT_EL0 => Kind::Count { virtual_count: true, self_synchronized: false },
            CNTPCTSS_EL0 => Kind::Count { virtual_count: false, self_synchronized: true },
            CNTVCTSS_EL0 => Kind::Count { virtual_count: true, self_synchronized: true },
            CNTKCTL_EL1 => Kind::KernelControl,
            CNTP_TVAL_EL0 => Kind::Timer(TimerId::Phys, TimerField::Tval),
            CNTP_CTL_EL0 => Kind::Timer(TimerId::Phys, TimerField::Ctl),
            CNTP_CVAL_EL0 => Kind::Timer(TimerId::Phys, TimerField::Cval),
            CNTV_TVAL_EL0 => Kind::Timer(TimerId::Virt, TimerField::Tval),
            CNTV_CTL_EL0 => Kind::Timer(TimerId::Virt, TimerField::Ctl),
            CNTV_CVAL_EL0 => Kind::Timer(TimerId::Virt, TimerField::Cval),
            CNTVOFF_EL2 | CNTPOFF_EL2 | CNTHCTL_EL2 | CNTHP_TVAL_EL2 | CNTHP_CTL_EL2 | CNTHP_CVAL_EL2
            | CNTHV_TVAL_EL2 | CNTHV_CTL_EL2 | CNTHV_CVAL_EL2 | CNTKCTL_EL12 | CNTP_TVAL_EL02
            | CNTP_CTL_EL02 | CNTP_CVAL_EL02 | CNTV_TVAL_EL02 | CNTV_CTL_EL02 | CNTV_CVAL_EL02
            | CNTPS_TVAL_EL1 | CNTPS_CTL_EL1 | CNTPS_CVAL_EL1 => Kind::Higher,
        }
    }
}

impl VcpuTimers {
    /// Performs a guest MRS/MSR of `encoding` from `el` at host counter `now`, as the Arm
    /// pseudocode for a Non-secure guest whose EL2 is the VMM (HCR_EL2.{E2H,TGE} ≠ {1,1}):
    ///
    /// * CNTKCTL_EL1 gates EL0: EL0PCTEN for CNTPCT(SS)_EL0, EL0VCTEN for CNTVCT(SS)_EL0, either
    ///   for reading CNTFRQ_EL0, EL0PTEN for CNTP_*, EL0VTEN for CNTV_*; a denied access is
    ///   [`Exception::TrapToEl1`]. CNTKCTL_EL1 itself is UNDEFINED at EL0.
    /// * Writes to CNTFRQ_EL0 (the frequency is the VMM's configuration) and to the count
    ///   registers are UNDEFINED, as are the FEAT_ECV registers without FEAT_ECV and every
    ///   EL2/EL02/EL12/secure register.
    /// * Unknown encodings give [`SysRegResult::NotGenericTimer`].
    pub fn access(
        &mut self,
        counter: &Counter,
        encoding: Encoding,
        el: El,
        access: Access,
        now: u64,
    ) -> SysRegResult {
        match SysReg::decode(encoding) {
            Some(reg) => self.access_reg(counter, reg, el, access, now),
            None => SysRegResult::NotGenericTimer,
        }
    }

    /// [`VcpuTimers::access`] for an already decoded register.
    pub fn access_reg(
        &mut self,
        counter: &Counter,
        reg: SysReg,
        el: El,
        access: Access,
        now: u64,
    ) -> SysRegResult {
        let kctl = self.cntkctl();
        let el0_allows = |bits: Cntkctl| el == El::El1 || kctl.intersects(bits);
        const UNDEF: SysRegResult = SysRegResult::Exception(Exception::Undefined);
        const TRAP: SysRegResult = SysRegResult::Exception(Exception::TrapToEl1);
        match reg.kind() {
            Kind::Higher => UNDEF,
            Kind::Frequency => match access {
                Access::Write(_) => UNDEF,
                Access::Read if !el0_allows(Cntkctl::EL0PCTEN | Cntkctl::EL0VCTEN) => TRAP,
                Access::Read => SysRegResult::Value(u64::from(counter.frequency())),
            },
            Kind::Count { self_synchronized: true, .. } if !counter.features().ecv => UNDEF,
            Kind::Count { virtual_count, .. } => {
                let gate = if virtual_count { Cntkctl::EL0VCTEN } else { Cntkctl::EL0PCTEN };
                match access {
                    Access::Write(_) => UNDEF,
                    Access::Read if !el0_allows(gate) => TRAP,
                    Access::Read if virtual_count => SysRegResult::Value(counter.virtual_count(now)),
                    Access::Read => SysRegResult::Value(counter.physical_count(now)),
                }
            }
            Kind::KernelControl => match (el, access) {
                (El::El0, _) => UNDEF,
                (El::El1, Access::Read) => SysRegResult::Value(self.cntkctl().bits()),
                (El::El1, Access::Write(value)) => {
                    self.write_cntkctl(counter, value);
                    SysRegResult::Done(Output {
                        level: self.level(counter, now),
                        changed: Default::default(),
                    })
                }
            },
            Kind::Timer(timer, field) => {
                let gate = if timer == TimerId::Virt { Cntkctl::EL0VTEN } else { Cntkctl::EL0PTEN };
                if !el0_allows(gate) {
                    return TRAP;
                }
                match (field, access) {
                    (TimerField::Ctl, Access::Read) => {
                        SysRegResult::Value(self.ctl(counter, timer, now).bits())
                    }
                    (TimerField::Cval, Access::Read) => SysRegResult::Value(self.cval(counter, timer)),
                    (TimerField::Tval, Access::Read) => SysRegResult::Value(self.tval(counter, timer, now)),
                    (TimerField::Ctl, Access::Write(v)) => {
                        SysRegResult::Done(self.write_ctl(counter, timer, v, now))
                    }
                    (TimerField::Cval, Access::Write(v)) => {
                        SysRegResult::Done(self.write_cval(counter, timer, v, now))
                    }
                    (TimerField::Tval, Access::Write(v)) => {
                        SysRegResult::Done(self.write_tval(counter, timer, v, now))
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generic_timer::Features;

    #[test]
    fn encodings_match_ddi0601() {
        // (op0, op1, CRn, CRm, op2) from the register descriptions.
        let table = [
            (SysReg::CNTFRQ_EL0, (3, 3, 14, 0, 0)),
            (SysReg::CNTPCT_EL0, (3, 3, 14, 0, 1)),
            (SysReg::CNTVCT_EL0, (3, 3, 14, 0, 2)),
            (SysReg::CNTPCTSS_EL0, (3, 3, 14, 0, 5)),
            (SysReg::CNTVCTSS_EL0, (3, 3, 14, 0, 6)),
            (SysReg::CNTKCTL_EL1, (3, 0, 14, 1, 0)),
            (SysReg::CNTP_TVAL_EL0, (3, 3, 14, 2, 0)),
            (SysReg::CNTP_CTL_EL0, (3, 3, 14, 2, 1)),
            (SysReg::CNTP_CVAL_EL0, (3, 3, 14, 2, 2)),
            (SysReg::CNTV_TVAL_EL0, (3, 3, 14, 3, 0)),
            (SysReg::CNTV_CTL_EL0, (3, 3, 14, 3, 1)),
            (SysReg::CNTV_CVAL_EL0, (3, 3, 14, 3, 2)),
            (SysReg::CNTVOFF_EL2, (3, 4, 14, 0, 3)),
            (SysReg::CNTPOFF_EL2, (3, 4, 14, 0, 6)),
            (SysReg::CNTHCTL_EL2, (3, 4, 14, 1, 0)),
            (SysReg::CNTHP_TVAL_EL2, (3, 4, 14, 2, 0)),
            (SysReg::CNTHP_CTL_EL2, (3, 4, 14, 2, 1)),
            (SysReg::CNTHP_CVAL_EL2, (3, 4, 14, 2, 2)),
            (SysReg::CNTHV_TVAL_EL2, (3, 4, 14, 3, 0)),
            (SysReg::CNTHV_CTL_EL2, (3, 4, 14, 3, 1)),
            (SysReg::CNTHV_CVAL_EL2, (3, 4, 14, 3, 2)),
        ];
        for (reg, (op0, op1, crn, crm, op2)) in table {
            let e = Encoding::new(op0, op1, crn, crm, op2);
            assert_eq!(reg.encoding(), e, "{reg:?}");
            assert_eq!(SysReg::decode(e), Some(reg), "{reg:?}");
        }
    }

    #[test]
    fn every_register_decodes_from_its_own_encoding_and_iss() {
        for &reg in SysReg::ALL {
            assert_eq!(SysReg::decode(reg.encoding()), Some(reg));
            assert_eq!(Encoding::from_iss(reg.encoding().to_iss() | 0x3e1), reg.encoding());
        }
    }

    #[test]
    fn iss_fields_are_where_esr_puts_them() {
        // MRS x3, CNTV_CTL_EL0: Op0=3, Op2=1, Op1=3, CRn=14, Rt=3, CRm=3, Direction=1 (read).
        let iss = (3 << 20) | (1 << 17) | (3 << 14) | (14 << 10) | (3 << 5) | (3 << 1) | 1;
        assert_eq!(SysReg::decode(Encoding::from_iss(iss)), Some(SysReg::CNTV_CTL_EL0));
        assert_eq!(Access::from_iss(iss, 7), Access::Read);
        assert_eq!(Access::from_iss(iss & !1, 7), Access::Write(7));
    }

    #[test]
    fn unknown_encodings_are_not_generic_timer_registers() {
        let counter = Counter::new(1_000, Features::default()).unwrap();
        let mut vcpu = VcpuTimers::new();
        for e in [Encoding::new(3, 0, 1, 0, 0), Encoding::new(3, 3, 14, 0, 3), Encoding::new(3, 3, 14, 4, 0)]
        {
            assert_eq!(vcpu.access(&counter, e, El::El1, Access::Read, 0), SysRegResult::NotGenericTimer);
        }
    }
}
