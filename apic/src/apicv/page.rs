//! The virtual-APIC page: 4 KiB, page-aligned, laid out as the xAPIC register page.

use crate::lapic::regs::{self, LvtEntry};
use crate::lapic::LocalApic;
use crate::VectorSet;

/// VTPR: virtual task priority (offset 0x80).
pub const VTPR: u32 = regs::TPR;
/// VPPR: virtual processor priority (offset 0xA0).
pub const VPPR: u32 = regs::PPR;
/// VEOI: virtual EOI (offset 0xB0).
pub const VEOI: u32 = regs::EOI;
/// VISR: virtual in-service register, eight words at 0x100–0x170.
pub const VISR: u32 = regs::ISR;
/// VTMR: virtual trigger mode register, eight words at 0x180–0x1F0 (the CPU never reads it).
pub const VTMR: u32 = regs::TMR;
/// VIRR: virtual interrupt request register, eight words at 0x200–0x270.
pub const VIRR: u32 = regs::IRR;
/// VICR_LO: virtual interrupt command, low word (0x300).
pub const VICR_LO: u32 = regs::ICR_LOW;
/// VICR_HI: virtual interrupt command, high word (0x310).
pub const VICR_HI: u32 = regs::ICR_HIGH;

/// The virtual-APIC page of one vCPU (SDM "Virtual-APIC Page").
///
/// The processor reads and writes the registers it virtualizes (VTPR, VPPR, VEOI, VISR, VIRR,
/// VICR) here; everything else is plain storage that the VMM interprets, and with
/// APIC-register virtualization the guest reads those registers from here too. So the page is
/// the vCPU's local-APIC register image, laid out as the xAPIC MMIO page: each 32-bit register
/// in the low bytes of its 16-byte slot. KVM uses the same page as its LAPIC register storage,
/// and its first 1 KiB is what KVM_GET_LAPIC returns.
///
/// `repr(C, align(4096))`: a VMM can hand the physical address of a `VirtualApicPage` it owns
/// to the VMCS "virtual-APIC address" field; the type guarantees the alignment.
#[repr(C, align(4096))]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct VirtualApicPage {
    words: [u32; 1024],
}

const _: () = assert!(core::mem::size_of::<VirtualApicPage>() == 4096);
const _: () = assert!(core::mem::align_of::<VirtualApicPage>() == 4096);

impl Default for VirtualApicPage {
    fn default() -> Self {
        VirtualApicPage { words: [0; 1024] }
    }
}

impl core::fmt::Debug for VirtualApicPage {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("VirtualApicPage")
            .field("vtpr", &self.read(VTPR))
            .field("vppr", &self.read(VPPR))
            .field("visr", &self.visr())
            .field("virr", &self.virr())
            .finish_non_exhaustive()
    }
}

impl VirtualApicPage {
    /// An all-zero page.
    pub const fn new() -> Self {
        VirtualApicPage { words: [0; 1024] }
    }

    /// The 32-bit register at `offset` (its low two bits are ignored; offsets past the page read
    /// 0).
    #[inline(always)]
    pub fn read(&self, offset: u32) -> u32 {
        self.words.get((offset >> 2) as usize).copied().unwrap_or(0)
    }

    /// Writes the 32-bit register at `offset` (offsets past the page are ignored).
    #[inline(always)]
    pub fn write(&mut self, offset: u32, value: u32) {
        if let Some(word) = self.words.get_mut((offset >> 2) as usize) {
            *word = value;
        }
    }

    /// The 64 bits at `offset` (two consecutive words, as an x2APIC RDMSR reads them).
    #[inline]
    pub fn read64(&self, offset: u32) -> u64 {
        u64::from(self.read(offset)) | u64::from(self.read(offset.wrapping_add(4))) << 32
    }

    /// Writes the 64 bits at `offset`.
    #[inline]
    pub fn write64(&mut self, offset: u32, value: u64) {
        self.write(offset, value as u32);
        self.write(offset.wrapping_add(4), (value >> 32) as u32);
    }

    /// Writes byte `index` (0–3) of the register at `offset`, as a narrow guest store does.
    #[inline]
    pub fn write_byte(&mut self, offset: u32, index: u32, byte: u8) {
        let shift = (index & 3) << 3;
        let value = (self.read(offset) & !(0xFF << shift)) | u32::from(byte) << shift;
        self.write(offset, value);
    }

    /// Whether bit `vector` of the 256-bit register at `base` (VISR, VTMR or VIRR) is set:
    /// word `base | (vector & 0xE0) >> 1`, bit `vector & 31`.
    #[inline(always)]
    pub fn test_bit(&self, base: u32, vector: u8) -> bool {
        let (offset, bit) = Self::bit_position(base, vector);
        self.read(offset) & bit != 0
    }

    /// Sets or clears bit `vector` of the 256-bit register at `base`.
    #[inline(always)]
    pub fn set_bit(&mut self, base: u32, vector: u8, value: bool) {
        let (offset, bit) = Self::bit_position(base, vector);
        let word = self.read(offset);
        self.write(offset, if value { word | bit } else { word & !bit });
    }

    #[inline(always)]
    const fn bit_position(base: u32, vector: u8) -> (u32, u32) {
        (base | ((vector as u32 & 0xE0) >> 1), 1 << (vector & 31))
    }

    /// The 256-bit register at `base` as a set.
    #[inline]
    pub fn vectors(&self, base: u32) -> VectorSet {
        let mut set = VectorSet::EMPTY;
        for i in 0..8u32 {
            set.set_word32(i as usize, self.read(base | i << 4));
        }
        set
    }

    /// Replaces the 256-bit register at `base`.
    #[inline]
    pub fn set_vectors(&mut self, base: u32, set: &VectorSet) {
        for i in 0..8u32 {
            self.write(base | i << 4, set.word32(i as usize));
        }
    }

    /// The highest set bit of the 256-bit register at `base`.
    #[inline]
    pub fn highest(&self, base: u32) -> Option<u8> {
        (0..8u32).rev().find_map(|i| {
            let word = self.read(base | i << 4);
            // i ≤ 7 and the bit ≤ 31: the vector fits in a u8.
            (word != 0).then(|| (i << 5 | (31u32.wrapping_sub(word.leading_zeros()))) as u8)
        })
    }

    /// VIRR as a set.
    #[inline]
    pub fn virr(&self) -> VectorSet {
        self.vectors(VIRR)
    }

    /// VISR as a set.
    #[inline]
    pub fn visr(&self) -> VectorSet {
        self.vectors(VISR)
    }

    /// VTPR bits 7:0.
    #[inline]
    pub fn vtpr(&self) -> u8 {
        self.read(VTPR) as u8
    }

    /// VPPR bits 7:0.
    #[inline]
    pub fn vppr(&self) -> u8 {
        self.read(VPPR) as u8
    }

    /// Fills the page with `apic`'s registers at host TSC `now`, as a VMM does when it moves a
    /// vCPU from an emulated local APIC onto APIC virtualization: every register at its xAPIC
    /// offset (the x2APIC ID, LDR and 64-bit ICR as x2APIC mode keeps them: the ICR's high half
    /// at 0x304, where an x2APIC RDMSR of 0x830 reads it). The current count is a snapshot.
    pub fn load_lapic(&mut self, apic: &LocalApic, now: u64) {
        let s = apic.state();
        let x2apic = apic.mode() == crate::lapic::ApicMode::X2Apic;
        *self = VirtualApicPage::new();
        self.write(regs::ID, if x2apic { apic.id() } else { apic.id() << 24 });
        self.write(regs::VERSION, apic.config().version());
        self.write(VTPR, u32::from(s.tpr));
        self.write(VPPR, u32::from(apic.ppr()));
        self.write(regs::LDR, s.ldr);
        self.write(regs::DFR, s.dfr);
        self.write(regs::SVR, s.svr);
        self.set_vectors(VISR, &s.isr);
        self.set_vectors(VTMR, &s.tmr);
        self.set_vectors(VIRR, &s.irr);
        self.write(regs::ESR, s.esr);
        if x2apic {
            self.write64(VICR_LO, s.icr);
        } else {
            self.write(VICR_LO, s.icr as u32);
            self.write(VICR_HI, (s.icr >> 32) as u32);
        }
        for entry in LvtEntry::ALL {
            self.write(entry.offset(), s.lvt(entry));
        }
        self.write(regs::TIMER_INITIAL_COUNT, s.timer.initial_count);
        let mut reader = apic.clone();
        let count = if x2apic {
            reader.rdmsr(0x839, now).unwrap_or(0) as u32
        } else {
            let mut bytes = [0; 4];
            let _ = reader.mmio_read(regs::TIMER_CURRENT_COUNT.into(), &mut bytes, now);
            u32::from_le_bytes(bytes)
        };
        self.write(regs::TIMER_CURRENT_COUNT, count);
        self.write(regs::TIMER_DIVIDE_CONFIG, s.timer.divide_config);
    }

    /// The first 1 KiB of the page: the LAPIC register image. In xAPIC mode it is what
    /// KVM_GET_LAPIC returns (compare it with the `regs` of a `kvm_lapic_state`); in x2APIC
    /// mode the page keeps the 64-bit ICR at 0x300–0x307 and the unshifted ID, where
    /// KVM_GET_LAPIC also copies the ICR's high half to 0x310 and (without 32-bit IDs) shifts
    /// the ID.
    pub fn lapic_image(&self) -> [u8; 1024] {
        let mut image = [0u8; 1024];
        for (chunk, word) in image.chunks_exact_mut(4).zip(self.words.iter()) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        image
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::vec::Vec;

    use super::*;
    use crate::lapic::LapicConfig;
    use crate::Interrupt;

    #[test]
    fn bit_addressing_follows_the_sdm() {
        let mut page = VirtualApicPage::new();
        // Vector 0x45: VIRR word at 0x200 | (0x40 >> 1) = 0x220, bit 5.
        page.set_bit(VIRR, 0x45, true);
        assert_eq!(page.read(0x220), 1 << 5);
        assert!(page.test_bit(VIRR, 0x45));
        assert_eq!(page.highest(VIRR), Some(0x45));
        page.set_bit(VIRR, 0xFF, true);
        assert_eq!(page.read(0x270), 1 << 31);
        assert_eq!(page.highest(VIRR), Some(0xFF));
        page.set_bit(VIRR, 0xFF, false);
        assert_eq!(page.highest(VIRR), Some(0x45));
        assert_eq!(page.virr().iter().collect::<Vec<_>>(), [0x45]);
        assert_eq!(page.highest(VISR), None);
    }

    #[test]
    fn the_page_is_the_lapic_register_image() {
        let mut apic = LocalApic::new(LapicConfig { id: 3, ..LapicConfig::default() });
        let _ = apic.mmio_write(regs::SVR.into(), &0x1FFu32.to_le_bytes(), 0);
        let _ = apic.mmio_write(regs::TPR.into(), &0x20u32.to_le_bytes(), 0);
        let _ = apic.accept(&Interrupt { vector: 0x61, level: true, ..Interrupt::default() });
        let _ = apic.acknowledge();
        let _ = apic.accept(&Interrupt { vector: 0x33, level: true, ..Interrupt::default() });
        let mut page = VirtualApicPage::new();
        page.load_lapic(&apic, 0);
        assert_eq!(page.read(regs::ID), 3 << 24);
        assert_eq!(page.vtpr(), 0x20);
        assert_eq!(page.vppr(), 0x60);
        assert_eq!(page.visr(), apic.state().isr);
        assert_eq!(page.virr(), apic.state().irr);
        assert_eq!(page.read(regs::SVR), 0x1FF);
        assert_eq!(page.read(regs::LVT_TIMER), 0x1_0000);
        // The same image KVM_GET_LAPIC would give for this APIC.
        #[cfg(all(feature = "kvm", target_arch = "x86_64", target_os = "linux"))]
        {
            let kvm = apic.to_kvm(0, crate::lapic::kvm::KvmLapicFormat::default());
            let image = page.lapic_image();
            for (i, (&a, &b)) in image.iter().zip(kvm.regs.iter()).enumerate() {
                assert_eq!(a, b as u8, "byte {i:#x}");
            }
        }
    }

    #[test]
    fn narrow_and_wide_writes_land_where_the_hardware_puts_them() {
        let mut page = VirtualApicPage::new();
        page.write(VTPR, 0x1122_3344);
        page.write_byte(VTPR, 1, 0xAA);
        assert_eq!(page.read(VTPR), 0x1122_AA44);
        page.write64(VICR_LO, 0x0000_0007_0000_4041);
        assert_eq!((page.read(VICR_LO), page.read(VICR_LO + 4)), (0x4041, 7));
        assert_eq!(page.read(0x2000), 0, "past the page");
        page.write(0x2000, 1);
    }
}
