//! x86 TSC (offset, scaling, TSC_ADJUST, TSC-deadline), the ARMv8 generic timer with its
//! virtual offset, and the 8254 PIT, for virtual machine monitors.
//!
//! Not built yet: this crate is a placeholder so that the workspace layout is complete.
//! Its contents arrive with the timer issue.

#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
