//! "A restore installs exactly these values or is refused", for each state type of the crate:
//! for random [`LocalApicState`]s and [`IoApicState`]s (every field arbitrary, a bit away
//! from a state the model produces, or at it), `restore` either accepts the state and `state()`
//! then returns it unchanged, or refuses it for the reason `validate` gives and leaves the
//! model unchanged. The model restored into is itself in a random accepted state, under a
//! random configuration.

use proptest::prelude::*;
use vm_apic::ioapic::{self, IoApic, IoApicConfig, IoApicState, RedirectionEntry, Version};
use vm_apic::lapic::{
    self, regs::ApicBase, x2apic_ldr, LapicConfig, LocalApic, LocalApicState, PendingEvents, TimerState,
};
use vm_apic::VectorSet;

/// A value of an integer type: the base (mostly, so that a good share of states with some
/// twenty constrained fields pass), any value, or the base with one bit flipped.
macro_rules! near {
    ($t:ty, $base:expr) => {{
        let base: $t = $base;
        prop_oneof![
            20 => Just(base),
            1 => any::<$t>(),
            1 => (0..<$t>::BITS).prop_map(move |bit| base ^ (1 << bit)),
        ]
        .boxed()
    }};
}

/// A flag: mostly the base, else any.
fn flag(base: bool) -> BoxedStrategy<bool> {
    prop_oneof![6 => Just(base), 1 => any::<bool>()].boxed()
}

/// An optional value: mostly the base, else none or any value.
fn option<T: Arbitrary + Clone + core::fmt::Debug + 'static>(base: Option<T>) -> BoxedStrategy<Option<T>> {
    prop_oneof![8 => Just(base), 1 => Just(None), 1 => any::<T>().prop_map(Some)].boxed()
}

fn vector_set(base: VectorSet) -> BoxedStrategy<VectorSet> {
    (near!(u64, base.0[0]), near!(u64, base.0[1]), near!(u64, base.0[2]), near!(u64, base.0[3]))
        .prop_map(|(a, b, c, d)| VectorSet([a, b, c, d]))
        .boxed()
}

// ----- local APIC -------------------------------------------------------------------------------

fn lapic_config() -> impl Strategy<Value = LapicConfig> {
    (
        prop_oneof![3 => 0u32..4, 1 => any::<u32>()],
        any::<bool>(),
        prop_oneof![
            Just(lapic::Quirks::SDM),
            Just(lapic::Quirks::KVM),
            any::<u32>().prop_map(lapic::Quirks::from_bits_truncate),
        ],
        (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
        prop_oneof![Just(46u8), 36u8..=52],
    )
        .prop_map(
            |(id, bsp, quirks, (x2apic, tsc_deadline, cmci, directed_eoi, smm), phys_addr_bits)| {
                LapicConfig {
                    id,
                    bsp,
                    quirks,
                    x2apic,
                    tsc_deadline,
                    cmci,
                    directed_eoi,
                    smm,
                    phys_addr_bits,
                    ..LapicConfig::default()
                }
            },
        )
}

/// A state the model produces under `config` to start from: the power-on state, or the same
/// in x2APIC mode (with the derived LDR) when the configuration has x2APIC.
fn lapic_base(config: &LapicConfig, x2apic_mode: bool) -> LocalApicState {
    let mut state = LocalApicState::power_on(config);
    if x2apic_mode && config.x2apic {
        state.apic_base |= ApicBase::EXTD.bits();
        state.ldr = x2apic_ldr(config.id);
    }
    state
}

fn lapic_timer(base: TimerState) -> BoxedStrategy<TimerState> {
    (
        near!(u32, base.initial_count),
        near!(u32, base.divide_config),
        option(base.expiry),
        near!(u64, base.tsc_deadline),
    )
        .prop_map(|(initial_count, divide_config, expiry, tsc_deadline)| TimerState {
            initial_count,
            divide_config,
            expiry,
            tsc_deadline,
        })
        .boxed()
}

fn events(base: PendingEvents) -> BoxedStrategy<PendingEvents> {
    (near!(u8, base.nmi), flag(base.smi), flag(base.init), option(base.sipi), flag(base.extint))
        .prop_map(|(nmi, smi, init, sipi, extint)| PendingEvents { nmi, smi, init, sipi, extint })
        .boxed()
}

fn lapic_state(base: LocalApicState) -> BoxedStrategy<LocalApicState> {
    let lvt = base.lvt;
    (
        (
            near!(u64, base.apic_base),
            near!(u8, base.xapic_id),
            near!(u8, base.tpr),
            near!(u32, base.ldr),
            near!(u32, base.dfr),
            near!(u32, base.svr),
        ),
        (vector_set(base.isr), vector_set(base.tmr), vector_set(base.irr)),
        (near!(u32, base.esr), near!(u32, base.esr_pending), near!(u64, base.icr)),
        (
            near!(u32, lvt[0]),
            near!(u32, lvt[1]),
            near!(u32, lvt[2]),
            near!(u32, lvt[3]),
            near!(u32, lvt[4]),
            near!(u32, lvt[5]),
            near!(u32, lvt[6]),
        ),
        (lapic_timer(base.timer), flag(base.lint[0]), flag(base.lint[1]), events(base.events)),
        flag(base.wait_for_sipi),
    )
        .prop_map(
            |(
                (apic_base, xapic_id, tpr, ldr, dfr, svr),
                (isr, tmr, irr),
                (esr, esr_pending, icr),
                (l0, l1, l2, l3, l4, l5, l6),
                (timer, lint0, lint1, events),
                wait_for_sipi,
            )| LocalApicState {
                apic_base,
                xapic_id,
                tpr,
                ldr,
                dfr,
                svr,
                isr,
                tmr,
                irr,
                esr,
                esr_pending,
                icr,
                lvt: [l0, l1, l2, l3, l4, l5, l6],
                timer,
                lint: [lint0, lint1],
                events,
                wait_for_sipi,
            },
        )
        .boxed()
}

/// A configuration and two states around states it produces.
fn lapic_case() -> impl Strategy<Value = (LapicConfig, LocalApicState, LocalApicState)> {
    (lapic_config(), any::<bool>(), any::<bool>()).prop_flat_map(|(config, x2a, x2b)| {
        (Just(config), lapic_state(lapic_base(&config, x2a)), lapic_state(lapic_base(&config, x2b)))
    })
}

// ----- IOAPIC -------------------------------------------------------------------------------------

fn ioapic_config() -> impl Strategy<Value = IoApicConfig> {
    (
        prop_oneof![Just(Version::V11), Just(Version::V20)],
        prop_oneof![
            Just(ioapic::Quirks::DATASHEET),
            Just(ioapic::Quirks::KVM),
            any::<u16>().prop_map(ioapic::Quirks::from_bits_truncate),
        ],
    )
        .prop_map(|(version, quirks)| IoApicConfig { version, quirks, ..IoApicConfig::DATASHEET })
}

/// A redirection entry: power-on (masked edge), a programmed one (level or edge, masked or
/// not, Remote IRR set or clear), either with a bit flipped, or anything.
fn entry() -> BoxedStrategy<RedirectionEntry> {
    let programmed = (any::<u8>(), any::<bool>(), any::<bool>(), any::<bool>(), any::<u8>()).prop_map(
        |(vector, level, masked, remote_irr, dest)| {
            let mut value = u64::from(vector) | u64::from(dest) << 56;
            if level {
                value |= 1 << 15;
                if remote_irr {
                    value |= 1 << 14;
                }
            }
            if masked {
                value |= 1 << 16;
            }
            value
        },
    );
    prop_oneof![
        6 => Just(RedirectionEntry::POWER_ON.0),
        6 => programmed.clone(),
        1 => programmed.prop_flat_map(|value| near!(u64, value)),
        1 => any::<u64>(),
    ]
    .prop_map(RedirectionEntry)
    .boxed()
}

fn ioapic_state() -> BoxedStrategy<IoApicState> {
    let base = IoApicState::POWER_ON;
    (
        near!(u64, base.base_address),
        near!(u8, base.ioregsel),
        prop_oneof![3 => 0u8..16, 1 => any::<u8>()],
        prop::array::uniform24(entry()),
        prop::array::uniform24(prop_oneof![3 => Just(0u32), 1 => any::<u32>()]),
        prop_oneof![2 => 0u32..1 << 24, 1 => any::<u32>()],
    )
        .prop_map(|(base_address, ioregsel, id, redirtbl, sources, irr_delivered)| IoApicState {
            base_address,
            ioregsel,
            id,
            redirtbl,
            sources,
            irr_delivered,
        })
        .boxed()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    /// `LocalApic::restore` installs exactly the state it accepts, and a refusal changes
    /// nothing and gives `LocalApicState::validate`'s reason.
    #[test]
    fn lapic_restore_installs_exactly_the_state_or_refuses_it((config, first, state) in lapic_case()) {
        let mut apic = LocalApic::new(config);
        // Start from another accepted state (if the first is), so that "unchanged" means
        // something.
        let _ = apic.restore(&first);
        let before = apic.clone();
        match apic.restore(&state) {
            Ok(()) => {
                prop_assert_eq!(apic.state(), state);
                prop_assert_eq!(apic.config(), &config);
                prop_assert_eq!(state.validate(&config), Ok(()));
            }
            Err(error) => {
                prop_assert_eq!(&apic, &before, "a refused restore changed the APIC");
                prop_assert_eq!(state.validate(&config), Err(error));
            }
        }
    }

    /// `IoApic::restore` installs exactly the state it accepts, and a refusal changes nothing
    /// and gives `IoApicState::validate`'s reason.
    #[test]
    fn ioapic_restore_installs_exactly_the_state_or_refuses_it(
        config in ioapic_config(),
        first in ioapic_state(),
        state in ioapic_state(),
    ) {
        let mut ioapic = IoApic::new(config);
        let _ = ioapic.restore(&first);
        let before = ioapic.clone();
        match ioapic.restore(&state) {
            Ok(()) => {
                prop_assert_eq!(ioapic.state(), state);
                prop_assert_eq!(ioapic.config(), config);
                prop_assert_eq!(state.validate(), Ok(()));
            }
            Err(error) => {
                prop_assert_eq!(&ioapic, &before, "a refused restore changed the IOAPIC");
                prop_assert_eq!(state.validate(), Err(error));
            }
        }
    }
}
