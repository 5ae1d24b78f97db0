//! Complete models.

pub mod dit;
pub mod mmdit;
pub mod udit;

pub use dit::{DiT, DiTConfig, DiTSize};
pub use mmdit::{MMDiT, MMDiTConfig};
pub use udit::{UDiT, UDiTCondition, UDiTConfig, UDiTSize};
