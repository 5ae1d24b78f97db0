//! MM-DiT forward (inference, f32, CPU): candle-transformers' `mmdit` next to ours, in one
//! process, on the same configuration and inputs.
//!
//! `cargo bench --features bench-candle --bench mmdit_candle -- --noplot`
//!
//! Configuration: candle's `Config::sd3_medium()` at depth 8, i.e. width 512, 8 heads of 64,
//! 8 joint blocks (the last one with a QKV-only text stream), patch 2, 16 latent channels in
//! and out, MLP ratio 4 (tanh-GELU), position table 192 x 192, no QK norm, text tokens 4096
//! wide, pooled vector 2048 wide, 256 timestep frequencies. Ours is
//! `MMDiTConfig::from_depth(8)`, the same model; the parameter counts are checked to be equal
//! before timing. Inputs: a 16 x 32 x 32 latent (256 image tokens), 77 text tokens, batch 1,
//! 2 and 8, identical values for both.
//!
//! candle's stock `MMDiT::forward` casts the sinusoidal timestep features to f16 (its SD3
//! example runs the model in f16), so an f32 model fails there with a dtype mismatch. The
//! timed candle forward is therefore `MMDiT::forward` re-assembled from candle-transformers'
//! public parts (patch and position embedders, vector embedder, `MMDiTCore`, unpatchifier)
//! with the timestep features kept in f32; every block, attention and layer is candle's own.
//! Before timing, the bench checks that this path agrees with the stock `MMDiT::forward`
//! run in f16 on the same weights.
//!
//! Weights are random (candle: its default Kaiming/uniform init plus a random position
//! table; ours: every parameter redrawn from N(0, 0.02), so none of the adaLN-Zero layers
//! are zero). glibc's malloc is tuned as in the other benches
//! (`diffusion_transformers::cpu::tune_allocator()`, process-wide, so for candle as well;
//! `DT_DEFAULT_MALLOC=1` keeps glibc's defaults). Threads: both libraries size their pools from `RAYON_NUM_THREADS` (default:
//! all logical cores). candle runs matmuls through `gemm` 0.19 with rayon, its convolution
//! and fused softmax on rayon too, and elementwise ops on one thread; ours (burn-flex) uses
//! rayon and the same `gemm` crate. `gemm`'s
//! features are unified by cargo, so both get the same kernels (AVX-512 when the crate's
//! `flex` feature turns on `burn/x86-v4`).

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

use burn::module::{ModuleMapper, Param};
use burn::prelude::*;
use burn::tensor::Distribution;
use candle_core::{DType, Device as CDevice, Module as _, Tensor as CTensor};
use candle_nn::{Linear, VarBuilder, VarMap};
use candle_transformers::models::mmdit::embedding::{
    PatchEmbedder, PositionEmbedder, Unpatchifier, VectorEmbedder,
};
use candle_transformers::models::mmdit::model::{
    Config as CandleConfig, MMDiT as CandleStockMMDiT, MMDiTCore,
};
use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use diffusion_transformers::models::MMDiTConfig;

const DEPTH: usize = 8;
const LATENT: usize = 32;
const TEXT_TOKENS: usize = 77;
const BATCHES: [usize; 3] = [1, 2, 8];

fn candle_config() -> CandleConfig {
    CandleConfig {
        depth: DEPTH,
        ..CandleConfig::sd3_medium()
    }
}

fn our_config() -> MMDiTConfig {
    let c = candle_config();
    let ours = MMDiTConfig::from_depth(DEPTH).expect("depth 8");
    assert_eq!(
        (
            ours.patch_size,
            ours.in_channels,
            ours.out_channels,
            ours.attention_head_dim,
            ours.num_attention_heads
        ),
        (
            c.patch_size,
            c.in_channels,
            c.out_channels,
            c.head_size,
            c.depth
        )
    );
    assert_eq!(
        (
            ours.joint_attention_dim,
            ours.pooled_projection_dim,
            ours.pos_embed_max_size,
            ours.mlp_ratio
        ),
        (
            c.context_embed_size,
            c.adm_in_channels,
            c.pos_embed_max_size,
            4.0
        )
    );
    assert_eq!(c.frequency_embedding_size, 256);
    assert_eq!(
        ours.qk_norm,
        diffusion_transformers::layers::attention::QkNorm::None
    );
    ours
}

/// candle-transformers' `MMDiT::forward` with the timestep features in f32 (see the module
/// docs); built from the same `VarBuilder` paths as `MMDiT::new`, so it shares its weights.
struct CandleMMDiT {
    core: MMDiTCore,
    patch_embedder: PatchEmbedder,
    pos_embedder: PositionEmbedder,
    t_mlp: (Linear, Linear),
    frequency_embedding_size: usize,
    vector_embedder: VectorEmbedder,
    context_embedder: Linear,
    unpatchifier: Unpatchifier,
}

impl CandleMMDiT {
    fn new(cfg: &CandleConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let hidden = cfg.head_size * cfg.depth;
        let t = vb.pp("t_embedder");
        Ok(Self {
            core: MMDiTCore::new(
                cfg.depth,
                hidden,
                cfg.depth,
                cfg.patch_size,
                cfg.out_channels,
                false,
                vb.clone(),
            )?,
            patch_embedder: PatchEmbedder::new(
                cfg.patch_size,
                cfg.in_channels,
                hidden,
                vb.pp("x_embedder"),
            )?,
            pos_embedder: PositionEmbedder::new(
                hidden,
                cfg.patch_size,
                cfg.pos_embed_max_size,
                vb.clone(),
            )?,
            t_mlp: (
                candle_nn::linear(cfg.frequency_embedding_size, hidden, t.pp("mlp.0"))?,
                candle_nn::linear(hidden, hidden, t.pp("mlp.2"))?,
            ),
            frequency_embedding_size: cfg.frequency_embedding_size,
            vector_embedder: VectorEmbedder::new(cfg.adm_in_channels, hidden, vb.pp("y_embedder"))?,
            context_embedder: candle_nn::linear(
                cfg.context_embed_size,
                hidden,
                vb.pp("context_embedder"),
            )?,
            unpatchifier: Unpatchifier::new(cfg.patch_size, cfg.out_channels)?,
        })
    }

    /// candle's `TimestepEmbedder::timestep_embedding` (cos first, max period 10000) without
    /// the final cast to f16.
    fn timestep_embedding(&self, t: &CTensor) -> candle_core::Result<CTensor> {
        let half = self.frequency_embedding_size / 2;
        let freqs = CTensor::arange(0f32, half as f32, t.device())?
            .mul(&CTensor::full(
                (-f64::ln(10000.0) / half as f64) as f32,
                half,
                t.device(),
            )?)?
            .exp()?;
        let args = t.unsqueeze(1)?.matmul(&freqs.unsqueeze(0)?)?;
        CTensor::cat(&[args.cos()?, args.sin()?], 1)
    }

    /// Line for line `candle_transformers::models::mmdit::model::MMDiT::forward`.
    fn forward(
        &self,
        x: &CTensor,
        t: &CTensor,
        y: &CTensor,
        context: &CTensor,
    ) -> candle_core::Result<CTensor> {
        let (h, w) = (x.dim(2)?, x.dim(3)?);
        let pos = self.pos_embedder.get_cropped_pos_embed(h, w)?;
        let x = self.patch_embedder.forward(x)?.broadcast_add(&pos)?;
        let t_freq = self.timestep_embedding(t)?;
        let c = self
            .t_mlp
            .1
            .forward(&self.t_mlp.0.forward(&t_freq)?.silu()?)?;
        let c = (c + self.vector_embedder.forward(y)?)?;
        let context = self.context_embedder.forward(context)?;
        let x = self.core.forward(&context, &x, &c, None)?;
        let x = self.unpatchifier.unpatchify(&x, h, w)?;
        x.narrow(2, 0, h)?.narrow(3, 0, w)
    }
}

/// Redraws every float parameter from N(0, 0.02).
struct Randomize;

impl ModuleMapper for Randomize {
    fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
        p.map(|t| Tensor::random(t.shape(), Distribution::Normal(0.0, 0.02), &t.device()))
    }
}

struct Inputs {
    ours: (Tensor<4>, Tensor<1>, Tensor<3>, Tensor<2>),
    candle: (CTensor, CTensor, CTensor, CTensor),
}

fn inputs(batch: usize, device: &Device) -> Inputs {
    let c = candle_config();
    let x = Tensor::<4>::random(
        [batch, c.in_channels, LATENT, LATENT],
        Distribution::Normal(0.0, 1.0),
        device,
    );
    let t = Tensor::<1>::full([batch], 500.0, device);
    let text = Tensor::<3>::random(
        [batch, TEXT_TOKENS, c.context_embed_size],
        Distribution::Normal(0.0, 1.0),
        device,
    );
    let pooled = Tensor::<2>::random(
        [batch, c.adm_in_channels],
        Distribution::Normal(0.0, 1.0),
        device,
    );
    let to_candle = |data: TensorData, dims: &[usize]| {
        CTensor::from_vec(data.try_to_vec::<f32>().unwrap(), dims, &CDevice::Cpu).unwrap()
    };
    Inputs {
        candle: (
            to_candle(x.to_data(), &x.dims()),
            to_candle(t.to_data(), &t.dims()),
            to_candle(pooled.to_data(), &pooled.dims()),
            to_candle(text.to_data(), &text.dims()),
        ),
        ours: (x, t, text, pooled),
    }
}

fn max_abs(t: &CTensor) -> f32 {
    t.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

fn max_abs_diff(a: &CTensor, b: &CTensor) -> f32 {
    max_abs(&(a - b).unwrap())
}

fn forward(c: &mut Criterion) {
    let cfg = candle_config();
    let ours_cfg = our_config();
    // Process-wide, so candle gets it too; as the other benches (benches/common) do.
    if std::env::var("DT_DEFAULT_MALLOC").as_deref() != Ok("1") {
        diffusion_transformers::cpu::tune_allocator();
    }
    let device = Device::flex();

    // candle: the stock constructor fills the VarMap (random init); the f32 forward shares it.
    let mut varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &CDevice::Cpu);
    CandleStockMMDiT::new(&cfg, false, vb.clone()).expect("candle MMDiT::new");
    let table = (
        1,
        cfg.pos_embed_max_size * cfg.pos_embed_max_size,
        cfg.head_size * cfg.depth,
    );
    varmap
        .set_one(
            "pos_embed",
            CTensor::randn(0f32, 1.0, table, &CDevice::Cpu).unwrap(),
        )
        .unwrap();
    let candle = CandleMMDiT::new(&cfg, vb).expect("candle MMDiT parts");
    let candle_params: usize = varmap.all_vars().iter().map(|v| v.elem_count()).sum();

    let ours = ours_cfg
        .init(&device)
        .expect("our MMDiT")
        .map(&mut Randomize);
    let ours_params = ours.num_params();
    let table_params = ours_cfg.pos_embed_max_size.pow(2) * ours_cfg.hidden_size();
    println!(
        "MM-DiT d{DEPTH}: width {}, heads {}, blocks {}; parameters: candle {candle_params}, ours {ours_params} \
         (both include the {table_params}-entry position table; {} without it)",
        ours_cfg.hidden_size(),
        ours_cfg.num_attention_heads,
        ours_cfg.num_layers,
        ours_cfg.num_params()
    );
    println!(
        "forward cost per sample (latent {LATENT}x{LATENT}, {TEXT_TOKENS} text tokens): {:.2} GFLOP",
        2.0 * ours_cfg.flops_at(LATENT, LATENT, TEXT_TOKENS) / 1e9
    );
    assert_eq!(
        candle_params, ours_params,
        "candle and ours must be the same model"
    );
    assert_eq!(ours_params, ours_cfg.num_params() + table_params);

    // The re-assembled f32 forward is candle's forward: compare with the stock one in f16.
    {
        let inp = inputs(1, &device);
        let (x, t, y, ctx) = &inp.candle;
        let f32_out = candle.forward(x, t, y, ctx).expect("candle f32 forward");
        let f16_weights: HashMap<String, CTensor> = varmap
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().to_dtype(DType::F16).unwrap()))
            .collect();
        let stock = CandleStockMMDiT::new(
            &cfg,
            false,
            VarBuilder::from_tensors(f16_weights, DType::F16, &CDevice::Cpu),
        )
        .expect("candle MMDiT::new (f16)");
        let h = |t: &CTensor| t.to_dtype(DType::F16).unwrap();
        let f16_out = stock
            .forward(&h(x), t, &h(y), &h(ctx), None)
            .expect("candle stock forward (f16)");
        let diff = max_abs_diff(&f32_out, &f16_out.to_dtype(DType::F32).unwrap());
        let scale = max_abs(&f32_out);
        println!(
            "candle f32 path vs stock MMDiT::forward (f16): max |diff| {diff:.3e}, max |out| {scale:.3e}"
        );
        assert!(
            diff <= 0.05 * scale,
            "the f32 re-assembly departs from candle's forward"
        );
        let ours_out = ours
            .forward(inp.ours.0, inp.ours.1, inp.ours.2, inp.ours.3)
            .unwrap();
        assert_eq!(
            ours_out.dims(),
            <[usize; 4]>::try_from(f32_out.dims()).unwrap()
        );
    }

    let mut group = c.benchmark_group("mmdit_forward");
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    for batch in BATCHES {
        let inp = inputs(batch, &device);
        let (x, t, y, ctx) = &inp.candle;
        let run_candle = || candle.forward(x, t, y, ctx).unwrap();
        black_box(run_candle());
        group.bench_function(format!("candle/d{DEPTH}/b{batch}"), |b| {
            b.iter(|| black_box(run_candle()))
        });

        let (x, t, text, pooled) = &inp.ours;
        let run_ours = || {
            let out = ours
                .forward(x.clone(), t.clone(), text.clone(), pooled.clone())
                .unwrap();
            device.sync().unwrap();
            out
        };
        black_box(run_ours());
        group.bench_function(format!("ours/d{DEPTH}/b{batch}"), |b| {
            b.iter(|| black_box(run_ours()))
        });
    }
    group.finish();
}

criterion_group!(benches, forward);
criterion_main!(benches);
