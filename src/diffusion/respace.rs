//! Timestep respacing (Nichol & Dhariwal 2021, Sec. 4; reference `respace.py` of
//! facebookresearch/DiT, from OpenAI's guided-diffusion): sample with a subset of the training
//! timesteps by recomputing betas so that the kept steps have exactly the original
//! `alphas_cumprod`.

use crate::error::{Error, Result, ensure_config};

/// The timesteps (sorted, unique) kept from a `num_timesteps`-step process by `spec`:
///
/// - `""`: every timestep;
/// - `"N"` or `"N1,N2,..."`: the process is cut into equal sections (the first
///   `num_timesteps % sections` one step longer) and `Ni` timesteps are taken from section `i`
///   at a fractional stride `(size - 1) / (Ni - 1)`, rounded half to even as Python's `round`;
/// - `"ddimN"`: the fixed integer stride of the DDIM paper, `range(0, T, stride)` with the
///   smallest stride giving exactly `N` steps.
///
/// # Errors
/// An unparsable spec, a section asked for more steps than it has, a `ddimN` no integer
/// stride can produce, or an empty result.
pub fn space_timesteps(num_timesteps: usize, spec: &str) -> Result<Vec<usize>> {
    ensure_config(num_timesteps > 0, || "cannot respace a process with no timesteps".into())?;
    let spec = spec.trim();
    let steps: Vec<usize> = if spec.is_empty() {
        (0..num_timesteps).collect()
    } else if let Some(n) = spec.strip_prefix("ddim") {
        let desired = parse_count(n, spec)?;
        let stride = (1..num_timesteps)
            .find(|i| num_timesteps.div_ceil(*i) == desired)
            .ok_or_else(|| {
                Error::InvalidConfig(format!(
                    "cannot create exactly {desired} steps from {num_timesteps} with an integer stride"
                ))
            })?;
        (0..num_timesteps).step_by(stride).collect()
    } else {
        let counts: Vec<usize> = spec.split(',').map(|c| parse_count(c, spec)).collect::<Result<_>>()?;
        sectioned(num_timesteps, &counts)?
    };
    let mut steps = steps;
    steps.sort_unstable();
    steps.dedup();
    ensure_config(!steps.is_empty(), || format!("respacing `{spec}` keeps no timestep"))?;
    Ok(steps)
}

fn parse_count(s: &str, spec: &str) -> Result<usize> {
    s.trim().parse::<usize>().map_err(|_| {
        Error::InvalidConfig(format!(
            "bad timestep respacing `{spec}` (expected \"\", \"N\", \"N1,N2,...\" or \"ddimN\")"
        ))
    })
}

fn sectioned(num_timesteps: usize, counts: &[usize]) -> Result<Vec<usize>> {
    let size_per = num_timesteps / counts.len();
    let extra = num_timesteps % counts.len();
    let mut start = 0;
    let mut all = Vec::new();
    for (i, &count) in counts.iter().enumerate() {
        let size = size_per + usize::from(i < extra);
        ensure_config(size >= count, || format!("cannot divide a section of {size} steps into {count}"))?;
        let stride = if count <= 1 { 1.0 } else { (size - 1) as f64 / (count - 1) as f64 };
        let mut cur = 0.0f64;
        for _ in 0..count {
            all.push(start + cur.round_ties_even() as usize);
            cur += stride;
        }
        start += size;
    }
    Ok(all)
}

/// Betas of the respaced process and the map from its indices to original timesteps:
/// for each kept `t`, `beta' = 1 - abar_t / abar_prev_kept` (reference `SpacedDiffusion`).
///
/// # Errors
/// A kept timestep outside `0..alphas_cumprod.len()` or an unsorted/duplicated list.
pub fn respace_betas(alphas_cumprod: &[f64], use_timesteps: &[usize]) -> Result<(Vec<f64>, Vec<usize>)> {
    ensure_config(!use_timesteps.is_empty(), || "no timesteps to keep".into())?;
    ensure_config(use_timesteps.windows(2).all(|w| w[0] < w[1]), || {
        "kept timesteps must be strictly increasing".into()
    })?;
    let last = *use_timesteps.last().unwrap_or(&0);
    ensure_config(last < alphas_cumprod.len(), || {
        format!("kept timestep {last} is outside the {}-step process", alphas_cumprod.len())
    })?;
    let mut prev = 1.0;
    let betas = use_timesteps
        .iter()
        .map(|&t| {
            let b = 1.0 - alphas_cumprod[t] / prev;
            prev = alphas_cumprod[t];
            b
        })
        .collect();
    Ok((betas, use_timesteps.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_counts_match_reference_examples() {
        // The docstring example: 300 steps, sections [10, 15, 20].
        let s = space_timesteps(300, "10,15,20").unwrap();
        assert_eq!(s.len(), 45);
        assert_eq!(&s[..3], &[0, 11, 22]);
        assert_eq!(*s.last().unwrap(), 299);
        let s = space_timesteps(1000, "25").unwrap();
        assert_eq!(s.len(), 25);
        // stride 999/24 = 41.625: 0, 41.625 -> 42, 83.25 -> 83, ...
        assert_eq!(&s[..4], &[0, 42, 83, 125]);
        assert_eq!(*s.last().unwrap(), 999);
        assert_eq!(space_timesteps(1000, "").unwrap().len(), 1000);
        assert_eq!(space_timesteps(1000, "1000").unwrap(), (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn ddim_stride() {
        let s = space_timesteps(1000, "ddim50").unwrap();
        assert_eq!(s, (0..1000).step_by(20).collect::<Vec<_>>());
        let s = space_timesteps(1000, "ddim10").unwrap();
        assert_eq!(s, (0..1000).step_by(100).collect::<Vec<_>>());
        // ceil(1000 / i) never equals 999.
        assert!(space_timesteps(1000, "ddim999").is_err());
    }

    #[test]
    fn respaced_betas_keep_alphas_cumprod() {
        let ac: Vec<f64> = (1..=100).map(|i| 1.0 - i as f64 / 101.0).collect();
        let keep = space_timesteps(100, "10").unwrap();
        let (betas, map) = respace_betas(&ac, &keep).unwrap();
        let mut acc = 1.0;
        for (b, t) in betas.iter().zip(&map) {
            acc *= 1.0 - b;
            assert!((acc - ac[*t]).abs() < 1e-12);
        }
    }

    #[test]
    fn bad_specs_are_errors() {
        for spec in ["abc", "10,x", "ddim", "2000", "0"] {
            assert!(space_timesteps(1000, spec).is_err(), "{spec}");
        }
        assert!(space_timesteps(0, "").is_err());
        assert!(respace_betas(&[0.9, 0.8], &[0, 2]).is_err());
        assert!(respace_betas(&[0.9, 0.8], &[1, 0]).is_err());
        assert!(respace_betas(&[0.9, 0.8], &[]).is_err());
    }
}
