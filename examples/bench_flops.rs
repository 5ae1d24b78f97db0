//! Prints the floating-point operations of each benchmark workload as JSON (used by
//! `benches/compare.sh` for achieved GFLOP/s). One multiply-accumulate = 2 FLOPs; a training
//! step counts 3x the forward (forward + backward).

use diffusion_transformers::models::DiTConfig;

fn main() {
    let mut out = serde_json::Map::new();
    for name in ["DiT-S/2", "DiT-B/2"] {
        let macs = DiTConfig::from_name(name).expect("preset").flops();
        for batch in [1usize, 8] {
            let fwd = 2.0 * macs * batch as f64;
            out.insert(format!("dit_forward/{name}/b{batch}"), fwd.into());
            out.insert(format!("dit_train_step/{name}/b{batch}"), (3.0 * fwd).into());
        }
    }
    println!("{}", serde_json::Value::Object(out));
}
