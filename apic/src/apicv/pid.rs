//! The posted-interrupt descriptor (SDM Vol. 3 "Posted-Interrupt Processing"; VT-d "Posted
//! Interrupt Descriptor"), lock-free, with the exact 64-byte hardware layout.
//!
//! A VMM posts a vector for a vCPU by setting its bit in the descriptor's posted-interrupt
//! requests (PIR) and, if no notification is outstanding yet, setting ON and sending the
//! notification vector (NV) to the physical CPU named by NDST. A CPU in VMX non-root mode that
//! takes that vector clears ON and moves PIR into the virtual-APIC page's VIRR; a vCPU that is
//! not in guest mode does the same in software before it enters ([`PostedInterruptDescriptor::harvest`]).
//! VT-d does the posting half in hardware for assigned devices, on the same descriptor.
//!
//! # Layout
//!
//! | Bits     | Bytes | Field | Meaning |
//! |----------|-------|-------|---------|
//! | 255:0    | 0–31  | PIR   | one request bit per vector (four 64-bit words, vector `v` is bit `v % 64` of word `v / 64`) |
//! | 256      | 32    | ON    | outstanding notification |
//! | 257      | 32    | SN    | suppress notification (VT-d and IPI virtualization only; the CPU's own processing ignores it) |
//! | 271:258  |       |       | reserved, zero |
//! | 279:272  | 34    | NV    | notification vector |
//! | 287:280  | 35    |       | reserved, zero |
//! | 319:288  | 36–39 | NDST  | notification destination: physical x2APIC ID, or xAPIC ID in bits 15:8 |
//! | 511:320  | 40–63 |       | reserved, zero |
//!
//! Bits 256–319 are one 64-bit *control word* (ON bit 0, SN bit 1, NV bits 23:16, NDST bits
//! 63:32), read and compare-exchanged as a unit.
//!
//! # Protocol (what every agent must do so that no vector is ever lost)
//!
//! Every read-modify-write in this module is `SeqCst`. Every observation of the control word that
//! [`post`](PostedInterruptDescriptor::post) bases its answer on is a read-modify-write (a
//! compare-exchange, which may write back the value it read), and
//! [`harvest`](PostedInterruptDescriptor::harvest) always starts with the read-modify-write that
//! clears ON, even when ON is already clear. Read-modify-writes of one location are totally
//! ordered, and each one synchronizes with the one before it, so for a post and a harvest one
//! of two things holds: the harvest comes second and its PIR read sees the posted bit, or the
//! post comes second, sees ON clear (sets it: [`PostOutcome::Notify`]) and everything the
//! consumer wrote before the harvest, such as its "in guest" flag. Clearing SN is ordered
//! against posts in the same way.
//!
//! The race that matters is a *Dekker pair* between a poster and a vCPU entering the guest, on
//! two locations: the descriptor and the vCPU's run state ("in guest", kept by the VMM).
//!
//! * **Poster** (any thread): `post(v)`. On [`PostOutcome::Notify`]: `fence(SeqCst)`, then read
//!   the target's run state; if it is in guest mode, send the notification vector to the
//!   destination (the CPU processes it as a posted interrupt); otherwise wake the target thread
//!   if it is blocked (a runnable target harvests before it enters). On
//!   [`PostOutcome::Suppressed`]: the same fence, then wake the target if it is blocked, and
//!   never send the notification. On [`PostOutcome::Pending`] and [`PostOutcome::Coalesced`]
//!   there is nothing to do: whoever set ON (or posted the same vector earlier) is responsible.
//!   The fence is needed against a consumer that looks at the descriptor with plain loads
//!   ([`is_pending`](PostedInterruptDescriptor::is_pending),
//!   [`outstanding`](PostedInterruptDescriptor::outstanding), [`pir`](PostedInterruptDescriptor::pir));
//!   against the entry path below it is redundant (`post` ends with an acquiring
//!   read-modify-write, so a plain load of the run state after it is already ordered). A
//!   `SeqCst` load of the run state instead of the fence is also correct by the language's
//!   memory model, and costs nothing on x86; loom cannot check that form, since it treats
//!   `SeqCst` loads as `Acquire`.
//! * **Entering the guest** (the vCPU thread, before every VM entry, host interrupts
//!   disabled): clear SN if it was set
//!   ([`suppress_notifications(false)`](PostedInterruptDescriptor::suppress_notifications)),
//!   store "in guest" (any ordering), then [`harvest`](PostedInterruptDescriptor::harvest) and
//!   merge the vectors into VIRR/RVI. No fence is needed, because harvest's first step orders
//!   the store against every post; a `fence(SeqCst)` between the two does no harm. If the vCPU
//!   instead checks ON with a plain load and harvests only when it is set (KVM's shape), the
//!   `fence(SeqCst)` after the store is **required**: without it the poster can read a stale
//!   "not in guest" while the vCPU reads a stale ON = 0, and the vector stays in PIR. A
//!   notification sent after the store is pending in the physical LAPIC when the CPU enters the
//!   guest, and the CPU processes it there.
//! * **Blocking** (HLT): store "blocked", `fence(SeqCst)`, then sleep only if
//!   [`is_pending`](PostedInterruptDescriptor::is_pending) is false (and VIRR has nothing
//!   deliverable). On wake-up, [`harvest`](PostedInterruptDescriptor::harvest) before deciding to
//!   block again: ON stays set until a harvest clears it, so a vCPU that only peeks at ON and
//!   goes back to sleep because the posted vector is masked by its PPR would swallow the
//!   notification of every later, higher-priority post (the bhyve bug).
//!
//! `tests/loom_pid.rs` model-checks each of these forms, including the fence-free entry path
//! with fence-free posters, and shows that loom finds the lost vector when the fence is left
//! out of the check-ON-first entry path.
//!
//! Exactly one [`PostOutcome::Notify`] (or one `Some` from
//! [`suppress_notifications(false)`](PostedInterruptDescriptor::suppress_notifications)) is
//! returned per ON 0→1 transition, so a notification is sent at most once per transition.
//!
//! # SN (suppress notification)
//!
//! With SN set, [`post`](PostedInterruptDescriptor::post) behaves as VT-d does: the PIR bit is
//! set, ON is *not* set and no notification is due; it returns [`PostOutcome::Suppressed`] and
//! the poster must wake the target if it is blocked. A VMM sets SN while a vCPU is preempted
//! (runnable but not running: notifying it is useless) and clears it before the vCPU runs again;
//! clearing SN re-sets ON if PIR is not empty (KVM "Recompute PID.ON when clearing PID.SN"),
//! and [`is_pending`](PostedInterruptDescriptor::is_pending) counts "SN and PIR ≠ 0" as pending.

#[cfg(loom)]
use loom::sync::atomic::{AtomicU64, Ordering};

#[cfg(not(loom))]
use core::sync::atomic::{AtomicU64, Ordering};

use crate::VectorSet;

/// Size of the descriptor in bytes.
pub const PID_SIZE: usize = 64;
/// Alignment the SDM requires of the descriptor's physical address (bits 5:0 zero).
pub const PID_ALIGN: usize = 64;
/// Byte offset of PIR (bits 255:0) in the descriptor.
pub const PIR_OFFSET: usize = 0;
/// Byte offset of the control word (bits 319:256: ON, SN, NV, NDST) in the descriptor.
pub const CONTROL_OFFSET: usize = 32;

/// Control word bit 0 (descriptor bit 256): ON, outstanding notification.
pub const CONTROL_ON: u64 = 1 << 0;
/// Control word bit 1 (descriptor bit 257): SN, suppress notification.
pub const CONTROL_SN: u64 = 1 << 1;
/// Control word bits 23:16 (descriptor bits 279:272): NV, notification vector.
pub const CONTROL_NV_SHIFT: u32 = 16;
/// Control word bits 63:32 (descriptor bits 319:288): NDST, notification destination.
pub const CONTROL_NDST_SHIFT: u32 = 32;
/// The defined bits of the control word (ON, SN, NV, NDST); the others are reserved, zero.
pub const CONTROL_DEFINED: u64 = CONTROL_ON | CONTROL_SN | (0xFF << CONTROL_NV_SHIFT) | (0xFFFF_FFFF << 32);

/// The notification destination (NDST): the physical APIC that the notification vector is
/// sent to (with VT-d and IPI virtualization the hardware sends it there itself).
///
/// In x2APIC mode it is the 32-bit x2APIC ID; in xAPIC mode the 8-bit xAPIC ID sits in bits
/// 15:8 and the other bits are zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct NotificationDestination(pub u32);

impl NotificationDestination {
    /// The destination of a host in x2APIC mode: its physical x2APIC ID.
    #[inline(always)]
    pub const fn x2apic(id: u32) -> Self {
        NotificationDestination(id)
    }

    /// The destination of a host in xAPIC mode: its xAPIC ID in bits 15:8.
    #[inline(always)]
    pub const fn xapic(id: u8) -> Self {
        NotificationDestination((id as u32) << 8)
    }

    /// The xAPIC ID (bits 15:8), for a host in xAPIC mode.
    #[inline(always)]
    pub const fn xapic_id(self) -> u8 {
        (self.0 >> 8) as u8
    }

    /// The x2APIC ID (all 32 bits), for a host in x2APIC mode.
    #[inline(always)]
    pub const fn x2apic_id(self) -> u32 {
        self.0
    }
}

/// A notification to send: the physical interrupt `vector` (NV) to the APIC `destination`
/// (NDST), as they were in the control word when ON went from 0 to 1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Notification {
    /// NV: the vector of the physical IPI.
    pub vector: u8,
    /// NDST: the physical APIC to send it to.
    pub destination: NotificationDestination,
}

/// What a [`PostedInterruptDescriptor::post`] asks the poster to do next.
#[must_use = "a Notify or Suppressed outcome obliges the poster to notify or wake the target"]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PostOutcome {
    /// The vector was new and this post set ON (0→1): send `Notification` if the target is in
    /// guest mode, else wake it (see the module's protocol). Exactly one post per transition
    /// gets this answer.
    Notify(Notification),
    /// The vector was new, and ON was already set: a notification is outstanding (or the target
    /// will harvest before it enters the guest). Nothing to do.
    Pending,
    /// The vector was new, and SN was set: PIR holds it but ON was not set and no notification
    /// is due. Wake the target if it is blocked; it will pick the vector up when it clears SN.
    Suppressed,
    /// The vector was already requested in PIR and not yet harvested: this post merged with the
    /// earlier one (one delivery for both, as on a real APIC). Nothing to do.
    Coalesced,
}

impl PostOutcome {
    /// Whether this post added a new vector to PIR (everything but [`PostOutcome::Coalesced`]).
    #[inline(always)]
    pub const fn is_new(&self) -> bool {
        !matches!(self, PostOutcome::Coalesced)
    }
}

/// The decoded control word (descriptor bits 319:256).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PidControl {
    /// ON (bit 256): a notification is outstanding.
    pub on: bool,
    /// SN (bit 257): notifications are suppressed.
    pub sn: bool,
    /// NV (bits 279:272): the notification vector.
    pub nv: u8,
    /// NDST (bits 319:288): the notification destination.
    pub ndst: NotificationDestination,
}

impl PidControl {
    /// Decodes a control word; reserved bits are ignored.
    #[inline(always)]
    pub const fn from_bits(bits: u64) -> Self {
        PidControl {
            on: bits & CONTROL_ON != 0,
            sn: bits & CONTROL_SN != 0,
            nv: (bits >> CONTROL_NV_SHIFT) as u8,
            ndst: NotificationDestination((bits >> CONTROL_NDST_SHIFT) as u32),
        }
    }

    /// The control word (reserved bits zero).
    #[inline(always)]
    pub const fn bits(&self) -> u64 {
        (self.on as u64)
            | ((self.sn as u64) << 1)
            | ((self.nv as u64) << CONTROL_NV_SHIFT)
            | ((self.ndst.0 as u64) << CONTROL_NDST_SHIFT)
    }

    /// The notification this control word would send.
    #[inline(always)]
    pub const fn notification(&self) -> Notification {
        Notification { vector: self.nv, destination: self.ndst }
    }
}

/// What a [`PostedInterruptDescriptor::harvest_detailed`] took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Harvest {
    /// ON was set when the harvest cleared it (one ON 1→0 transition).
    pub outstanding: bool,
    /// The vectors taken out of PIR (possibly none).
    pub vectors: VectorSet,
}

/// The posted-interrupt descriptor: 64 bytes, 64-byte aligned, in the hardware layout.
///
/// `#[repr(C, align(64))]` with PIR as four `AtomicU64` at bytes 0–31, the control word as one
/// `AtomicU64` at bytes 32–39 and bytes 40–63 reserved and zero (compile-time assertions check
/// the size, the alignment and both offsets). An `AtomicU64` has the size, alignment and bit
/// pattern of a `u64`, so on a little-endian host (x86) the memory of a descriptor *is* the
/// architectural image: a VMM may place one in memory it can translate to a physical address
/// (its alignment guarantees bits 5:0 of that address are zero, as the VMCS
/// "posted-interrupt descriptor address" and a VT-d posted IRTE require) and hand that address
/// to the hardware, which then updates it concurrently with the methods below (all accesses
/// are atomic, as the hardware's are). Keep the descriptor at a fixed address while the
/// hardware knows it.
///
/// All methods take `&self` and never block; share the descriptor between threads by
/// reference (it is `Sync`).
#[repr(C, align(64))]
pub struct PostedInterruptDescriptor {
    /// Bits 255:0: vector `v` is bit `v % 64` of word `v / 64`.
    pir: [AtomicU64; 4],
    /// Bits 319:256: ON, SN, NV, NDST.
    control: AtomicU64,
    /// Bits 511:320: reserved, zero.
    reserved: [u64; 3],
}

#[cfg(not(loom))]
const _: () = {
    assert!(core::mem::size_of::<PostedInterruptDescriptor>() == PID_SIZE);
    assert!(core::mem::align_of::<PostedInterruptDescriptor>() == PID_ALIGN);
    assert!(core::mem::offset_of!(PostedInterruptDescriptor, pir) == PIR_OFFSET);
    assert!(core::mem::offset_of!(PostedInterruptDescriptor, control) == CONTROL_OFFSET);
    assert!(core::mem::size_of::<AtomicU64>() == 8);
};

/// Builds a descriptor from its words (a macro so that it is `const` without loom, whose
/// atomics have no `const` constructor).
macro_rules! descriptor {
    ($p0:expr, $p1:expr, $p2:expr, $p3:expr, $control:expr) => {
        PostedInterruptDescriptor {
            pir: [AtomicU64::new($p0), AtomicU64::new($p1), AtomicU64::new($p2), AtomicU64::new($p3)],
            control: AtomicU64::new($control),
            reserved: [0; 3],
        }
    };
}

/// The PIR word index (0–3) and bit mask of `vector`.
#[inline(always)]
const fn pir_position(vector: u8) -> (usize, u64) {
    ((vector >> 6) as usize, 1u64 << (vector & 63))
}

impl PostedInterruptDescriptor {
    /// An all-zero descriptor: PIR empty, ON and SN clear, NV 0, NDST 0.
    #[cfg(not(loom))]
    #[inline]
    pub const fn new() -> Self {
        descriptor!(0, 0, 0, 0, 0)
    }

    /// An all-zero descriptor: PIR empty, ON and SN clear, NV 0, NDST 0 (under loom, whose
    /// atomics cannot be built in a `const fn`).
    #[cfg(loom)]
    pub fn new() -> Self {
        descriptor!(0, 0, 0, 0, 0)
    }

    /// A descriptor with the given notification vector and destination, everything else zero.
    #[inline]
    pub fn with_notification(vector: u8, destination: NotificationDestination) -> Self {
        let control = PidControl { nv: vector, ndst: destination, ..PidControl::default() };
        descriptor!(0, 0, 0, 0, control.bits())
    }

    /// A descriptor from a 64-byte image in the hardware layout (little-endian), e.g. a saved
    /// one. Reserved bits (control bits 15:2 and 31:24, bytes 40–63) are dropped (read as zero).
    pub fn from_bytes(image: &[u8; PID_SIZE]) -> Self {
        let word = |i: usize| -> u64 {
            let mut bytes = [0u8; 8];
            for (dst, src) in bytes.iter_mut().zip(image.iter().skip(i.wrapping_mul(8))) {
                *dst = *src;
            }
            u64::from_le_bytes(bytes)
        };
        descriptor!(word(0), word(1), word(2), word(3), word(4) & CONTROL_DEFINED)
    }

    /// The 64-byte image in the hardware layout (little-endian), for inspection and tests.
    ///
    /// Each word is read atomically, but the image is not one atomic snapshot: a concurrent
    /// post may be half in it (its PIR bit without its ON, or the reverse).
    pub fn to_bytes(&self) -> [u8; PID_SIZE] {
        let words = [
            self.pir[0].load(Ordering::Acquire),
            self.pir[1].load(Ordering::Acquire),
            self.pir[2].load(Ordering::Acquire),
            self.pir[3].load(Ordering::Acquire),
            self.control.load(Ordering::Acquire),
            self.reserved[0],
            self.reserved[1],
            self.reserved[2],
        ];
        let mut image = [0u8; PID_SIZE];
        for (chunk, word) in image.chunks_exact_mut(8).zip(words) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        image
    }

    /// The PIR word that holds `vector`.
    #[inline(always)]
    fn pir_word(&self, vector: u8) -> (&AtomicU64, u64) {
        let (index, bit) = pir_position(vector);
        let [p0, p1, p2, p3] = &self.pir;
        let word = match index {
            0 => p0,
            1 => p1,
            2 => p2,
            _ => p3,
        };
        (word, bit)
    }

    /// Posts `vector`: what a VMM does to request an interrupt for the vCPU that owns the
    /// descriptor (KVM's `pi_test_and_set_pir` first; VT-d and IPI virtualization follow
    /// [`post_as_hardware`](Self::post_as_hardware)).
    ///
    /// Atomically sets PIR bit `vector`; if it was already set the post merges with the earlier
    /// one ([`PostOutcome::Coalesced`]): whoever posted it first set ON or found it set. Otherwise it reads the control word and, in one
    /// compare-exchange (retried, reading the word once per attempt, only if another agent
    /// changed it in between): if ON is set, leaves it ([`PostOutcome::Pending`]); else if SN is
    /// set, leaves ON clear ([`PostOutcome::Suppressed`], VT-d's behaviour); else sets ON and
    /// returns [`PostOutcome::Notify`] with NV and NDST. Lock-free; never loses the vector: it
    /// stays in PIR until a [`harvest`](Self::harvest). See the module documentation for what
    /// the poster must do with each outcome.
    ///
    /// Any vector is accepted, like the hardware; the APIC models keep vectors 0–15 out.
    #[inline]
    pub fn post(&self, vector: u8) -> PostOutcome {
        let (word, bit) = self.pir_word(vector);
        if word.fetch_or(bit, Ordering::SeqCst) & bit != 0 {
            return PostOutcome::Coalesced;
        }
        self.raise_on()
    }

    /// Posts `vector` as the hardware does it (VT-d, and the processor for IPI virtualization,
    /// SDM "IPI Virtualization"): PIR bit `vector` is set and then ON is examined whether or
    /// not the bit was already set, so a vector that sits in PIR without ON (a descriptor a
    /// VMM wrote, or one whose SN was cleared without recomputing ON) still gets its
    /// notification. With ON and SN clear: [`PostOutcome::Notify`]. Otherwise, if the bit was
    /// already set, [`PostOutcome::Coalesced`], else [`PostOutcome::Pending`] or
    /// [`PostOutcome::Suppressed`] as for [`post`](Self::post). Costs one more
    /// read-modify-write than `post` only when the vector was already requested.
    #[inline]
    pub fn post_as_hardware(&self, vector: u8) -> PostOutcome {
        let (word, bit) = self.pir_word(vector);
        let requested = word.fetch_or(bit, Ordering::SeqCst) & bit != 0;
        match self.raise_on() {
            PostOutcome::Pending | PostOutcome::Suppressed if requested => PostOutcome::Coalesced,
            outcome => outcome,
        }
    }

    /// The control-word half of a post, after its PIR bit is set: in one compare-exchange
    /// (retried, reading the word once per attempt), leave ON if set (Pending), leave ON clear
    /// if SN is set (Suppressed), else set ON (Notify with NV and NDST).
    #[inline]
    fn raise_on(&self) -> PostOutcome {
        // Every path below ends in a successful compare-exchange, so the poster's view of ON and
        // SN is a read-modify-write, ordered against the consumer's (also read-modify-write)
        // clearing of ON or SN: whichever comes second sees the other's effect.
        let mut current = self.control.load(Ordering::Acquire);
        loop {
            let (new, outcome) = if current & CONTROL_ON != 0 {
                (current, PostOutcome::Pending)
            } else if current & CONTROL_SN != 0 {
                (current, PostOutcome::Suppressed)
            } else {
                (current | CONTROL_ON, PostOutcome::Notify(PidControl::from_bits(current).notification()))
            };
            match self.control.compare_exchange_weak(current, new, Ordering::SeqCst, Ordering::Acquire) {
                Ok(_) => return outcome,
                Err(actual) => current = actual,
            }
        }
    }

    /// Takes every posted vector: what the CPU does in posted-interrupt processing (SDM steps:
    /// clear ON, then VIRR |= PIR and PIR ← 0) and what a VMM does before VM entry.
    ///
    /// Clears ON first, then reads the four PIR words and atomically exchanges with 0 only those
    /// that are non-zero (KVM's `pi_harvest_pir`: fewer writes to a line that VT-d and posters
    /// also write). Each requested bit is taken by exactly one harvest, and no bit can be set
    /// and cleared unseen in between. A post that lands after ON was cleared either is taken
    /// here or finds ON clear and sets it again, with its own notification.
    ///
    /// Returns the vectors taken, or `None` if PIR was empty; the caller merges them into VIRR
    /// and raises RVI to their highest.
    #[inline]
    pub fn harvest(&self) -> Option<VectorSet> {
        let taken = self.harvest_detailed().vectors;
        if taken.is_empty() {
            None
        } else {
            Some(taken)
        }
    }

    /// [`harvest`](Self::harvest), also saying whether ON was set (this harvest ended one ON
    /// period: the number of such harvests, plus one if ON is set now, equals the number of ON
    /// 0→1 transitions).
    #[inline]
    pub fn harvest_detailed(&self) -> Harvest {
        let before = self.control.fetch_and(!CONTROL_ON, Ordering::SeqCst);
        let mut words = [0u64; 4];
        for (taken, word) in words.iter_mut().zip(&self.pir) {
            if word.load(Ordering::Acquire) != 0 {
                *taken = word.swap(0, Ordering::SeqCst);
            }
        }
        Harvest { outstanding: before & CONTROL_ON != 0, vectors: VectorSet(words) }
    }

    /// Whether the vCPU has something to pick up: ON, or SN with a non-empty PIR (KVM's
    /// `pi_has_pending_interrupt`; with SN set, posts fill PIR without setting ON).
    #[inline]
    pub fn is_pending(&self) -> bool {
        let control = self.control.load(Ordering::SeqCst);
        control & CONTROL_ON != 0 || (control & CONTROL_SN != 0 && !self.pir().is_empty())
    }

    /// ON: a notification is outstanding (set by the post that found it clear, cleared by the
    /// next harvest).
    #[inline]
    pub fn outstanding(&self) -> bool {
        self.control.load(Ordering::SeqCst) & CONTROL_ON != 0
    }

    /// SN: whether notifications are suppressed.
    #[inline]
    pub fn notifications_suppressed(&self) -> bool {
        self.control.load(Ordering::SeqCst) & CONTROL_SN != 0
    }

    /// Sets (`true`) or clears (`false`) SN, leaving the rest of the control word intact.
    ///
    /// Setting SN returns `None`. Clearing it then recomputes ON: if PIR is not empty (vectors
    /// posted while SN was set, which left ON clear) and ON is clear, it sets ON and returns the
    /// notification that this ON 0→1 transition is due, exactly as a [`PostOutcome::Notify`]
    /// (a vCPU thread clearing SN for itself before entry just harvests). Returns `None` if
    /// PIR is empty, ON was already set, or SN was set again in between.
    pub fn suppress_notifications(&self, suppress: bool) -> Option<Notification> {
        if suppress {
            self.control.fetch_or(CONTROL_SN, Ordering::SeqCst);
            return None;
        }
        self.control.fetch_and(!CONTROL_SN, Ordering::SeqCst);
        if self.pir().is_empty() {
            return None;
        }
        let mut current = self.control.load(Ordering::Acquire);
        loop {
            if current & (CONTROL_ON | CONTROL_SN) != 0 {
                return None;
            }
            match self.control.compare_exchange_weak(
                current,
                current | CONTROL_ON,
                Ordering::SeqCst,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(PidControl::from_bits(current).notification()),
                Err(actual) => current = actual,
            }
        }
    }

    /// The decoded control word (one atomic read).
    #[inline]
    pub fn control(&self) -> PidControl {
        PidControl::from_bits(self.control.load(Ordering::SeqCst))
    }

    /// NV: the notification vector.
    #[inline]
    pub fn notification_vector(&self) -> u8 {
        self.control().nv
    }

    /// NDST: the notification destination.
    #[inline]
    pub fn notification_destination(&self) -> NotificationDestination {
        self.control().ndst
    }

    /// Replaces NV and NDST in one compare-exchange loop that reads the control word once per
    /// attempt, leaving ON, SN and PIR intact; returns the control word it replaced.
    ///
    /// A VMM does this when a vCPU moves to another physical CPU (NDST) and when it blocks or
    /// resumes (KVM switches NV to a wake-up vector while the vCPU is blocked, so that VT-d
    /// and IPI-virtualization posts wake it). If the returned word has ON set, a post was
    /// notified with the *old* vector and destination before the switch; KVM then sends itself
    /// the new vector so that the wake-up is not lost.
    pub fn set_notification(&self, vector: u8, destination: NotificationDestination) -> PidControl {
        let fields = (0xFFu64 << CONTROL_NV_SHIFT) | (0xFFFF_FFFFu64 << CONTROL_NDST_SHIFT);
        let wanted = PidControl { nv: vector, ndst: destination, ..PidControl::default() }.bits();
        let mut current = self.control.load(Ordering::Acquire);
        loop {
            let new = (current & !fields) | wanted;
            match self.control.compare_exchange_weak(current, new, Ordering::SeqCst, Ordering::Acquire) {
                Ok(_) => return PidControl::from_bits(current),
                Err(actual) => current = actual,
            }
        }
    }

    /// The requested vectors not yet harvested, without taking them (four atomic reads, not
    /// one snapshot).
    #[inline]
    pub fn pir(&self) -> VectorSet {
        VectorSet([
            self.pir[0].load(Ordering::SeqCst),
            self.pir[1].load(Ordering::SeqCst),
            self.pir[2].load(Ordering::SeqCst),
            self.pir[3].load(Ordering::SeqCst),
        ])
    }
}

impl Default for PostedInterruptDescriptor {
    /// The all-zero descriptor, as [`PostedInterruptDescriptor::new`].
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for PostedInterruptDescriptor {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PostedInterruptDescriptor")
            .field("pir", &self.pir())
            .field("control", &self.control())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
