pub mod corpus;
pub mod pic;
pub mod timers;
