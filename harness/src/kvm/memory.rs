//! Guest RAM: one anonymous shared mapping registered as memory slot 0 at GPA 0.

use std::ptr::NonNull;

/// The guest's RAM, mapped in the host.
#[derive(Debug)]
pub struct GuestMemory {
    base: NonNull<u8>,
    size: usize,
}

// SAFETY: the mapping is plain memory owned by this value for its whole life; concurrent
// access from vCPU threads and the guest goes through `read`/`write`, which copy bytes with
// volatile-free `copy_nonoverlapping` on ranges checked against the size (the guest and the
// host never rely on the same bytes at the same time: the host touches a vCPU's log and
// mailbox only while that vCPU is stopped at a doorbell or not yet started).
unsafe impl Send for GuestMemory {}
// SAFETY: as above.
unsafe impl Sync for GuestMemory {}

impl GuestMemory {
    /// Maps `size` bytes of zeroed memory.
    pub fn new(size: usize) -> Result<Self, String> {
        // SAFETY: an anonymous mapping with no address hint has no preconditions; the result
        // is checked against MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(format!("mmap of {size} bytes of guest memory: {}", std::io::Error::last_os_error()));
        }
        let base = NonNull::new(ptr.cast::<u8>()).ok_or("mmap returned null")?;
        Ok(GuestMemory { base, size })
    }

    /// Host address of GPA 0 (for `KVM_SET_USER_MEMORY_REGION`).
    pub fn host_address(&self) -> u64 {
        self.base.as_ptr() as u64
    }

    /// Size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    fn check(&self, gpa: u64, len: usize) -> Result<usize, String> {
        let start = usize::try_from(gpa).map_err(|_| format!("GPA {gpa:#x} out of range"))?;
        match start.checked_add(len) {
            Some(end) if end <= self.size => Ok(start),
            _ => Err(format!("GPA range {gpa:#x}+{len:#x} is outside guest memory ({:#x} bytes)", self.size)),
        }
    }

    /// Copies `data` to guest-physical address `gpa`.
    pub fn write(&self, gpa: u64, data: &[u8]) -> Result<(), String> {
        let start = self.check(gpa, data.len())?;
        // SAFETY: `start..start + len` is inside the mapping (checked above) and `data` is a
        // separate host buffer, so the ranges do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.base.as_ptr().add(start), data.len()) };
        Ok(())
    }

    /// Copies from guest-physical address `gpa` into `data`.
    pub fn read(&self, gpa: u64, data: &mut [u8]) -> Result<(), String> {
        let start = self.check(gpa, data.len())?;
        // SAFETY: as in `write`, with source and destination swapped.
        unsafe {
            std::ptr::copy_nonoverlapping(self.base.as_ptr().add(start), data.as_mut_ptr(), data.len())
        };
        Ok(())
    }

    /// Reads a little-endian u32.
    pub fn read_u32(&self, gpa: u64) -> Result<u32, String> {
        let mut b = [0u8; 4];
        self.read(gpa, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Writes a little-endian u32.
    pub fn write_u32(&self, gpa: u64, value: u32) -> Result<(), String> {
        self.write(gpa, &value.to_le_bytes())
    }
}

impl Drop for GuestMemory {
    fn drop(&mut self) {
        // SAFETY: `base`/`size` are exactly the mapping created in `new`, unmapped once here;
        // the VM that used it is dropped before (see `kvm::Machine`'s field order).
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.size);
        }
    }
}
