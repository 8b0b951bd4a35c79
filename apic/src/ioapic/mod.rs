//! The I/O APIC (Intel 82093AA; version 0x20 adds the EOI register), as a plain-data model
//! for virtual machine monitors.
//!
//! * MMIO: IOREGSEL at +0x00, IOWIN at +0x10 and, on version 0x20, EOIR at +0x40
//!   ([`IoApic::mmio_read`], [`IoApic::mmio_write`]), total over every offset and width.
//! * Registers: IOAPICID (bits 27:24 R/W), IOAPICVER (0x11 or 0x20, 24 entries), IOAPICARB
//!   and 24 redirection entries with every field stored ([`RedirectionEntry`]).
//! * Pins: [`IoApic::set_irq`] / [`IoApic::set_irq_source`] (lines shared by several
//!   sources), edge and level triggering, Remote IRR, EOI by LAPIC broadcast
//!   ([`IoApic::end_of_interrupt`]), by EOIR, or by Linux's level→edge trick.
//! * Interrupt-storm mitigation as KVM and QEMU do it (see [`IoApicConfig::storm_threshold`]).
//! * Output: MSI-format messages ([`MsiMessage`]) built from the entry, returned, never sent.
//! * Two behaviour profiles: the datasheet ([`Quirks::DATASHEET`], the default) and Linux
//!   KVM's in-kernel IOAPIC ([`Quirks::KVM`]), each divergence a named [`Quirks`] flag.
//! * [`IoApicState`] is plain data with a validating [`IoApic::restore`]; feature `serde`
//!   derives serialization and feature `kvm` converts to and from `kvm_ioapic_state`.
//! * KVM's RTC (GSI 8) EOI tracking ([`Quirks::RTC_EOI_TRACKING`]): the VMM passes back the
//!   bus's [`Delivery`] of the RTC message ([`IoApic::rtc_delivered`]) and each vCPU's EOIs
//!   ([`IoApic::rtc_eoi`]); an RTC assert while a destination has not EOI'd is coalesced.
//!
//! # How outputs are returned
//!
//! A line change can deliver at most its own pin, so [`IoApic::set_irq`] returns that one
//! message directly ([`LineResult::message`]). Operations that can deliver several pins (an
//! EOI, an EOIR or redirection-entry write, [`IoApic::deliver_deferred`],
//! [`IoApic::set_irqchip`]) return [`Effects`] with a 24-bit [`PinSet`] of the pins to
//! deliver, lowest pin first; the VMM reads each pin's message with [`IoApic::message`]
//! before its next call into the IOAPIC. This keeps every return value a few registers wide
//! (no array of 24 messages is built or copied on the EOI path), and a message is only a few
//! shifts of the entry, so computing it on demand costs less than storing it.
//!
//! # Polarity
//!
//! The inputs are *logical*: `set_irq(pin, true)` means "the interrupt is requested",
//! whatever the electrical level. The polarity bit (INTPOL) is stored and read back but not
//! applied. Every emulator does this (KVM 100943c54e09 "kvm: x86: ignore ioapic polarity",
//! QEMU, crosvm, bhyve, Xen): the VMM's devices signal "asserted", not a voltage, and guests
//! program polarity from firmware tables describing board wiring that does not exist (OS X
//! programs active-low for lines QEMU drives active-high), so honouring the bit would invert
//! working lines.
//!
//! # Not modelled
//!
//! * Delivery status: a message is handed to the VMM at once, so the bit always reads 0.
//! * The ICH IRQ pin-assertion register (+0x20): no emulator implements it.
//! * Interrupt-remapping format entries (bit 48): the entry is turned into a compatibility
//!   format message as is; remapping is an IOMMU's business.
//! * ExtINT: the message carries delivery mode 7; the vector comes from the 8259's
//!   acknowledge, which the VMM performs.
//!
//! ```
//! use vm_apic::ioapic::{regs::*, IoApic, IoApicConfig};
//!
//! let mut ioapic = IoApic::new(IoApicConfig::default());
//! // Pin 4: vector 0x34, fixed, physical destination APIC 1, edge, unmasked.
//! let _ = ioapic.mmio_write(IOREGSEL, &u32::from(IOREDTBL + 8).to_le_bytes());
//! let _ = ioapic.mmio_write(IOWIN, &0x0000_0034u32.to_le_bytes());
//! let _ = ioapic.mmio_write(IOREGSEL, &u32::from(IOREDTBL + 9).to_le_bytes());
//! let _ = ioapic.mmio_write(IOWIN, &0x0100_0000u32.to_le_bytes());
//! let result = ioapic.set_irq(4, true).unwrap();
//! let msi = result.message.unwrap();
//! assert_eq!((msi.address, msi.data), (0xFEE0_1000, 0x4034));
//! ```

#[cfg(all(feature = "kvm", target_arch = "x86_64", target_os = "linux"))]
pub mod kvm;
mod quirks;
pub mod regs;
mod state;

pub use quirks::Quirks;
pub use regs::{RedirectionEntry, Version};
pub use state::{IoApicState, StateError};

use crate::bus::{ApicBus, Delivery, VcpuSet, MAX_VCPUS};
use crate::lapic::LocalApic;
use crate::msi::DeliveryMode;
use crate::msi::{
    Interrupt, MsiFormat, MsiMessage, Shorthand, MSI_ADDRESS_BASE, MSI_ADDR_DEST_SHIFT,
    MSI_ADDR_EXT_DEST_SHIFT, MSI_DATA_LEVEL_ASSERT,
};
use crate::VectorSet;
use regs::*;
use state::{PINS, PIN_BITS};

/// How an [`IoApic`] is built: the version it reports, its behaviour profile, the
/// interrupt-storm throttle and the MSI format of its messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct IoApicConfig {
    /// IOAPICVER bits 7:0; [`Version::V20`] adds the EOI register.
    pub version: Version,
    /// The behaviour profile.
    pub quirks: Quirks,
    /// Interrupt-storm throttle: after this many successive EOIs of a pin that find its line
    /// still asserted and the entry unmasked, the next re-delivery is not made at once; the
    /// EOI returns [`Effects::deferred`] and [`Effects::recheck_after_ns`] and the VMM calls
    /// [`IoApic::deliver_deferred`] after that delay. An EOI that finds the line deasserted
    /// or the entry masked restarts the count. 0 turns the throttle off. Default 10 000
    /// (KVM's `IOAPIC_SUCCESSIVE_IRQ_MAX_COUNT`, QEMU's `SUCCESSIVE_IRQ_MAX_COUNT`).
    ///
    /// Why: real hardware takes bus time between the EOI and the re-sent message, so a guest
    /// whose handler EOIs before it silences its device still makes progress; an emulator
    /// re-injects instantly and such a guest livelocks (Hyper-V 2016 on q35 did).
    pub storm_threshold: u32,
    /// The delay the VMM waits before calling [`IoApic::deliver_deferred`], in nanoseconds.
    /// Default 10 ms (KVM's `HZ / 100`, QEMU's `NANOSECONDS_PER_SECOND / 100`).
    pub storm_delay_ns: u64,
    /// The MSI address format: with [`MsiFormat::extended_destination`], entry bits 55:49
    /// are destination bits 14:8 and go to MSI address bits 11:5.
    pub msi_format: MsiFormat,
}

impl IoApicConfig {
    /// The datasheet profile: version 0x11, no quirks, KVM's storm defaults.
    pub const DATASHEET: IoApicConfig = IoApicConfig {
        version: Version::V11,
        quirks: Quirks::DATASHEET,
        storm_threshold: 10_000,
        storm_delay_ns: 10_000_000,
        msi_format: MsiFormat { extended_destination: false, x2apic_address_high: false },
    };
    /// KVM's in-kernel IOAPIC: version 0x11, [`Quirks::KVM`], its storm constants.
    pub const KVM: IoApicConfig = IoApicConfig { quirks: Quirks::KVM, ..IoApicConfig::DATASHEET };
}

impl Default for IoApicConfig {
    fn default() -> Self {
        IoApicConfig::DATASHEET
    }
}

/// What a line change did: KVM_IRQ_LINE_STATUS's answer, in more detail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LineStatus {
    /// An assert on a masked entry: not delivered (KVM: −1). A level line is delivered
    /// when unmasked if still asserted; an edge is lost.
    Masked,
    /// An assert of a level-triggered entry whose Remote IRR is set: the interrupt is in
    /// service and this assert merges into it (KVM: −1).
    InService,
    /// An assert of an edge-triggered line that was already high: no edge, nothing sent
    /// (KVM: 0, "coalesced"; a VMM counts lost timer ticks with it). With
    /// [`Quirks::RTC_EOI_TRACKING`] also any assert of pin 8 while the previous RTC
    /// interrupt awaits an EOI ([`IoApic::rtc_pending_eoi`]).
    Coalesced,
    /// The message was produced ([`LineResult::message`]) for the VMM to deliver (KVM: the
    /// number of LAPICs that took it, which the bus knows: [`Delivery::kvm_result`], which
    /// [`IoApic::rtc_delivered`] also returns).
    Delivered,
    /// A deassert (KVM: 1).
    Deasserted,
}

impl LineStatus {
    /// The value KVM_IRQ_LINE_STATUS reports for it (for [`LineStatus::Delivered`] KVM
    /// reports how many LAPICs accepted; 1 is returned here).
    #[inline]
    pub const fn kvm(self) -> i32 {
        match self {
            LineStatus::Masked | LineStatus::InService => -1,
            LineStatus::Coalesced => 0,
            LineStatus::Delivered | LineStatus::Deasserted => 1,
        }
    }
}

/// The result of a line change: its status and the message to deliver, if any.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LineResult {
    /// What the IOAPIC made of the change.
    pub status: LineStatus,
    /// The message to deliver (exactly when `status` is [`LineStatus::Delivered`]).
    pub message: Option<MsiMessage>,
}

impl LineResult {
    const fn status(status: LineStatus) -> Self {
        LineResult { status, message: None }
    }
}

/// Why a line change was refused. Pin and source numbers come from the VMM, not the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LineError {
    /// Pins are 0–23.
    NoSuchPin(u8),
    /// Sources are 0–31.
    NoSuchSource(u8),
}

impl core::fmt::Display for LineError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LineError::NoSuchPin(pin) => write!(f, "IOAPIC pin {pin} does not exist (0-23)"),
            LineError::NoSuchSource(s) => write!(f, "IOAPIC source {s} does not exist (0-31)"),
        }
    }
}

impl core::error::Error for LineError {}

/// A guest access the IOAPIC does not decode as the datasheet describes. It still got the
/// documented answer; the value is for the VMM to log or count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AccessError {
    /// Nothing is at this offset (EOIR included, on a version 0x11 IOAPIC): writes are
    /// ignored, reads return 0.
    UnknownOffset(u64),
    /// The access was this many bytes wide (saturating at `u16::MAX`), not four. See
    /// [`Quirks::ANY_ACCESS_WIDTH`] for what was done with it.
    Width(u16),
    /// IOWIN reached an IOREGSEL index that is no register (0x03–0x0F, 0x40–0xFF): writes
    /// are ignored, reads return 0 (0xFFFF_FFFF with [`Quirks::RESERVED_READS_ALL_ONES`]).
    ReservedRegister(u8),
    /// A write to a read-only register (IOAPICVER, IOAPICARB): ignored. Windows writes 0 to
    /// IOAPICVER while probing.
    ReadOnlyRegister(u8),
}

impl AccessError {
    fn width(len: usize) -> Self {
        AccessError::Width(u16::try_from(len).unwrap_or(u16::MAX))
    }
}

/// A set of IOAPIC pins, bit n = pin n (only bits 23:0 are ever set).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PinSet(pub u32);

impl PinSet {
    /// No pin.
    pub const EMPTY: PinSet = PinSet(0);

    /// Whether `pin` is in the set.
    #[inline(always)]
    pub const fn contains(self, pin: u8) -> bool {
        pin < 32 && self.0 & (1 << pin) != 0
    }

    /// Whether the set is empty.
    #[inline(always)]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The number of pins in the set.
    #[inline(always)]
    pub const fn len(self) -> u32 {
        self.0.count_ones()
    }

    /// The pins, lowest first.
    #[inline(always)]
    pub const fn iter(self) -> PinIter {
        PinIter(self.0)
    }
}

impl IntoIterator for PinSet {
    type Item = u8;
    type IntoIter = PinIter;
    #[inline(always)]
    fn into_iter(self) -> PinIter {
        PinIter(self.0)
    }
}

/// The pins of a [`PinSet`], lowest first.
#[derive(Clone, Copy, Debug)]
pub struct PinIter(u32);

impl Iterator for PinIter {
    type Item = u8;
    #[inline(always)]
    fn next(&mut self) -> Option<u8> {
        if self.0 == 0 {
            return None;
        }
        let pin = self.0.trailing_zeros() as u8;
        self.0 &= self.0.wrapping_sub(1);
        Some(pin)
    }
}

/// What a call caused, for the VMM to act on.
#[must_use]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Effects {
    /// Pins whose message must be delivered now, in pin order: read each with
    /// [`IoApic::message`] before the next call that changes the IOAPIC.
    pub deliver: PinSet,
    /// Pins an EOI ended: the entries with the EOI'd vector it acted on (level-triggered
    /// ones; every one with [`Quirks::EOI_ANY_TRIGGER_MODE`]). A device that resamples its
    /// line on EOI (irqfd resample, VFIO INTx) looks at its line again.
    pub eoi: PinSet,
    /// Pins whose re-delivery the storm throttle held back. They are delivered by
    /// [`IoApic::deliver_deferred`] (or earlier by anything that re-evaluates the pin: an
    /// entry write, a line assert, another EOI of the vector).
    pub deferred: PinSet,
    /// Set with `deferred`: call [`IoApic::deliver_deferred`] after this many nanoseconds
    /// ([`IoApicConfig::storm_delay_ns`]). If a call is already scheduled, keep the earlier.
    pub recheck_after_ns: Option<u64>,
    /// The access was not one the hardware decodes (see [`AccessError`]).
    pub invalid: Option<AccessError>,
}

impl Effects {
    /// Nothing happened.
    pub const NONE: Effects = Effects {
        deliver: PinSet(0),
        eoi: PinSet(0),
        deferred: PinSet(0),
        recheck_after_ns: None,
        invalid: None,
    };

    const fn invalid(error: AccessError) -> Self {
        Effects { invalid: Some(error), ..Effects::NONE }
    }
}

/// The message an entry sends, in MSI format: address 0xFEE0_0000 | destination << 12
/// (| extended destination << 5) | destination mode << 2, data vector | delivery mode << 8
/// | 1 << 14 (assert: IOAPIC messages always assert) | trigger << 15.
#[inline(always)]
const fn message_of(entry: RedirectionEntry, format: MsiFormat) -> MsiMessage {
    let e = entry.0;
    // Branch-free: destination mode (entry bit 11) moves to address bit 2; the extended
    // destination (entry bits 55:49) to address bits 11:5 when the format has it.
    let ext_mask = if format.extended_destination { RTE_EXT_DEST_MASK } else { 0 };
    let address = MSI_ADDRESS_BASE
        | (e >> RTE_DEST_SHIFT) << MSI_ADDR_DEST_SHIFT
        | ((e >> RTE_EXT_DEST_SHIFT) & ext_mask) << MSI_ADDR_EXT_DEST_SHIFT
        | (e & RTE_DEST_MODE_LOGICAL) >> (11 - 2);
    // Entry bits 10:0 (vector, delivery mode) and 15 (trigger) sit where MSI data has them.
    let data = (e as u32 & 0x87FF) | MSI_DATA_LEVEL_ASSERT;
    MsiMessage { address, data }
}

/// The decoded message an entry sends.
#[inline]
const fn interrupt_of(entry: RedirectionEntry, format: MsiFormat) -> Interrupt {
    let mut destination = entry.destination() as u32;
    if format.extended_destination {
        destination |= (entry.extended_destination() as u32) << 8;
    }
    Interrupt {
        vector: entry.vector(),
        delivery_mode: entry.delivery_mode(),
        destination_mode: entry.destination_mode(),
        trigger_mode: entry.trigger_mode(),
        level: true,
        destination,
        shorthand: Shorthand::None,
        redirection_hint: false,
    }
}

/// The bit of `pin` in a pin bitmap (`pin` < 24).
#[inline(always)]
const fn pin_bit(pin: usize) -> u32 {
    1 << (pin & 31)
}

/// The 82093AA I/O APIC with 24 pins.
///
/// `Default` is the power-on state of the datasheet profile.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IoApic {
    state: IoApicState,
    config: IoApicConfig,
    /// Successive EOIs per pin that found the line still asserted (KVM's `irq_eoi`); not
    /// architectural, not in [`IoApicState`].
    storm: [u32; PINS],
    /// KVM's RTC EOI tracking ([`Quirks::RTC_EOI_TRACKING`]); not in [`IoApicState`], as
    /// KVM's `kvm_ioapic_state` does not carry it either ([`IoApic::rtc_restore`] rebuilds
    /// it).
    rtc: RtcStatus,
}

/// The pin KVM tracks EOIs of (`RTC_GSI`).
pub const RTC_PIN: u8 = 8;

/// KVM's `rtc_status`: which vCPUs still owe an EOI for the last tracked RTC interrupt.
#[derive(Clone, PartialEq, Eq)]
struct RtcStatus {
    /// The number of EOIs still awaited (KVM's `pending_eoi`: the delivery's count).
    pending_eoi: u32,
    /// vCPUs that took the interrupt and have not EOI'd it (KVM's `dest_map.map`).
    dest_map: VcpuSet,
    /// The vector each vCPU of `dest_map` took (KVM's `dest_map.vectors`).
    vectors: [u8; MAX_VCPUS],
    /// Set by an assert of pin 8 that produced its message, until
    /// [`IoApic::rtc_delivered`] (the vector and delivery mode sent).
    awaiting_delivery: Option<(u8, DeliveryMode)>,
}

impl RtcStatus {
    const EMPTY: RtcStatus = RtcStatus {
        pending_eoi: 0,
        dest_map: VcpuSet::EMPTY,
        vectors: [0; MAX_VCPUS],
        awaiting_delivery: None,
    };

    /// KVM's `rtc_irq_eoi_tracking_reset`.
    fn reset(&mut self) {
        self.pending_eoi = 0;
        self.dest_map = VcpuSet::EMPTY;
        self.awaiting_delivery = None;
    }
}

impl Default for RtcStatus {
    fn default() -> Self {
        RtcStatus::EMPTY
    }
}

impl core::fmt::Debug for RtcStatus {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RtcStatus")
            .field("pending_eoi", &self.pending_eoi)
            .field("dest_map", &self.dest_map)
            .field("awaiting_delivery", &self.awaiting_delivery)
            .finish_non_exhaustive()
    }
}

impl IoApic {
    /// An IOAPIC in its power-on state.
    pub fn new(config: IoApicConfig) -> Self {
        IoApic { state: IoApicState::POWER_ON, config, storm: [0; PINS], rtc: RtcStatus::EMPTY }
    }

    /// How the IOAPIC was built.
    #[inline]
    pub fn config(&self) -> IoApicConfig {
        self.config
    }

    /// The behaviour profile.
    #[inline]
    pub fn quirks(&self) -> Quirks {
        self.config.quirks
    }

    // ----- guest MMIO -------------------------------------------------------------------

    /// A guest read of `data.len()` bytes at `offset` from the IOAPIC's base. Reads have no
    /// side effects.
    ///
    /// IOREGSEL (+0x00) reads the selected index, IOWIN (+0x10) the selected register (see
    /// [`IoApic::read_register`]), EOIR (+0x40, version 0x20 only) reads 0; any other offset
    /// reads 0 and is reported. Widths: 4 bytes is the datasheet's access; see
    /// [`Quirks::ANY_ACCESS_WIDTH`] for the others, which are reported too. Bytes the access
    /// does not define read 0.
    pub fn mmio_read(&self, offset: u64, data: &mut [u8]) -> Option<AccessError> {
        let (value, mut error) = match offset {
            IOREGSEL => (u32::from(self.state.ioregsel), None),
            IOWIN => {
                let index = self.state.ioregsel;
                (
                    self.read_register(index),
                    Self::reserved_index(index).then_some(AccessError::ReservedRegister(index)),
                )
            }
            EOIR if self.config.version.has_eoir() => (0, None),
            _ => {
                data.fill(0);
                return Some(AccessError::UnknownOffset(offset));
            }
        };
        let len = data.len();
        if len != 4 {
            error = Some(AccessError::width(len));
        }
        let any_width = self.config.quirks.contains(Quirks::ANY_ACCESS_WIDTH);
        let decoded = match len {
            4 => true,
            1 | 2 | 8 if any_width => true,
            1..=8 => offset == IOREGSEL && !any_width,
            _ => false,
        };
        let bytes = if decoded { u64::from(value).to_le_bytes() } else { [0; 8] };
        data.fill(0);
        for (out, byte) in data.iter_mut().zip(bytes) {
            *out = byte;
        }
        error
    }

    /// A guest write of `data` at `offset` from the IOAPIC's base.
    ///
    /// IOREGSEL (+0x00) takes bits 7:0; IOWIN (+0x10) writes the selected register (see
    /// [`IoApic::write_register`]); EOIR (+0x40, version 0x20 only) ends the vector in bits
    /// 7:0 as [`IoApic::end_of_interrupt`] does. Other offsets are ignored and reported.
    /// Widths: 4 bytes is the datasheet's access; see [`Quirks::ANY_ACCESS_WIDTH`] for the
    /// others, which are reported too.
    pub fn mmio_write(&mut self, offset: u64, data: &[u8]) -> Effects {
        let register = match offset {
            IOREGSEL | IOWIN => offset,
            EOIR if self.config.version.has_eoir() => offset,
            _ => return Effects::invalid(AccessError::UnknownOffset(offset)),
        };
        let width_error = (data.len() != 4).then(|| AccessError::width(data.len()));
        let value = match (data, self.config.quirks.contains(Quirks::ANY_ACCESS_WIDTH)) {
            (&[a, b, c, d], _) => Some(u32::from_le_bytes([a, b, c, d])),
            (&[a, b, c, d, _, _, _, _], true) => Some(u32::from_le_bytes([a, b, c, d])),
            (&[a, b], true) => Some(u32::from(u16::from_le_bytes([a, b]))),
            (&[a], true) => Some(u32::from(a)),
            // Datasheet: IOREGSEL is an 8-bit register; any width up to 8 sets it.
            (&[a, ..], false) if register == IOREGSEL && data.len() <= 8 => Some(u32::from(a)),
            _ => None,
        };
        let Some(value) = value else {
            return Effects { invalid: width_error, ..Effects::NONE };
        };
        let mut effects = match register {
            IOREGSEL => {
                self.state.ioregsel = value as u8;
                Effects::NONE
            }
            IOWIN => self.write_register(self.state.ioregsel, value),
            _ => self.end_of_interrupt(value as u8),
        };
        if width_error.is_some() {
            effects.invalid = width_error;
        }
        effects
    }

    /// Whether IOREGSEL index `index` selects no register.
    #[inline]
    const fn reserved_index(index: u8) -> bool {
        !matches!(index, IOAPICID | IOAPICVER | IOAPICARB | IOREDTBL..=0x3F)
    }

    /// The indirect register `index` as IOWIN reads it.
    ///
    /// IOAPICID and IOAPICARB: the ID in bits 27:24; IOAPICVER: version and maximum
    /// redirection entry (23); 0x10–0x3F: the low (even index) or high (odd) dword of entry
    /// `(index − 0x10) / 2`; anything else reads 0, or 0xFFFF_FFFF with
    /// [`Quirks::RESERVED_READS_ALL_ONES`].
    pub fn read_register(&self, index: u8) -> u32 {
        match index {
            IOAPICID | IOAPICARB => u32::from(self.state.id) << IOAPICID_SHIFT,
            IOAPICVER => self.config.version.register(),
            IOREDTBL..=0x3F => {
                let entry = self.state.redirtbl.get(usize::from(index.wrapping_sub(IOREDTBL) >> 1));
                match entry {
                    Some(entry) if index & 1 == 1 => entry.high(),
                    Some(entry) => entry.low(),
                    None => 0,
                }
            }
            _ if self.config.quirks.contains(Quirks::RESERVED_READS_ALL_ONES) => u32::MAX,
            _ => 0,
        }
    }

    /// A write of `value` to the indirect register `index`, as through IOWIN.
    ///
    /// IOAPICID takes bits 27:24; IOAPICVER and IOAPICARB are read-only; a redirection entry
    /// half is replaced except for the read-only delivery status and Remote IRR. Writing an
    /// entry as edge-triggered clears its Remote IRR (Linux and FreeBSD end level interrupts
    /// on version 0x11 parts that way). If the entry is then level-triggered, unmasked, its
    /// line asserted and Remote IRR clear, the interrupt is delivered: a masked level held
    /// while masked is delivered on unmask.
    pub fn write_register(&mut self, index: u8, value: u32) -> Effects {
        match index {
            IOAPICID => {
                self.state.id = ((value >> IOAPICID_SHIFT) & IOAPICID_MASK) as u8;
                Effects::NONE
            }
            IOAPICVER | IOAPICARB => Effects::invalid(AccessError::ReadOnlyRegister(index)),
            IOREDTBL..=0x3F => {
                self.write_entry_half(usize::from(index.wrapping_sub(IOREDTBL) >> 1), index & 1 == 1, value)
            }
            _ => Effects::invalid(AccessError::ReservedRegister(index)),
        }
    }

    fn write_entry_half(&mut self, pin: usize, high: bool, value: u32) -> Effects {
        let keep_count = self.config.quirks.contains(Quirks::STORM_COUNT_KEPT_ON_WRITE);
        let (Some(entry), Some(sources), Some(count)) =
            (self.state.redirtbl.get_mut(pin), self.state.sources.get(pin), self.storm.get_mut(pin))
        else {
            return Effects::NONE;
        };
        let old = entry.0;
        let mut new = if high {
            (old & 0xFFFF_FFFF) | u64::from(value) << 32
        } else {
            (old & !0xFFFF_FFFF) | u64::from(value)
        };
        new = (new & !RTE_READ_ONLY) | (old & RTE_READ_ONLY);
        if new & RTE_TRIGGER_LEVEL == 0 {
            new &= !RTE_REMOTE_IRR;
        }
        entry.0 = new;
        if !keep_count {
            *count = 0;
        }
        let entry = RedirectionEntry(new);
        if entry.is_level() && !entry.masked() && !entry.remote_irr() && *sources != 0 {
            self.deliver_level(pin);
            return Effects { deliver: PinSet(pin_bit(pin)), ..Effects::NONE };
        }
        Effects::NONE
    }

    /// Marks a level pin delivered: its Remote IRR is set until the EOI.
    #[inline(always)]
    fn deliver_level(&mut self, pin: usize) {
        if let Some(entry) = self.state.redirtbl.get_mut(pin) {
            entry.0 |= RTE_REMOTE_IRR;
        }
    }

    // ----- device-side input lines ------------------------------------------------------

    /// Sets pin `pin` (0–23) as driven by source 0. See [`IoApic::set_irq_source`].
    #[inline(always)]
    pub fn set_irq(&mut self, pin: u8, level: bool) -> Result<LineResult, LineError> {
        self.set_irq_source(pin, 0, level)
    }

    /// Source `source` (0–31) drives pin `pin` (0–23) to `level` (logical: `true` requests
    /// the interrupt, whatever the polarity bit says). The line is asserted while any source
    /// asserts it, as KVM's per-source `irq_states` do.
    ///
    /// * Edge-triggered entry: the line going from deasserted to asserted on an unmasked
    ///   entry sends the message once ([`LineStatus::Delivered`]); on a masked entry the edge
    ///   is dropped ([`LineStatus::Masked`]) and not delivered on unmask. An assert of a line
    ///   that is already high is [`LineStatus::Coalesced`].
    /// * Level-triggered entry: every assert finds the line high; if the entry is unmasked
    ///   and Remote IRR is clear the message is sent and Remote IRR set; with Remote IRR set
    ///   the assert is [`LineStatus::InService`]; masked, [`LineStatus::Masked`] and held
    ///   until unmasked.
    /// * A deassert sends nothing ([`LineStatus::Deasserted`]).
    #[inline(always)]
    pub fn set_irq_source(&mut self, pin: u8, source: u8, level: bool) -> Result<LineResult, LineError> {
        let index = usize::from(pin);
        let Some(sources) = self.state.sources.get_mut(index) else {
            return Err(LineError::NoSuchPin(pin));
        };
        if source >= 32 {
            return Err(LineError::NoSuchSource(source));
        }
        let source_bit = 1u32 << source;
        let was = *sources;
        if !level {
            *sources = was & !source_bit;
            return Ok(LineResult::status(LineStatus::Deasserted));
        }
        if pin == RTC_PIN && self.rtc.pending_eoi > 0 && self.config.quirks.contains(Quirks::RTC_EOI_TRACKING)
        {
            // KVM (`rtc_irq_check_coalesced`) returns before the line's `irr` bit is set: a
            // low line stays low for the next assert's edge and for EOI re-delivery.
            if was != 0 {
                *sources = was | source_bit;
            }
            return Ok(LineResult::status(LineStatus::Coalesced));
        }
        *sources = was | source_bit;
        let Some(entry) = self.state.redirtbl.get_mut(index) else {
            return Err(LineError::NoSuchPin(pin));
        };
        let e = *entry;
        if e.is_level() {
            if e.masked() {
                return Ok(LineResult::status(LineStatus::Masked));
            }
            if e.remote_irr() {
                return Ok(LineResult::status(LineStatus::InService));
            }
            entry.0 |= RTE_REMOTE_IRR;
            self.rtc_track(pin, e);
            return Ok(LineResult {
                status: LineStatus::Delivered,
                message: Some(message_of(e, self.config.msi_format)),
            });
        }
        let bit = pin_bit(index);
        let kvm_irr = self.config.quirks.contains(Quirks::MASKED_EDGE_KEEPS_IRR);
        if was != 0 {
            if kvm_irr {
                // KVM forgets the delivery on every edge-mode assert (`irr_delivered &= ~mask`).
                self.state.irr_delivered &= !bit;
            }
            return Ok(LineResult::status(LineStatus::Coalesced));
        }
        if e.masked() {
            if kvm_irr {
                self.state.irr_delivered &= !bit;
            } else {
                self.state.irr_delivered |= bit;
            }
            return Ok(LineResult::status(LineStatus::Masked));
        }
        self.state.irr_delivered |= bit;
        self.rtc_track(pin, e);
        Ok(LineResult { status: LineStatus::Delivered, message: Some(message_of(e, self.config.msi_format)) })
    }

    /// An assert of `pin` produced entry `e`'s message: for the RTC pin, wait for the VMM's
    /// [`IoApic::rtc_delivered`].
    #[inline(always)]
    fn rtc_track(&mut self, pin: u8, e: RedirectionEntry) {
        if pin == RTC_PIN && self.config.quirks.contains(Quirks::RTC_EOI_TRACKING) {
            self.rtc.awaiting_delivery = Some((e.vector(), e.delivery_mode()));
        }
    }

    // ----- RTC EOI tracking (KVM) ---------------------------------------------------------

    /// The VMM delivered the message an assert of pin 8 returned ([`IoApic::set_irq`]'s
    /// [`LineResult::message`]) and passes the bus's answer. With
    /// [`Quirks::RTC_EOI_TRACKING`] the IOAPIC records, as KVM's `ioapic_service` does, that
    /// [`Delivery::kvm_result`] EOIs are awaited (none if it is negative), from the vCPUs of
    /// [`Delivery::accepted`] when the message was fixed or lowest-priority (KVM's
    /// `dest_map`; for other delivery modes no vCPU is recorded and the count stays until
    /// [`IoApic::rtc_restore`] or a reset, as in KVM). Until every one has EOI'd
    /// ([`IoApic::rtc_eoi`]) an assert of pin 8 is coalesced.
    ///
    /// Returns what KVM_IRQ_LINE_STATUS reports for the assert: [`Delivery::kvm_result`].
    /// A call not preceded by such an assert (or in the datasheet profile) records nothing.
    pub fn rtc_delivered(&mut self, delivery: &Delivery) -> i32 {
        let Some((vector, mode)) = self.rtc.awaiting_delivery.take() else {
            return delivery.kvm_result;
        };
        self.rtc.reset();
        self.rtc.pending_eoi = u32::try_from(delivery.kvm_result).unwrap_or(0);
        if matches!(mode, DeliveryMode::Fixed | DeliveryMode::LowestPriority) {
            for vcpu in delivery.accepted.iter() {
                if let Some(slot) = self.rtc.vectors.get_mut(vcpu) {
                    *slot = vector;
                    self.rtc.dest_map.insert(vcpu);
                }
            }
        }
        delivery.kvm_result
    }

    /// vCPU `vcpu` EOI'd `vector` (any trigger mode: the RTC is edge-triggered; see
    /// [`LocalApic::in_service`] for the vector an EOI ends). If the vCPU owes the tracked
    /// RTC interrupt's EOI and `vector` is the vector it took, one fewer EOI is awaited
    /// (KVM's `rtc_irq_eoi`). Returns whether it counted. This only feeds the RTC tracking:
    /// a level-triggered EOI still goes to [`IoApic::end_of_interrupt`].
    pub fn rtc_eoi(&mut self, vcpu: usize, vector: u8) -> bool {
        if !self.config.quirks.contains(Quirks::RTC_EOI_TRACKING) {
            return false;
        }
        if self.rtc.vectors.get(vcpu) != Some(&vector) || !self.rtc.dest_map.remove(vcpu) {
            return false;
        }
        self.rtc.pending_eoi = self.rtc.pending_eoi.saturating_sub(1);
        true
    }

    /// EOIs the tracked RTC interrupt still awaits (0: the next assert of pin 8 is not
    /// coalesced; always 0 in the datasheet profile).
    #[inline]
    pub fn rtc_pending_eoi(&self) -> u32 {
        self.rtc.pending_eoi
    }

    /// The vector vCPU `vcpu` owes the tracked RTC interrupt an EOI for, if any. A VMM that
    /// lets the processor complete EOIs itself (APICv) keeps this vector in the vCPU's
    /// EOI-exit bitmap, as KVM's `kvm_ioapic_scan_entry` does, so that [`IoApic::rtc_eoi`]
    /// sees the EOI.
    #[inline]
    pub fn rtc_awaiting(&self, vcpu: usize) -> Option<u8> {
        if self.rtc.dest_map.contains(vcpu) {
            self.rtc.vectors.get(vcpu).copied()
        } else {
            None
        }
    }

    /// Rebuilds the RTC tracking of vCPU `index` from its LAPIC, as KVM does on
    /// KVM_SET_LAPIC (`kvm_rtc_eoi_tracking_restore_one`): if pin 8's entry addresses the
    /// APIC (per `bus`), the vCPU owes an EOI exactly when the entry's vector is in its IRR
    /// or ISR ([`LocalApic::pending_eoi`]). Does nothing in the datasheet profile.
    pub fn rtc_restore_one(&mut self, bus: &ApicBus, index: usize, apic: &LocalApic) {
        if !self.config.quirks.contains(Quirks::RTC_EOI_TRACKING) || index >= MAX_VCPUS {
            return;
        }
        let Some(irq) = self.interrupt(RTC_PIN) else { return };
        if !bus.addresses(apic, index, &irq, None) {
            return;
        }
        let owes = apic.pending_eoi(irq.vector);
        if owes == self.rtc.dest_map.contains(index) {
            return;
        }
        if owes {
            self.rtc.dest_map.insert(index);
            if let Some(slot) = self.rtc.vectors.get_mut(index) {
                *slot = irq.vector;
            }
            self.rtc.pending_eoi = self.rtc.pending_eoi.saturating_add(1);
        } else {
            self.rtc.dest_map.remove(index);
            self.rtc.pending_eoi = self.rtc.pending_eoi.saturating_sub(1);
        }
    }

    /// Rebuilds the whole RTC tracking from the LAPICs (vCPU index = position in `apics`),
    /// as KVM does after KVM_SET_IRQCHIP (`kvm_rtc_eoi_tracking_restore_all`). The tracking
    /// is not part of [`IoApicState`] (nor of KVM's `kvm_ioapic_state`): call this after
    /// [`IoApic::restore`] or [`IoApic::set_irqchip`] (once their deliveries are made) and
    /// with [`IoApic::rtc_restore_one`] after restoring a LAPIC.
    pub fn rtc_restore<A: core::borrow::Borrow<LocalApic>>(&mut self, bus: &ApicBus, apics: &[A]) {
        if !self.config.quirks.contains(Quirks::RTC_EOI_TRACKING) {
            return;
        }
        self.rtc.reset();
        for (index, apic) in apics.iter().enumerate().take(MAX_VCPUS) {
            self.rtc_restore_one(bus, index, apic.borrow());
        }
    }

    /// An edge from source 0: assert, then deassert. Returns the result of the assert.
    #[inline]
    pub fn pulse_irq(&mut self, pin: u8) -> Result<LineResult, LineError> {
        let result = self.set_irq(pin, true)?;
        let _ = self.set_irq(pin, false)?;
        Ok(result)
    }

    /// Whether pin `pin`'s line is asserted (by any source); `false` for a pin that does not
    /// exist.
    #[inline]
    pub fn line(&self, pin: u8) -> bool {
        self.state.sources.get(usize::from(pin)).is_some_and(|s| *s != 0)
    }

    // ----- EOI ----------------------------------------------------------------------------

    /// The EOI message a LAPIC broadcasts for a level-triggered vector (its TMR bit set and
    /// EOI broadcast not suppressed; the LAPIC decides that, as KVM's
    /// `kvm_ioapic_update_eoi` does with the TMR and SPIV bit 12). The EOIR register does
    /// the same.
    ///
    /// Every level-triggered entry with this vector (every entry, with
    /// [`Quirks::EOI_ANY_TRIGGER_MODE`]) has Remote IRR cleared and is listed in
    /// [`Effects::eoi`]; if the entry is unmasked and its line still asserted, the interrupt
    /// is sent again ([`Effects::deliver`]), unless this is the
    /// [`IoApicConfig::storm_threshold`]-th such EOI in a row, when it is held back
    /// ([`Effects::deferred`]) for [`IoApic::deliver_deferred`].
    pub fn end_of_interrupt(&mut self, vector: u8) -> Effects {
        let any_trigger = self.config.quirks.contains(Quirks::EOI_ANY_TRIGGER_MODE);
        let mut matches = 0u32;
        for (pin, entry) in (0u32..).zip(self.state.redirtbl.iter()) {
            let hit = entry.vector() == vector && (any_trigger || entry.is_level());
            matches |= u32::from(hit) << pin;
        }
        if matches == 0 {
            return Effects::NONE;
        }
        self.end_pins(matches)
    }

    /// [`IoApic::end_of_interrupt`] for the pins of `matches`.
    fn end_pins(&mut self, matches: u32) -> Effects {
        let threshold = self.config.storm_threshold;
        let mut effects = Effects { eoi: PinSet(matches), ..Effects::NONE };
        for pin in PinSet(matches) {
            let index = usize::from(pin);
            let bit = pin_bit(index);
            let (Some(entry), Some(sources), Some(count)) = (
                self.state.redirtbl.get_mut(index),
                self.state.sources.get(index),
                self.storm.get_mut(index),
            ) else {
                continue;
            };
            entry.0 &= !RTE_REMOTE_IRR;
            if entry.masked() || *sources == 0 {
                *count = 0;
                continue;
            }
            *count = count.saturating_add(1);
            if *count == threshold {
                *count = 0;
                effects.deferred.0 |= bit;
                continue;
            }
            if entry.is_level() {
                entry.0 |= RTE_REMOTE_IRR;
            } else {
                self.state.irr_delivered |= bit;
            }
            effects.deliver.0 |= bit;
        }
        if !effects.deferred.is_empty() {
            effects.recheck_after_ns = Some(self.config.storm_delay_ns);
        }
        effects
    }

    /// The storm timer expired (see [`Effects::recheck_after_ns`]): every level-triggered
    /// pin whose line is asserted, entry unmasked and Remote IRR clear is delivered (KVM's
    /// `kvm_ioapic_eoi_inject_work`). Calling it at any other time is harmless.
    pub fn deliver_deferred(&mut self) -> Effects {
        let mut effects = Effects::NONE;
        for (pin, (entry, sources)) in
            self.state.redirtbl.iter_mut().zip(self.state.sources.iter()).enumerate()
        {
            if entry.is_level() && !entry.masked() && !entry.remote_irr() && *sources != 0 {
                entry.0 |= RTE_REMOTE_IRR;
                effects.deliver.0 |= pin_bit(pin);
            }
        }
        effects
    }

    /// The VMM reports that no LAPIC accepted the message of pin `pin` (the bus found no
    /// destination, or only disabled ones). With [`Quirks::REMOTE_IRR_NEEDS_ACCEPT`] the
    /// Remote IRR of a level-triggered entry is cleared, as KVM sets it only when a LAPIC
    /// accepts; the interrupt is not re-sent until something re-evaluates the pin (a line
    /// assert, an entry write, an EOI of its vector, [`IoApic::deliver_deferred`]). Returns
    /// whether Remote IRR was cleared. Datasheet profile: nothing changes (as QEMU).
    pub fn not_accepted(&mut self, pin: u8) -> bool {
        if !self.config.quirks.contains(Quirks::REMOTE_IRR_NEEDS_ACCEPT) {
            return false;
        }
        match self.state.redirtbl.get_mut(usize::from(pin)) {
            Some(entry) if entry.is_level() && entry.remote_irr() => {
                entry.0 &= !RTE_REMOTE_IRR;
                true
            }
            _ => false,
        }
    }

    // ----- outputs --------------------------------------------------------------------------

    /// Redirection entry `pin`, or `None` for a pin that does not exist.
    #[inline]
    pub fn entry(&self, pin: u8) -> Option<RedirectionEntry> {
        self.state.redirtbl.get(usize::from(pin)).copied()
    }

    /// The message pin `pin` sends now, in MSI format (whether or not it is masked).
    #[inline]
    pub fn message(&self, pin: u8) -> Option<MsiMessage> {
        self.entry(pin).map(|entry| message_of(entry, self.config.msi_format))
    }

    /// The message pin `pin` sends now, decoded.
    #[inline]
    pub fn interrupt(&self, pin: u8) -> Option<Interrupt> {
        self.entry(pin).map(|entry| interrupt_of(entry, self.config.msi_format))
    }

    /// The level-triggered routes, for EOI-exit bitmaps (APICv) and split-irqchip MSI
    /// routes: every level-triggered entry that is unmasked or still has Remote IRR set,
    /// with its message. A masked entry awaiting its EOI is included because the guest may
    /// mask before it EOIs (KVM's `kvm_ioapic_scan_entry` does not look at the mask either).
    pub fn level_routes(&self) -> impl Iterator<Item = (u8, Interrupt)> + '_ {
        let format = self.config.msi_format;
        (0u8..)
            .zip(self.state.redirtbl.iter())
            .filter(|(_, e)| e.is_level() && (!e.masked() || e.remote_irr()))
            .map(move |(pin, e)| (pin, interrupt_of(*e, format)))
    }

    /// The vectors of [`IoApic::level_routes`]: those whose EOI the IOAPIC must see.
    pub fn eoi_vectors(&self) -> VectorSet {
        self.level_routes().map(|(_, irq)| irq.vector).collect()
    }

    /// Successive EOIs of `pin` that found its line asserted since the count last restarted
    /// (the storm counter; 0 for a pin that does not exist).
    pub fn storm_count(&self, pin: u8) -> u32 {
        self.storm.get(usize::from(pin)).copied().unwrap_or(0)
    }

    // ----- state ------------------------------------------------------------------------------

    /// A copy of the architectural state.
    #[inline]
    pub fn state(&self) -> IoApicState {
        self.state
    }

    /// Replaces the state after validating it; on error the IOAPIC is unchanged.
    ///
    /// Nothing is delivered and the storm counters restart, so `restore(&state())` leaves
    /// [`IoApic::state`] unchanged. A state can hold an asserted, unmasked level line with
    /// Remote IRR clear (taken while the storm throttle held it back, or after
    /// [`IoApic::not_accepted`]); call [`IoApic::deliver_deferred`] after restoring to send
    /// it. To reproduce KVM_SET_IRQCHIP, use [`IoApic::set_irqchip`].
    pub fn restore(&mut self, state: &IoApicState) -> Result<(), StateError> {
        state.validate()?;
        self.state = *state;
        self.storm = [0; PINS];
        self.rtc.reset();
        Ok(())
    }

    /// What KVM_SET_IRQCHIP does with a `kvm_ioapic_state` (`kvm_set_ioapic`): installs the
    /// registers, drops every line and delivery record (`irr = irr_delivered = 0`), then
    /// re-asserts each pin of the state's [`IoApicState::kvm_irr`] from source 0 through the
    /// normal path, so setting state can deliver interrupts ([`Effects::deliver`]). The storm
    /// counters restart. On error the IOAPIC is unchanged.
    pub fn set_irqchip(&mut self, state: &IoApicState) -> Result<Effects, StateError> {
        state.validate()?;
        let irr = state.kvm_irr();
        self.state = IoApicState { sources: [0; PINS], irr_delivered: 0, ..*state };
        self.storm = [0; PINS];
        self.rtc.reset();
        let mut effects = Effects::NONE;
        for pin in PinSet(irr & PIN_BITS) {
            if let Ok(LineResult { status: LineStatus::Delivered, .. }) = self.set_irq(pin, true) {
                effects.deliver.0 |= pin_bit(usize::from(pin));
            }
        }
        // KVM rebuilds the RTC tracking from the LAPICs afterwards: the VMM's `rtc_restore`.
        self.rtc.awaiting_delivery = None;
        Ok(effects)
    }

    /// System reset: every entry masked (0x0000_0000_0001_0000), ID and IOREGSEL 0, storm
    /// counters 0. The input lines belong to the devices and keep their levels; nothing is
    /// delivered (every entry is masked).
    pub fn reset(&mut self) {
        self.state = IoApicState { sources: self.state.sources, ..IoApicState::POWER_ON };
        self.storm = [0; PINS];
        self.rtc.reset();
    }
}

#[cfg(test)]
mod tests;
