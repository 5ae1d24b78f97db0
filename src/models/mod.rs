//! Complete models.

pub mod dit;
pub mod microdit;
pub mod microdit_cond;
pub mod microdit_config;
pub mod mmdit;
pub mod mmdit_config;
pub mod official_cfg;
pub mod udit;
pub mod udit_config;

pub use dit::{DiT, DiTConfig, DiTSize};
pub use microdit::{MaskingMode, MicroDiT, MicroDiTBackbone, MicroDiTCond, MicroDiTConfig, MicroDiTNull, MicroDiTSize};
pub use mmdit::{MMDiT, MMDiTConfig};
pub use udit::{UDiT, UDiTCondition, UDiTConfig, UDiTSize};
