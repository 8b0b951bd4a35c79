//! The APIC bus: delivers one interrupt message (from an IOAPIC, an MSI or an IPI) to the
//! local APICs it addresses, and tells the VMM which vCPUs took it, so it can kick them.
//!
//! Destination matching follows the SDM ("Determining IPI Destination"): physical (APIC ID,
//! 0xFF / 0xFFFF_FFFF broadcast), logical flat and cluster (xAPIC: LDR and DFR), logical
//! x2APIC cluster, the ICR shorthands; lowest-priority delivery picks one of the matching
//! APICs deterministically. [`BusQuirks::KVM`] reproduces how Linux KVM routes the same
//! message.
//!
//! ```
//! use vm_apic::bus::ApicBus;
//! use vm_apic::lapic::{LapicConfig, LocalApic};
//! use vm_apic::{Interrupt, Shorthand};
//!
//! let mut apics: Vec<LocalApic> = (0..4)
//!     .map(|id| LocalApic::new(LapicConfig { id, bsp: id == 0, ..LapicConfig::default() }))
//!     .collect();
//! for apic in &mut apics {
//!     let _ = apic.mmio_write(0xF0, &0x1FFu32.to_le_bytes(), 0); // software enable
//! }
//! // vCPU 0 sends vector 0x50 to all but itself.
//! let ipi = Interrupt { vector: 0x50, level: true, shorthand: Shorthand::AllExcludingSelf, ..Interrupt::default() };
//! let delivery = ApicBus::default().deliver(&mut apics, &ipi, Some(0)).unwrap();
//! assert!(delivery.accepted.iter().eq([1, 2, 3]));
//! assert_eq!(apics[2].pending_interrupt(), Some(0x50));
//! ```

use core::borrow::BorrowMut;

use bitflags::bitflags;

use crate::lapic::{ApicMode, LocalApic};
use crate::{DeliveryMode, DestinationMode, Interrupt, Shorthand};

/// The most APICs one [`ApicBus::deliver`] call addresses (KVM's default `KVM_MAX_VCPUS`).
pub const MAX_VCPUS: usize = 1024;

/// The xAPIC broadcast destination.
pub const XAPIC_BROADCAST: u32 = 0xFF;
/// The x2APIC broadcast destination.
pub const X2APIC_BROADCAST: u32 = 0xFFFF_FFFF;

bitflags! {
    /// Divergences of Linux KVM's interrupt routing (`kvm_irq_delivery_to_apic`,
    /// `kvm_apic_match_dest`) from the SDM.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    #[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
    pub struct BusQuirks: u8 {
        /// KVM's x2APIC broadcast quirk (on unless userspace sets
        /// `KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK`): an IOAPIC or MSI message to 0xFF reaches
        /// every x2APIC-mode APIC as a broadcast. SDM: to an x2APIC, 0xFF is APIC ID 255
        /// (physical) or cluster 0, processors 0–7 (logical).
        const X2APIC_BROADCAST_FROM_XAPIC_FORMAT = 1 << 0;
        /// KVM compares the whole destination against an xAPIC-mode APIC, which then also
        /// answers to its x2APIC ID when the destination is above 0xFF (the "hotplug hack") and
        /// matches no logical destination above 0xFF. Real xAPICs see the low 8 bits.
        const XAPIC_FULL_DESTINATION = 1 << 1;
        /// KVM delivers a lowest-priority message to the physical destination 0xFF as fixed, to
        /// every APIC (an x2APIC broadcast 0xFFFF_FFFF still goes to one). SDM: one APIC is
        /// chosen among all.
        const LOWEST_PRIORITY_BROADCAST_AS_FIXED = 1 << 2;
        /// KVM's routing (`kvm_irq_delivery_to_apic` with `vector_hashing`, on by default). A
        /// lowest-priority message goes to candidate `vector % count`: through the optimized
        /// map for a logical unicast or multicast (the candidates are the destination's logical
        /// ID bits in order, and a bit no software-enabled APIC holds drops the message),
        /// otherwise among the addressed software-enabled APICs in vCPU order. Also selects
        /// KVM's return value ([`Delivery::kvm_result`]). SDM profile: the focus processor (an
        /// APIC that already has the vector in IRR or ISR, when SVR focus checking is on),
        /// else the lowest arbitration priority (APR), ties to the lowest vCPU index.
        const VECTOR_HASHING = 1 << 3;
    }
}

impl BusQuirks {
    /// The SDM's routing.
    pub const SDM: BusQuirks = BusQuirks::empty();
    /// Linux KVM's routing.
    pub const KVM: BusQuirks = BusQuirks::all();
}

/// A set of vCPU indices 0 to [`MAX_VCPUS`] − 1.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct VcpuSet {
    bits: [u64; MAX_VCPUS / 64],
}

impl Default for VcpuSet {
    fn default() -> Self {
        VcpuSet { bits: [0; MAX_VCPUS / 64] }
    }
}

impl core::fmt::Debug for VcpuSet {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl VcpuSet {
    /// No vCPU.
    pub const EMPTY: VcpuSet = VcpuSet { bits: [0; MAX_VCPUS / 64] };

    /// Adds vCPU `index` (indices at or above [`MAX_VCPUS`] are ignored).
    #[inline(always)]
    pub fn insert(&mut self, index: usize) {
        if let Some(word) = self.bits.get_mut(index >> 6) {
            *word |= 1 << (index & 63);
        }
    }

    /// Removes vCPU `index`; returns whether it was in the set.
    #[inline]
    pub fn remove(&mut self, index: usize) -> bool {
        let bit = 1u64 << (index & 63);
        match self.bits.get_mut(index >> 6) {
            Some(word) if *word & bit != 0 => {
                *word &= !bit;
                true
            }
            _ => false,
        }
    }

    /// Whether vCPU `index` is in the set.
    #[inline]
    pub fn contains(&self, index: usize) -> bool {
        self.bits.get(index >> 6).is_some_and(|word| word & (1 << (index & 63)) != 0)
    }

    /// The number of vCPUs in the set.
    #[inline]
    pub fn len(&self) -> usize {
        self.bits.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether the set is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|&w| w == 0)
    }

    /// The vCPU indices in the set, lowest first.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.bits.iter().enumerate().flat_map(|(w, &bits)| {
            (0..64usize).filter(move |b| bits & (1 << b) != 0).map(move |b| (w << 6) | b)
        })
    }
}

/// What one delivery did.
#[must_use]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Delivery {
    /// The vCPUs whose APIC took the message: kick each one that is running or halted (but
    /// not the sender itself when it is the running vCPU).
    pub accepted: VcpuSet,
    /// No APIC matched the destination (for lowest priority: no software-enabled candidate).
    pub no_destination: bool,
    /// What KVM's `kvm_irq_delivery_to_apic` returns, with the KVM routing
    /// ([`BusQuirks::VECTOR_HASHING`]): the number of APICs that took the message; or, when
    /// none did, 0 from its fast path (a unicast or multicast destination resolved through its
    /// optimized APIC map) and -1 from its slow path (broadcasts, shorthands other than self,
    /// and everything while the map is invalid: aliased physical IDs, mixed logical modes, a
    /// logical ID that is not one bit) when it addressed no APIC. KVM's IOAPIC sets Remote IRR
    /// of a level entry unless this is 0 (see [`crate::ioapic::IoApic::not_accepted`]), and
    /// KVM_SIGNAL_MSI returns it. With the SDM routing: the count, or -1 when no APIC was
    /// addressed.
    pub kvm_result: i32,
}

impl Delivery {
    /// How many APICs took the message (what KVM_SIGNAL_MSI returns).
    #[inline]
    pub fn count(&self) -> usize {
        self.accepted.len()
    }
}

/// Why a delivery was refused. Only the VMM's configuration can cause it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BusError {
    /// More APICs than [`MAX_VCPUS`] were passed.
    TooManyApics(usize),
    /// The source index of an IPI is not one of the APICs passed.
    NoSuchSource(usize),
}

impl core::fmt::Display for BusError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BusError::TooManyApics(n) => write!(f, "{n} APICs on one bus (at most {MAX_VCPUS})"),
            BusError::NoSuchSource(i) => write!(f, "IPI source {i} is not on the bus"),
        }
    }
}

impl core::error::Error for BusError {}

/// The APIC bus with its routing profile. Stateless: one value can serve every delivery.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ApicBus {
    /// The routing profile.
    pub quirks: BusQuirks,
}

impl ApicBus {
    /// A bus with routing profile `quirks`.
    pub const fn new(quirks: BusQuirks) -> Self {
        ApicBus { quirks }
    }

    /// Delivers `irq` to the APICs of `apics` (indexed by vCPU) it addresses. `source` is the
    /// index of the sending APIC for an IPI (it resolves the shorthands) and `None` for an
    /// IOAPIC message or an MSI.
    ///
    /// Each addressed APIC is offered the message with [`LocalApic::accept`]; a
    /// lowest-priority message (or an MSI with the redirection hint) goes to one of them,
    /// chosen as [`BusQuirks::VECTOR_HASHING`] describes. A globally disabled APIC is never
    /// addressed.
    pub fn deliver<A: BorrowMut<LocalApic>>(
        &self,
        apics: &mut [A],
        irq: &Interrupt,
        source: Option<usize>,
    ) -> Result<Delivery, BusError> {
        if apics.len() > MAX_VCPUS {
            return Err(BusError::TooManyApics(apics.len()));
        }
        if let Some(s) = source {
            if s >= apics.len() {
                return Err(BusError::NoSuchSource(s));
            }
        }
        if self.quirks.contains(BusQuirks::VECTOR_HASHING) {
            return Ok(self.deliver_kvm(apics, irq, source));
        }
        let mut delivery = Delivery::default();
        let lowest = matches!(irq.delivery_mode, DeliveryMode::LowestPriority) || irq.redirection_hint;
        if lowest {
            let target = self.lowest_priority_target(apics, irq, source);
            if let Some(apic) = target.and_then(|t| apics.get_mut(t)) {
                if apic.borrow_mut().accept(irq) {
                    if let Some(t) = target {
                        delivery.accepted.insert(t);
                    }
                }
            }
            delivery.no_destination = target.is_none();
        } else {
            delivery.no_destination = !self.deliver_to_matching(apics, irq, source, &mut delivery.accepted);
        }
        delivery.kvm_result = if delivery.no_destination { -1 } else { delivery.count() as i32 };
        Ok(delivery)
    }

    /// Whether KVM's `kvm_irq_delivery_to_apic` takes its fast path (the optimized map) for
    /// `irq`: the map is valid, and the message is a self IPI or a non-broadcast destination
    /// (a logical one only while the logical map is usable).
    fn kvm_fast_path<A: core::borrow::Borrow<LocalApic>>(
        &self,
        map: &KvmMap,
        apics: &[A],
        irq: &Interrupt,
        source: Option<usize>,
    ) -> bool {
        let source_x2apic =
            source.and_then(|s| apics.get(s)).is_some_and(|a| a.borrow().mode() == ApicMode::X2Apic);
        let broadcast = if self.quirks.contains(BusQuirks::X2APIC_BROADCAST_FROM_XAPIC_FORMAT) {
            irq.destination == if source_x2apic { X2APIC_BROADCAST } else { XAPIC_BROADCAST }
        } else {
            (irq.destination == XAPIC_BROADCAST && map.logical != LogicalMap::X2Apic)
                || irq.destination == X2APIC_BROADCAST
        };
        map.physical_valid
            && match irq.shorthand {
                Shorthand::ToSelf => true,
                Shorthand::None => {
                    !broadcast
                        && (irq.destination_mode == DestinationMode::Physical
                            || map.logical != LogicalMap::Disabled)
                }
                _ => false,
            }
    }

    /// Offers `irq` to every APIC it addresses; returns whether any was addressed.
    fn deliver_to_matching<A: BorrowMut<LocalApic>>(
        &self,
        apics: &mut [A],
        irq: &Interrupt,
        source: Option<usize>,
        accepted: &mut VcpuSet,
    ) -> bool {
        let mut matched = false;
        for (index, apic) in apics.iter_mut().enumerate() {
            let apic = apic.borrow_mut();
            if !self.addresses(apic, index, irq, source) {
                continue;
            }
            matched = true;
            if apic.accept(irq) {
                accepted.insert(index);
            }
        }
        matched
    }

    /// KVM's `kvm_irq_delivery_to_apic`: its fast path through the optimized APIC map (unicast
    /// and multicast destinations, while the map is valid), else its slow path over every vCPU,
    /// with vector hashing for lowest priority and KVM's return value.
    fn deliver_kvm<A: BorrowMut<LocalApic>>(
        &self,
        apics: &mut [A],
        irq: &Interrupt,
        source: Option<usize>,
    ) -> Delivery {
        let mut delivery = Delivery::default();
        let lowest = matches!(irq.delivery_mode, DeliveryMode::LowestPriority) || irq.redirection_hint;
        if !lowest {
            // Both paths address the same APICs; they differ only in what a miss returns, so
            // the map (quadratic in the vCPUs) is built only then.
            let matched = self.deliver_to_matching(apics, irq, source, &mut delivery.accepted);
            delivery.no_destination = !matched;
            delivery.kvm_result = if matched {
                delivery.count() as i32
            } else if self.kvm_fast_path(&KvmMap::of(apics), apics, irq, source) {
                0
            } else {
                -1
            };
            return delivery;
        }
        let views: &[A] = apics;
        let map = KvmMap::of(views);
        let fast = self.kvm_fast_path(&map, views, irq, source);
        if fast {
            let target =
                if irq.shorthand == Shorthand::None && irq.destination_mode == DestinationMode::Logical {
                    map.hashed_logical_target(views, irq)
                } else {
                    // A physical unicast or self: the one addressed APIC, whatever its state.
                    (0..views.len())
                        .find(|&i| views.get(i).is_some_and(|a| self.addresses(a.borrow(), i, irq, source)))
                };
            match target {
                Some(index) => {
                    if apics.get_mut(index).is_some_and(|a| a.borrow_mut().accept(irq)) {
                        delivery.accepted.insert(index);
                    }
                }
                None => delivery.no_destination = true,
            }
            // The fast path answers 0 when nobody took the message.
            delivery.kvm_result = delivery.count() as i32;
            return delivery;
        }
        // The slow path: -1 until an APIC is addressed. The physical destination 0xFF goes to
        // every APIC as fixed.
        let physical_broadcast_fixed = irq.destination_mode == DestinationMode::Physical
            && irq.destination == XAPIC_BROADCAST
            && self.quirks.contains(BusQuirks::LOWEST_PRIORITY_BROADCAST_AS_FIXED);
        if !physical_broadcast_fixed {
            let target = self.lowest_priority_target(views, irq, source);
            if let Some(index) = target {
                if apics.get_mut(index).is_some_and(|a| a.borrow_mut().accept(irq)) {
                    delivery.accepted.insert(index);
                }
            }
            delivery.no_destination = target.is_none();
        } else {
            delivery.no_destination = !self.deliver_to_matching(apics, irq, source, &mut delivery.accepted);
        }
        delivery.kvm_result = if delivery.no_destination { -1 } else { delivery.count() as i32 };
        delivery
    }

    /// The vCPUs `irq` addresses, without delivering it (for EOI-exit bitmaps and posted
    /// interrupts: which vCPU would this route reach?). A lowest-priority message is reported
    /// with every candidate.
    pub fn destinations<A: core::borrow::Borrow<LocalApic>>(
        &self,
        apics: &[A],
        irq: &Interrupt,
        source: Option<usize>,
    ) -> VcpuSet {
        let mut set = VcpuSet::default();
        for (index, apic) in apics.iter().enumerate().take(MAX_VCPUS) {
            if self.addresses(apic.borrow(), index, irq, source) {
                set.insert(index);
            }
        }
        set
    }

    /// Whether `irq` addresses APIC `apic` (vCPU `index`).
    #[inline]
    pub fn addresses(&self, apic: &LocalApic, index: usize, irq: &Interrupt, source: Option<usize>) -> bool {
        if !apic.is_enabled() {
            return false;
        }
        match irq.shorthand {
            Shorthand::None => self.matches_destination(apic, irq, source.is_some()),
            Shorthand::ToSelf => source == Some(index),
            Shorthand::AllIncludingSelf => true,
            Shorthand::AllExcludingSelf => source != Some(index),
        }
    }

    /// Destination-field matching (no shorthand) of `irq` against `apic`.
    #[inline]
    fn matches_destination(&self, apic: &LocalApic, irq: &Interrupt, ipi: bool) -> bool {
        let x2apic = apic.mode() == ApicMode::X2Apic;
        let mut mda = irq.destination;
        if x2apic {
            if !ipi
                && mda == XAPIC_BROADCAST
                && self.quirks.contains(BusQuirks::X2APIC_BROADCAST_FROM_XAPIC_FORMAT)
            {
                mda = X2APIC_BROADCAST;
            }
            if mda == X2APIC_BROADCAST {
                return true;
            }
            return match irq.destination_mode {
                DestinationMode::Physical => mda == apic.id(),
                DestinationMode::Logical => {
                    let ldr = apic.ldr();
                    ldr >> 16 == mda >> 16 && ldr & mda & 0xFFFF != 0
                }
            };
        }
        let full = self.quirks.contains(BusQuirks::XAPIC_FULL_DESTINATION);
        if !full {
            // An xAPIC sees the low 8 bits of the destination.
            mda &= 0xFF;
        }
        if mda == XAPIC_BROADCAST {
            return true;
        }
        match irq.destination_mode {
            DestinationMode::Physical => {
                if full && mda > 0xFF {
                    mda == apic.config().id
                } else {
                    mda == apic.id()
                }
            }
            DestinationMode::Logical => {
                let logical_id = apic.ldr() >> 24;
                match apic.dfr() >> 28 {
                    0xF => logical_id & mda != 0,
                    0x0 => logical_id >> 4 == mda >> 4 && logical_id & mda & 0xF != 0,
                    _ => false,
                }
            }
        }
    }

    /// The one APIC a lowest-priority message goes to, among the addressed software-enabled
    /// APICs.
    fn lowest_priority_target<A: BorrowMut<LocalApic>>(
        &self,
        apics: &[A],
        irq: &Interrupt,
        source: Option<usize>,
    ) -> Option<usize> {
        let candidates = || {
            apics.iter().enumerate().filter(move |(index, apic)| {
                let apic: &LocalApic = (*apic).borrow();
                apic.is_software_enabled() && self.addresses(apic, *index, irq, source)
            })
        };
        if self.quirks.contains(BusQuirks::VECTOR_HASHING) {
            let count = candidates().count();
            let nth = usize::from(irq.vector).checked_rem(count)?;
            return candidates().nth(nth).map(|(index, _)| index);
        }
        // The focus processor: already requesting or servicing the vector.
        let focus = candidates().find(|(_, apic)| {
            let apic: &LocalApic = (*apic).borrow();
            let state = apic.state();
            state.svr & crate::lapic::regs::Svr::FOCUS_DISABLED.bits() == 0
                && (state.irr.contains(irq.vector) || state.isr.contains(irq.vector))
        });
        if let Some((index, _)) = focus {
            return Some(index);
        }
        candidates().min_by_key(|(index, apic)| ((*apic).borrow().apr(), *index)).map(|(index, _)| index)
    }
}

/// The logical half of KVM's optimized APIC map (`kvm_recalculate_logical_map`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LogicalMap {
    /// No software-enabled APIC has a logical ID.
    SwDisabled,
    /// x2APIC clusters (the physical map read 16 IDs at a time).
    X2Apic,
    /// xAPIC flat model: one cluster of 8 bits.
    Flat,
    /// xAPIC cluster model: 16 clusters of 4 bits.
    Cluster,
    /// Mixed models, or a logical ID of several bits or shared by two APICs.
    Disabled,
}

/// What KVM's optimized APIC map makes of a set of APICs (`kvm_recalculate_apic_map`).
struct KvmMap {
    /// No two enabled APICs share a physical ID (else KVM has no map at all).
    physical_valid: bool,
    logical: LogicalMap,
    /// The largest physical ID, at least 255 (`max_apic_id`).
    max_id: u32,
}

impl KvmMap {
    fn physical_id(apic: &LocalApic) -> u32 {
        apic.id()
    }

    fn of<A: core::borrow::Borrow<LocalApic>>(apics: &[A]) -> KvmMap {
        let enabled = || apics.iter().map(|a| a.borrow()).filter(|a| a.is_enabled());
        let physical_valid = enabled().enumerate().all(|(i, a)| {
            enabled().skip(i.saturating_add(1)).all(|b| Self::physical_id(a) != Self::physical_id(b))
        });
        let max_id = enabled().map(|a| a.config().id).fold(255, u32::max);
        let mut logical = LogicalMap::SwDisabled;
        let mut slots = [0u8; 16];
        for apic in enabled().filter(|a| a.is_software_enabled() && a.ldr() != 0) {
            let mode = if apic.mode() == ApicMode::X2Apic {
                LogicalMap::X2Apic
            } else if apic.dfr() == 0xFFFF_FFFF {
                LogicalMap::Flat
            } else {
                LogicalMap::Cluster
            };
            if logical == LogicalMap::SwDisabled {
                logical = mode;
            } else if logical != mode {
                logical = LogicalMap::Disabled;
                break;
            }
            let id = apic.ldr() >> 24;
            let (cluster, mask) = match mode {
                LogicalMap::Flat => (0, id),
                LogicalMap::Cluster => ((id >> 4) as usize, id & 0xF),
                _ => continue,
            };
            if mask == 0 {
                continue;
            }
            let Some(slot) = slots.get_mut(cluster) else { continue };
            if !mask.is_power_of_two() || *slot & (mask as u8) != 0 {
                logical = LogicalMap::Disabled;
                break;
            }
            *slot |= mask as u8;
        }
        KvmMap { physical_valid, logical, max_id }
    }

    /// The vCPU a logical lowest-priority message picks through the map, or `None` if the
    /// chosen slot is empty or the destination names none (KVM drops the message).
    fn hashed_logical_target<A: core::borrow::Borrow<LocalApic>>(
        &self,
        apics: &[A],
        irq: &Interrupt,
    ) -> Option<usize> {
        let dest = irq.destination;
        // The destination's cluster mask, and the logical ID of slot `bit`.
        let (mask, cluster) = match self.logical {
            LogicalMap::X2Apic => {
                let offset = (dest >> 16).saturating_mul(16);
                if offset > self.max_id {
                    (0, offset)
                } else {
                    // offset ≤ max_id, and 1 ≤ size ≤ 16.
                    let size = self.max_id.wrapping_sub(offset).saturating_add(1).min(16);
                    (dest & (0xFFFF >> 16u32.wrapping_sub(size)), offset)
                }
            }
            LogicalMap::Flat => (dest & 0xFF, 0),
            LogicalMap::Cluster => (dest & 0xF, (dest >> 4) & 0xF),
            _ => (0, 0),
        };
        let count = mask.count_ones();
        let nth = u32::from(irq.vector).checked_rem(count)?;
        let bit = (0..16u32).filter(|b| mask & (1 << b) != 0).nth(nth as usize)?;
        apics.iter().position(|a| {
            let a = a.borrow();
            match self.logical {
                // The physical map's entry for x2APIC ID `cluster + bit`.
                LogicalMap::X2Apic => a.is_enabled() && Self::physical_id(a) == cluster.saturating_add(bit),
                LogicalMap::Flat => a.is_software_enabled() && a.ldr() >> 24 == 1 << bit,
                _ => a.is_software_enabled() && a.ldr() >> 24 == (cluster << 4 | 1 << bit),
            }
        })
    }
}

#[cfg(test)]
mod tests;
