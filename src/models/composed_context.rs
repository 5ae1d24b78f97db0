//! The shell's forward with context tokens (MM-DiT's text stream): the tokens are projected
//! by the `context_embedder`, carried through the blocks (two-stream blocks update them) and
//! some blocks of the flat stage may be skipped (skip-layer guidance).

use burn::prelude::*;

use crate::blocks::ConditionInput;
use crate::cpu;
use crate::error::{Error, Result};
use crate::models::ComposedDiT;

impl ComposedDiT {
    /// Forward with context tokens, leaving out the blocks in `skip_layers` (their streams
    /// pass through unchanged; diffusers' `skip_layers`).
    ///
    /// # Shapes
    /// - `x`: `[B, C, H, W]` (any `H, W` multiples of `p` up to `M p` with a cropped
    ///   position table); `t`: `[B]` or `[1]`; `cond` as the model's condition;
    ///   `context`: `[B, L >= 1, context_dim]`
    /// - output: `[B, C_out, H, W]`
    ///
    /// # Errors
    /// [`Error::Shape`] for wrong shapes, [`Error::InvalidArgument`] for a model without a
    /// `context_embedder`, a block index past the last block or the checks of
    /// [`forward_with`](Self::forward_with), [`Error::Numerical`] for NaN/inf inputs.
    pub fn forward_context(
        &self,
        x: Tensor<4>,
        t: Tensor<1>,
        cond: ConditionInput<'_>,
        context: Tensor<3>,
        skip_layers: &[usize],
    ) -> Result<Tensor<4>> {
        let (x, t) = self.check_inputs(x, t, cond)?;
        let embedder = self.context_embedder.as_ref().ok_or_else(|| {
            Error::InvalidArgument("this model takes no context tokens (ComposedDiTConfig::context_dim)".into())
        })?;
        let context = crate::validate::float_input("text", context, self.x_embedder.dtype())?;
        let (b, j) = (x.dims()[0], embedder.weight.dims()[0]);
        let [cb, l, cj] = context.dims();
        if cb != b || l == 0 || cj != j {
            return Err(Error::Shape {
                name: "text".into(),
                expected: format!("[{b}, L >= 1, {j}]"),
                got: format!("{:?}", context.dims()),
            });
        }
        if let Some(i) = skip_layers.iter().find(|&&i| i >= self.depth()) {
            return Err(Error::InvalidArgument(format!(
                "skip_layers {skip_layers:?}: block {i} does not exist (the model has {} blocks)",
                self.depth()
            )));
        }
        let embedded = self.embed_condition(t, cond, None)?;
        self.forward_condition(x, &embedded, None, Some(cpu::linear(embedder, context)), skip_layers)
    }
}
