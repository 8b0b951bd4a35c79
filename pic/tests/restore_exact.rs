//! "A restore installs exactly these values or is refused": for random [`PicState`]s (every
//! field arbitrary, a bit away from its reset value, or at it), `Pic::restore` either accepts
//! the state and `Pic::state` then returns it unchanged, or refuses it, for the reason
//! `PicState::validate` or the profile gives, and leaves the PIC unchanged. The PIC restored
//! into is itself in a random accepted state, in a random profile.

use proptest::prelude::*;
use vm_pic::{ChipState, InitState, Pic, PicState, Quirks, StateError};

/// A value of an integer type: the base (mostly, so that many states pass), any value, or the base with one bit flipped.
macro_rules! near {
    ($t:ty, $base:expr) => {{
        let base: $t = $base;
        prop_oneof![
            4 => Just(base),
            1 => any::<$t>(),
            1 => (0..<$t>::BITS).prop_map(move |bit| base ^ (1 << bit)),
        ]
        .boxed()
    }};
}

/// A flag: mostly the base, else any.
fn flag(base: bool) -> impl Strategy<Value = bool> {
    prop_oneof![2 => Just(base), 1 => any::<bool>()]
}

fn init_state() -> impl Strategy<Value = InitState> {
    prop_oneof![
        3 => Just(InitState::Ready),
        1 => Just(InitState::Icw2),
        1 => Just(InitState::Icw3),
        1 => Just(InitState::Icw4),
    ]
}

/// A chip state around `base`, every field drawn on its own.
fn chip(base: ChipState) -> BoxedStrategy<ChipState> {
    (
        (
            near!(u8, base.last_irr),
            near!(u8, base.irr),
            near!(u8, base.imr),
            near!(u8, base.isr),
            near!(u8, base.priority_add),
            near!(u8, base.irq_base),
        ),
        (
            flag(base.read_reg_select),
            flag(base.poll),
            flag(base.special_mask),
            init_state(),
            flag(base.auto_eoi),
            flag(base.rotate_on_auto_eoi),
        ),
        (
            flag(base.special_fully_nested_mode),
            flag(base.init4),
            near!(u8, base.elcr),
            near!(u8, base.elcr_mask),
            flag(base.single_mode),
            flag(base.ltim),
        ),
        near!(u8, base.icw3),
    )
        .prop_map(
            |(
                (last_irr, irr, imr, isr, priority_add, irq_base),
                (read_reg_select, poll, special_mask, init_state, auto_eoi, rotate_on_auto_eoi),
                (special_fully_nested_mode, init4, elcr, elcr_mask, single_mode, ltim),
                icw3,
            )| ChipState {
                last_irr,
                irr,
                imr,
                isr,
                priority_add,
                irq_base,
                read_reg_select,
                poll,
                special_mask,
                init_state,
                auto_eoi,
                rotate_on_auto_eoi,
                special_fully_nested_mode,
                init4,
                elcr,
                elcr_mask,
                single_mode,
                ltim,
                icw3,
            },
        )
        .boxed()
}

fn pic_state() -> impl Strategy<Value = PicState> {
    (
        chip(ChipState::MASTER_RESET),
        chip(ChipState::SLAVE_RESET),
        prop::array::uniform16(near!(u32, 0)),
        any::<bool>(),
    )
        .prop_map(|(master, slave, sources, output)| PicState { master, slave, sources, output })
}

fn profile() -> impl Strategy<Value = Quirks> {
    prop_oneof![Just(Quirks::DATASHEET), Just(Quirks::KVM), any::<u16>().prop_map(Quirks::from_bits_truncate),]
}

/// Why the profile refuses a state that validates: a mode it ignores is set, or an ICW3 other
/// than the PC's where it ignores ICW3.
fn refused_by_profile(state: &PicState, quirks: Quirks) -> bool {
    [(&state.master, 0x04), (&state.slave, 0x02)].iter().any(|(c, pc_icw3)| {
        (c.single_mode && quirks.contains(Quirks::SNGL_IGNORED))
            || (c.ltim && quirks.contains(Quirks::LTIM_IGNORED))
            || (c.icw3 != *pc_icw3 && quirks.contains(Quirks::ICW3_IGNORED))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    /// `Pic::restore` installs exactly the state it accepts, and a refusal changes nothing.
    #[test]
    fn pic_restore_installs_exactly_the_state_or_refuses_it(
        quirks in profile(),
        first in pic_state(),
        state in pic_state(),
    ) {
        let mut pic = Pic::new(quirks);
        // Start from another state the PIC accepts (if it does), so that "unchanged" means
        // something.
        let _ = pic.restore(&first);
        let before = pic.clone();
        match pic.restore(&state) {
            Ok(()) => {
                prop_assert_eq!(pic.state(), state);
                prop_assert_eq!(pic.quirks(), quirks);
                prop_assert_eq!(state.validate(), Ok(()));
                prop_assert!(!refused_by_profile(&state, quirks));
            }
            Err(error) => {
                prop_assert_eq!(&pic, &before, "a refused restore changed the PIC");
                match state.validate() {
                    Err(e) => prop_assert_eq!(error, e),
                    // The profile's refusal, or (where the cascade is a live wire) a master IRR2
                    // the guest could never read with the slave requesting.
                    Ok(()) if error == StateError::CascadeNotInIrr => {
                        prop_assert!(!quirks.contains(Quirks::CASCADE_LATCHED));
                        prop_assert_eq!(state.master.irr & 0x04, 0);
                    }
                    Ok(()) => {
                        prop_assert!(matches!(error, StateError::IgnoredMode { .. }), "{:?}", error);
                        prop_assert!(refused_by_profile(&state, quirks));
                    }
                }
            }
        }
    }
}
