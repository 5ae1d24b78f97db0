//! Class-label embedder with classifier-free-guidance dropout.

use burn::nn::Embedding;
use burn::prelude::*;
use rand::Rng;

use crate::error::{Error, Result, ensure_config};

/// Configuration of a [`LabelEmbedder`].
#[derive(Config, Debug)]
pub struct LabelEmbedderConfig {
    /// Number of real classes.
    pub num_classes: usize,
    /// Embedding width.
    pub d_model: usize,
    /// Train-time probability of replacing a label by the null class. When positive, the
    /// table gets one extra row (index `num_classes`). Default: 0.1.
    #[config(default = 0.1)]
    pub dropout_prob: f64,
}

impl LabelEmbedderConfig {
    /// Initialise a [`LabelEmbedder`] with a normal(0.02) table.
    pub fn init(&self, device: &Device) -> Result<LabelEmbedder> {
        ensure_config(self.num_classes > 0 && self.d_model > 0, || {
            format!("label embedder sizes must be positive: {self:?}")
        })?;
        ensure_config((0.0..1.0).contains(&self.dropout_prob), || {
            format!("label dropout must lie in [0, 1), got {}", self.dropout_prob)
        })?;
        let rows = self.num_classes + usize::from(self.dropout_prob > 0.0);
        let init = burn::nn::Initializer::Normal { mean: 0.0, std: 0.02 };
        Ok(LabelEmbedder {
            embedding_table: Embedding { weight: init.init([rows, self.d_model], device) },
            num_classes: self.num_classes,
            dropout_prob: self.dropout_prob,
        })
    }
}

/// Embeds class labels; label `num_classes` is the null (unconditional) class
/// (official key `y_embedder.embedding_table`).
#[derive(Module, Debug)]
pub struct LabelEmbedder {
    /// `[num_classes + 1, D]` (the extra row only when dropout is enabled).
    pub embedding_table: Embedding,
    /// Number of real classes.
    pub num_classes: usize,
    /// Train-time dropout probability.
    pub dropout_prob: f64,
}

impl LabelEmbedder {
    /// The null label (index of the unconditional row).
    pub fn null_label(&self) -> usize {
        self.num_classes
    }

    /// Number of rows of the table, i.e. one past the largest valid label.
    pub fn num_rows(&self) -> usize {
        self.embedding_table.weight.dims()[0]
    }

    /// Embed labels, replacing those where `drop` is true by the null class
    /// (forced dropout, e.g. for classifier-free guidance).
    ///
    /// # Shapes
    /// - `labels`: `[B]`, values in `0..=num_classes`; `drop`: `[B]`; output `[B, D]`
    pub fn forward(&self, labels: Tensor<1, Int>, drop: Option<Tensor<1, Bool>>) -> Result<Tensor<2>> {
        let [b] = labels.dims();
        let labels = match drop {
            Some(mask) => {
                crate::error::ensure_dims("drop", mask.dims(), [Some(b)])?;
                if self.num_rows() == self.num_classes {
                    return Err(Error::InvalidArgument(
                        "label dropout requested but the table has no null row (dropout_prob = 0)".into(),
                    ));
                }
                labels.mask_fill(mask, self.num_classes as i64)
            }
            None => labels,
        };
        check_label_range(&labels, self.num_rows())?;
        let [_, d] = self.embedding_table.weight.dims();
        Ok(self.embedding_table.forward(labels.unsqueeze_dim::<2>(1)).reshape([b, d]))
    }

    /// The train-time dropout mask for a batch: each entry true with `dropout_prob`, drawn
    /// from `rng`; `None` (and no draws) when dropout is off.
    pub fn draw_drop_mask<R: Rng + ?Sized>(&self, batch: usize, rng: &mut R, device: &Device) -> Option<Tensor<1, Bool>> {
        (self.dropout_prob > 0.0).then(|| random_drop_mask(batch, self.dropout_prob, rng, device))
    }

    /// Train-time forward: each label is dropped to the null class with `dropout_prob`,
    /// drawing from `rng`.
    pub fn forward_train<R: Rng>(&self, labels: Tensor<1, Int>, rng: &mut R) -> Result<Tensor<2>> {
        let drop = self.draw_drop_mask(labels.dims()[0], rng, &labels.device());
        self.forward(labels, drop)
    }
}

/// A `[batch]` mask, each entry true with probability `prob`, drawn from `rng`.
pub fn random_drop_mask<R: Rng + ?Sized>(batch: usize, prob: f64, rng: &mut R, device: &Device) -> Tensor<1, Bool> {
    let v: Vec<bool> = (0..batch).map(|_| rng.random::<f64>() < prob).collect();
    Tensor::from_data(TensorData::new(v, [batch]), device)
}

/// Errors unless every label lies in `0..rows` (one small read-back).
pub(crate) fn check_label_range(labels: &Tensor<1, Int>, rows: usize) -> Result<()> {
    let [b] = labels.dims();
    if b == 0 {
        return Ok(());
    }
    let lo = labels.clone().min().into_scalar::<i64>();
    let hi = labels.clone().max().into_scalar::<i64>();
    if lo < 0 || hi >= rows as i64 {
        return Err(Error::InvalidArgument(format!(
            "labels must lie in 0..{rows} (the last is the null class), got range {lo}..={hi}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn null_row_and_forced_drop() {
        let device = Device::flex();
        let e = LabelEmbedderConfig::new(5, 8).init(&device).unwrap();
        assert_eq!(e.num_rows(), 6);
        let y = Tensor::<1, Int>::from_ints([1, 2], &device);
        let drop = Tensor::<1, Bool>::from_data(TensorData::new(vec![false, true], [2]), &device);
        let out = e.forward(y, Some(drop)).unwrap();
        let null = e.forward(Tensor::from_ints([5], &device), None).unwrap();
        let row1 = out.slice([1..2, 0..8]);
        assert!(row1.equal(null).all().into_scalar::<bool>());
    }

    #[test]
    fn dropout_rate_and_range_check() {
        let device = Device::flex();
        let e = LabelEmbedderConfig::new(5, 4).with_dropout_prob(0.5).init(&device).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let m = random_drop_mask(4000, 0.5, &mut rng, &device).int().sum().into_scalar::<i64>();
        assert!((1800..2200).contains(&m), "{m}");
        assert!(e.forward(Tensor::from_ints([6], &device), None).is_err());
        assert!(e.forward(Tensor::from_ints([-1], &device), None).is_err());
        let no_null = LabelEmbedderConfig::new(5, 4).with_dropout_prob(0.0).init(&device).unwrap();
        assert_eq!(no_null.num_rows(), 5);
        assert!(no_null.forward(Tensor::from_ints([5], &device), None).is_err());
    }
}
