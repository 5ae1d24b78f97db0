//! Quickstart: train a small class-conditional DiT from scratch on the built-in shapes dataset
//! (pixel space, 16x16 RGB by default, CPU, about ten minutes on 2 cores), sample a grid with classifier-free
//! guidance, and judge the samples with a small classifier.
//!
//! ```text
//! cargo run --release --example quickstart
//! cargo run --release --example quickstart -- --help
//! ```
//!
//! Writes `samples.png` (one row per class), `loss.png`, `data.png` (real images) and a
//! checkpoint (`checkpoint/`, resumable, loadable by the `sample` example) into `--out`.

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::time::Instant;

use burn::prelude::*;
use common::classifier::train_classifier;
use common::generate::{ObjectiveKind, sample};
use diffusion_transformers::data::{CLASSES, ShapesDataset};
use diffusion_transformers::diffusion::{GaussianDiffusionConfig, RectifiedFlowConfig};
use diffusion_transformers::models::{DiT, DiTConfig};
use diffusion_transformers::contracts::Objective;
use diffusion_transformers::training::{LrSchedule, OptimizerConfig, Trainer, TrainerConfig};

const HELP: &str = "\
quickstart: train a class-conditional DiT on procedural shapes, then sample it with guidance

options (defaults in brackets):
  --steps N          training steps [2000]
  --batch N          batch size [32]
  --size N           image height = width, a multiple of the patch size [16]
  --model NAME       tiny | small | any DiT preset name such as DiT-S/4 [tiny]
                     (tiny: width 128, depth 4, 4 heads, patch 2; small: 192, 6, 6, patch 2)
  --objective OBJ    ddpm (hybrid loss, learned sigma) | flow (rectified flow) [ddpm]
  --sampler S        any sampler with either objective: ddpm | ddim | euler | euler-a | heun |
                     dpm++2m | dpm++3m | dpm++sde | unipc | unipc3 [dpm / euler]
  --sample-steps N   sampler steps [50 for ddpm/ddim, 25 for dpm/euler/heun]
  --cfg SCALE        classifier-free guidance scale [3.0]
  --lr LR            peak learning rate (warm-up then cosine) [1e-3]
  --seed N           seed of data order, noise and sampling [0]
  --out DIR          output folder [out/quickstart]
  --resume           continue from the checkpoint in DIR/checkpoint (without it, a new run
                     replaces the checkpoints there)
  --help             this text";

struct Args {
    steps: u64,
    batch: usize,
    size: usize,
    model: String,
    objective: ObjectiveKind,
    sampler: String,
    sample_steps: usize,
    cfg: f64,
    lr: f64,
    seed: u64,
    out: PathBuf,
    resume: bool,
}

fn parse_args() -> Result<Args, String> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.iter().any(|a| a == "--help" || a == "-h") {
        println!("{HELP}");
        std::process::exit(0);
    }
    let get = |name: &str| argv.iter().position(|a| a == name).and_then(|i| argv.get(i + 1).cloned());
    let num = |name: &str, default: f64| -> Result<f64, String> {
        get(name).map_or(Ok(default), |v| v.parse().map_err(|_| format!("{name} expects a number, got `{v}`")))
    };
    let objective = ObjectiveKind::parse(&get("--objective").unwrap_or_else(|| "ddpm".into()))?;
    let sampler = get("--sampler").unwrap_or_else(|| objective.default_sampler().into());
    let default_steps = if matches!(sampler.as_str(), "ddpm" | "ddim") { 50.0 } else { 25.0 };
    Ok(Args {
        steps: num("--steps", 2000.0)? as u64,
        batch: num("--batch", 32.0)? as usize,
        size: num("--size", 16.0)? as usize,
        model: get("--model").unwrap_or_else(|| "tiny".into()),
        objective,
        sampler,
        sample_steps: num("--sample-steps", default_steps)? as usize,
        cfg: num("--cfg", 3.0)?,
        lr: num("--lr", 1e-3)?,
        seed: num("--seed", 0.0)? as u64,
        out: PathBuf::from(get("--out").unwrap_or_else(|| "out/quickstart".into())),
        resume: argv.iter().any(|a| a == "--resume"),
    })
}

/// The model config for `name`, in pixel space (3 channels, `size x size`).
pub fn model_config(name: &str, objective: ObjectiveKind, size: usize) -> Result<DiTConfig, String> {
    let base = match name {
        "tiny" => DiTConfig::new().with_hidden_size(128).with_depth(4).with_num_heads(4).with_patch_size(2),
        "small" => DiTConfig::new().with_hidden_size(192).with_depth(6).with_num_heads(6).with_patch_size(2),
        other => DiTConfig::from_name(other).map_err(|e| e.to_string())?,
    };
    Ok(base
        .with_input_size(size)
        .with_in_channels(3)
        .with_num_classes(CLASSES.len())
        .with_learn_sigma(objective == ObjectiveKind::Ddpm))
}

fn train_loop<O: Objective<DiT>>(
    trainer: &mut Trainer<DiT>,
    objective: &O,
    data: &ShapesDataset,
    args: &Args,
    device: &Device,
    losses: &mut Vec<f64>,
) -> diffusion_transformers::Result<()> {
    let start = Instant::now();
    let first = trainer.step();
    let mut smooth = None;
    while trainer.step() < args.steps {
        let (x, y) = data.sample_batch(args.batch, trainer.rng(), device);
        let loss = trainer.train_step(objective, x, &Some(y))? as f64;
        losses.push(loss);
        let s = *smooth.get_or_insert(loss);
        smooth = Some(0.98 * s + 0.02 * loss);
        let done = trainer.step();
        if done % 10 == 0 || done == args.steps {
            let rate = (done - first) as f64 / start.elapsed().as_secs_f64();
            let eta = (args.steps - done) as f64 / rate.max(1e-9);
            eprint!(
                "\r  step {done:>5}/{} | loss {:.4} | {rate:.2} it/s | {:.0} img/s | eta {:>4.0}s ",
                args.steps,
                smooth.unwrap_or(loss),
                rate * args.batch as f64,
                eta
            );
        }
    }
    eprintln!();
    Ok(())
}

fn run(args: Args) -> Result<(), String> {
    let e = |e: diffusion_transformers::Error| e.to_string();
    std::fs::create_dir_all(&args.out).map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;
    let device = Device::flex();
    let train_device = device.clone().autodiff();
    let data = ShapesDataset::new(args.seed, 50_000, args.size).map_err(e)?;
    common::save_grid(data.batch(&(0..40).collect::<Vec<_>>(), &device).0, 10, 64 / args.size.min(64), &args.out.join("data.png"))?;

    let config = model_config(&args.model, args.objective, args.size)?;
    config.validate().map_err(e)?;
    println!(
        "model: {} ({} parameters, {:.3} GFLOPs/image), objective {}, {} steps of batch {}",
        args.model,
        config.num_params(),
        config.flops() / 1e9,
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
        ema_decay: 0.999,
        ema_warmup: true,
        seed: args.seed,
        keep_checkpoints: 2,
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

    println!("training (the progress line shows step, smoothed loss and throughput)");
    let mut losses = Vec::new();
    let start = Instant::now();
    match args.objective {
        ObjectiveKind::Ddpm => {
            let diffusion = GaussianDiffusionConfig::dit("").init().map_err(e)?;
            train_loop(&mut trainer, &diffusion, &data, &args, &train_device, &mut losses).map_err(e)?;
        }
        ObjectiveKind::Flow => {
            let flow = RectifiedFlowConfig::new().init().map_err(e)?;
            train_loop(&mut trainer, &flow, &data, &args, &train_device, &mut losses).map_err(e)?;
        }
    }
    let train_time = start.elapsed();
    let metadata = serde_json::json!({
        "model": serde_json::to_value(&config).map_err(|e| e.to_string())?,
        "objective": args.objective.name(),
    });
    let ckpt = trainer.save_checkpoint(&ckpt_root, metadata).map_err(e)?;
    if !losses.is_empty() {
        let smooth: Vec<f64> = losses
            .iter()
            .scan(None, |s: &mut Option<f64>, &v| {
                let n = s.map_or(v, |p| 0.98 * p + 0.02 * v);
                *s = Some(n);
                Some(n)
            })
            .collect();
        common::save_line_plot(&[(&losses, [190, 190, 230]), (&smooth, [20, 40, 200])], true, &args.out.join("loss.png"))?;
        println!(
            "trained {} steps in {:.1?}; loss {:.4} -> {:.4} (smoothed); loss.png: log-scale loss per step",
            losses.len(),
            train_time,
            smooth[0],
            smooth[smooth.len() - 1]
        );
    }

    // Samples from the EMA model: one row per class, 10 per class.
    let ema = trainer.ema_model().clone();
    let per_class = 10;
    let labels: Vec<i64> = (0..CLASSES.len()).flat_map(|c| std::iter::repeat_n(c as i64, per_class)).collect();
    println!("sampling {} images with {} ({} steps, guidance {})", labels.len(), args.sampler, args.sample_steps, args.cfg);
    let samples = sample(&ema, args.objective, &args.sampler, args.sample_steps, args.cfg, &labels, args.seed + 1, &device)
        .map_err(e)?;
    common::save_grid(samples.clone(), per_class, 64 / args.size.min(64), &args.out.join("samples.png"))?;

    println!("training the judge classifier on real images");
    let classifier = train_classifier(&data, 400, &device);
    let held_out: Vec<usize> = (40_000..40_500).collect();
    let (real, real_labels) = data.batch(&held_out, &device);
    let real_acc = classifier.accuracy(real, real_labels);
    let y = Tensor::<1, Int>::from_data(TensorData::new(labels.clone(), [labels.len()]), &device);
    let sample_acc = classifier.accuracy(samples.clamp(-1.0, 1.0), y);
    println!("sample accuracy: {:.1}%", 100.0 * sample_acc);
    println!("real-image accuracy: {:.1}%", 100.0 * real_acc);
    println!("wrote {}/{{samples.png, loss.png, data.png}} and checkpoint {}", args.out.display(), ckpt.display());
    Ok(())
}

fn main() {
    diffusion_transformers::cpu::tune_allocator(); // keep large CPU buffers for reuse
    let result = parse_args().and_then(run);
    if let Err(msg) = result {
        eprintln!("error: {msg}");
        std::process::exit(1);
    }
}
