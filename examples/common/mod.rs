//! Helpers shared by the examples: command-line value parsers, progress bars, plots and image
//! grids, sampling, and the judge classifiers.
#![allow(dead_code)]

pub mod classifier;
pub mod cli;
pub mod generate;
pub mod plot;
pub mod progress;
