//! Data-parallel training (`deeprc_bridge::train`): equivalence of 1, 2
//! and 4 ranks on threads and on tcp processes, checkpoints that resume
//! mid-epoch, and the errors a user can cause.

#[path = "../../../deeprc-comm/tests/common/mod.rs"]
mod rank_processes;

use deeprc_bridge::tch::tch_crate::nn::{self, Module};
use deeprc_bridge::tch::tch_crate::{Device, Kind, Reduction, Tensor};
use deeprc_bridge::train::{DistributedTrainer, LoaderPosition, OptimizerKind};
use deeprc_bridge::BridgeError;
use deeprc_comm::{local, Communicator};
use std::sync::Arc;
use std::time::Duration;

const ROWS: i64 = 16;
const IN: i64 = 6;
const OUT: i64 = 2;
const STEPS: usize = 6;

/// A deterministic value in [-0.5, 0.5) for index `i` (no global RNG:
/// thread ranks share libtorch's).
fn det(i: u64) -> f32 {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32 - 0.5
}

fn det_tensor(offset: u64, shape: &[i64]) -> Tensor {
    let n: i64 = shape.iter().product();
    let v: Vec<f32> = (0..n as u64).map(|i| det(offset + i)).collect();
    Tensor::from_slice(&v).reshape(shape)
}

/// The test model: two linear layers with a tanh between.
struct Net {
    vs: nn::VarStore,
    seq: nn::Sequential,
}

/// A model whose parameters are a deterministic function of `rank`
/// (different on every rank: the trainer must broadcast rank 0's).
fn net(rank: usize) -> Net {
    let vs = nn::VarStore::new(Device::Cpu);
    let p = vs.root();
    let seq = nn::seq()
        .add(nn::linear(&p / "l1", IN, 8, Default::default()))
        .add_fn(|x| x.tanh())
        .add(nn::linear(&p / "l2", 8, OUT, Default::default()));
    det_init(&vs, rank);
    Net { vs, seq }
}

/// Sets every variable of `vs` to deterministic values that depend on
/// `rank`.
fn det_init(vs: &nn::VarStore, rank: usize) {
    let mut names: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    tch::no_grad(|| {
        for (k, (_, t)) in names.iter_mut().enumerate() {
            let v = det_tensor(1000 * (k as u64 + 1) + 7 * rank as u64, &t.size());
            t.copy_(&v);
        }
    });
}

fn data() -> (Tensor, Tensor) {
    let x = det_tensor(1, &[ROWS, IN]) * 4.0;
    let y = (x.narrow(1, 0, OUT) * 0.7).sin() + det_tensor(99, &[ROWS, OUT]) * 0.1;
    (x, y)
}

fn flat_params(vs: &nn::VarStore) -> Vec<f32> {
    let mut names: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    names
        .iter()
        .flat_map(|(_, t)| Vec::<f32>::try_from(t.detach().reshape([-1])).unwrap())
        .collect()
}

/// Trains `STEPS` steps on this rank's contiguous shard of the batch.
fn train_shard(
    comm: Arc<dyn Communicator>,
    kind: OptimizerKind,
) -> Result<(Vec<f32>, f64), BridgeError> {
    let (rank, size) = (comm.rank(), comm.size());
    let model = net(rank);
    let mut trainer = DistributedTrainer::new(&model.vs, comm, kind, 0.05)?;
    let (x, y) = data();
    let per = ROWS / size as i64;
    let (xs, ys) = (
        x.narrow(0, rank as i64 * per, per),
        y.narrow(0, rank as i64 * per, per),
    );
    let mut loss = 0.0;
    for _ in 0..STEPS {
        loss = trainer.step(&model.seq.forward(&xs).mse_loss(&ys, Reduction::Mean))?;
    }
    trainer.check()?;
    Ok((flat_params(&model.vs), loss))
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn reference(kind: OptimizerKind) -> (Vec<f32>, f64) {
    local::launch(1, |c| train_shard(Arc::new(c), kind))
        .unwrap()
        .remove(0)
}

fn kinds() -> [(OptimizerKind, f32); 2] {
    // SGD is linear in the gradients: tight. Adam divides by the root of
    // the second moment, which magnifies rounding for tiny gradients.
    [
        (OptimizerKind::sgd(0.9), 1e-5),
        (OptimizerKind::adam(), 1e-4),
    ]
}

#[test]
fn one_two_and_four_thread_ranks_train_the_same_parameters() {
    tch::set_num_threads(1);
    for (kind, tol) in kinds() {
        let (want, want_loss) = reference(kind);
        // Training moved the parameters away from the initial ones.
        assert!(max_diff(&want, &flat_params(&net(0).vs)) > 1e-3);
        for n in [2, 4] {
            let got = local::launch(n, |c| train_shard(Arc::new(c), kind)).unwrap();
            for (r, (params, loss)) in got.iter().enumerate() {
                // Identical bits on every rank.
                assert_eq!(
                    params, &got[0].0,
                    "{kind:?}: rank {r} of {n} differs from rank 0"
                );
                let d = max_diff(params, &want);
                assert!(d < tol, "{kind:?}: {n} ranks vs 1 rank: max difference {d}");
                assert!(
                    (loss - want_loss).abs() < 1e-4,
                    "{kind:?}: loss {loss} vs {want_loss}"
                );
            }
        }
    }
}

#[test]
fn two_and_four_tcp_process_ranks_train_the_same_parameters() {
    tch::set_num_threads(1);
    for (kind_name, (kind, tol)) in ["sgd", "adam"].into_iter().zip(kinds()) {
        let (want, _) = reference(kind);
        for n in [2, 4] {
            let store = format!("127.0.0.1:{}", rank_processes::free_port());
            let kids = rank_processes::spawn_ranks(
                n,
                "training::tcp_training_rank",
                &store,
                &[("DEEPRC_TEST_OPTIMIZER", kind_name.to_string())],
            );
            for (r, k) in kids.into_iter().enumerate() {
                let (code, out, _) = rank_processes::wait_output(k, Duration::from_secs(120));
                assert_eq!(code, Some(0), "rank {r} of {n}: {out}");
                let line = rank_processes::result_line(&out);
                let got: Vec<f32> = line
                    .split(',')
                    .map(|v| {
                        v.parse()
                            .unwrap_or_else(|_| panic!("rank {r} of {n}: {line}"))
                    })
                    .collect();
                let d = max_diff(&got, &want);
                assert!(
                    d < tol,
                    "{kind_name}: {n} tcp ranks, rank {r}: max difference {d}"
                );
            }
        }
    }
}

#[test]
#[ignore = "entry point of the rank processes of two_and_four_tcp_process_ranks_train_the_same_parameters"]
fn tcp_training_rank() {
    if !rank_processes::is_rank_process() {
        return;
    }
    tch::set_num_threads(1);
    let kind = match std::env::var("DEEPRC_TEST_OPTIMIZER").as_deref() {
        Ok("adam") => OptimizerKind::adam(),
        _ => OptimizerKind::sgd(0.9),
    };
    let comm = deeprc_comm::tcp::TcpComm::from_env().unwrap();
    match train_shard(Arc::new(comm), kind) {
        Ok((params, _)) => println!(
            "RESULT {}",
            params
                .iter()
                .map(|v| format!("{v:e}"))
                .collect::<Vec<_>>()
                .join(",")
        ),
        Err(e) => println!("RESULT err {e}"),
    }
}

#[test]
fn small_buckets_give_the_same_result_as_one_bucket() {
    tch::set_num_threads(1);
    let run = |bucket_bytes: usize| {
        local::launch(2, |c| {
            let model = net(c.rank());
            let mut t = DistributedTrainer::with_options(
                &model.vs,
                Arc::new(c),
                OptimizerKind::sgd(0.0),
                0.1,
                deeprc_bridge::train::DdpOptions { bucket_bytes },
            )?;
            let buckets = t.data_parallel().num_buckets();
            let (x, y) = data();
            for _ in 0..3 {
                t.step(&model.seq.forward(&x).mse_loss(&y, Reduction::Mean))?;
            }
            Ok::<_, BridgeError>((flat_params(&model.vs), buckets))
        })
        .unwrap()
        .remove(0)
    };
    let (one, b1) = run(1 << 20);
    let (many, bn) = run(16);
    assert_eq!(b1, 1);
    assert_eq!(bn, 4, "each of the 4 parameters in a bucket of its own");
    assert_eq!(one, many);
}

#[test]
fn a_resumed_run_takes_the_same_steps_as_an_uninterrupted_one() {
    use deeprc_bridge::{Loader, LoaderOptions, RowSpec, SamplerOptions};
    tch::set_num_threads(1);
    let dir = rank_processes::temp_dir("ckpt");
    let table = crate::common::etth1().slice(0, 512);
    let spec = || RowSpec::new(&crate::common::ETT_FEATURES[..6], &["OT"]);
    let epochs = 2u64;
    // Trains `epochs` epochs; stops after `stop_after` steps when given,
    // saving a checkpoint; resumes from it when `resume`.
    let run = |stop_after: Option<u64>, resume: bool| {
        local::launch(2, |c| {
            let comm: Arc<dyn Communicator> = Arc::new(c);
            let src = deeprc_bridge::DataSource::from(&table).replicated(Arc::clone(&comm));
            let splits = spec().build(src)?;
            let loader = Loader::new(
                splits.train,
                SamplerOptions::shuffled(32, 3),
                LoaderOptions::default(),
            )?;
            let vs = nn::VarStore::new(Device::Cpu);
            let lin = nn::linear(vs.root() / "fc", 6, 1, Default::default());
            det_init(&vs, comm.rank());
            let mut t =
                DistributedTrainer::new(&vs, Arc::clone(&comm), OptimizerKind::adam(), 1e-2)?;
            let mut pos = LoaderPosition::default();
            if resume {
                pos = t.load(&dir)?.position;
            }
            let mut losses = Vec::new();
            for epoch in pos.epoch..epochs {
                let first = if epoch == pos.epoch { pos.batch } else { 0 };
                for (k, b) in loader.epoch_from(epoch, first).enumerate() {
                    let b = b?.to_tch(deeprc_core::Device::Cpu)?;
                    let loss = lin
                        .forward(b.inputs())
                        .mse_loss(b.targets(), Reduction::Mean);
                    losses.push(t.step(&loss)?);
                    if Some(t.steps()) == stop_after {
                        let at = LoaderPosition {
                            epoch,
                            batch: first + k + 1,
                        };
                        t.save(&dir, at)?;
                        return Ok((flat_params(&vs), losses));
                    }
                }
            }
            Ok::<_, BridgeError>((flat_params(&vs), losses))
        })
        .unwrap()
        .remove(0)
    };
    let (full, full_losses) = run(None, false);
    let steps_per_epoch = full_losses.len() as u64 / epochs;
    assert!(steps_per_epoch >= 4, "{steps_per_epoch}");
    // Stop in the middle of the first epoch, then resume.
    let stop = steps_per_epoch / 2 + 1;
    let (_, first_losses) = run(Some(stop), false);
    let (resumed, rest_losses) = run(None, true);
    assert_eq!(resumed, full, "a resumed run ends with the same parameters");
    let joined: Vec<f64> = first_losses.into_iter().chain(rest_losses).collect();
    assert_eq!(joined, full_losses, "and takes the same steps");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_checkpoint_from_another_model_is_refused_by_name() {
    tch::set_num_threads(1);
    let dir = rank_processes::temp_dir("ckpt-other");
    let err = local::launch(1, |c| {
        let comm: Arc<dyn Communicator> = Arc::new(c);
        let model = net(0);
        let mut t =
            DistributedTrainer::new(&model.vs, Arc::clone(&comm), OptimizerKind::adam(), 1e-2)?;
        t.save(&dir, LoaderPosition::default())?;
        let vs = nn::VarStore::new(Device::Cpu);
        let _other = nn::linear(vs.root() / "l1", IN, 9, Default::default());
        let mut t2 = DistributedTrainer::new(&vs, comm, OptimizerKind::adam(), 1e-2)?;
        t2.load(&dir).map(|_| ())
    })
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, BridgeError::Checkpoint { .. }), "{err:?}");
    assert!(
        msg.contains("another model") && msg.contains("l1."),
        "{msg}"
    );
    let missing = local::launch(1, |c| {
        let model = net(0);
        let mut t = DistributedTrainer::new(&model.vs, Arc::new(c), OptimizerKind::adam(), 1e-2)?;
        t.load(&dir.join("nothing-here")).map(|_| ())
    })
    .unwrap_err();
    assert!(missing.to_string().contains("checkpoint.json"), "{missing}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_nan_loss_on_one_rank_stops_every_rank_at_the_same_step() {
    tch::set_num_threads(1);
    let out = local::launch(2, |c| {
        let rank = c.rank();
        let model = net(rank);
        let mut t = DistributedTrainer::new(&model.vs, Arc::new(c), OptimizerKind::adam(), 1e-2)?;
        let (x, y) = data();
        let before = flat_params(&model.vs);
        for step in 0..3 {
            let loss = model.seq.forward(&x).mse_loss(&y, Reduction::Mean);
            let loss = if step == 2 && rank == 1 {
                &loss * f64::NAN
            } else {
                loss
            };
            match t.step(&loss) {
                Ok(_) => {}
                Err(e) => {
                    return Ok::<_, BridgeError>((
                        step,
                        e.to_string(),
                        before != flat_params(&model.vs),
                    ))
                }
            }
        }
        Ok((99, String::new(), true))
    })
    .unwrap();
    for (step, msg, moved) in out {
        assert_eq!(step, 2, "{msg}");
        assert!(msg.contains("not finite"), "{msg}");
        assert!(moved);
    }
}

#[test]
fn ranks_with_different_models_are_refused() {
    tch::set_num_threads(1);
    let err = local::launch(2, |c| {
        let vs = nn::VarStore::new(Device::Cpu);
        let width = 3 + c.rank() as i64;
        let _l = nn::linear(vs.root() / "fc", 4, width, Default::default());
        DistributedTrainer::new(&vs, Arc::new(c), OptimizerKind::adam(), 1e-2).map(|_| ())
    })
    .unwrap_err();
    assert!(matches!(err, BridgeError::Diverged { .. }), "{err:?}");
}

#[test]
fn a_peer_that_dies_mid_step_fails_the_other_rank_within_the_deadline() {
    tch::set_num_threads(1);
    let cfg = deeprc_comm::CommConfig::default().with_timeout(Duration::from_millis(500));
    let start = std::time::Instant::now();
    let out = local::launch_with(2, cfg, |c| {
        let model = net(c.rank());
        let rank = c.rank();
        let mut t = DistributedTrainer::new(&model.vs, Arc::new(c), OptimizerKind::adam(), 1e-2)?;
        if rank == 1 {
            // Leaves without taking part in the step.
            return Ok::<_, BridgeError>(None);
        }
        let (x, y) = data();
        Ok(Some(t.step(
            &model.seq.forward(&x).mse_loss(&y, Reduction::Mean),
        )))
    });
    assert!(start.elapsed() < Duration::from_secs(20));
    match out {
        Ok(v) => match &v[0] {
            Some(Err(e)) => assert!(matches!(e, BridgeError::Comm(_)), "{e:?}"),
            other => panic!("rank 0 should fail: {other:?}"),
        },
        Err(e) => assert!(matches!(e, BridgeError::Comm(_)), "{e:?}"),
    }
    let _ = Kind::Float;
}
