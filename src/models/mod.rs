//! Complete models.

pub mod composed;
pub mod composed_config;
mod composed_context;
mod composed_count;
mod composed_stem;
mod composed_denoiser;
pub mod dit;
pub mod microdit;
pub mod microdit_cond;
pub mod microdit_config;
pub mod mmdit;
pub mod mmdit_config;
pub mod official_cfg;
pub mod udit;
pub mod udit_config;

pub use composed::{ComposedCondition, ComposedDiT, ComposedDiTConfig, HeadKind, MaskingConfig, StageLayout, Stem, StemKind};
pub use dit::{DiT, DiTConfig, DiTSize};
pub use microdit::{MaskingMode, MicroDiT, MicroDiTBackbone, MicroDiTCond, MicroDiTConfig, MicroDiTNull, MicroDiTSize};
pub use mmdit::{MMDiT, MMDiTConfig};
pub use udit::{UDiT, UDiTConfig, UDiTSize};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_preset_builds_its_config_and_unknown_names_are_errors() {
        for name in DiTConfig::PRESETS {
            DiTConfig::from_name(name).unwrap();
        }
        for name in UDiTConfig::PRESETS {
            UDiTConfig::from_name(name).unwrap();
        }
        for name in MicroDiTConfig::PRESETS {
            MicroDiTConfig::from_name(name).unwrap().validate().unwrap();
        }
        for name in MMDiTConfig::PRESETS {
            MMDiTConfig::from_name(name).unwrap();
        }
        assert_eq!(DiTConfig::PRESETS.len(), 12);
        assert_eq!(MMDiTConfig::from_name("MM-DiT-d24").unwrap().num_params(), MMDiTConfig::sd3_medium().num_params());
        for bad in ["", "DiT-XL/3", "U-DiT-XL", "MicroDiT_M_2", "MM-DiT-d7", "SD3-large"] {
            assert!(DiTConfig::from_name(bad).is_err() && UDiTConfig::from_name(bad).is_err());
            assert!(MicroDiTConfig::from_name(bad).is_err() && MMDiTConfig::from_name(bad).is_err());
        }
        // an error returned from `main` prints its message, not a struct dump
        let e = MMDiTConfig::from_name("SD3-large").unwrap_err();
        assert_eq!(format!("{e:?}"), format!("{e}"));
        assert!(format!("{e:?}").starts_with("invalid config: unknown MM-DiT preset `SD3-large`"));
    }
}
