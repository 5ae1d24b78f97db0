//! Quickstart: train a small class-conditional DiT from scratch on the built-in shapes dataset
//! (pixel space, CPU), sample it with classifier-free guidance, and judge the samples with two
//! small classifiers: a colour-aware one and a shape-only one (trained on randomly coloured
//! images, so it can only use the silhouette).
//!
//! ```text
//! cargo run --release --example quickstart
//! cargo run --release --example quickstart -- --help
//! ```
//!
//! Writes `samples.png` (one labelled row per class), `loss.png`, `data.png` (real images) and
//! a checkpoint (`checkpoint/`, resumable, loadable by the `sample` example) into `--out`, and
//! prints `shape accuracy: NN.N%` and `sample accuracy: NN.N%`.
//!
//! `--model conv|unet|udit` trains a denoiser with local structure instead of the default DiT
//! (a 3x3-conv head, a U-shaped shell at patch 2, a small U-DiT at patch 1); their costs and
//! scores are in docs/quickstart.md (fourth round): none beats the default at its budget.

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::time::Instant;

use burn::prelude::*;
use clap::Parser;
use common::classifier::{accuracy, held_out, train_classifier};
use common::cli;
use common::generate::{ObjectiveKind, sample};
use common::plot::{LineChart, Series, ema_smooth, save_grid};
use diffusion_transformers::contracts::Objective;
use diffusion_transformers::data::{CLASSES, ShapesDataset};
use diffusion_transformers::diffusion::{GaussianDiffusionConfig, RectifiedFlowConfig, TimestepDensity, TimestepSamplerConfig};
use diffusion_transformers::blocks::ConditionKind;
use diffusion_transformers::blocks::parts::FeedForwardKind;
use diffusion_transformers::layers::dwconv_ffn::FfnForm;
use diffusion_transformers::models::{ComposedDiTConfig, DiT, DiTConfig, HeadKind, StageLayout, UDiTConfig};
use diffusion_transformers::sampling::SAMPLER_NAMES;
use diffusion_transformers::training::{LabelDropout, LrSchedule, OptimizerConfig, Trainer, TrainerConfig};
use plotters::style::RGBColor;

/// Train a class-conditional DiT on procedural shapes (CPU), sample it with guidance, and judge
/// the samples by colour and by shape.
#[derive(Parser, Debug)]
#[command(allow_negative_numbers = true, after_help = "Outputs in --out: samples.png, loss.png, data.png, checkpoint/ (see the `sample` example).")]
struct Args {
    /// Training steps.
    #[arg(long, default_value_t = 7500, value_parser = cli::positive_u64)]
    steps: u64,
    /// Batch size.
    #[arg(long, default_value_t = 32, value_parser = cli::positive)]
    batch: usize,
    /// Image height = width, a multiple of the patch size.
    #[arg(long, default_value_t = 16, value_parser = cli::image_size)]
    size: usize,
    /// `tiny` (DiT, width 128, depth 4, 4 heads, patch 4), `small` (192, 6, 6, patch 4), `conv`
    /// (tiny with a 3x3-conv head), `unet` (a U-shaped shell at patch 2: widths 32/64/128 on
    /// 8x8/4x4/2x2 tokens, depthwise-conv FFN, 3x3-conv head), `udit` (a small U-DiT at patch 1,
    /// width 32) or a DiT preset such as DiT-S/4. See docs/quickstart.md for their costs.
    #[arg(long, default_value = "tiny", value_parser = cli::model_name)]
    model: String,
    /// Patch size (default: 4 for tiny, small and conv, 2 for unet, 1 for udit, the preset's own
    /// otherwise).
    #[arg(long, value_parser = cli::positive)]
    patch: Option<usize>,
    /// Training objective: DDPM with the hybrid loss and learned sigma, or rectified flow.
    #[arg(long, value_enum, default_value_t = ObjectiveKind::Flow)]
    objective: ObjectiveKind,
    /// Sampler (default: dpm++2m for ddpm, euler for flow).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(SAMPLER_NAMES))]
    sampler: Option<String>,
    /// Sampler steps (default: 50 for ddpm/ddim, 25 otherwise).
    #[arg(long, value_parser = cli::positive)]
    sample_steps: Option<usize>,
    /// Classifier-free guidance scale (1: no guidance).
    #[arg(long, default_value_t = 3.0, value_parser = cli::non_negative)]
    cfg: f64,
    /// Peak learning rate (linear warm-up over 5% of the steps, then cosine to lr / 20).
    #[arg(long, default_value_t = 2e-3, value_parser = cli::positive_f64)]
    lr: f64,
    /// EMA decay of the sampled weights (with warm-up).
    #[arg(long, default_value_t = 0.999, value_parser = cli::unit_interval)]
    ema: f64,
    /// Probability of training a label as the null class (classifier-free guidance needs it).
    #[arg(long, default_value_t = 0.1, value_parser = cli::unit_interval)]
    label_dropout: f64,
    /// Training-time density of the flow time t.
    #[arg(long, value_enum, default_value_t = Density::LogitNormal)]
    t_density: Density,
    /// Location of the logit-normal density (the median t is sigmoid(location)).
    #[arg(long, default_value_t = 0.0)]
    t_location: f64,
    /// Shift of the training times (1: none; > 1 moves them towards noise).
    #[arg(long, default_value_t = 1.0, value_parser = cli::positive_f64)]
    t_shift: f64,
    /// Model width (default: the model's; 32 for unet and udit, the width of their first level).
    #[arg(long, value_parser = cli::positive)]
    width: Option<usize>,
    /// Model depth (default: the model's); for unet and udit, blocks per level (default 1).
    #[arg(long, value_parser = cli::positive)]
    depth: Option<usize>,
    /// Samples per class judged (the grid shows the first 10 of each).
    #[arg(long, default_value_t = 50, value_parser = cli::positive)]
    per_class: usize,
    /// Training steps of each judge classifier (batch 64).
    #[arg(long, default_value_t = 1200, value_parser = cli::positive)]
    judge_steps: usize,
    /// Seed of the data, data order, noise and sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder.
    #[arg(long, default_value = "out/quickstart")]
    out: PathBuf,
    /// Continue from the checkpoint in OUT/checkpoint (without it, a new run replaces the
    /// checkpoints there). With the checkpoint's own `--steps` nothing is trained: the run only
    /// samples and judges (try other `--sampler`, `--sample-steps`, `--cfg` on one model).
    #[arg(long)]
    resume: bool,
    /// Judge the samples in FILE instead of training: raw little-endian `f32`
    /// `[N, 3, size, size]` in `[-1, 1]`, N/10 per class in class order (as
    /// `scripts/quickstart_pytorch.py` writes them). Trains only the judges.
    #[arg(long, value_name = "FILE")]
    judge_samples: Option<PathBuf>,
}

/// Training-time densities of the flow time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Density {
    /// Logit-normal(location, 1) (SD3).
    LogitNormal,
    /// Uniform on (0, 1).
    Uniform,
    /// CosMap.
    Cosmap,
}

/// The model config for `--model` (plus the optional patch, width and depth), in pixel space,
/// as the one model shell (`DiT` and `UDiT` are both `ComposedDiT`).
fn model_config(args: &Args) -> Result<ComposedDiTConfig, String> {
    let (classes, learn_sigma) = (CLASSES.len(), args.objective == ObjectiveKind::Ddpm);
    let shell = match args.model.as_str() {
        "unet" | "udit" => {
            let (width, depth) = (args.width.unwrap_or(32), args.depth.unwrap_or(1));
            let base = if args.model == "unet" {
                // patchify at 2, three levels (8x8, 4x4, 2x2 tokens), full attention on each
                ComposedDiTConfig::new()
                    .with_head(HeadKind::Conv3x3)
                    .with_patch_size(args.patch.unwrap_or(2))
                    .with_hidden_size(width)
                    .with_num_heads(Some(4))
                    .with_stages(StageLayout::UShaped { depths: [depth, depth, 2 * depth, depth, depth] })
                    .with_feed_forward(FeedForwardKind::DwConv { form: FfnForm::Plain })
                    .with_mlp_ratio(2.0)
            } else {
                // U-DiT itself (3x3-conv stem and head, downsampled-token attention, RoPE)
                if args.patch.is_some_and(|p| p != 1) {
                    return Err("udit does not patchify: --patch must be 1".into());
                }
                let heads = (width / 16).max(1);
                UDiTConfig::new().with_hidden_size(width).with_num_heads(heads).with_depth(vec![depth; 5]).with_mlp_ratio(2.0).shell()
            };
            base.with_input_size(args.size)
                .with_in_channels(3)
                .with_learn_sigma(learn_sigma)
                .with_condition(ConditionKind::labels(classes, 0.1))
        }
        name => {
            let base = match name {
                "tiny" | "conv" => DiTConfig::new().with_hidden_size(128).with_depth(4).with_num_heads(4).with_patch_size(4),
                "small" => DiTConfig::new().with_hidden_size(192).with_depth(6).with_num_heads(6).with_patch_size(4),
                other => DiTConfig::from_name(other).map_err(|e| e.to_string())?,
            };
            let patch = args.patch.unwrap_or(base.patch_size);
            let (width, depth) = (args.width.unwrap_or(base.hidden_size), args.depth.unwrap_or(base.depth));
            let config = base
                .with_hidden_size(width)
                .with_depth(depth)
                .with_patch_size(patch)
                .with_input_size(args.size)
                .with_in_channels(3)
                .with_num_classes(classes)
                .with_learn_sigma(learn_sigma);
            config.validate().map_err(|e| e.to_string())?;
            let shell = config.shell();
            if name == "conv" { shell.with_head(HeadKind::Conv3x3) } else { shell }
        }
    };
    shell.validate().map_err(|e| e.to_string())?;
    Ok(shell)
}

fn train_loop<O: Objective<DiT>>(
    trainer: &mut Trainer<DiT>,
    objective: &O,
    data: &ShapesDataset,
    args: &Args,
    device: &Device,
    losses: &mut Vec<(f64, f64)>,
) -> diffusion_transformers::Result<()> {
    let bar = common::progress::bar("training", args.steps, trainer.step());
    let mut smooth = None;
    while trainer.step() < args.steps {
        let (x, y) = data.sample_batch(args.batch, trainer.rng(), device);
        let loss = trainer.train_step(objective, x, &Some(y))? as f64;
        losses.push((trainer.step() as f64, loss));
        let s = smooth.map_or(loss, |s: f64| 0.98 * s + 0.02 * loss);
        smooth = Some(s);
        bar.set_position(trainer.step());
        bar.set_message(format!("loss {s:.4}"));
    }
    bar.finish();
    Ok(())
}

fn run(args: Args) -> Result<(), String> {
    let e = |e: diffusion_transformers::Error| e.to_string();
    let run_start = Instant::now();
    std::fs::create_dir_all(&args.out).map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;
    let device = Device::flex();
    let train_device = device.clone().autodiff();
    let data = ShapesDataset::new(args.seed, 50_000, args.size).map_err(e)?;
    let names: Vec<&str> = CLASSES.iter().map(|c| c.0).collect();
    let zoom = (64 / args.size).max(1);
    if let Some(path) = &args.judge_samples {
        let (samples, labels) = read_samples(path, args.size, &device)?;
        println!("judging {} samples from {}", labels.len(), path.display());
        return judge(&data, samples, &labels, args.judge_steps, &device);
    }
    let real: Vec<usize> = (0..CLASSES.len()).flat_map(|c| (0..10).map(move |k| c + 10 * k)).collect();
    save_grid(data.batch(&real, &device).0, 10, zoom, Some("real images"), Some(&names), &args.out.join("data.png"))?;

    let config = model_config(&args)?;
    let sampler = args.sampler.clone().unwrap_or_else(|| args.objective.default_sampler().into());
    let sample_steps = args.sample_steps.unwrap_or(if matches!(sampler.as_str(), "ddpm" | "ddim") { 50 } else { 25 });
    println!(
        "model: {} (width {}, {} blocks, patch {}, {} parameters, {:.3} GFLOPs/image), objective {}, {} steps of batch {}",
        args.model,
        config.hidden_size,
        config.stages.depth(),
        config.patch_size,
        config.num_params(),
        config.flops(0.0).map_err(e)? / 1e9,
        args.objective.name(),
        args.steps,
        args.batch
    );
    let trainer_config = TrainerConfig {
        optimizer: OptimizerConfig {
            lr: args.lr,
            warmup_steps: (args.steps / 20).max(1),
            schedule: LrSchedule::Cosine { total_steps: args.steps.max(2), min_lr: args.lr / 20.0 },
            grad_clip_norm: Some(1.0),
            ..Default::default()
        },
        ema_decay: args.ema,
        ema_warmup: true,
        seed: args.seed,
        keep_checkpoints: 2,
        gradient_checkpointing: false,
    };
    let ckpt_root = args.out.join("checkpoint");
    train_device.seed(args.seed); // the initial weights (Burn's RNG is process-wide)
    let model = config.init(&train_device).map_err(e)?;
    let mut trainer = if args.resume {
        let (t, _) = Trainer::resume(model, trainer_config, &ckpt_root).map_err(e)?;
        println!("resumed at step {}", t.step());
        for (path, why) in t.resumed().map_or(&[][..], |r| &r.skipped[..]) {
            println!("  skipped the damaged checkpoint now at {} ({why})", path.display());
        }
        t
    } else {
        // A new run: its checkpoint replaces an earlier run's in DIR (explicitly; see
        // `training::checkpoint` on run identities).
        Trainer::new(model, trainer_config).map_err(e)?.with_overwrite(true)
    };

    let mut losses = Vec::new();
    let start = Instant::now();
    let first_step = trainer.step();
    let null = CLASSES.len(); // DiT's null class: the label table's extra row
    match args.objective {
        ObjectiveKind::Ddpm => {
            let diffusion = LabelDropout::new(GaussianDiffusionConfig::dit("").init().map_err(e)?, null, args.label_dropout).map_err(e)?;
            train_loop(&mut trainer, &diffusion, &data, &args, &train_device, &mut losses).map_err(e)?;
        }
        ObjectiveKind::Flow => {
            let density = match args.t_density {
                Density::LogitNormal => TimestepDensity::logit_normal(args.t_location, 1.0).map_err(e)?,
                Density::Uniform => TimestepDensity::Uniform,
                Density::Cosmap => TimestepDensity::CosMap,
            };
            let timesteps = TimestepSamplerConfig::new().with_density(density).with_shift(args.t_shift);
            let flow = RectifiedFlowConfig::new().with_timesteps(timesteps).init().map_err(e)?;
            let flow = LabelDropout::new(flow, null, args.label_dropout).map_err(e)?;
            train_loop(&mut trainer, &flow, &data, &args, &train_device, &mut losses).map_err(e)?;
        }
    }
    let train_time = start.elapsed().as_secs_f64();
    let rate = (trainer.step() - first_step) as f64 / train_time.max(1e-9);
    let metadata = serde_json::json!({
        "shell": serde_json::to_value(&config).map_err(|e| e.to_string())?,
        "objective": args.objective.name(),
    });
    // A resumed run that trained no step (sampling and judging only) writes no new checkpoint.
    let ckpt = if args.resume && trainer.step() == first_step {
        None
    } else {
        Some(trainer.save_checkpoint(&ckpt_root, metadata).map_err(e)?)
    };
    if !losses.is_empty() {
        let raw: Vec<f64> = losses.iter().map(|p| p.1).collect();
        let smooth = ema_smooth(&raw, 0.98);
        let title = format!("training loss ({}, {}, batch {})", args.objective.name(), args.model, args.batch);
        LineChart {
            title: &title,
            x_label: "training step",
            y_label: "loss (log scale)",
            log_y: true,
            series: vec![
                Series { name: "per step", points: losses.clone(), colour: RGBColor(185, 195, 235), width: 1 },
                Series {
                    name: "smoothed (EMA 0.98)",
                    points: losses.iter().zip(&smooth).map(|(p, s)| (p.0, *s)).collect(),
                    colour: RGBColor(20, 40, 200),
                    width: 2,
                },
            ],
        }
        .save(&args.out.join("loss.png"))?;
        println!(
            "trained {} steps in {train_time:.1}s ({rate:.2} steps/s); loss {:.4} -> {:.4} (smoothed)",
            losses.len(),
            smooth[0],
            smooth[smooth.len() - 1]
        );
    }

    // Samples from the EMA model, `per_class` of each class.
    let start = Instant::now();
    let ema = trainer.ema_model().clone();
    let labels = class_labels(args.per_class);
    println!("sampling {} images with {sampler} ({sample_steps} steps, guidance {})", labels.len(), args.cfg);
    let samples = sample(&ema, args.objective, &sampler, sample_steps, args.cfg, &labels, args.seed + 1, &device)
        .map_err(e)?
        .clamp(-1.0, 1.0);
    let sample_time = start.elapsed().as_secs_f64();
    let shown: Vec<i64> = (0..labels.len()).filter(|i| i % args.per_class < 10).map(|i| i as i64).collect();
    let grid = samples.clone().select(0, Tensor::from_data(TensorData::new(shown, [labels.len().min(10 * CLASSES.len())]), &device));
    let title = format!("samples: {sampler}, {sample_steps} steps, guidance {}", args.cfg);
    save_grid(grid, args.per_class.min(10), zoom, Some(&title), Some(&names), &args.out.join("samples.png"))?;

    let start = Instant::now();
    judge(&data, samples, &labels, args.judge_steps, &device)?;
    let judge_time = start.elapsed().as_secs_f64();
    println!(
        "time: {:.0}s in all (training {train_time:.0}s, sampling {sample_time:.0}s, judges {judge_time:.0}s)",
        run_start.elapsed().as_secs_f64()
    );
    let plots = if losses.is_empty() { "samples.png, data.png" } else { "samples.png, loss.png, data.png" };
    match ckpt {
        Some(ckpt) => println!("wrote {}/{{{plots}}} and checkpoint {}", args.out.display(), ckpt.display()),
        None => println!("wrote {}/{{{plots}}} (sampled the checkpoint of step {})", args.out.display(), trainer.step()),
    }
    Ok(())
}

/// Trains the two judges (colour-aware and shape-only, on real images the held-out set
/// excludes), reports their accuracy on the held-out real images and prints the shape and
/// sample accuracy of `samples` (`[N, 3, S, S]`, class `labels[i]`).
fn judge(data: &ShapesDataset, samples: Tensor<4>, labels: &[i64], judge_steps: usize, device: &Device) -> Result<(), String> {
    println!("training the judges (colour-aware and shape-only) on real images");
    let colour_judge = train_classifier(data, false, judge_steps, 4321, device);
    let shape_judge = train_classifier(data, true, judge_steps, 4322, device);
    let held = held_out(1000);
    let (real, real_labels) = data.batch(&held, device);
    let (real_shapes, _) = data.clone().with_random_colours(true).batch(&held, device);
    let real_labels: Vec<i64> = real_labels.into_data().convert::<i64>().try_to_vec().map_err(|e| format!("{e:?}"))?;
    let n = CLASSES.len();
    let (real_colour, _) = accuracy(&colour_judge.predict(real), &real_labels, n);
    let (real_shape, _) = accuracy(&shape_judge.predict(real_shapes), &real_labels, n);
    let (sample_acc, _) = accuracy(&colour_judge.predict(samples.clone()), labels, n);
    let (shape_acc, per_class) = accuracy(&shape_judge.predict(samples), labels, n);
    println!(
        "shape accuracy per class: {}",
        CLASSES.iter().zip(&per_class).map(|(c, a)| format!("{} {:.0}%", c.0, 100.0 * a)).collect::<Vec<_>>().join(", ")
    );
    println!(
        "real held-out images ({}, never seen by the judges): colour-aware judge {:.1}%, shape-only judge {:.1}%",
        held.len(),
        100.0 * real_colour,
        100.0 * real_shape
    );
    println!("shape accuracy: {:.1}%", 100.0 * shape_acc);
    println!("sample accuracy: {:.1}%", 100.0 * sample_acc);
    Ok(())
}

/// Samples from a file (see `--judge-samples`) and their labels.
fn read_samples(path: &std::path::Path, size: usize, device: &Device) -> Result<(Tensor<4>, Vec<i64>), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let image = 3 * size * size;
    let classes = CLASSES.len();
    if bytes.len() % 4 != 0 || (bytes.len() / 4) % (image * classes) != 0 || bytes.is_empty() {
        return Err(format!(
            "{}: {} bytes is not a whole number of f32 [3, {size}, {size}] images, the same number for each of the {classes} classes",
            path.display(),
            bytes.len()
        ));
    }
    let values: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
        return Err(format!("{}: holds a non-finite value ({bad})", path.display()));
    }
    let n = values.len() / image;
    Ok((Tensor::from_data(TensorData::new(values, [n, 3, size, size]), device).clamp(-1.0, 1.0), class_labels(n / classes)))
}

/// The labels of `per_class` samples of each class, in class order.
fn class_labels(per_class: usize) -> Vec<i64> {
    (0..CLASSES.len()).flat_map(|c| std::iter::repeat_n(c as i64, per_class)).collect()
}

fn main() {
    common::cli::main_with(run);
}
