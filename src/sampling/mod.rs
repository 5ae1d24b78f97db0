//! Samplers and guidance, generic over any [`Denoiser`].

pub mod denoiser;

pub use denoiser::Denoiser;
