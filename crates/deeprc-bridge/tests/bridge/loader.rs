//! The loader: buffer reuse, bounded prefetch, batches held by the consumer.

use super::common::rows;
use deeprc_bridge::{
    Loader, LoaderOptions, PinPolicy, PinStatus, SamplerOptions, WindowSpec, ZeroCopy,
};

fn windows() -> deeprc_bridge::WindowDataset {
    WindowSpec::new(8, 4, &["x"], &["x"])
        .build(rows(0, 3000, 10_000, 500))
        .unwrap()
        .train
}

#[test]
fn buffers_are_reused() {
    let opts = LoaderOptions {
        workers: 2,
        prefetch: 3,
        zero_copy: ZeroCopy::Never,
        pin: PinPolicy::Auto,
    };
    let loader = Loader::new(windows(), SamplerOptions::shuffled(16, 1), opts).unwrap();
    let mut batches = 0;
    for e in 0..3 {
        for b in loader.epoch(e) {
            let b = b.unwrap();
            assert_eq!(
                b.inputs().as_ptr() as usize % 4096,
                0,
                "staging buffers are page-aligned"
            );
            batches += 1;
        }
    }
    assert!(batches > 500);
    // prefetch window + one per worker in flight + the one the consumer holds.
    assert!(
        loader.buffers_allocated() <= 3 + 2 + 2,
        "{} buffers for {batches} batches",
        loader.buffers_allocated()
    );
    // The fallback is said plainly.
    match loader.pin_status() {
        PinStatus::Pinned => {}
        PinStatus::Unpinned { reason } => assert!(!reason.is_empty()),
    }
    assert!(loader.describe_memory().contains("page-aligned"));
}

#[test]
fn a_consumer_may_hold_every_batch() {
    let opts = LoaderOptions {
        workers: 3,
        prefetch: 2,
        ..Default::default()
    };
    let loader = Loader::new(windows(), SamplerOptions::shuffled(64, 2), opts).unwrap();
    let all: Vec<_> = loader.epoch(0).collect::<Result<_, _>>().unwrap();
    assert_eq!(all.len(), loader.batches_per_epoch());
    let n: usize = all.iter().map(|b| b.len()).sum();
    assert_eq!(n, 3000 - 11);
    // Every held batch still has its own data.
    for b in &all {
        let x = b.inputs().to_vec::<f32>().unwrap();
        for i in 0..b.len() {
            assert_eq!(x[i * 8 + 1], x[i * 8] + 0.5);
        }
    }
}

#[test]
fn dropping_an_epoch_early_stops_the_workers() {
    let loader = Loader::new(
        windows(),
        SamplerOptions::shuffled(8, 3),
        LoaderOptions::default(),
    )
    .unwrap();
    for e in 0..20 {
        let mut it = loader.epoch(e);
        let _ = it.next().unwrap().unwrap();
    }
    let opts = LoaderOptions {
        pin: PinPolicy::Never,
        ..Default::default()
    };
    let l = Loader::new(windows(), SamplerOptions::sequential(8), opts).unwrap();
    assert!(
        matches!(l.pin_status(), PinStatus::Unpinned { reason } if reason.contains("PinPolicy::Never"))
    );
}
