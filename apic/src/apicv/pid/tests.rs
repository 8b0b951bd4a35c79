//! Single-threaded semantics and layout of the posted-interrupt descriptor. The concurrent
//! protocol is checked by `tests/loom_pid.rs` (every interleaving) and `tests/pid_stress.rs`.

use super::*;

/// The notification vector KVM uses for posted interrupts (POSTED_INTR_VECTOR, 0xF2).
const NV: u8 = 0xF2;
/// A wake-up vector (KVM's POSTED_INTR_WAKEUP_VECTOR, 0xF1).
const WAKEUP_NV: u8 = 0xF1;

/// A descriptor that notifies vector [`NV`] to x2APIC ID 5.
fn descriptor() -> PostedInterruptDescriptor {
    PostedInterruptDescriptor::with_notification(NV, NotificationDestination::x2apic(5))
}

fn notify(vector: u8, destination: NotificationDestination) -> PostOutcome {
    PostOutcome::Notify(Notification { vector, destination })
}

/// Bit `bit` (0–511) of the 64-byte image.
fn image_bit(image: &[u8; PID_SIZE], bit: usize) -> bool {
    image[bit / 8] & (1 << (bit % 8)) != 0
}

/// A `static` descriptor: `new` is `const`, as a VMM that keeps descriptors in a static table needs.
static STATIC_PID: PostedInterruptDescriptor = PostedInterruptDescriptor::new();

#[test]
fn descriptor_is_64_bytes_and_64_byte_aligned() {
    assert_eq!(core::mem::size_of::<PostedInterruptDescriptor>(), 64);
    assert_eq!(core::mem::align_of::<PostedInterruptDescriptor>(), 64);
    let pids = [PostedInterruptDescriptor::new(), PostedInterruptDescriptor::new()];
    for pid in &pids {
        assert_eq!(pid as *const _ as usize % 64, 0);
    }
    assert_eq!(&STATIC_PID as *const _ as usize % 64, 0);
}

#[test]
fn new_and_default_are_all_zero() {
    assert_eq!(PostedInterruptDescriptor::new().to_bytes(), [0; 64]);
    assert_eq!(PostedInterruptDescriptor::default().to_bytes(), [0; 64]);
    assert_eq!(STATIC_PID.to_bytes(), [0; 64]);
    let pid = PostedInterruptDescriptor::new();
    assert!(!pid.is_pending());
    assert!(!pid.outstanding());
    assert_eq!(pid.control(), PidControl::default());
    assert_eq!(pid.harvest(), None);
}

#[test]
fn pir_bit_of_every_vector_is_descriptor_bit_vector() {
    for vector in 0..=255u8 {
        let pid = PostedInterruptDescriptor::new();
        assert!(pid.post(vector).is_new());
        let image = pid.to_bytes();
        for bit in 0..256 {
            assert_eq!(image_bit(&image, bit), bit == usize::from(vector), "vector {vector:#x}, bit {bit}");
        }
        // ON is bit 256, i.e. bit 0 of byte 32.
        assert!(image_bit(&image, 256));
        let taken = pid.harvest().expect("one vector posted");
        assert!(taken.iter().eq([vector]));
        assert_eq!(pid.to_bytes(), [0; 64]);
    }
}

#[test]
fn control_fields_sit_at_their_sdm_bit_positions() {
    let pid = PostedInterruptDescriptor::new();
    let _ = pid.set_notification(0xA5, NotificationDestination(0x1234_5678));
    let image = pid.to_bytes();
    // NV = bits 279:272 = byte 34; NDST = bits 319:288 = bytes 36–39, little-endian.
    assert_eq!(image[34], 0xA5);
    assert_eq!(image[36..40], [0x78, 0x56, 0x34, 0x12]);
    assert!(image.iter().enumerate().all(|(i, &b)| matches!(i, 34 | 36..=39) || b == 0));

    pid.suppress_notifications(true);
    let image = pid.to_bytes();
    // SN = bit 257 = bit 1 of byte 32; ON (bit 256) still clear.
    assert!(image_bit(&image, 257));
    assert!(!image_bit(&image, 256));
    assert_eq!(image[32], 0b10);

    assert_eq!(pid.suppress_notifications(false), None);
    assert_eq!(pid.post(0x31), notify(0xA5, NotificationDestination(0x1234_5678)));
    assert_eq!(pid.to_bytes()[32], 0b01);
    assert_eq!(CONTROL_OFFSET * 8, 256);
}

#[test]
fn ndst_helpers_use_the_x2apic_and_xapic_formats() {
    assert_eq!(NotificationDestination::x2apic(0x0001_0203).0, 0x0001_0203);
    assert_eq!(NotificationDestination::xapic(0x12).0, 0x1200);
    assert_eq!(NotificationDestination::xapic(0x12).xapic_id(), 0x12);
    assert_eq!(NotificationDestination::x2apic(77).x2apic_id(), 77);
    let pid = PostedInterruptDescriptor::with_notification(NV, NotificationDestination::xapic(3));
    // xAPIC ID 3 in NDST bits 15:8 = descriptor bits 303:296 = byte 37.
    assert_eq!(pid.to_bytes()[36..40], [0, 3, 0, 0]);
    assert_eq!(pid.notification_destination().xapic_id(), 3);
    assert_eq!(pid.notification_vector(), NV);
}

#[test]
fn image_round_trips_and_drops_reserved_bits() {
    let mut image = [0u8; 64];
    image[0] = 0x01; // vector 0
    image[31] = 0x80; // vector 255
    image[32] = 0b1111_1111; // ON, SN and reserved bits 263:258
    image[33] = 0xFF; // reserved bits 271:264
    image[34] = NV;
    image[35] = 0xFF; // reserved bits 287:280
    image[36] = 7; // NDST = 7
    image[40..].fill(0xEE); // reserved bytes
    let pid = PostedInterruptDescriptor::from_bytes(&image);
    let control = pid.control();
    assert!(control.on && control.sn);
    assert_eq!(control.nv, NV);
    assert_eq!(control.ndst, NotificationDestination(7));
    let mut expected = [0u8; 64];
    expected[0] = 0x01;
    expected[31] = 0x80;
    expected[32] = 0b11;
    expected[34] = NV;
    expected[36] = 7;
    assert_eq!(pid.to_bytes(), expected);
    assert_eq!(PostedInterruptDescriptor::from_bytes(&expected).to_bytes(), expected);
    assert!(pid.pir().iter().eq([0, 255]));
}

#[test]
fn control_word_decodes_and_encodes() {
    let control = PidControl { on: true, sn: false, nv: 0xEC, ndst: NotificationDestination(0xFFFF_FFFF) };
    assert_eq!(control.bits(), 0xFFFF_FFFF_00EC_0001);
    assert_eq!(PidControl::from_bits(control.bits()), control);
    // Reserved bits are ignored.
    assert_eq!(PidControl::from_bits(control.bits() | 0xFF00_FFFC), control);
    assert_eq!(CONTROL_DEFINED, 0xFFFF_FFFF_00FF_0003);
}

#[test]
fn first_post_notifies_later_posts_are_pending_or_coalesced() {
    let pid = descriptor();
    assert_eq!(pid.post(0x41), notify(NV, NotificationDestination(5)));
    assert!(pid.outstanding() && pid.is_pending());
    assert_eq!(pid.post(0x42), PostOutcome::Pending);
    assert_eq!(pid.post(0xE0), PostOutcome::Pending);
    assert_eq!(pid.post(0x41), PostOutcome::Coalesced);
    assert!(!PostOutcome::Coalesced.is_new());
    assert!(PostOutcome::Pending.is_new() && PostOutcome::Suppressed.is_new());

    let taken = pid.harvest().expect("three vectors");
    assert!(taken.iter().eq([0x41, 0x42, 0xE0]));
    assert_eq!(taken.highest(), Some(0xE0));
    assert!(!pid.outstanding() && !pid.is_pending());
    assert_eq!(pid.harvest(), None);
    // A harvested vector is new again, and the next post after a harvest notifies again.
    assert_eq!(pid.post(0x41), notify(NV, NotificationDestination(5)));
}

#[test]
fn exactly_one_notify_per_on_transition() {
    let pid = descriptor();
    let (mut notifies, mut on_periods) = (0u32, 0u32);
    for round in 0..50u32 {
        // A varying number of posts per ON period, over all four PIR words.
        for i in 0..(round % 7) {
            let vector = ((round * 37 + i * 71) % 256) as u8;
            if let PostOutcome::Notify(n) = pid.post(vector) {
                assert_eq!(n.vector, NV);
                notifies += 1;
            }
        }
        let harvest = pid.harvest_detailed();
        on_periods += u32::from(harvest.outstanding);
        assert_eq!(harvest.outstanding, !harvest.vectors.is_empty());
        assert_eq!(notifies, on_periods);
    }
}

#[test]
fn harvest_with_on_clear_still_takes_pir() {
    // With SN set, PIR fills without ON; a harvest takes it all the same and reports no ON period.
    let pid = descriptor();
    pid.suppress_notifications(true);
    assert_eq!(pid.post(0x80), PostOutcome::Suppressed);
    let harvest = pid.harvest_detailed();
    assert!(!harvest.outstanding);
    assert!(harvest.vectors.iter().eq([0x80]));
    assert!(!pid.is_pending());
}

#[test]
fn suppressed_post_sets_pir_but_not_on() {
    let pid = descriptor();
    assert_eq!(pid.suppress_notifications(true), None);
    assert!(pid.notifications_suppressed());
    assert_eq!(pid.post(0x51), PostOutcome::Suppressed);
    assert_eq!(pid.post(0x52), PostOutcome::Suppressed);
    assert_eq!(pid.post(0x51), PostOutcome::Coalesced);
    assert!(!pid.outstanding());
    // "Has pending" = ON or (SN and PIR ≠ 0).
    assert!(pid.is_pending());
    assert!(pid.pir().iter().eq([0x51, 0x52]));
}

#[test]
fn clearing_sn_recomputes_on_and_asks_for_one_notification() {
    let pid = descriptor();
    pid.suppress_notifications(true);
    let _ = pid.post(0x60);
    assert_eq!(
        pid.suppress_notifications(false),
        Some(Notification { vector: NV, destination: NotificationDestination(5) })
    );
    assert!(pid.outstanding() && !pid.notifications_suppressed());
    // That transition was the one notification: later posts are pending.
    assert_eq!(pid.post(0x61), PostOutcome::Pending);
    assert!(pid.harvest().expect("two vectors").iter().eq([0x60, 0x61]));
}

#[test]
fn clearing_sn_with_empty_pir_or_on_set_asks_for_nothing() {
    let pid = descriptor();
    pid.suppress_notifications(true);
    assert_eq!(pid.suppress_notifications(false), None);
    assert!(!pid.outstanding());
    // ON set before SN: the notification of that period was already due; SN changes nothing.
    let _ = pid.post(0x70);
    pid.suppress_notifications(true);
    assert_eq!(pid.post(0x71), PostOutcome::Pending);
    assert_eq!(pid.suppress_notifications(false), None);
    assert!(pid.outstanding());
}

#[test]
fn set_notification_keeps_on_sn_and_pir() {
    let pid = descriptor();
    let _ = pid.post(0x33);
    let _ = pid.post(0xC4);
    pid.suppress_notifications(true);
    let before = pid.to_bytes();
    let previous = pid.set_notification(WAKEUP_NV, NotificationDestination::xapic(9));
    assert_eq!(previous, PidControl { on: true, sn: true, nv: NV, ndst: NotificationDestination(5) });
    let after = pid.to_bytes();
    assert_eq!(after[..33], before[..33], "PIR, ON and SN unchanged");
    assert_eq!(
        pid.control(),
        PidControl { on: true, sn: true, nv: WAKEUP_NV, ndst: NotificationDestination(0x900) }
    );
    assert!(pid.pir().iter().eq([0x33, 0xC4]));

    // The next ON period notifies the new vector and destination.
    assert!(pid.harvest().is_some());
    pid.suppress_notifications(false);
    assert_eq!(pid.post(0x20), notify(WAKEUP_NV, NotificationDestination::xapic(9)));
    let previous = pid.set_notification(NV, NotificationDestination(5));
    assert!(previous.on && !previous.sn);
}

#[test]
fn debug_shows_pir_and_control() {
    extern crate std;
    use std::format;
    let pid = descriptor();
    let _ = pid.post(0x41);
    let text = format!("{pid:?}");
    assert!(text.contains("pir") && text.contains("on: true"), "{text}");
}
