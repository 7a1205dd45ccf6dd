//! The op set the models run on, and its implementations.

pub mod gpu;
