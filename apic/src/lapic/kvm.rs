//! Conversion to and from KVM's `kvm_lapic_state` (being written).
