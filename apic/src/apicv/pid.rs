//! The posted-interrupt descriptor (being written).
