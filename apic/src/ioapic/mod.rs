//! The I/O APIC (Intel 82093AA; version 0x20 adds the EOI register).
