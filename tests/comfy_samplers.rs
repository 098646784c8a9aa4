//! ComfyUI's model sampling, sigma schedules and k-diffusion samplers
//! against values ComfyUI's own code produced
//! (tests/fixtures/comfy-samplers, see its README): every scheduler x steps x
//! denoise x discard-penultimate, and every supported sampler's trajectory
//! with the toy denoiser and the stored noise draws replayed.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, IndexOp, Tensor};
use flow_nodes::sd::kdiffusion::{
    advanced_sigmas, ksampler_sigmas, Io, ModelSampling, Sampler, Scheduler, SAMPLER_NAMES, SCHEDULER_NAMES,
    UNSUPPORTED_SAMPLERS,
};

fn load(name: &str) -> HashMap<String, Tensor> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/comfy-samplers").join(name);
    candle_core::safetensors::load(&path, &Device::Cpu).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn f32s(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_dtype(DType::F32).unwrap().to_vec1().unwrap()
}

/// `|got - want| <= 1e-5 + 1e-5 |want|`, NaN where `want` is NaN.
fn assert_sigmas(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length; got {got:?}, want {want:?}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if w.is_nan() {
            assert!(g.is_nan(), "{what}[{i}]: got {g}, want NaN");
        } else {
            let d = (g - w).abs();
            assert!(d <= 1e-5 + 1e-5 * w.abs(), "{what}[{i}]: got {g}, want {w} (diff {d:e})");
        }
    }
}

/// `|got - want| <= 1e-4 + 1e-3 |want|` everywhere.
fn assert_traj(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let d = (g - w).abs();
        assert!(d <= 1e-4 + 1e-3 * w.abs(), "{what}[{i}]: got {g}, want {w} (diff {d:e})");
    }
}

#[test]
fn model_sampling_matches_comfyui() {
    let f = load("sigmas.safetensors");
    let ms = ModelSampling::sd1();
    assert_sigmas("sigmas", ms.sigmas(), &f32s(&f["model_sampling/sigmas"]));
    assert_sigmas("log_sigmas", ms.log_sigmas(), &f32s(&f["model_sampling/log_sigmas"]));
    let probes = f32s(&f["model_sampling/probe_sigma"]);
    let want: Vec<i64> = f["model_sampling/probe_timestep"].to_vec1().unwrap();
    for (sigma, want) in probes.iter().zip(want) {
        assert_eq!(ms.timestep(*sigma) as i64, want, "timestep({sigma})");
    }
    let got: Vec<f32> = f32s(&f["model_sampling/probe_t"]).iter().map(|t| ms.sigma(*t)).collect();
    assert_sigmas("sigma(t)", &got, &f32s(&f["model_sampling/probe_sigma_of_t"]));
}

#[test]
fn every_schedule_matches_comfyui() {
    let f = load("sigmas.safetensors");
    let ms = ModelSampling::sd1();
    let mut checked = 0;
    for name in SCHEDULER_NAMES {
        let scheduler = Scheduler::from_name(name).unwrap();
        for steps in [1usize, 4, 10, 20, 30] {
            for denoise in [None, Some("0.5"), Some("0.75"), Some("0.3")] {
                for discard in [false, true] {
                    let mut key = format!("{name}/steps{steps}");
                    if let Some(d) = denoise {
                        key += &format!("/denoise{d}");
                    }
                    if discard {
                        key += "/discard_penultimate";
                    }
                    let Some(want) = f.get(&key) else {
                        assert!(denoise.is_some() && ![10, 20].contains(&steps), "{key} missing from the fixture");
                        continue;
                    };
                    let d: f64 = denoise.map_or(1.0, |d| d.parse().unwrap());
                    let got = ksampler_sigmas(&ms, scheduler, steps, d, discard);
                    assert_sigmas(&key, &got, &f32s(want));
                    checked += 1;
                }
            }
        }
    }
    // 9 schedulers x (5 step counts + 2 x 3 denoise values) x 2.
    assert_eq!(checked, 9 * 11 * 2);
}

#[test]
fn ksampler_advanced_cuts_the_schedule_like_comfyui() {
    let s = [5.0f32, 3.0, 2.0, 1.0, 0.5, 0.0];
    // Defaults (0, 10000, full denoise) leave the schedule alone.
    assert_eq!(advanced_sigmas(&s, 0, 10_000, true).unwrap(), s.to_vec());
    // end_step cuts after it; leftover noise keeps the last sigma, else 0.
    assert_eq!(advanced_sigmas(&s, 0, 2, false).unwrap(), vec![5.0, 3.0, 2.0]);
    assert_eq!(advanced_sigmas(&s, 0, 2, true).unwrap(), vec![5.0, 3.0, 0.0]);
    // start_step drops the first sigmas (the second pass of a refiner setup).
    assert_eq!(advanced_sigmas(&s, 2, 10_000, true).unwrap(), vec![2.0, 1.0, 0.5, 0.0]);
    // Nothing left to run: the latent is returned as is.
    assert!(advanced_sigmas(&s, 5, 10_000, true).is_none());
    assert!(advanced_sigmas(&s, 2, 2, true).is_none());
    assert!(advanced_sigmas(&[], 0, 10_000, true).is_none());
}

/// The toy denoiser of the fixture, in float32 as ComfyUI evaluates it.
fn toy_denoiser(x: &Tensor, sigma: f64) -> Tensor {
    let s = sigma as f32;
    let a = ((1.0 + s * s) as f64).sqrt() as f32;
    let left = ((x / a as f64).unwrap() * 0.8).unwrap();
    let right = ((x.tanh().unwrap() * 0.1).unwrap() * (1.0 / (1.0 + s)) as f64).unwrap();
    (left + right).unwrap()
}

/// What one sampler run did.
struct Run {
    out: Tensor,
    states: Vec<Tensor>,
    calls: Vec<(f64, Tensor)>,
    noise_args: Vec<(f64, f64)>,
}

fn run_sampler(sampler: Sampler, x_in: &Tensor, sigmas: &[f32], noise: Option<&Tensor>) -> Run {
    let sigmas: Vec<f64> = sigmas.iter().map(|s| *s as f64).collect();
    let calls = RefCell::new(Vec::new());
    let mut noise_args = Vec::new();
    let mut states = vec![x_in.clone()];
    let mut denoise = |x: &Tensor, sigma: f64| {
        calls.borrow_mut().push((sigma, x.clone()));
        Ok(toy_denoiser(x, sigma))
    };
    let mut draw = |sigma: f64, sigma_next: f64| {
        let j = noise_args.len();
        noise_args.push((sigma, sigma_next));
        let stored = noise.ok_or_else(|| anyhow::anyhow!("{} drew noise; the fixture has none", sampler.name()))?;
        Ok(stored.i(j)?)
    };
    let mut on_step = |i: usize, n: usize, x: &Tensor| {
        assert_eq!((i, n), (states.len() - 1, sigmas.len() - 1), "step numbering");
        states.push(x.clone());
        Ok(())
    };
    let out = sampler
        .sample(x_in.clone(), &sigmas, &mut Io { denoise: &mut denoise, noise: &mut draw, on_step: &mut on_step })
        .unwrap();
    Run { out, states, calls: calls.into_inner(), noise_args }
}

/// Checks a run against the fixture's `{prefix}/...` tensors.
fn check_run(f: &HashMap<String, Tensor>, prefix: &str, run: &Run) {
    let want_states = &f[&format!("{prefix}/states")];
    let n = want_states.dim(0).unwrap() - 1;
    assert_eq!(run.states.len(), n + 1, "{prefix}: steps reported");
    for (i, state) in run.states.iter().enumerate() {
        assert_traj(&format!("{prefix}/states[{i}]"), &f32s(state), &f32s(&want_states.i(i).unwrap()));
    }
    assert_traj(&format!("{prefix}: output"), &f32s(&run.out), &f32s(&want_states.i(n).unwrap()));
    let want_sigmas = f32s(&f[&format!("{prefix}/calls_sigma")]);
    let got_sigmas: Vec<f32> = run.calls.iter().map(|(s, _)| *s as f32).collect();
    assert_traj(&format!("{prefix}/calls_sigma"), &got_sigmas, &want_sigmas);
    let want_x = f.get(&format!("{prefix}/calls_x")).cloned().unwrap_or_else(|| want_states.narrow(0, 0, n).unwrap());
    for (i, (_, x)) in run.calls.iter().enumerate() {
        assert_traj(&format!("{prefix}/calls_x[{i}]"), &f32s(x), &f32s(&want_x.i(i).unwrap()));
    }
    match f.get(&format!("{prefix}/noise_sigmas")) {
        Some(want) => {
            let want = f32s(want);
            let got: Vec<f32> = run.noise_args.iter().flat_map(|(a, b)| [*a as f32, *b as f32]).collect();
            assert_sigmas(&format!("{prefix}/noise_sigmas"), &got, &want);
        }
        None => assert!(run.noise_args.is_empty(), "{prefix}: drew noise"),
    }
    if let Some(want) = f.get(&format!("{prefix}/ksampler_out")) {
        let out = (&run.out / 0.18215).unwrap();
        assert_traj(&format!("{prefix}/ksampler_out"), &f32s(&out), &f32s(want));
    }
}

#[test]
fn every_sampler_trajectory_matches_comfyui() {
    let f = load("trajectories.safetensors");
    let s = load("sigmas.safetensors");
    let ms = ModelSampling::sd1();
    let x_t = &f["x_T"];
    let zeros = x_t.zeros_like().unwrap();
    for name in SAMPLER_NAMES {
        let sampler = Sampler::from_name(name).unwrap();
        for schedule in ["karras", "normal"] {
            let prefix = format!("{name}/{schedule}");
            let want_sigmas = f32s(&f[&format!("{prefix}/sigmas")]);
            let sigmas = ksampler_sigmas(
                &ms,
                Scheduler::from_name(schedule).unwrap(),
                10,
                1.0,
                sampler.discards_penultimate_sigma(),
            );
            assert_sigmas(&format!("{prefix}/sigmas"), &sigmas, &want_sigmas);
            let x_in = ms.noise_scaling(want_sigmas[0], x_t, &zeros).unwrap();
            assert_traj(&format!("{prefix}/x_in"), &f32s(&x_in), &f32s(&f[&format!("{prefix}/x_in")]));
            let run =
                run_sampler(sampler, &f[&format!("{prefix}/x_in")], &want_sigmas, f.get(&format!("{prefix}/noise")));
            check_run(&f, &prefix, &run);
        }
    }
    // The schedule stored with the runs is the sigmas fixture's.
    assert_sigmas("karras/steps10", &f32s(&f["euler/karras/sigmas"]), &f32s(&s["karras/steps10"]));
}

#[test]
fn img2img_runs_match_comfyui() {
    let f = load("trajectories.safetensors");
    let ms = ModelSampling::sd1();
    let latent_in = (&f["img2img/latent_image"] * 0.18215).unwrap();
    for name in ["euler", "euler_ancestral", "dpmpp_2m"] {
        let prefix = format!("{name}/karras_denoise0.5_img2img");
        let sampler = Sampler::from_name(name).unwrap();
        let sigmas = ksampler_sigmas(&ms, Scheduler::Karras, 10, 0.5, false);
        assert_sigmas(&format!("{prefix}/sigmas"), &sigmas, &f32s(&f[&format!("{prefix}/sigmas")]));
        assert!(!ms.max_denoise(sigmas[0]), "denoise 0.5 starts below sigma_max");
        let x_in = ms.noise_scaling(sigmas[0], &f["x_T"], &latent_in).unwrap();
        assert_traj(&format!("{prefix}/x_in"), &f32s(&x_in), &f32s(&f[&format!("{prefix}/x_in")]));
        let run = run_sampler(sampler, &x_in, &sigmas, f.get(&format!("{prefix}/noise")));
        check_run(&f, &prefix, &run);
    }
}

#[test]
fn sde_samplers_are_refused_with_the_reason() {
    for (name, _) in UNSUPPORTED_SAMPLERS {
        let err = Sampler::from_name(name).unwrap_err().to_string();
        assert!(err.contains(name) && err.contains("not supported"), "{err}");
    }
    let err = Sampler::from_name("dpmpp_sde").unwrap_err().to_string();
    assert!(err.contains("Brownian tree"), "{err}");
}

/// Short schedules and schedules that stop above sigma 0 (leftover noise)
/// run with every sampler and stay finite.
#[test]
fn every_sampler_runs_short_and_unfinished_schedules() {
    let ms = ModelSampling::sd1();
    let x_t = &load("trajectories.safetensors")["x_T"];
    for name in SAMPLER_NAMES {
        let sampler = Sampler::from_name(name).unwrap();
        for steps in 1..=4 {
            for cut in [None, Some(steps.max(2) - 1)] {
                let mut sigmas =
                    ksampler_sigmas(&ms, Scheduler::Karras, steps, 1.0, sampler.discards_penultimate_sigma());
                if let Some(end) = cut {
                    sigmas = advanced_sigmas(&sigmas, 0, end, false).unwrap();
                }
                let x_in = ms.noise_scaling(sigmas[0], x_t, &x_t.zeros_like().unwrap()).unwrap();
                let noise = Tensor::stack(&vec![x_t.clone(); 8], 0).unwrap();
                let run = run_sampler(sampler, &x_in, &sigmas, Some(&noise));
                let out = f32s(&run.out);
                assert!(out.iter().all(|v| v.is_finite()), "{name}, {steps} steps, cut {cut:?}");
                assert_eq!(run.states.len(), sigmas.len(), "{name}: one report per step");
            }
        }
    }
}
