//! Tests of `weights::layout`: `Linear`s built `Col`, and row-layout ones loaded as views.

use super::*;
use crate::models::MMDiT;
use crate::models::mmdit_config::tiny_test_config;
use crate::weights::format::tests::varied_checkpoint;
use crate::weights::loader::to_f32;
use crate::weights::{Checkpoint, KeyFn, LazyCheckpoint, LoadWeights, export, load, load_with};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{DType, Device, TensorData};

/// Two non-square `Linear`s (one without bias), in the given layout.
#[derive(Module, Debug)]
struct Pair {
    a: Linear,
    b: Linear,
}

fn pair(layout: LinearLayout, device: &Device) -> Pair {
    Pair {
        a: LinearConfig::new(3, 5).with_layout(layout).init(device),
        b: LinearConfig::new(5, 2).with_bias(false).with_layout(layout).init(device),
    }
}

impl Pair {
    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.b.forward(self.a.forward(x))
    }
}

/// `n` deterministic values in `[-1, 1)`.
fn vals(n: usize, seed: usize) -> Vec<f32> {
    (0..n).map(|j| ((seed * 31 + j * 7) % 101) as f32 / 50.0 - 1.0).collect()
}

/// A checkpoint of [`Pair`] in PyTorch's layout (`[out, in]` weights).
fn pair_checkpoint() -> Checkpoint {
    let mut ck = Checkpoint::new();
    ck.insert("a.weight", TensorData::new(vals(15, 1), [5, 3]));
    ck.insert("a.bias", TensorData::new(vals(5, 2), [5]));
    ck.insert("b.weight", TensorData::new(vals(10, 3), [2, 5]));
    ck
}

fn temp_file(name: &str, ck: &Checkpoint) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("dt_layout_{name}_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("w.safetensors");
    ck.save_safetensors(&file).unwrap();
    file
}

fn same(a: &Checkpoint, b: &Checkpoint) {
    assert_eq!(a.len(), b.len());
    for (k, v) in a.tensors() {
        let w = b.get(k).unwrap_or_else(|| panic!("{k} missing"));
        assert_eq!(v.shape(), w.shape(), "{k}");
        assert_eq!(to_f32(v), to_f32(w), "{k}");
    }
}

fn max_diff(a: Tensor<2>, b: Tensor<2>) -> f32 {
    a.sub(b).abs().max().into_scalar::<f32>()
}

#[test]
fn col_linears_load_and_export_without_transposing_twice() {
    let device = Device::flex();
    let ck = pair_checkpoint();
    let keys = KeyFn(|p: &str| p.to_string());
    let x = Tensor::<2>::from_data(TensorData::new(vals(12, 4), [4, 3]), &device);

    let mut row = pair(LinearLayout::Row, &device);
    load(&mut row, (&ck).into(), &keys).unwrap();
    let want = row.forward(x.clone());
    // built `Col`: lazy (never initialised) and initialised (its value read once) parameters
    let mut lazy = pair(LinearLayout::Col, &device);
    let mut used = pair(LinearLayout::Col, &device);
    assert!(load_transposes(&lazy.a.weight) && !load_transposes(&row.a.weight));
    let _ = used.forward(x.clone());
    for col in [&mut lazy, &mut used] {
        load(col, (&ck).into(), &keys).unwrap();
        assert_eq!(col.a.weight.val().dims(), [3, 5]);
        // the same products summed in another order: equal to rounding
        assert!(max_diff(col.forward(x.clone()), want.clone()) <= 1e-6);
        assert_eq!(col.num_params(), row.num_params());
        // exported `[out, in]`, as the file
        same(&ck, &export(col, &keys).unwrap());
    }
    // a `Col` export round-trips into a fresh `Col` model and into a row one
    let out = export(&lazy, &keys).unwrap();
    let mut again = pair(LinearLayout::Col, &device);
    load(&mut again, (&out).into(), &keys).unwrap();
    same(&ck, &export(&again, &keys).unwrap());
    let mut back = pair(LinearLayout::Row, &device);
    load(&mut back, (&out).into(), &keys).unwrap();
    same(&ck, &export(&back, &keys).unwrap());
    // the row model is unaffected by the option's absence: exported as before
    same(&ck, &export(&row, &keys).unwrap());
}

#[test]
fn a_failed_col_load_lists_every_key_and_leaves_the_model_alone() {
    let device = Device::flex();
    let keys = KeyFn(|p: &str| p.to_string());
    let mut col = pair(LinearLayout::Col, &device);
    load(&mut col, (&pair_checkpoint()).into(), &keys).unwrap();
    let before = export(&col, &keys).unwrap();
    let mut broken = pair_checkpoint();
    broken.insert("a.weight", TensorData::new(vals(15, 5), [3, 5])); // Burn's `[in, out]`: mis-shaped
    broken.remove("b.weight");
    broken.insert("c.weight", TensorData::new(vals(2, 6), [2]));
    for options in [LoadOptions::new(), LoadOptions::new().with_linear_layout(LinearLayout::Col)] {
        let err = load_with(&mut col, (&broken).into(), &keys, &options).unwrap_err().to_string();
        assert!(err.contains("a.weight") && err.contains("b.weight") && err.contains("c.weight"), "{err}");
        same(&before, &export(&col, &keys).unwrap());
    }
}

#[test]
fn mapped_col_loads_share_the_files_pages() {
    let device = Device::flex();
    let ck = pair_checkpoint();
    let file = temp_file("pair", &ck);
    let keys = KeyFn(|p: &str| p.to_string());
    // built `Col`, and built row but loaded with the option: both views of the pages
    for (layout, options) in [
        (LinearLayout::Col, LoadOptions::new()),
        (LinearLayout::Row, LoadOptions::new().with_linear_layout(LinearLayout::Col)),
    ] {
        // SAFETY: the test's own file, not modified while mapped.
        let lazy = unsafe { LazyCheckpoint::open_mapped(&file) }.unwrap();
        let in_file = lazy.get("a.weight").unwrap().mapped().unwrap().as_bytes().as_ptr();
        let mut m = pair(layout, &device);
        load_with(&mut m, lazy, &keys, &options).unwrap();
        same(&ck, &export(&m, &keys).unwrap());
        let weight = m.a.weight.val();
        assert_eq!(weight.dims(), [3, 5]);
        drop(m);
        // the `[in, out]` parameter is a transposed view of the file's `[out, in]` bytes
        let data = weight.transpose().into_data();
        assert_eq!(data.as_bytes().as_ptr(), in_file, "{layout:?}: the weight was copied");
        assert_eq!(data.try_to_vec::<f32>().unwrap(), vals(15, 1));
    }
    std::fs::remove_dir_all(file.parent().unwrap()).unwrap();
}

#[test]
fn a_model_loaded_as_views_equals_a_transposed_load() {
    let device = Device::flex();
    let cfg = tiny_test_config();
    let ck = varied_checkpoint(&cfg.init(&device).unwrap());
    let file = temp_file("mmdit", &ck);
    let col = LoadOptions::new().with_linear_layout(LinearLayout::Col);

    let mut row: MMDiT = cfg.init(&device).unwrap();
    row.load_weights(&file).unwrap();
    let mut read: MMDiT = cfg.init(&device).unwrap();
    read.load_lazy_with(LazyCheckpoint::open(&file).unwrap(), col).unwrap();
    // SAFETY: the test's own file, not modified while mapped.
    let lazy = unsafe { LazyCheckpoint::open_mapped(&file) }.unwrap();
    let in_file = lazy.get("context_embedder.weight").unwrap().mapped().unwrap().as_bytes().as_ptr();
    let mut mapped: MMDiT = cfg.init(&device).unwrap();
    mapped.load_lazy_with(lazy, col).unwrap();

    let x = Tensor::<4>::from_data(TensorData::new(vals(2 * 4 * 8 * 8, 7), [2, 4, 8, 8]), &device);
    let t = Tensor::<1>::from_data(TensorData::new(vec![10.0f32, 900.0], [2]), &device);
    let text = Tensor::<3>::from_data(TensorData::new(vals(2 * 5 * 12, 8), [2, 5, 12]), &device);
    let pooled = Tensor::<2>::from_data(TensorData::new(vals(2 * 10, 9), [2, 10]), &device);
    let run = |m: &MMDiT| m.forward(x.clone(), t.clone(), text.clone(), pooled.clone()).unwrap();
    let want = run(&row);
    let scale = want.clone().abs().max().into_scalar::<f32>();
    for m in [&read, &mapped] {
        let err = run(m).sub(want.clone()).abs().max().into_scalar::<f32>();
        assert!(err <= 1e-5 * scale.max(1.0), "max error {err} (scale {scale})");
        assert_eq!(m.num_params(), row.num_params());
        same(&ck, &m.to_checkpoint().unwrap());
    }
    let weight = mapped.context_embedder.as_ref().unwrap().weight.val();
    drop(mapped);
    assert_eq!(weight.transpose().into_data().as_bytes().as_ptr(), in_file, "the weight was copied");
    std::fs::remove_dir_all(file.parent().unwrap()).unwrap();
}

#[test]
fn views_of_a_converted_dtype() {
    // a bf16 file into an f32 model: cast, then handed over without a transpose
    let device = Device::flex();
    let keys = KeyFn(|p: &str| p.to_string());
    let half = Checkpoint::from_tensors(
        pair_checkpoint().tensors().iter().map(|(k, v)| (k.clone(), v.clone().convert_dtype(DType::BF16))).collect(),
    );
    let x = Tensor::<2>::from_data(TensorData::new(vals(12, 4), [4, 3]), &device);
    let mut row = pair(LinearLayout::Row, &device);
    load(&mut row, (&half).into(), &keys).unwrap();
    let col = LoadOptions::new().with_linear_layout(LinearLayout::Col);
    for (layout, options) in [(LinearLayout::Row, col), (LinearLayout::Col, LoadOptions::new())] {
        let mut m = pair(layout, &device);
        load_with(&mut m, (&half).into(), &keys, &options).unwrap();
        assert_eq!(m.a.weight.val().dtype(), DType::F32, "{layout:?}: the model's dtype is kept");
        assert!(max_diff(m.forward(x.clone()), row.forward(x.clone())) <= 1e-6, "{layout:?}");
        let back = export(&m, &keys).unwrap();
        for (k, v) in half.tensors() {
            assert_eq!(to_f32(v), to_f32(back.get(k).unwrap()), "{k}");
        }
    }
}
