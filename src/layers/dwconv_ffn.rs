//! Depthwise-convolution feed-forward network of U-DiT (official `FeedForward`), with the
//! training-time re-parametrisation branches and the fold that removes them for inference.
//!
//! Training form (`rep=1`, [`FfnForm::Reparam`]):
//!
//! ```text
//! h   = GELU(conv1x1_b(conv1x1_a(x)))          project_in.0 (C -> D/2), project_in.1 (D/2 -> D)
//! h'  = h + dw5x5(h) + dw3x3(h) + dw1x1(h)      dwconv.0, dwconv.1, dwconv.2 (depthwise)
//! out = conv1x1_d(conv1x1_c(h'))                project_out.0 (D -> D/2), project_out.1 (D/2 -> C)
//! ```
//!
//! Every branch is linear, so [`DwConvFfn::reparameterize`] folds the two stacked 1x1 convs
//! into one (`W = W2 W1`, `b = W2 b1 + b2`) and the identity plus the three depthwise convs
//! into a single 5x5 depthwise conv (smaller kernels zero-padded to 5x5, identity as a 1 at
//! the centre), giving [`FfnForm::Fused`]: `conv1x1 -> GELU -> dw5x5 -> conv1x1` with the same
//! outputs up to float rounding. The training form's forward runs that folded structure too,
//! with the folded weights computed from the branches' parameters on every call: the same
//! function and the same gradients for every branch, at the cost of the fused form. The FFN
//! runs on tokens ([`DwConvFfn::forward_tokens`]): 1x1 convs as linear maps of the channels,
//! depthwise convs channels-last ([`crate::cpu::depthwise_conv2d_nhwc`]).

use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, PaddingConfig2d};
use burn::prelude::*;

use crate::error::{Result, ensure_config, ensure_dims};
use crate::layers::activation::Activation;

/// Kernel of the single depthwise conv of the plain and fused forms (and of the largest
/// re-parametrisation branch).
pub const DW_KERNEL: usize = 5;

/// Kernels of the parallel depthwise branches of the training form.
pub const REP_DW_KERNELS: [usize; 3] = [5, 3, 1];

/// A stride-1 conv with "same" padding (`kernel / 2`), Xavier-uniform weight over PyTorch's
/// fans (`fan_in = C_in/groups * k*k`, `fan_out = C_out * k*k`, as U-DiT's `_basic_init`
/// applies `xavier_uniform_` to every conv) and a zero bias. `zero` zero-initialises the
/// weight instead (adaLN-Zero output layers).
///
/// # Shapes
/// - weight `[C_out, C_in / groups, k, k]`
pub fn same_conv2d(
    channels: [usize; 2],
    kernel: usize,
    groups: usize,
    bias: bool,
    zero: bool,
    device: &Device,
) -> Conv2d {
    let k2 = kernel * kernel;
    let a = (6.0 / ((channels[0] / groups * k2 + channels[1] * k2) as f64)).sqrt();
    let init = if zero { Initializer::Zeros } else { Initializer::Uniform { min: -a, max: a } };
    let p = kernel / 2;
    let mut conv = Conv2dConfig::new(channels, [kernel, kernel])
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .with_groups(groups)
        .with_bias(false)
        .with_initializer(init)
        .init(device);
    conv.bias = bias.then(|| Initializer::Zeros.init([channels[1]], device));
    conv
}

/// Which structure a [`DwConvFfn`] has.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum FfnForm {
    /// Training form with re-parametrisation branches (official `ffn_type='rep', rep=1`):
    /// keys `project_in.{0,1}`, `dwconv.{0,1,2}`, `project_out.{0,1}`.
    Reparam,
    /// Single path without re-parametrisation or identity (official `ffn_type='rep', rep=0`):
    /// keys `project_in`, `dwconv`, `project_out`.
    Plain,
    /// The folded inference form of [`Reparam`](FfnForm::Reparam) (official eval mode;
    /// the reference keeps it in the attributes `project_in_weight`, `project_in_bias`,
    /// `dwconv_weight`, `dwconv_bias`, `project_out_weight`, `project_out_bias`).
    Fused,
    /// Pointwise MLP without depthwise conv, tanh-GELU (official `ffn_type='basic'`, keys
    /// `fc1`, `fc2`).
    Pointwise,
}

impl FfnForm {
    /// Whether this form has the training-time branches that [`DwConvFfn::reparameterize`]
    /// folds.
    pub fn is_reparam(self) -> bool {
        self == FfnForm::Reparam
    }
}

/// Configuration of a [`DwConvFfn`].
#[derive(Config, Debug)]
pub struct DwConvFfnConfig {
    /// Input and output channels `C`.
    pub d_model: usize,
    /// Hidden channels `D` (U-DiT: `int(C * mlp_ratio)`).
    pub d_hidden: usize,
    /// Structure. Default: the training form with re-parametrisation branches.
    #[config(default = "FfnForm::Reparam")]
    pub form: FfnForm,
    /// Biases on every conv. Default: true (U-DiT).
    #[config(default = true)]
    pub bias: bool,
}

impl DwConvFfnConfig {
    /// Initialise a [`DwConvFfn`] (Xavier-uniform convs, zero biases).
    ///
    /// # Errors
    /// Zero sizes, or a hidden width below 2 for the re-parametrised form (its bottleneck
    /// has `D / 2` channels).
    pub fn init(&self, device: &Device) -> Result<DwConvFfn> {
        let (c, d, bias) = (self.d_model, self.d_hidden, self.bias);
        ensure_config(c > 0 && d > 0, || format!("FFN sizes must be positive: {self:?}"))?;
        let conv = |i, o, k, g| same_conv2d([i, o], k, g, bias, false, device);
        let (project_in, dwconv, project_out) = match self.form {
            FfnForm::Reparam => {
                ensure_config(d >= 2, || format!("re-parametrised FFN needs a hidden width >= 2, got {d}"))?;
                let m = d / 2;
                (
                    vec![conv(c, m, 1, 1), conv(m, d, 1, 1)],
                    REP_DW_KERNELS.iter().map(|&k| conv(d, d, k, d)).collect(),
                    vec![conv(d, m, 1, 1), conv(m, c, 1, 1)],
                )
            }
            FfnForm::Plain | FfnForm::Fused => {
                (vec![conv(c, d, 1, 1)], vec![conv(d, d, DW_KERNEL, d)], vec![conv(d, c, 1, 1)])
            }
            FfnForm::Pointwise => (vec![conv(c, d, 1, 1)], vec![], vec![conv(d, c, 1, 1)]),
        };
        Ok(DwConvFfn { project_in, dwconv, project_out, form: self.form })
    }
}

/// U-DiT's feed-forward network on feature maps; see the [module docs](self) for the forms.
#[derive(Module, Debug)]
pub struct DwConvFfn {
    /// 1x1 convs into the hidden width (two stacked in the re-parametrised form, else one).
    pub project_in: Vec<Conv2d>,
    /// Depthwise convs (5x5, 3x3, 1x1 in parallel in the re-parametrised form; one 5x5 in
    /// the plain and fused forms; none in the pointwise form).
    pub dwconv: Vec<Conv2d>,
    /// 1x1 convs back to `C` (two stacked in the re-parametrised form, else one).
    pub project_out: Vec<Conv2d>,
    /// Structure.
    #[module(skip)]
    pub form: FfnForm,
}

/// The weight `[D, C, 1, 1]` and bias of the 1x1 conv equal to two stacked ones `b(a(x))`
/// (differentiable in both convs' parameters).
fn fold_pointwise_weights(a: &Conv2d, b: &Conv2d) -> (Tensor<4>, Option<Tensor<1>>) {
    let [m, c, _, _] = a.weight.dims();
    let [d, _, _, _] = b.weight.dims();
    let w1 = a.weight.val().reshape([m, c]);
    let w2 = b.weight.val().reshape([d, m]);
    let weight = w2.clone().matmul(w1).reshape([d, c, 1, 1]);
    // Both convs have a bias or neither (one `bias` setting per FFN).
    let bias = match (&a.bias, &b.bias) {
        (Some(b1), Some(b2)) => Some(w2.matmul(b1.val().reshape([m, 1])).reshape([d]) + b2.val()),
        _ => None,
    };
    (weight, bias)
}

/// Folds two stacked 1x1 convs `b(a(x))` into one.
fn fold_pointwise(a: &Conv2d, b: &Conv2d) -> Conv2d {
    let (weight, bias) = fold_pointwise_weights(a, b);
    let mut out = b.clone();
    out.weight = Param::from_tensor(weight);
    out.bias = bias.map(Param::from_tensor);
    out
}

/// The weight `[D, 1, K, K]` and bias of the single [`DW_KERNEL`]-sized depthwise conv equal
/// to the identity plus the parallel depthwise convs (odd kernels up to `K`), differentiable
/// in the branches' parameters.
fn fold_depthwise_weights(branches: &[Conv2d]) -> (Tensor<4>, Option<Tensor<1>>) {
    let device = branches[0].weight.device();
    let [d, _, _, _] = branches[0].weight.dims();
    let c = DW_KERNEL / 2;
    let identity = Tensor::<4>::ones([d, 1, 1, 1], &device).pad((c, c, c, c), 0.0);
    let mut weight = identity;
    let mut bias: Option<Tensor<1>> = None;
    for conv in branches {
        let p = (DW_KERNEL - conv.kernel_size[0]) / 2;
        weight = weight + conv.weight.val().pad((p, p, p, p), 0.0);
        if let Some(b) = &conv.bias {
            bias = Some(match bias {
                Some(acc) => acc + b.val(),
                None => b.val(),
            });
        }
    }
    (weight, bias)
}

/// Folds the identity and parallel depthwise convs (odd kernels up to [`DW_KERNEL`]) into one
/// [`DW_KERNEL`] x [`DW_KERNEL`] depthwise conv.
fn fold_depthwise(branches: &[Conv2d]) -> Conv2d {
    let (weight, bias) = fold_depthwise_weights(branches);
    let mut out = branches[0].clone();
    out.weight = Param::from_tensor(weight);
    out.bias = bias.map(Param::from_tensor);
    out
}

/// A conv's weight and bias.
fn weights(conv: &Conv2d) -> (Tensor<4>, Option<Tensor<1>>) {
    (conv.weight.val(), conv.bias.as_ref().map(|b| b.val()))
}

/// A 1x1 conv with weight `[D, C, 1, 1]` and bias on tokens: a linear map of the channels.
///
/// # Shapes
/// - `x`: `[B, N, C]` -> `[B, N, D]`
pub(crate) fn pointwise_tokens(x: Tensor<3>, (weight, bias): (Tensor<4>, Option<Tensor<1>>)) -> Tensor<3> {
    let [b, n, c] = x.dims();
    let [d, _, _, _] = weight.dims();
    let y = crate::cpu::batched_matmul(x.reshape([1, b * n, c]), weight.reshape([1, d, c]).swap_dims(1, 2));
    let y = match bias {
        Some(bias) => y + bias.reshape([1, 1, d]),
        None => y,
    };
    y.reshape([b, n, d])
}

/// A depthwise conv (stride 1, "same" padding) with weight `[D, 1, k, k]` and bias on
/// tokens laid out row-major on `grid`.
///
/// # Shapes
/// - `x`: `[B, N, D]` with `N = grid[0] * grid[1]` -> `[B, N, D]`
pub(crate) fn depthwise_tokens(x: Tensor<3>, grid: [usize; 2], (weight, bias): (Tensor<4>, Option<Tensor<1>>)) -> Tensor<3> {
    let [b, n, d] = x.dims();
    let bias = bias.unwrap_or_else(|| Tensor::zeros([d], &weight.device()));
    crate::cpu::depthwise_conv2d_nhwc(x.reshape([b, grid[0], grid[1], d]), weight, bias).reshape([b, n, d])
}

impl DwConvFfn {
    /// Input channels `C`.
    pub fn d_model(&self) -> usize {
        self.project_in[0].weight.dims()[1]
    }

    /// Hidden channels `D`.
    pub fn d_hidden(&self) -> usize {
        self.project_out[0].weight.dims()[1]
    }

    /// # Shapes
    /// - `x`: `[B, C, H, W]` -> `[B, C, H, W]`
    ///
    /// # Errors
    /// Input channels other than `C`.
    pub fn forward(&self, x: Tensor<4>) -> Result<Tensor<4>> {
        ensure_dims("x", x.dims(), [None, Some(self.d_model()), None, None])?;
        let [b, c, h, w] = x.dims();
        let tokens = x.permute([0, 2, 3, 1]).reshape([b, h * w, c]);
        Ok(self.forward_tokens(tokens, [h, w])?.reshape([b, h, w, c]).permute([0, 3, 1, 2]))
    }

    /// The FFN on tokens laid out row-major on a grid (the channels-last map): the 1x1 convs
    /// are linear maps of the channels and the depthwise convs run channels-last, with no
    /// transposed copy.
    ///
    /// # Shapes
    /// - `x`: `[B, H*W, C]` -> `[B, H*W, C]`
    ///
    /// # Errors
    /// Input channels other than `C`, or a token count other than `H*W`.
    pub fn forward_tokens(&self, x: Tensor<3>, grid: [usize; 2]) -> Result<Tensor<3>> {
        ensure_dims("x", x.dims(), [None, Some(grid[0] * grid[1]), Some(self.d_model())])?;
        let (pin, pout) = (&self.project_in, &self.project_out);
        Ok(match self.form {
            // Every branch is linear: the folded convs, with weights computed from the branches'
            // parameters on each call, are the same function with the same gradients for a
            // fraction of the work (one depthwise conv instead of three and their sums, one 1x1
            // conv instead of two on each side).
            FfnForm::Reparam => {
                let h = Activation::Gelu.forward(pointwise_tokens(x, fold_pointwise_weights(&pin[0], &pin[1])));
                let mixed = depthwise_tokens(h, grid, fold_depthwise_weights(&self.dwconv));
                pointwise_tokens(mixed, fold_pointwise_weights(&pout[0], &pout[1]))
            }
            FfnForm::Plain | FfnForm::Fused => {
                let h = Activation::Gelu.forward(pointwise_tokens(x, weights(&pin[0])));
                pointwise_tokens(depthwise_tokens(h, grid, weights(&self.dwconv[0])), weights(&pout[0]))
            }
            FfnForm::Pointwise => {
                pointwise_tokens(Activation::GeluTanh.forward(pointwise_tokens(x, weights(&pin[0]))), weights(&pout[0]))
            }
        })
    }

    /// The inference form: for [`FfnForm::Reparam`], the branches folded into single convs
    /// ([`FfnForm::Fused`], same outputs up to float rounding); other forms are returned
    /// unchanged. `self` is not modified (unlike the official eval switch, which adds the
    /// small kernels into `dwconv.0.weight` in place).
    pub fn reparameterize(&self) -> Self {
        if self.form != FfnForm::Reparam {
            return self.clone();
        }
        Self {
            project_in: vec![fold_pointwise(&self.project_in[0], &self.project_in[1])],
            dwconv: vec![fold_depthwise(&self.dwconv)],
            project_out: vec![fold_pointwise(&self.project_out[0], &self.project_out[1])],
            form: FfnForm::Fused,
        }
    }
}

/// Test helpers shared by the U-DiT modules' tests.
#[cfg(test)]
pub(crate) mod test_support {
    pub(crate) use crate::layers::init::Randomize;
    pub(crate) use crate::test_util::uniform;
}

#[cfg(test)]
mod tests {
    use super::test_support::{Randomize, uniform};
    use super::*;
    use burn::tensor::Tolerance;

    fn input(device: &Device) -> Tensor<4> {
        uniform([2, 6, 5, 7], 3, device)
    }

    #[test]
    fn reparameterize_keeps_outputs() {
        let device = Device::flex();
        for bias in [true, false] {
            let ffn = DwConvFfnConfig::new(6, 12).with_bias(bias).init(&device).unwrap();
            let ffn = ffn.map(&mut Randomize::seeded(1));
            let fused = ffn.reparameterize();
            assert_eq!(fused.form, FfnForm::Fused);
            assert_eq!((fused.project_in.len(), fused.dwconv.len(), fused.project_out.len()), (1, 1, 1));
            assert_eq!(fused.dwconv[0].weight.dims(), [12, 1, 5, 5]);
            let x = input(&device);
            let a = ffn.forward(x.clone()).unwrap();
            let b = fused.forward(x.clone()).unwrap();
            b.into_data().assert_approx_eq::<f32>(&a.into_data(), Tolerance::absolute(1e-5));
            // folding twice is a no-op; the training module is untouched
            let again = fused.reparameterize().forward(x.clone()).unwrap();
            again.into_data().assert_approx_eq::<f32>(&fused.forward(x).unwrap().into_data(), Tolerance::absolute(0.0));
            assert_eq!(ffn.form, FfnForm::Reparam);
        }
    }

    fn chain(convs: &[Conv2d], x: Tensor<4>) -> Tensor<4> {
        convs.iter().fold(x, |x, conv| conv.forward(x))
    }

    /// The training form branch by branch, as the reference computes it.
    fn branchwise(ffn: &DwConvFfn, x: Tensor<4>) -> Tensor<4> {
        let h = Activation::Gelu.forward(chain(&ffn.project_in, x));
        let mixed = ffn.dwconv.iter().fold(h.clone(), |acc, conv| acc + conv.forward(h.clone()));
        chain(&ffn.project_out, mixed)
    }

    #[test]
    fn folded_training_forward_has_the_branches_values_and_gradients() {
        let device = Device::flex().autodiff();
        for bias in [true, false] {
            let ffn = DwConvFfnConfig::new(6, 12).with_bias(bias).init(&device).unwrap().map(&mut Randomize::seeded(5));
            let x = input(&device).require_grad();
            let upstream = uniform([2, 6, 5, 7], 6, &device);
            let run = |f: &dyn Fn(Tensor<4>) -> Tensor<4>| {
                let y = f(x.clone());
                let grads = (y.clone() * upstream.clone()).sum().backward();
                let mut all = vec![y.inner().into_data(), x.grad(&grads).unwrap().into_data()];
                for conv in ffn.project_in.iter().chain(&ffn.dwconv).chain(&ffn.project_out) {
                    all.push(conv.weight.val().grad(&grads).unwrap().into_data());
                    if let Some(b) = &conv.bias {
                        all.push(b.val().grad(&grads).unwrap().into_data());
                    }
                }
                all
            };
            let folded = run(&|x| ffn.forward(x).unwrap());
            let reference = run(&|x| branchwise(&ffn, x));
            assert_eq!(folded.len(), reference.len());
            for (f, r) in folded.into_iter().zip(reference) {
                // the folded weights round differently from the branch sums: a few ulp
                f.assert_approx_eq::<f32>(&r, Tolerance::rel_abs(1e-5, 1e-5));
            }
        }
    }

    #[test]
    fn fused_kernel_holds_identity_and_branches() {
        let device = Device::flex();
        let ffn = DwConvFfnConfig::new(2, 4).init(&device).unwrap();
        let mut ffn = ffn.map(&mut Randomize::seeded(2));
        for conv in ffn.dwconv.iter_mut() {
            conv.weight = Param::from_tensor(conv.weight.val().ones_like());
            conv.bias = conv.bias.take().map(|b| Param::from_tensor(b.val().ones_like()));
        }
        let fused = ffn.reparameterize();
        let w = fused.dwconv[0].weight.val().slice([0..1, 0..1, 0..5, 0..5]).reshape([25]);
        let w = w.into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(w[0], 1.0); // corner: 5x5 only
        assert_eq!(w[6], 2.0); // inner ring: 5x5 + 3x3
        assert_eq!(w[12], 4.0); // centre: 5x5 + 3x3 + 1x1 + identity
        let b = fused.dwconv[0].bias.as_ref().unwrap().val().into_data().try_to_vec::<f32>().unwrap();
        assert!(b.iter().all(|v| *v == 3.0));
    }

    #[test]
    fn other_forms_and_errors() {
        let device = Device::flex();
        let x = input(&device);
        for form in [FfnForm::Plain, FfnForm::Fused, FfnForm::Pointwise] {
            let ffn = DwConvFfnConfig::new(6, 8).with_form(form).init(&device).unwrap();
            assert_eq!(ffn.forward(x.clone()).unwrap().dims(), [2, 6, 5, 7]);
            assert_eq!(ffn.reparameterize().form, form);
            assert_eq!(ffn.d_hidden(), 8);
        }
        let ffn = DwConvFfnConfig::new(6, 8).init(&device).unwrap();
        assert_eq!(ffn.d_hidden(), 8);
        assert!(ffn.forward(Tensor::zeros([1, 5, 4, 4], &device)).is_err());
        assert!(DwConvFfnConfig::new(6, 1).init(&device).is_err());
        assert!(DwConvFfnConfig::new(0, 8).init(&device).is_err());
    }
}
