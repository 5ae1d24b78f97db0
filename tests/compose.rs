//! Every combination of block parts (attention x feed-forward x conditioning x masking, and the
//! U-shaped layout) builds at a tiny size, runs forward and backward on an autodiff device, and
//! gives every trainable parameter a finite gradient; the combinations the shell refuses
//! (masking or in-context tokens with parts that need the full token grid) are config errors.

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::Gradients;
use diffusion_transformers::blocks::ConditionInput;
use diffusion_transformers::blocks::parts::{AttentionKind, ConditioningKind, FeedForwardKind};
use diffusion_transformers::contracts::{TokenMask, randn};
use diffusion_transformers::layers::FfnForm;
use diffusion_transformers::models::{ComposedDiTConfig, MaskingConfig, StageLayout};
use diffusion_transformers::Error;
use rand::SeedableRng;
use rand::rngs::StdRng;

fn attentions() -> Vec<AttentionKind> {
    vec![
        AttentionKind::MultiHead,
        AttentionKind::Downsampled { down_factor: 2, kernel: 3, cosine: true, rope: true },
        AttentionKind::Cosine,
        AttentionKind::Joint,
        AttentionKind::Cross,
    ]
}

fn feed_forwards() -> Vec<FeedForwardKind> {
    vec![
        FeedForwardKind::Mlp,
        FeedForwardKind::SwiGlu { multiple_of: 8 },
        FeedForwardKind::DwConv { form: FfnForm::Reparam },
        FeedForwardKind::Moe { num_experts: 2, capacity: 1.0, multiple_of: 8 },
    ]
}

const CONDITIONINGS: [ConditioningKind; 5] = [
    ConditioningKind::AdaLnZero,
    ConditioningKind::AdaLn,
    ConditioningKind::AdaLnSingle,
    ConditioningKind::CrossAttention,
    ConditioningKind::InContext,
];

/// Every trainable parameter has a finite gradient.
struct GradCheck<'a> {
    grads: &'a Gradients,
    checked: usize,
    missing: usize,
    non_finite: usize,
}

impl ModuleVisitor for GradCheck<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        if !value.is_require_grad() {
            return; // frozen buffers (sin-cos table, mask token)
        }
        self.checked += 1;
        match value.grad(self.grads) {
            None => self.missing += 1,
            Some(g) => {
                if !g.is_finite().all().into_scalar::<bool>() {
                    self.non_finite += 1;
                }
            }
        }
    }
}

fn run(config: &ComposedDiTConfig, masked: bool, seed: u64) -> Result<(), Error> {
    let device = Device::flex().autodiff();
    device.seed(seed);
    let model = config.init(&device)?;
    assert_eq!(model.num_params(), config.num_params(), "{config:?}");
    assert!(config.flops(if masked { 0.5 } else { 0.0 })? > 0.0);
    let mut rng = StdRng::seed_from_u64(seed);
    let s = config.input_size;
    let x = randn([2, 4, s, s], &mut rng, &device);
    let t = Tensor::<1>::from_floats([3.0, 700.0], &device);
    let y = Tensor::<1, Int>::from_ints([1, 5], &device); // 5: the null class
    let mask = match masked {
        true => Some(TokenMask::random(2, model.num_tokens(), 0.5, &mut rng, &device)?),
        false => None,
    };
    let out = model.forward_with(x.clone(), t, ConditionInput::Labels(&y), None, mask.as_ref())?;
    assert_eq!(out.dims(), [2, 4, s, s]);
    let grads = (out - x).square().mean().backward();
    let mut check = GradCheck { grads: &grads, checked: 0, missing: 0, non_finite: 0 };
    model.visit(&mut check);
    assert!(check.checked > 0);
    assert_eq!((check.missing, check.non_finite), (0, 0), "{config:?}: of {} parameters", check.checked);
    Ok(())
}

fn tiny(attention: AttentionKind, feed_forward: FeedForwardKind, conditioning: ConditioningKind) -> ComposedDiTConfig {
    ComposedDiTConfig::new()
        .with_input_size(8)
        .with_patch_size(2)
        .with_hidden_size(16)
        .with_head_dim(8)
        .with_stages(StageLayout::Flat { depth: 2 })
        .with_attention(attention)
        .with_feed_forward(feed_forward)
        .with_conditioning(conditioning)
        .with_condition(diffusion_transformers::blocks::ConditionKind::Labels { num_classes: 5, dropout_prob: 0.1 })
}

#[test]
fn every_flat_combination_runs_forward_and_backward_or_is_refused() {
    let (mut ran, mut refused) = (0, 0);
    for (a, attention) in attentions().into_iter().enumerate() {
        for (f, feed_forward) in feed_forwards().into_iter().enumerate() {
            for (c, conditioning) in CONDITIONINGS.into_iter().enumerate() {
                for masked in [false, true] {
                    let mut cfg = tiny(attention.clone(), feed_forward.clone(), conditioning);
                    if masked {
                        cfg = cfg.with_masking(Some(MaskingConfig::new().with_mixer_depth(1)));
                    }
                    let grid_part = attention.needs_grid() || feed_forward.needs_grid();
                    let refuse = grid_part && (masked || conditioning == ConditioningKind::InContext);
                    let seed = (a * 100 + f * 10 + c) as u64;
                    match run(&cfg, masked, seed) {
                        Ok(()) => {
                            assert!(!refuse, "{cfg:?} should be refused");
                            ran += 1;
                        }
                        Err(Error::InvalidConfig(msg)) if refuse => {
                            assert!(msg.contains("grid"), "{msg}");
                            refused += 1;
                        }
                        Err(e) => panic!("{cfg:?}: {e}"),
                    }
                }
            }
        }
    }
    assert_eq!(ran + refused, 5 * 4 * 5 * 2);
    // 8 (attention, feed-forward) pairs need the grid: refused with masking (x 5 conditionings)
    // and with unmasked in-context tokens
    assert_eq!(refused, 8 * 5 + 8);
}

#[test]
fn every_u_shaped_combination_runs_forward_and_backward() {
    for (a, attention) in attentions().into_iter().enumerate() {
        for (f, feed_forward) in feed_forwards().into_iter().enumerate() {
            for (c, conditioning) in CONDITIONINGS.into_iter().enumerate() {
                let grid_part = attention.needs_grid() || feed_forward.needs_grid();
                if grid_part && conditioning == ConditioningKind::InContext {
                    continue; // refused, as in the flat test
                }
                let cfg = tiny(attention.clone(), feed_forward.clone(), conditioning)
                    .with_input_size(16)
                    .with_stages(StageLayout::UShaped { depths: [1, 1, 1, 1, 1] });
                run(&cfg, false, (1000 + a * 100 + f * 10 + c) as u64).unwrap_or_else(|e| panic!("{cfg:?}: {e}"));
            }
        }
    }
}

#[test]
fn masking_with_a_u_shape_is_refused() {
    let cfg = tiny(AttentionKind::MultiHead, FeedForwardKind::Mlp, ConditioningKind::AdaLnZero)
        .with_input_size(16)
        .with_stages(StageLayout::UShaped { depths: [1, 1, 1, 1, 1] })
        .with_masking(Some(MaskingConfig::new()));
    assert!(matches!(cfg.init(&Device::flex()), Err(Error::InvalidConfig(_))));
}

/// Every block combination, with the parts the models' presets add (two-stream attention,
/// MicroDiT's caption conditioning, MMDiT-X's dual attention, the full-width QK LayerNorm),
/// builds, runs forward and backward (tokens on their grid, context tokens, the shared
/// adaLN-single regression) and gives every parameter a finite gradient, or is refused.
#[test]
fn every_block_combination_runs_forward_and_backward_or_is_refused() {
    use diffusion_transformers::blocks::BlockConfig;
    use diffusion_transformers::blocks::parts::BlockCondition;
    use diffusion_transformers::layers::QkNorm;
    let mut attentions = attentions();
    attentions.extend([AttentionKind::TwoStream { context_pre_only: false }, AttentionKind::TwoStream { context_pre_only: true }]);
    let mut conditionings = CONDITIONINGS.to_vec();
    conditionings.extend([ConditioningKind::AdaLnZeroCross, ConditioningKind::AdaLnZeroDual]);
    let device = Device::flex().autodiff();
    let mut rng = StdRng::seed_from_u64(17);
    let (mut ran, mut refused) = (0, 0);
    for attention in &attentions {
        for feed_forward in feed_forwards() {
            for conditioning in &conditionings {
                for qk_norm in [QkNorm::None, QkNorm::FullLayerNorm] {
                    let cfg = BlockConfig::new(16, 2)
                        .with_attention(attention.clone())
                        .with_feed_forward(feed_forward.clone())
                        .with_conditioning(*conditioning)
                        .with_qk_norm(qk_norm);
                    let two_stream = matches!(attention, AttentionKind::TwoStream { .. });
                    let refuse = (two_stream && feed_forward.needs_grid())
                        || (qk_norm == QkNorm::FullLayerNorm && *attention != AttentionKind::MultiHead);
                    let block = match cfg.init(&device) {
                        Ok(block) => block,
                        Err(Error::InvalidConfig(_)) if refuse => {
                            refused += 1;
                            continue;
                        }
                        Err(e) => panic!("{cfg:?}: {e}"),
                    };
                    assert!(!refuse, "{cfg:?} should be refused");
                    assert_eq!(block.num_params(), cfg.num_params(), "{cfg:?}");
                    assert!(cfg.macs(16, [4, 4], 3).unwrap() > 0.0);
                    let x = randn([2, 16, 16], &mut rng, &device);
                    let c = randn([2, 16], &mut rng, &device);
                    let cond = BlockCondition {
                        c: c.clone(),
                        shared: Some(randn::<2, _>([2, 6 * 16], &mut rng, &device).chunk(6, 1)),
                        context: Some(randn([2, 3, 16], &mut rng, &device)),
                    };
                    let (out, context) = block.forward_joint(x.clone(), Some([4, 4]), &cond).unwrap_or_else(|e| panic!("{cfg:?}: {e}"));
                    assert_eq!(out.dims(), [2, 16, 16]);
                    assert_eq!(context.is_some(), *attention == AttentionKind::TwoStream { context_pre_only: false }, "{cfg:?}");
                    let loss = (out - x).square().mean() + context.map_or(c.zeros_like().sum(), |t| t.square().mean());
                    let grads = loss.backward();
                    let mut check = GradCheck { grads: &grads, checked: 0, missing: 0, non_finite: 0 };
                    block.visit(&mut check);
                    assert_eq!((check.missing, check.non_finite), (0, 0), "{cfg:?}: of {} parameters", check.checked);
                    ran += 1;
                }
            }
        }
    }
    assert_eq!(ran + refused, 7 * 4 * 7 * 2);
    // two-stream with the depthwise-conv FFN (2 x 7 x 2), the full-width QK norm on the six
    // other attentions (6 x 4 x 7) less their overlap (2 x 7)
    assert_eq!(refused, 28 + 168 - 14);
}
