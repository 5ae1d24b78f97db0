//! Conditioning and null conditioning: how guidance batches a conditioning with its null
//! ("unconditional") counterpart.
//!
//! [`Conditioning`] is implemented for class labels (`Option<Tensor<1, Int>>`, `None` for an
//! unconditional model), for embedding tensors (`Tensor<2>` pooled embeddings, `Tensor<3>`
//! token embeddings; any float rank, null = [`NullEmbedding`]) and for pairs of
//! conditionings. Models with their own conditioning type implement it in their own file.

use burn::prelude::*;

use crate::contracts::Denoiser;
use crate::error::{Error, Result};

/// A conditioning that classifier-free guidance can batch with its null counterpart.
pub trait Conditioning: Clone {
    /// What is needed to build the null ("unconditional") conditioning, e.g. the null class
    /// index for labels or a zero / negative-prompt embedding for text.
    type Null: Clone;

    /// Batch size of the conditioning, `None` when it carries no tensor (unconditional).
    fn batch_size(&self) -> Option<usize>;

    /// Concatenates two conditionings along the batch dimension (`first` then `second`).
    ///
    /// # Errors
    /// When the two cannot be concatenated (different kinds or non-batch shapes).
    fn concat_batch(first: &Self, second: &Self) -> Result<Self>;

    /// The null conditioning with the same batch size as `self`.
    ///
    /// # Errors
    /// When `null` does not fit `self` (e.g. a null embedding of another shape).
    fn null_like(&self, null: &Self::Null) -> Result<Self>;
}

/// Class labels `[B]` (DiT's conditioning); `None` is an unconditional model.
impl Conditioning for Option<Tensor<1, Int>> {
    /// The null class index (DiT: `num_classes`, the extra row of the label table).
    type Null = usize;

    fn batch_size(&self) -> Option<usize> {
        self.as_ref().map(|y| y.dims()[0])
    }

    fn concat_batch(first: &Self, second: &Self) -> Result<Self> {
        match (first, second) {
            (Some(a), Some(b)) => Ok(Some(Tensor::cat(vec![a.clone(), b.clone()], 0))),
            (None, None) => Ok(None),
            _ => Err(Error::InvalidArgument(
                "cannot batch a labelled conditioning with an unconditional one".into(),
            )),
        }
    }

    /// # Errors
    /// A null index that Burn's integer tensors cannot hold (`>= 2^31` on 32-bit backends).
    fn null_like(&self, null: &usize) -> Result<Self> {
        match self {
            None => Ok(None),
            Some(y) => {
                let v = i32::try_from(*null).map_err(|_| {
                    Error::InvalidArgument(format!("null class index {null} does not fit the integer tensors (at most {})", i32::MAX))
                })?;
                Ok(Some(Tensor::full([y.dims()[0]], v, &y.device())))
            }
        }
    }
}

/// A model that can check a null conditioning against itself, so guidance built with
/// `sampling::ClassifierFreeGuidance::for_model` fails at construction rather than sampling garbage: a null class index must be the model's
/// `num_classes` (the label table's null row), a given null embedding must have the width of
/// the model's conditioning.
pub trait NullConditioned: Denoiser<Cond: Conditioning> {
    /// Checks `null` against the model.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the mismatch.
    fn check_null(&self, null: &<Self::Cond as Conditioning>::Null) -> Result<()>;
}

impl<M: NullConditioned + ?Sized> NullConditioned for &M {
    fn check_null(&self, null: &<Self::Cond as Conditioning>::Null) -> Result<()> {
        (**self).check_null(null)
    }
}

/// Checks a given null embedding's trailing dimensions against `expected` (the width of the
/// model's conditioning, `None` for a free dimension); zeros always fit.
///
/// # Errors
/// [`Error::InvalidConfig`] naming `what` and both shapes.
pub fn check_null_embedding<const D: usize>(what: &str, null: &NullEmbedding<D>, expected: [Option<usize>; D]) -> Result<()> {
    let NullEmbedding::Given(n) = null else { return Ok(()) };
    let dims = n.dims();
    if dims.iter().zip(expected).skip(1).all(|(d, e)| e.is_none_or(|e| e == *d)) {
        Ok(())
    } else {
        let want: Vec<String> = expected.iter().skip(1).map(|e| e.map_or("_".into(), |e| e.to_string())).collect();
        Err(Error::InvalidConfig(format!("null {what} embedding {dims:?} must be [1 or B, {}] for this model", want.join(", "))))
    }
}

/// Checks a null class index against a label table of `num_classes` real classes and
/// `num_rows` rows: the null class is `num_classes`, and the table needs its extra row.
///
/// # Errors
/// [`Error::InvalidConfig`] naming the mismatch.
pub fn check_null_class(null: usize, num_classes: usize, num_rows: usize) -> Result<()> {
    if num_classes == 0 {
        return Err(Error::InvalidConfig("an unconditional model has no null class to guide with".into()));
    }
    if null != num_classes {
        return Err(Error::InvalidConfig(format!("the null class must be num_classes = {num_classes}, got {null}")));
    }
    if num_rows <= num_classes {
        return Err(Error::InvalidConfig(format!(
            "the label table has no null row ({num_rows} rows for {num_classes} classes): build the model with class dropout > 0"
        )));
    }
    Ok(())
}

/// How to build a null embedding for tensor conditionings.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // built once per guided model, never in hot loops
pub enum NullEmbedding<const D: usize> {
    /// All-zero embeddings of the conditioning's shape (MicroDiT's unconditional branch).
    Zeros,
    /// A given embedding (e.g. of the empty or a negative prompt), with batch 1 (repeated
    /// over the batch) or the conditioning's batch size; other dims must match.
    Given(Tensor<D>),
}

/// Embedding tensors with the batch first: pooled `[B, D]`, tokens `[B, L, D]`, ...
impl<const D: usize> Conditioning for Tensor<D> {
    /// Zeros or a given null embedding.
    type Null = NullEmbedding<D>;

    fn batch_size(&self) -> Option<usize> {
        Some(self.dims()[0])
    }

    fn concat_batch(first: &Self, second: &Self) -> Result<Self> {
        let (a, b) = (first.dims(), second.dims());
        if a[1..] != b[1..] {
            return Err(Error::Shape {
                name: "conditioning".into(),
                expected: format!("[_, {:?}] to match the other half", &a[1..]),
                got: format!("{b:?}"),
            });
        }
        Ok(Tensor::cat(vec![first.clone(), second.clone()], 0))
    }

    fn null_like(&self, null: &NullEmbedding<D>) -> Result<Self> {
        let dims = self.dims();
        match null {
            NullEmbedding::Zeros => Ok(self.zeros_like()),
            NullEmbedding::Given(n) => {
                let nd = n.dims();
                if nd[1..] != dims[1..] || (nd[0] != 1 && nd[0] != dims[0]) {
                    return Err(Error::Shape {
                        name: "null embedding".into(),
                        expected: format!("[1 or {}, {:?}]", dims[0], &dims[1..]),
                        got: format!("{nd:?}"),
                    });
                }
                Ok(if nd[0] == dims[0] { n.clone() } else { n.clone().repeat_dim(0, dims[0]) })
            }
        }
    }
}

/// Two conditionings taken together (e.g. pooled text embedding and token embeddings).
impl<A: Conditioning, B: Conditioning> Conditioning for (A, B) {
    /// The null of each part.
    type Null = (A::Null, B::Null);

    fn batch_size(&self) -> Option<usize> {
        self.0.batch_size().or_else(|| self.1.batch_size())
    }

    fn concat_batch(first: &Self, second: &Self) -> Result<Self> {
        Ok((A::concat_batch(&first.0, &second.0)?, B::concat_batch(&first.1, &second.1)?))
    }

    fn null_like(&self, null: &Self::Null) -> Result<Self> {
        Ok((self.0.null_like(&null.0)?, self.1.null_like(&null.1)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditioning_trait_for_tensors_labels_and_pairs() {
        let device = Device::flex();
        let tok = Tensor::<3>::ones([2, 3, 4], &device);
        let neg = Tensor::<3>::full([1, 3, 4], 7.0, &device);
        let n = tok.null_like(&NullEmbedding::Given(neg)).unwrap();
        assert_eq!(n.dims(), [2, 3, 4]);
        assert_eq!(n.sum().into_scalar::<f32>(), 7.0 * 24.0);
        assert!(tok.null_like(&NullEmbedding::Given(Tensor::zeros([3, 3, 4], &device))).is_err());
        assert!(tok.null_like(&NullEmbedding::Given(Tensor::zeros([1, 3, 5], &device))).is_err());
        assert!(Tensor::concat_batch(&tok, &Tensor::zeros([2, 3, 5], &device)).is_err());
        let labels = Some(Tensor::<1, Int>::from_ints([4, 5], &device));
        let nl = labels.null_like(&9).unwrap().unwrap();
        assert_eq!(nl.into_data().convert::<i64>().try_to_vec::<i64>().unwrap(), vec![9, 9]);
        assert!(Option::concat_batch(&labels, &None).is_err());
        assert!(matches!(labels.null_like(&(1usize << 31)), Err(Error::InvalidArgument(_))));
        assert!(check_null_class(10, 10, 11).is_ok());
        assert!(check_null_class(9, 10, 11).is_err() && check_null_class(10, 10, 10).is_err() && check_null_class(0, 0, 0).is_err());
        assert!(check_null_embedding("caption", &NullEmbedding::<3>::Zeros, [None, None, Some(4)]).is_ok());
        let given = NullEmbedding::Given(Tensor::<3>::zeros([1, 7, 4], &device));
        assert!(check_null_embedding("caption", &given, [None, None, Some(4)]).is_ok());
        assert!(check_null_embedding("caption", &given, [None, None, Some(5)]).is_err());
        assert_eq!(None::<Tensor<1, Int>>.null_like(&9).unwrap().map(|_| ()), None);
        let pair = (Tensor::<2>::ones([2, 4], &device), tok);
        let both = <(Tensor<2>, Tensor<3>)>::concat_batch(&pair, &pair.null_like(&(NullEmbedding::Zeros, NullEmbedding::Zeros)).unwrap()).unwrap();
        assert_eq!((both.0.dims(), both.1.dims()), ([4, 4], [4, 3, 4]));
        assert_eq!(pair.batch_size(), Some(2));
    }
}
