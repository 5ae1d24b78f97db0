//! Kinds `inception_pytorch_fid` (pytorch-fid's FID Inception-v3: resize, `2x - 1`, Mixed_6e,
//! pool features, logits), `fid_pytorch_fid` (`calculate_frechet_distance`),
//! `inception_score_torch_fidelity` (`isc_features_to_metric`, no shuffle) and
//! `precision_recall_prdc` (`prdc.compute_prdc`).

#[cfg(feature = "eval")]
mod imp {
    use burn::prelude::*;
    use diffusion_transformers::eval::{InceptionV3Config, ManifoldConfig, frechet_distance, inception_score, precision_recall};
    use diffusion_transformers::weights::LoadWeights;

    use crate::common::{Fixture, Outcome, all, cfg_bool, cfg_usize, compare_data, err, to_f64};

    pub fn inception(fx: &Fixture) -> Outcome {
        let cfg = fx.config();
        if !cfg_bool(cfg, "use_fid_inception")? {
            return Err("only the FID Inception (use_fid_inception=True) is implemented".into());
        }
        let config = InceptionV3Config::new()
            .with_resize_input(cfg_bool(cfg, "resize_input")?)
            .with_normalize_input(cfg_bool(cfg, "normalize_input")?)
            .with_num_classes(cfg_usize(cfg, "num_classes")?);
        let mut net = config.init(&fx.device).map_err(err)?;
        net.load_checkpoint(&fx.weights).map_err(err)?;
        let f = net.forward(fx.float("input.images")?).map_err(err)?;
        all([
            fx.compare("output.mixed_6e", f.mixed_6e),
            fx.compare("output.pool", f.pool),
            fx.compare("output.logits", f.logits),
        ])
    }

    fn scalar(value: f64) -> TensorData {
        TensorData::new(vec![value], [1])
    }

    pub fn frechet(fx: &Fixture) -> Outcome {
        let v = |k: &str| fx.raw(k).map(to_f64);
        let fid = frechet_distance(&v("input.mu1")?, &v("input.sigma1")?, &v("input.mu2")?, &v("input.sigma2")?).map_err(err)?;
        compare_data("output.fid", scalar(fid), fx.raw("output.fid")?, fx.atol, fx.rtol)
    }

    pub fn inception_score_isc(fx: &Fixture) -> Outcome {
        if fx.config().get("shuffle").and_then(|v| v.as_bool()) != Some(false) {
            return Err("only unshuffled splits (`shuffle: false`) are reproducible".into());
        }
        let logits = fx.raw("input.logits")?;
        let classes = *logits.shape().last().ok_or("input.logits has no dims")?;
        let values: Vec<f32> = to_f64(logits).into_iter().map(|x| x as f32).collect();
        let (mean, std) = inception_score(&values, classes, cfg_usize(fx.config(), "splits")?).map_err(err)?;
        all([
            compare_data("output.isc_mean", scalar(mean), fx.raw("output.isc_mean")?, fx.atol, fx.rtol),
            compare_data("output.isc_std", scalar(std), fx.raw("output.isc_std")?, fx.atol, fx.rtol),
        ])
    }

    pub fn precision_recall_prdc(fx: &Fixture) -> Outcome {
        let config = ManifoldConfig { k: cfg_usize(fx.config(), "nearest_k")?, block: 64 };
        let (p, r) = precision_recall(&fx.float("input.real_features")?, &fx.float("input.fake_features")?, config).map_err(err)?;
        all([
            compare_data("output.precision", scalar(p), fx.raw("output.precision")?, fx.atol, fx.rtol),
            compare_data("output.recall", scalar(r), fx.raw("output.recall")?, fx.atol, fx.rtol),
        ])
    }
}

#[cfg(not(feature = "eval"))]
mod imp {
    use crate::common::{Fixture, Outcome};

    fn needs_eval(fx: &Fixture) -> Outcome {
        Err(format!("kind `{}` needs the crate feature `eval`", fx.kind()))
    }

    pub fn frechet(fx: &Fixture) -> Outcome {
        needs_eval(fx)
    }

    pub fn inception(fx: &Fixture) -> Outcome {
        needs_eval(fx)
    }

    pub fn inception_score_isc(fx: &Fixture) -> Outcome {
        needs_eval(fx)
    }

    pub fn precision_recall_prdc(fx: &Fixture) -> Outcome {
        needs_eval(fx)
    }
}

pub use imp::{frechet, inception, inception_score_isc, precision_recall_prdc};
