//! The Inception Score (Salimans et al. 2016) from classifier logits, in float64:
//!
//! ```text
//! IS = exp( E_x KL( p(y|x) || p(y) ) ),   p(y) = mean of p(y|x) over the split
//! ```
//!
//! computed on `splits` contiguous splits (rows `[i N / s, (i + 1) N / s)`), reporting the mean
//! and the (population) standard deviation over splits. This is torch-fidelity's
//! `isc_features_to_metric` without its shuffle, and the ADM evaluator's (OpenAI improved-GAN)
//! score, whose 5000-row splits are these 10 splits for the usual 50,000 samples.

use crate::error::{Error, Result};

/// Mean and standard deviation of the Inception Score over `splits` splits of the `N` rows of
/// `logits` (row-major, `num_classes` values per row).
///
/// # Errors
/// [`Error::InvalidArgument`] if `logits` is not `N * num_classes` values or `N < splits`,
/// [`Error::Numerical`] for non-finite logits.
pub fn inception_score(logits: &[f32], num_classes: usize, splits: usize) -> Result<(f64, f64)> {
    if num_classes == 0 || splits == 0 || logits.len() % num_classes != 0 || logits.len() / num_classes < splits {
        return Err(Error::InvalidArgument(format!(
            "the Inception Score over {splits} splits needs at least {splits} rows of {num_classes} logits, got {} values",
            logits.len()
        )));
    }
    if logits.iter().any(|x| !x.is_finite()) {
        return Err(Error::Numerical("non-finite logits in the Inception Score".into()));
    }
    let n = logits.len() / num_classes;
    // log-softmax of every row, in f64
    let log_p: Vec<Vec<f64>> = logits
        .chunks_exact(num_classes)
        .map(|row| {
            let max = row.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
            let lse = max + row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
            row.iter().map(|&x| x as f64 - lse).collect()
        })
        .collect();
    let scores: Vec<f64> = (0..splits)
        .map(|i| {
            let part = &log_p[i * n / splits..(i + 1) * n / splits];
            let mut q = vec![0f64; num_classes];
            for row in part {
                q.iter_mut().zip(row).for_each(|(q, l)| *q += l.exp());
            }
            let log_q: Vec<f64> = q.iter().map(|q| (q / part.len() as f64).ln()).collect();
            let kl: f64 = part
                .iter()
                .map(|row| row.iter().zip(&log_q).map(|(l, lq)| l.exp() * (l - lq)).sum::<f64>())
                .sum::<f64>()
                / part.len() as f64;
            kl.exp()
        })
        .collect();
    let mean = scores.iter().sum::<f64>() / splits as f64;
    let var = scores.iter().map(|s| (s - mean) * (s - mean)).sum::<f64>() / splits as f64;
    Ok((mean, var.sqrt()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confident_distinct_predictions_score_the_class_count() {
        // each row certain of its own class: KL = log C, score = C
        let c = 4;
        let logits: Vec<f32> = (0..8 * c).map(|k| if k % c == (k / c) % c { 50.0 } else { -50.0 }).collect();
        let (mean, std) = inception_score(&logits, c, 2).unwrap();
        assert!((mean - c as f64).abs() < 1e-9 && std < 1e-9, "{mean} {std}");
        // identical rows: p(y|x) = p(y), score 1
        let (mean, _) = inception_score(&[0.3, -1.0, 2.0, 0.3, -1.0, 2.0], 3, 1).unwrap();
        assert!((mean - 1.0).abs() < 1e-12);
        assert!(inception_score(&[0.0; 6], 3, 3).is_err());
        assert!(inception_score(&[f32::NAN, 0.0], 2, 1).is_err());
    }
}
