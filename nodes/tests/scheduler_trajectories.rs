//! Sampler numerics against diffusers 0.42.1.
//!
//! * DDIM, Euler, DPM++ 2M and img2img DDIM replay the tiny-sd trajectories
//!   (tests/fixtures/tiny-sd/expected, copied from shared/reference): each step
//!   gets the stored UNet outputs (guidance 7.5 applied here) and our own
//!   previous latent, and every intermediate latent, UNet input and timestep is
//!   compared (latents: `|got - want| <= 1e-4 + 1e-3 |want|`; timesteps exact).
//! * Euler ancestral and UniPC have no fixture: their timesteps, sigmas and a
//!   4-step toy run are checked against values computed by hand here from the
//!   diffusers formulas, with diffusers' own `alphas_cumprod` (stored in the
//!   DDIM fixture) as the only input.
//! * Timestep spacings (leading / trailing / linspace, steps_offset) and
//!   v-prediction steps for an SD 2.x-style config, against diffusers' lists.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use flow_nodes::sd::scheduler::{
    build, build_with, img2img_start, no_noise, SamplerOptions, SchedulerConfig,
};

const GUIDANCE: f64 = 7.5;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-sd/expected")
}

/// The tensors and the resolved scheduler config of fixture `name`.
fn fixture(name: &str) -> (HashMap<String, Tensor>, SchedulerConfig) {
    let dir = fixture_dir();
    let tensors =
        candle_core::safetensors::load(dir.join(format!("{name}.safetensors")), &Device::Cpu)
            .unwrap_or_else(|e| panic!("loading fixture {name}: {e}"));
    let config = SchedulerConfig::from_file(&dir.join(format!("{name}.scheduler.json"))).unwrap();
    (tensors, config)
}

fn values(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

/// diffusers' `alphas_cumprod` for the SD 1.x schedule (scaled_linear
/// 0.00085..0.012), as stored by the DDIM fixture.
fn diffusers_alphas_cumprod() -> Vec<f64> {
    let (t, _) = fixture("trajectory_ddim");
    values(&t["alphas_cumprod"])
}

/// sigma(t) = sqrt((1 - abar) / abar), linearly interpolated in t.
fn sigma_at(ac: &[f64], t: f64) -> f64 {
    let s = |i: usize| ((1.0 - ac[i]) / ac[i]).sqrt();
    let lo = t.floor() as usize;
    if lo as f64 == t {
        s(lo)
    } else {
        s(lo) + (s(lo + 1) - s(lo)) * (t - lo as f64)
    }
}

/// Asserts the fixture tolerance elementwise; returns the max abs difference.
fn assert_close(got: &Tensor, want: &Tensor, what: &str) -> f64 {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    close_values(&values(got), &values(want), 1e-4, 1e-3, what)
}

fn close_values(got: &[f64], want: &[f64], atol: f64, rtol: f64, what: &str) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut max = 0f64;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let d = (g - w).abs();
        assert!(
            d <= atol + rtol * w.abs(),
            "{what}[{i}]: got {g}, want {w} (diff {d:e})"
        );
        max = max.max(d);
    }
    max
}

/// Exact equality as float32 (how the fixtures store timesteps and sigmas).
fn assert_timesteps(got: &[f64], want: &Tensor, what: &str) {
    let got: Vec<f32> = got.iter().map(|&t| t as f32).collect();
    let want: Vec<f32> = want.to_vec1::<f32>().unwrap();
    assert_eq!(got, want, "{what}");
}

/// Classifier-free guidance of the stored UNet output of step `i`
/// (rows: unconditional, conditional).
fn guided(unet_out: &Tensor, i: usize) -> Tensor {
    let out = unet_out.get(i).unwrap();
    let uncond = out.narrow(0, 0, 1).unwrap();
    let cond = out.narrow(0, 1, 1).unwrap();
    (&uncond + ((&cond - &uncond).unwrap() * GUIDANCE).unwrap()).unwrap()
}

/// Replays a txt2img trajectory; returns the max latent difference.
fn replay_txt2img(name: &str, sampler: &str) -> f64 {
    let (t, cfg) = fixture(name);
    let mut s = build(sampler, &cfg, 4).unwrap();
    assert_timesteps(s.timesteps(), &t["timesteps"], name);
    assert_timesteps(s.timesteps(), &t["unet_t"], name);
    // init_noise_sigma and sigmas are bit-identical to diffusers' float32 values.
    assert_timesteps(
        &[s.init_noise_sigma()],
        &t["init_noise_sigma"],
        "init_noise_sigma",
    );
    if let Some(want) = t.get("sigmas") {
        assert_timesteps(s.sigmas().unwrap(), want, "sigmas");
    }
    let mut max = 0f64;
    // Twice: a multistep sampler must start a fresh run at step 0 again.
    for _ in 0..2 {
        let mut x = (&t["x_T_passed"] * s.init_noise_sigma()).unwrap();
        for i in 0..4 {
            let input = s.scale_model_input(&x, i).unwrap();
            let unet_in = t["unet_in"].get(i).unwrap();
            for row in 0..2 {
                let want = unet_in.narrow(0, row, 1).unwrap();
                max = max.max(assert_close(
                    &input,
                    &want,
                    &format!("{name} unet_in[{i}][{row}]"),
                ));
            }
            x = s
                .step(&guided(&t["unet_out"], i), i, &x, &mut no_noise)
                .unwrap();
            let want = t["latents_after_step"].get(i).unwrap();
            max = max.max(assert_close(
                &x,
                &want,
                &format!("{name} latents_after_step[{i}]"),
            ));
        }
        assert_close(&x, &t["final_latent"], &format!("{name} final_latent"));
    }
    println!("{name} ({sampler}): max |diff| over unet inputs and latents = {max:e}");
    max
}

#[test]
fn scheduler_replay_ddim() {
    let (t, cfg) = fixture("trajectory_ddim");
    // Our f64 alphas_cumprod against diffusers' float32 ones, via add_noise.
    let s = build("ddim", &cfg, 4).unwrap();
    let one = Tensor::ones(1, DType::F32, &Device::Cpu).unwrap();
    let zero = Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap();
    let ac = values(&t["alphas_cumprod"]);
    for (i, &ts) in s.timesteps().iter().enumerate() {
        let got = values(&s.add_noise(&one, &zero, i).unwrap())[0];
        close_values(
            &[got],
            &[ac[ts as usize].sqrt()],
            0.0,
            1e-6,
            "sqrt(alphas_cumprod)",
        );
    }
    replay_txt2img("trajectory_ddim", "ddim");
}

#[test]
fn scheduler_replay_euler() {
    replay_txt2img("trajectory_euler", "euler");
}

#[test]
fn scheduler_replay_dpmpp2m() {
    replay_txt2img("trajectory_dpmpp2m", "dpmpp_2m");
}

#[test]
fn scheduler_replay_img2img_ddim() {
    let (t, cfg) = fixture("img2img_ddim");
    let mut s = build("ddim", &cfg, 4).unwrap();
    assert_timesteps(s.timesteps(), &t["full_timesteps"], "img2img full");
    let start = img2img_start(s.as_ref(), 4, 0.5).unwrap();
    assert_eq!(start, 2);
    assert_timesteps(&s.timesteps()[start..], &t["timesteps"], "img2img run");
    assert_timesteps(&s.timesteps()[start..], &t["unet_t"], "img2img unet_t");
    let mut x = s.add_noise(&t["init_latents"], &t["noise"], start).unwrap();
    let mut max = assert_close(&x, &t["noised_latents"], "noised_latents");
    for (k, i) in (start..4).enumerate() {
        let input = s.scale_model_input(&x, i).unwrap();
        let want_in = t["unet_in"].get(k).unwrap().narrow(0, 1, 1).unwrap();
        max = max.max(assert_close(
            &input,
            &want_in,
            &format!("img2img unet_in[{k}]"),
        ));
        x = s
            .step(&guided(&t["unet_out"], k), i, &x, &mut no_noise)
            .unwrap();
        let want = t["latents_after_step"].get(k).unwrap();
        max = max.max(assert_close(
            &x,
            &want,
            &format!("img2img latents_after_step[{k}]"),
        ));
    }
    assert_close(&x, &t["final_latent"], "img2img final_latent");
    println!("img2img_ddim: max |diff| over noised latents, unet inputs and latents = {max:e}");
}

#[test]
fn scheduler_img2img_start_matches_get_timesteps() {
    let cfg = sd15_config();
    let s = build("dpmpp_2m", &cfg, 10).unwrap();
    assert_eq!(img2img_start(s.as_ref(), 10, 1.0).unwrap(), 0);
    assert_eq!(img2img_start(s.as_ref(), 10, 0.3).unwrap(), 7); // int(10 * 0.3) = 3
    assert_eq!(img2img_start(s.as_ref(), 10, 0.75).unwrap(), 3); // int(7.5) = 7
    assert_eq!(img2img_start(s.as_ref(), 10, 0.0).unwrap(), 10); // nothing to run
    assert!(img2img_start(s.as_ref(), 10, 1.5).is_err());
}

#[test]
fn scheduler_default_sampler_and_errors() {
    for (name, sampler) in [
        ("trajectory_ddim", "ddim"),
        ("trajectory_euler", "euler"),
        ("trajectory_dpmpp2m", "dpmpp_2m"),
    ] {
        let (_, cfg) = fixture(name);
        assert_eq!(cfg.default_sampler(), Some(sampler));
        let a = build("default", &cfg, 4).unwrap();
        let b = build(sampler, &cfg, 4).unwrap();
        assert_eq!(a.timesteps(), b.timesteps());
    }
    let err = build("heun", &sd15_config(), 4).err().unwrap().to_string();
    for name in ["ddim", "euler", "euler_a", "dpmpp_2m", "unipc"] {
        assert!(err.contains(name), "{err}");
    }
    // SD 1.5 ships a PNDMScheduler config, which has no port.
    let pndm = SchedulerConfig::from_json_str(SD15_PNDM_CONFIG).unwrap();
    assert!(build("default", &pndm, 4).is_err());
    let karras = config(r#"{"use_karras_sigmas": true}"#);
    for sampler in ["euler", "dpmpp_2m", "unipc"] {
        let err = build(sampler, &karras, 4).err().unwrap().to_string();
        assert!(err.contains("use_karras_sigmas"), "{err}");
    }
    let thresholding = config(r#"{"thresholding": true}"#);
    assert!(build("ddim", &thresholding, 4).is_err());
    assert!(build("ddim", &sd15_config(), 0).is_err());
    assert!(build("ddim", &sd15_config(), 1001).is_err());
}

/// runwayml/stable-diffusion-v1-5 `scheduler/scheduler_config.json`: no
/// `timestep_spacing`, so each class uses its own default.
const SD15_PNDM_CONFIG: &str = r#"{"_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0",
    "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
    "num_train_timesteps": 1000, "set_alpha_to_one": false, "skip_prk_steps": true,
    "steps_offset": 1, "trained_betas": null, "clip_sample": false}"#;

/// The tiny-sd pipeline's config (SD 1.x values, "leading" spacing).
fn sd15_config() -> SchedulerConfig {
    config("{}")
}

/// The SD 1.x schedule with `extra` keys added.
fn config(extra: &str) -> SchedulerConfig {
    let mut base: serde_json::Value = serde_json::from_str(
        r#"{"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
            "beta_schedule": "scaled_linear", "steps_offset": 1, "set_alpha_to_one": false,
            "clip_sample": false, "timestep_spacing": "leading", "prediction_type": "epsilon"}"#,
    )
    .unwrap();
    let extra: serde_json::Value = serde_json::from_str(extra).unwrap();
    for (k, v) in extra.as_object().unwrap() {
        base[k] = v.clone();
    }
    SchedulerConfig::from_json_str(&base.to_string()).unwrap()
}

#[test]
fn scheduler_timestep_spacings_match_diffusers() {
    let steps20 = |sampler: &str, spacing: &str| -> Vec<f64> {
        let cfg = config(&format!(r#"{{"timestep_spacing": "{spacing}"}}"#));
        build(sampler, &cfg, 20).unwrap().timesteps().to_vec()
    };
    let ints = |v: &[i32]| v.iter().map(|&t| t as f64).collect::<Vec<_>>();
    // DDIM (and Euler for leading / trailing): 1000 // 20 = 50.
    let leading: Vec<f64> = (0..20).rev().map(|i| (i * 50 + 1) as f64).collect();
    let trailing: Vec<f64> = (0..20).rev().map(|i| (i * 50 + 49) as f64).collect();
    let linspace = ints(&[
        999, 946, 894, 841, 789, 736, 684, 631, 578, 526, 473, 421, 368, 315, 263, 210, 158, 105,
        53, 0,
    ]);
    assert_eq!(steps20("ddim", "leading"), leading);
    assert_eq!(steps20("ddim", "trailing"), trailing);
    assert_eq!(steps20("ddim", "linspace"), linspace);
    for sampler in ["euler", "euler_a"] {
        assert_eq!(steps20(sampler, "leading"), leading);
        assert_eq!(steps20(sampler, "trailing"), trailing);
    }
    // Euler keeps linspace timesteps fractional, as float32.
    let euler_linspace: Vec<f64> = (0..20)
        .rev()
        .map(|i| (i as f64 * (999.0 / 19.0)) as f32 as f64)
        .collect();
    assert_eq!(steps20("euler", "linspace"), euler_linspace);
    assert_eq!(euler_linspace[1], 946.4210815429688);
    // DPM-Solver / UniPC space N + 1 points and drop t = 0.
    let ms_leading: Vec<f64> = (1..=20).rev().map(|i| (i * 47 + 1) as f64).collect();
    let ms_linspace = ints(&[
        999, 949, 899, 849, 799, 749, 699, 649, 599, 549, 500, 450, 400, 350, 300, 250, 200, 150,
        100, 50,
    ]);
    for sampler in ["dpmpp_2m", "unipc"] {
        assert_eq!(steps20(sampler, "leading"), ms_leading);
        assert_eq!(steps20(sampler, "linspace"), ms_linspace);
        assert_eq!(steps20(sampler, "trailing"), trailing);
    }
    // Trailing with a non-divisor step count (np.arange of floats, rounded).
    let cfg = config(r#"{"timestep_spacing": "trailing"}"#);
    assert_eq!(
        build("ddim", &cfg, 7).unwrap().timesteps(),
        ints(&[999, 856, 713, 570, 428, 285, 142])
    );
    // The SD 1.5 PNDM config has no spacing: DDIM defaults to leading,
    // Euler to linspace (with init_noise_sigma = sigma_max, no +1).
    let sd15 = SchedulerConfig::from_json_str(SD15_PNDM_CONFIG).unwrap();
    assert_eq!(
        build("ddim", &sd15, 4).unwrap().timesteps(),
        ints(&[751, 501, 251, 1])
    );
    let euler = build("euler", &sd15, 4).unwrap();
    assert_eq!(euler.timesteps(), ints(&[999, 666, 333, 0]));
    let ac = diffusers_alphas_cumprod();
    let sigma_max = sigma_at(&ac, 999.0);
    close_values(
        &[euler.init_noise_sigma()],
        &[sigma_max],
        0.0,
        1e-6,
        "euler linspace init sigma",
    );
    // linspace(0, 999, 5) = [0, 249.75, 499.5, 749.25, 999]: 499.5 rounds half to even.
    assert_eq!(
        build("dpmpp_2m", &sd15, 4).unwrap().timesteps(),
        ints(&[999, 749, 500, 250])
    );
}

/// Euler ancestral: sigmas by hand (4 and 20 steps) and a 4-step toy run
/// with a counted noise source.
#[test]
fn scheduler_euler_a_hand_computed() {
    let ac = diffusers_alphas_cumprod();
    let cfg = sd15_config();
    let mut s = build("euler_a", &cfg, 4).unwrap();
    assert_eq!(s.timesteps(), [751.0, 501.0, 251.0, 1.0]);
    let want_sigmas: Vec<f64> = [751.0, 501.0, 251.0, 1.0]
        .iter()
        .map(|&t| sigma_at(&ac, t))
        .chain([0.0])
        .collect();
    close_values(
        s.sigmas().unwrap(),
        &want_sigmas,
        0.0,
        1e-6,
        "euler_a sigmas",
    );
    // The README's Euler values (6 decimals) hold for Euler ancestral too.
    close_values(
        s.sigmas().unwrap(),
        &[4.116698, 1.623693, 0.698399, 0.041314, 0.0],
        5e-6,
        0.0,
        "readme",
    );
    assert_eq!(
        s.init_noise_sigma(),
        4.236413955688477,
        "init_noise_sigma (float32)"
    );
    // 20 steps, linspace (fractional t, interpolated sigmas, init = sigma_max).
    let lin = config(r#"{"timestep_spacing": "linspace"}"#);
    let s20 = build("euler_a", &lin, 20).unwrap();
    let want20: Vec<f64> = s20
        .timesteps()
        .iter()
        .map(|&t| sigma_at(&ac, t))
        .chain([0.0])
        .collect();
    close_values(
        s20.sigmas().unwrap(),
        &want20,
        0.0,
        1e-6,
        "euler_a sigmas 20",
    );
    close_values(
        &[s20.init_noise_sigma()],
        &[want20[0]],
        0.0,
        1e-6,
        "init 20",
    );

    let x_init = [0.3, -1.2, 2.0];
    let eps = |i: usize| {
        [
            0.5 - 0.1 * i as f64,
            -0.3 + 0.2 * i as f64,
            0.8 - 0.25 * i as f64,
        ]
    };
    let noise = |i: usize| [1.0 - 0.5 * i as f64, 0.25 * i as f64, -0.7];
    // By hand: x0 = x - s eps; d = (x - x0) / s; sigma_up, sigma_down from
    // (s, s_next); x' = x + d (sigma_down - s) + noise sigma_up.
    let mut want_x: Vec<f64> = x_init
        .iter()
        .map(|v| v * want_sigmas[0].hypot(1.0))
        .collect();
    let mut x = tensor(&want_x);
    let mut calls = 0usize;
    for i in 0..4 {
        let (sg, sn) = (want_sigmas[i], want_sigmas[i + 1]);
        let up = (sn * sn * (sg * sg - sn * sn) / (sg * sg)).sqrt();
        let down = (sn * sn - up * up).sqrt();
        let (e, z) = (eps(i), noise(i));
        want_x = (0..3)
            .map(|k| want_x[k] + e[k] * (down - sg) + z[k] * up)
            .collect();
        let mut draw = |shape: &[usize]| {
            assert_eq!(shape, [3]);
            calls += 1;
            Ok::<_, candle_core::Error>(tensor(&noise(i)))
        };
        x = s.step(&tensor(&e), i, &x, &mut draw).unwrap();
        close_values(
            &values(&x),
            &want_x,
            1e-5,
            1e-5,
            &format!("euler_a step {i}"),
        );
    }
    assert_eq!(calls, 4, "one noise draw per step");
    // The final step lands on x0 (sigma_up = 0).
}

/// UniPC (bh2, order 2, predictor + corrector): a 4-step toy run against a
/// scalar re-derivation of diffusers' `multistep_uni_p_bh_update` /
/// `multistep_uni_c_bh_update` (orders used: predictor 1, 2, 2, 1; corrector
/// none, 1, 2, 2).
#[test]
fn scheduler_unipc_hand_computed() {
    let ac = diffusers_alphas_cumprod();
    let mut s = build("unipc", &sd15_config(), 4).unwrap();
    assert_eq!(s.timesteps(), [801.0, 601.0, 401.0, 201.0]);
    let sig: Vec<f64> = [801.0, 601.0, 401.0, 201.0]
        .iter()
        .map(|&t| sigma_at(&ac, t))
        .chain([0.0])
        .collect();
    close_values(s.sigmas().unwrap(), &sig, 0.0, 1e-6, "unipc sigmas");
    // Same sigmas as the DPM++ fixture (same timesteps).
    close_values(
        s.sigmas().unwrap(),
        &[5.134433, 2.292855, 1.168216, 0.574051, 0.0],
        5e-6,
        0.0,
        "readme",
    );
    assert_eq!(s.init_noise_sigma(), 1.0);

    let alpha = |s: f64| 1.0 / (s * s + 1.0).sqrt();
    let sigma_vp = |s: f64| s * alpha(s);
    let lambda = |s: f64| alpha(s).ln() - sigma_vp(s).ln();
    let x_init = [0.3, -1.2, 2.0];
    let eps = |i: usize| {
        [
            0.5 - 0.1 * i as f64,
            -0.3 + 0.2 * i as f64,
            0.8 - 0.25 * i as f64,
        ]
    };

    let mut want = x_init.to_vec();
    let mut x = tensor(&want);
    let mut m: Vec<Vec<f64>> = Vec::new(); // data predictions x0
    let mut last: Option<(Vec<f64>, usize)> = None; // predictor start sample, its order
    for i in 0..4 {
        let e = eps(i);
        let x0: Vec<f64> = (0..3)
            .map(|k| (want[k] - sigma_vp(sig[i]) * e[k]) / alpha(sig[i]))
            .collect();
        if let Some((xp, order)) = &last {
            // Corrector from sig[i-1] to sig[i]; rhos solve [[1, 1], [r1, 1]] rho = b.
            let h = lambda(sig[i]) - lambda(sig[i - 1]);
            let hh = -h;
            let phi1 = hh.exp_m1();
            let b1 = (phi1 / hh - 1.0) / phi1;
            let m0 = &m[i - 1];
            let (rho_old, rho_t, d1): (f64, f64, Vec<f64>) = if *order == 1 {
                (0.0, 0.5, vec![0.0; 3])
            } else {
                let r1 = (lambda(sig[i - 2]) - lambda(sig[i - 1])) / h;
                let b2 = ((phi1 / hh - 1.0) / hh - 0.5) * 2.0 / phi1;
                let rho0 = (b1 - b2) / (1.0 - r1);
                (
                    rho0,
                    b1 - rho0,
                    (0..3).map(|k| (m[i - 2][k] - m0[k]) / r1).collect(),
                )
            };
            want = (0..3)
                .map(|k| {
                    let base = sigma_vp(sig[i]) / sigma_vp(sig[i - 1]) * xp[k]
                        - alpha(sig[i]) * phi1 * m0[k];
                    base - alpha(sig[i]) * phi1 * (rho_old * d1[k] + rho_t * (x0[k] - m0[k]))
                })
                .collect();
        }
        m.push(x0);
        let order = if i == 0 { 1 } else { 2.min(4 - i) };
        // Predictor from sig[i] to sig[i+1] (sig[4] = 0: lambda = inf, e^-h = 0).
        let h = lambda(sig[i + 1]) - lambda(sig[i]);
        let phi1 = (-h).exp_m1();
        let start = want.clone();
        want = (0..3)
            .map(|k| {
                let base = sigma_vp(sig[i + 1]) / sigma_vp(sig[i]) * start[k]
                    - alpha(sig[i + 1]) * phi1 * m[i][k];
                if order == 2 {
                    let r1 = (lambda(sig[i - 1]) - lambda(sig[i])) / h;
                    base - alpha(sig[i + 1]) * phi1 * 0.5 * (m[i - 1][k] - m[i][k]) / r1
                } else {
                    base
                }
            })
            .collect();
        last = Some((start, order));
        x = s.step(&tensor(&e), i, &x, &mut no_noise).unwrap();
        close_values(&values(&x), &want, 1e-5, 1e-5, &format!("unipc step {i}"));
    }
}

/// v-prediction (SD 2.x 768-v style config): one step of DDIM, Euler and
/// DPM++ 2M against the diffusers formulas, and DDIM eta = 1 noise.
#[test]
fn scheduler_v_prediction_and_eta_by_hand() {
    let ac = diffusers_alphas_cumprod();
    let cfg = config(r#"{"prediction_type": "v_prediction"}"#);
    let x = [0.3, -1.2, 2.0];
    let v = [0.5, -0.3, 0.8];
    let (xt, vt) = (tensor(&x), tensor(&v));

    // DDIM 4 steps at t = 751 -> 501.
    let mut s = build("ddim", &cfg, 4).unwrap();
    let (a, ap) = (ac[751], ac[501]);
    let ddim: Vec<f64> = (0..3)
        .map(|k| {
            let x0 = a.sqrt() * x[k] - (1.0 - a).sqrt() * v[k];
            let e = a.sqrt() * v[k] + (1.0 - a).sqrt() * x[k];
            ap.sqrt() * x0 + (1.0 - ap).sqrt() * e
        })
        .collect();
    close_values(
        &values(&s.step(&vt, 0, &xt, &mut no_noise).unwrap()),
        &ddim,
        1e-5,
        1e-5,
        "ddim v",
    );

    // Euler: x0 = v (-s / sqrt(s^2+1)) + x / (s^2+1); x' = x + (x - x0)/s (s' - s).
    let mut s = build("euler", &cfg, 4).unwrap();
    let (sg, sn) = (sigma_at(&ac, 751.0), sigma_at(&ac, 501.0));
    let euler: Vec<f64> = (0..3)
        .map(|k| {
            let x0 = v[k] * (-sg / (sg * sg + 1.0).sqrt()) + x[k] / (sg * sg + 1.0);
            x[k] + (x[k] - x0) / sg * (sn - sg)
        })
        .collect();
    close_values(
        &values(&s.step(&vt, 0, &xt, &mut no_noise).unwrap()),
        &euler,
        1e-5,
        1e-5,
        "euler v",
    );

    // DPM++ 2M first step: x0 = alpha x - sigma v; x' = (sigma'/sigma) x - alpha' (e^-h - 1) x0.
    let mut s = build("dpmpp_2m", &cfg, 4).unwrap();
    let (sg, sn) = (sigma_at(&ac, 801.0), sigma_at(&ac, 601.0));
    let alpha = |s: f64| 1.0 / (s * s + 1.0).sqrt();
    let h = (sg / sn).ln(); // lambda = -ln(sigma) for these sigmas
    let dpm: Vec<f64> = (0..3)
        .map(|k| {
            let x0 = alpha(sg) * x[k] - sg * alpha(sg) * v[k];
            sn * alpha(sn) / (sg * alpha(sg)) * x[k] - alpha(sn) * ((-h).exp() - 1.0) * x0
        })
        .collect();
    close_values(
        &values(&s.step(&vt, 0, &xt, &mut no_noise).unwrap()),
        &dpm,
        1e-5,
        1e-5,
        "dpm v",
    );

    // DDIM eta = 1 (epsilon): std = eta sqrt((1-a')/(1-a) (1 - a/a')), noise added.
    let opts = SamplerOptions { eta: 1.0 };
    let mut s = build_with("ddim", &sd15_config(), 4, &opts).unwrap();
    let z = [1.0, -0.5, 0.25];
    let std = ((1.0 - ap) / (1.0 - a) * (1.0 - a / ap)).sqrt();
    let want: Vec<f64> = (0..3)
        .map(|k| {
            let x0 = (x[k] - (1.0 - a).sqrt() * v[k]) / a.sqrt();
            ap.sqrt() * x0 + (1.0 - ap - std * std).sqrt() * v[k] + std * z[k]
        })
        .collect();
    let got = s
        .step(&vt, 0, &xt, &mut |_: &[usize]| {
            Ok::<_, candle_core::Error>(tensor(&z))
        })
        .unwrap();
    close_values(&values(&got), &want, 1e-5, 1e-5, "ddim eta 1");
    assert!(
        s.step(&vt, 0, &xt, &mut no_noise).is_err(),
        "eta > 0 needs noise"
    );
}

fn tensor(v: &[f64]) -> Tensor {
    let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
    Tensor::new(v.as_slice(), &Device::Cpu).unwrap()
}
