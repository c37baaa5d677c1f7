use candle_core::{Device, Tensor};
use candle_nn::Optimizer;
use tltui::model::*;
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
fn main() {
    let dir = std::path::Path::new("../shared/hub/timm/tf_efficientnet_lite0.in1k");
    let config = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    let params = Params::load(&dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let mut b = build_backbone(&config, params).unwrap();
    let bs: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(16);
    let x = Tensor::randn(0f32, 1.0, (bs, 3, 224, 224), &Device::Cpu).unwrap();
    let t = std::time::Instant::now();
    for _ in 0..3 {
        b.forward(&x, false).unwrap();
    }
    println!(
        "forward: {:.1} img/s",
        3.0 * bs as f64 / t.elapsed().as_secs_f64()
    );
    for i in 0..b.parts().groups.len() {
        b.set_trainable(i, true);
    }
    let vars: Vec<_> = b.trainable_vars().into_iter().map(|(_, v)| v).collect();
    let mut opt = candle_nn::AdamW::new(
        vars,
        candle_nn::ParamsAdamW {
            lr: 1e-4,
            ..Default::default()
        },
    )
    .unwrap();
    for i in 0..4 {
        let t = std::time::Instant::now();
        let f = b.forward(&x, true).unwrap();
        let t1 = t.elapsed();
        let loss = f.sqr().unwrap().mean_all().unwrap();
        let g = loss.backward().unwrap();
        let t2 = t.elapsed();
        opt.step(&g).unwrap();
        println!(
            "step {i}: fwd {:?} bwd {:?} total {:?} = {:.1} img/s",
            t1,
            t2 - t1,
            t.elapsed(),
            bs as f64 / t.elapsed().as_secs_f64()
        );
    }
}
