//! Complete models.

pub mod dit;
pub mod udit;

pub use dit::{DiT, DiTConfig, DiTSize};
pub use udit::{UDiT, UDiTCondition, UDiTConfig, UDiTSize};
