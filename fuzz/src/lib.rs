pub mod apicv;
pub mod corpus;
pub mod ioapic;
pub mod lapic;
pub mod pic;
pub mod pit_kvm;
pub mod timers;
