//! Conversion to and from KVM's `kvm_pic_state`, the per-chip payload of
//! KVM_GET_IRQCHIP / KVM_SET_IRQCHIP (`chip_id` 0 is the master, 1 the slave).
//!
//! From KVM to the model and back is lossless: every `kvm_pic_state` that KVM produces
//! converts and returns byte for byte. The model keeps four things KVM does not: ICW1's
//! SNGL and LTIM and the ICW3 bytes (KVM ignores all three) and which sources drive each
//! line. Going to KVM drops them (lossy in that direction unless they hold what KVM
//! assumes: SNGL and LTIM clear, ICW3 0x04/0x02, as in every KVM-profile state); coming from
//! KVM, SNGL and LTIM are clear, ICW3 is the PC wiring KVM hard-codes (master 0x04: a slave
//! on IR2; slave 0x02: ID 2), and each line is taken to be driven by source 0 exactly when
//! its `last_irr` bit is set, which is the level KVM's edge detector last saw.
//!
//! A state from KVM restores into a KVM-profile PIC unchanged. A datasheet-profile PIC
//! refuses it with [`StateError::CascadeNotInIrr`] while the slave has a request KVM has not
//! yet latched into master IRR2, since that profile's guest would read IRR2 set.

use kvm_bindings::kvm_pic_state;

use crate::{regs, Chip, ChipState, InitState, PicState, StateError};

impl ChipState {
    /// This chip as KVM's `kvm_pic_state` (SNGL, LTIM and ICW3 are dropped).
    pub fn to_kvm(&self) -> kvm_pic_state {
        kvm_pic_state {
            last_irr: self.last_irr,
            irr: self.irr,
            imr: self.imr,
            isr: self.isr,
            priority_add: self.priority_add,
            irq_base: self.irq_base,
            read_reg_select: u8::from(self.read_reg_select),
            poll: u8::from(self.poll),
            special_mask: u8::from(self.special_mask),
            init_state: self.init_state as u8,
            auto_eoi: u8::from(self.auto_eoi),
            rotate_on_auto_eoi: u8::from(self.rotate_on_auto_eoi),
            special_fully_nested_mode: u8::from(self.special_fully_nested_mode),
            init4: u8::from(self.init4),
            elcr: self.elcr,
            elcr_mask: self.elcr_mask,
        }
    }

    /// Converts KVM's state of one chip. Refuses bytes KVM never produces (a flag other than
    /// 0 or 1, `init_state` above 3), since they could not convert back unchanged, and values
    /// [`PicState::validate`] refuses. SNGL and LTIM are clear and `icw3` is the PC's
    /// ([`regs::PC_MASTER_ICW3`] or [`regs::PC_SLAVE_ICW3`] by `chip`), which KVM assumes.
    pub fn from_kvm(kvm: &kvm_pic_state, chip: Chip) -> Result<ChipState, StateError> {
        let flag = |field: &'static str, value: u8| match value {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(StateError::NotAFlag { chip, field, value }),
        };
        let state = ChipState {
            last_irr: kvm.last_irr,
            irr: kvm.irr,
            imr: kvm.imr,
            isr: kvm.isr,
            priority_add: kvm.priority_add,
            irq_base: kvm.irq_base,
            read_reg_select: flag("read_reg_select", kvm.read_reg_select)?,
            poll: flag("poll", kvm.poll)?,
            special_mask: flag("special_mask", kvm.special_mask)?,
            init_state: InitState::from_u8(kvm.init_state)
                .ok_or(StateError::InitState { chip, value: kvm.init_state })?,
            auto_eoi: flag("auto_eoi", kvm.auto_eoi)?,
            rotate_on_auto_eoi: flag("rotate_on_auto_eoi", kvm.rotate_on_auto_eoi)?,
            special_fully_nested_mode: flag("special_fully_nested_mode", kvm.special_fully_nested_mode)?,
            init4: flag("init4", kvm.init4)?,
            elcr: kvm.elcr,
            elcr_mask: kvm.elcr_mask,
            single_mode: false,
            ltim: false,
            icw3: match chip {
                Chip::Master => regs::PC_MASTER_ICW3,
                Chip::Slave => regs::PC_SLAVE_ICW3,
            },
        };
        Ok(state)
    }
}

impl PicState {
    /// Both chips as KVM's `[master, slave]` states.
    pub fn to_kvm(&self) -> [kvm_pic_state; 2] {
        [self.master.to_kvm(), self.slave.to_kvm()]
    }

    /// The pair from KVM's master and slave states, validated like [`crate::Pic::restore`].
    ///
    /// KVM does not export its latched INT output; it starts low here. KVM_SET_IRQCHIP
    /// re-evaluates it, and so does [`crate::Pic::update_output`] after the restore.
    pub fn from_kvm(master: &kvm_pic_state, slave: &kvm_pic_state) -> Result<PicState, StateError> {
        let master = ChipState::from_kvm(master, Chip::Master)?;
        let slave = ChipState::from_kvm(slave, Chip::Slave)?;
        let mut sources = [0u32; 16];
        for (irq, line) in sources.iter_mut().enumerate() {
            let last_irr = if irq < 8 { master.last_irr } else { slave.last_irr };
            *line = u32::from((last_irr >> (irq & 7)) & 1);
        }
        let state = PicState { master, slave, sources, output: false };
        state.validate()?;
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use crate::{Pic, Quirks};
    use proptest::prelude::*;

    fn bytes(s: &kvm_pic_state) -> [u8; 16] {
        [
            s.last_irr,
            s.irr,
            s.imr,
            s.isr,
            s.priority_add,
            s.irq_base,
            s.read_reg_select,
            s.poll,
            s.special_mask,
            s.init_state,
            s.auto_eoi,
            s.rotate_on_auto_eoi,
            s.special_fully_nested_mode,
            s.init4,
            s.elcr,
            s.elcr_mask,
        ]
    }

    /// Any `kvm_pic_state` KVM can produce: flags 0/1, init_state 0–3, priority_add 0–7,
    /// irq_base a multiple of 8, ELCR within its mask.
    fn kvm_chip() -> impl Strategy<Value = kvm_pic_state> {
        (any::<[u8; 4]>(), 0..8u8, any::<u8>(), any::<[bool; 7]>(), 0..4u8, any::<u8>(), any::<u8>())
            .prop_map(|(regs4, priority_add, base, flags, init_state, elcr, elcr_mask)| kvm_pic_state {
                last_irr: regs4[0],
                irr: regs4[1],
                imr: regs4[2],
                isr: regs4[3],
                priority_add,
                irq_base: base & 0xF8,
                read_reg_select: u8::from(flags[0]),
                poll: u8::from(flags[1]),
                special_mask: u8::from(flags[2]),
                init_state,
                auto_eoi: u8::from(flags[3]),
                rotate_on_auto_eoi: u8::from(flags[4]),
                special_fully_nested_mode: u8::from(flags[5]),
                init4: u8::from(flags[6]),
                elcr: elcr & elcr_mask,
                elcr_mask,
            })
    }

    proptest! {
        #[test]
        fn every_state_kvm_produces_round_trips_byte_for_byte(master in kvm_chip(), slave in kvm_chip()) {
            let state = PicState::from_kvm(&master, &slave).unwrap();
            let [m, s] = state.to_kvm();
            prop_assert_eq!(bytes(&m), bytes(&master));
            prop_assert_eq!(bytes(&s), bytes(&slave));
            // And through the model: restore then state() changes nothing.
            let mut pic = Pic::new(Quirks::KVM);
            pic.restore(&state).unwrap();
            prop_assert_eq!(pic.state().to_kvm().map(|c| bytes(&c)), [bytes(&master), bytes(&slave)]);
        }
    }

    #[test]
    fn power_on_state_is_what_kvm_create_irqchip_reports() {
        let [m, s] = PicState::default().to_kvm();
        let mut expected_master = [0u8; 16];
        expected_master[15] = regs::ELCR1_MASK;
        let mut expected_slave = [0u8; 16];
        expected_slave[15] = regs::ELCR2_MASK;
        assert_eq!((bytes(&m), bytes(&s)), (expected_master, expected_slave));
    }

    #[test]
    fn model_state_of_a_running_guest_survives_a_trip_through_kvm() {
        let mut pic = Pic::new(Quirks::KVM);
        for (port, value) in [
            (regs::MASTER_COMMAND, 0x11), // ICW1: edge, cascade, ICW4
            (regs::MASTER_DATA, 0x30),    // ICW2: base 0x30
            (regs::MASTER_DATA, 0x04),    // ICW3: slave on IR2
            (regs::MASTER_DATA, 0x03),    // ICW4: 8086, AEOI
            (regs::SLAVE_COMMAND, 0x11),  // ICW1
            (regs::SLAVE_DATA, 0x38),     // ICW2: base 0x38
            (regs::SLAVE_DATA, 0x02),     // ICW3: slave ID 2
            (regs::SLAVE_DATA, 0x01),     // ICW4: 8086
            (regs::ELCR2, 0x08),          // IRQ11 level
            (regs::MASTER_COMMAND, 0xC4), // OCW2: IR4 lowest
        ] {
            let _ = pic.write(port, value);
        }
        pic.set_irq(11, true).unwrap();
        pic.pulse_irq(5).unwrap();
        let ack = pic.acknowledge();
        let [m, s] = pic.state().to_kvm();
        let mut moved = Pic::new(Quirks::KVM);
        moved.restore(&PicState::from_kvm(&m, &s).unwrap()).unwrap();
        moved.update_output(); // as KVM_SET_IRQCHIP does
        assert_eq!(moved, pic);
        assert_eq!((ack.vector, moved.acknowledge().vector), (0x35, 0x3B));
    }

    #[test]
    fn from_kvm_assumes_the_pc_icw3_and_to_kvm_drops_the_guests() {
        let [m, s] = PicState::default().to_kvm();
        let state = PicState::from_kvm(&m, &s).unwrap();
        assert_eq!((state.master.icw3, state.slave.icw3), (regs::PC_MASTER_ICW3, regs::PC_SLAVE_ICW3));
        // A datasheet-profile guest's own ICW3 does not survive the trip (KVM has no field).
        let mut other = state;
        other.master.icw3 = 0x00;
        other.slave.icw3 = 0x05;
        assert_eq!(other.to_kvm().map(|c| bytes(&c)), state.to_kvm().map(|c| bytes(&c)));
        let [m, s] = other.to_kvm();
        assert_eq!(PicState::from_kvm(&m, &s), Ok(state));
    }

    #[test]
    fn bytes_kvm_never_produces_are_refused() {
        let good = PicState::default().to_kvm()[0];
        let mut bad = good;
        bad.poll = 2;
        assert_eq!(
            ChipState::from_kvm(&bad, Chip::Master),
            Err(StateError::NotAFlag { chip: Chip::Master, field: "poll", value: 2 })
        );
        let mut bad = good;
        bad.init_state = 4;
        assert_eq!(
            ChipState::from_kvm(&bad, Chip::Master),
            Err(StateError::InitState { chip: Chip::Master, value: 4 })
        );
        let mut bad = good;
        bad.irq_base = 0x31;
        assert!(PicState::from_kvm(&bad, &good).is_err());
    }
}
