pub mod pic;
pub mod timers;
