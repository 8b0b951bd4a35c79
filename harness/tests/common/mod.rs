//! Shared by the KVM tests: the skip-or-fail rule for machines without /dev/kvm.

#![allow(dead_code)]

use irq_harness::backend::{self, BackendId, SharedBackend};

/// The KVM backends this machine runs, or `None` (with a message) when /dev/kvm cannot be
/// opened. With `VM_IRQ_REQUIRE_KVM=1` a missing KVM is a failure instead of a skip.
pub fn kvm_backends() -> Option<Vec<SharedBackend>> {
    let (backends, skipped) = backend::available();
    let kvm: Vec<_> = backends.into_iter().filter(|b| b.id().uses_kvm()).collect();
    if kvm.is_empty() {
        let why = skipped.first().map_or_else(|| "no KVM backend".to_string(), |(_, why)| why.clone());
        if std::env::var("VM_IRQ_REQUIRE_KVM").as_deref() == Ok("1") {
            panic!("VM_IRQ_REQUIRE_KVM=1 but KVM is unusable: {why}");
        }
        eprintln!("SKIPPED: KVM tests need /dev/kvm: {why}");
        return None;
    }
    Some(kvm)
}

/// One KVM backend by id (skip or fail as [`kvm_backends`]).
pub fn kvm_backend(id: BackendId) -> Option<SharedBackend> {
    kvm_backends()?.into_iter().find(|b| b.id() == id)
}
