//! Windows on the real ETTh1 and CAMELS data equal a naive reference that
//! parses the files itself.

use super::common::{data_file, etth1, launch, ETT_FEATURES};
use deeprc_bridge::{
    Dataset, Loader, LoaderOptions, Normalize, SamplerOptions, Split, TimeStep, WindowDataset,
    WindowSpec, ZeroCopy,
};
use deeprc_frame::io::camels::{camels_files, read_camels_files};
use deeprc_frame::io::CamelsKind;
use deeprc_frame::{DistTable, JoinOptions, SortKey, Table};
use std::collections::HashMap;
use std::sync::Arc;

/// Days since 1970-01-01 of a civil date.
fn days(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Mean and population standard deviation.
fn stats(v: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let n = v.clone().count() as f64;
    let mean = v.clone().sum::<f64>() / n;
    let var = v.map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    (mean, var.sqrt())
}

fn close(a: f32, b: f64) -> bool {
    (f64::from(a) - b).abs() <= 1e-4 + 1e-5 * b.abs()
}

/// Every sample of `ds`, in order, as (meta, inputs, targets).
fn load_all(ds: WindowDataset) -> Vec<(deeprc_bridge::SampleMeta, Vec<f32>, Vec<f32>)> {
    let ds = Arc::new(ds);
    let opts = LoaderOptions {
        zero_copy: ZeroCopy::Never,
        ..Default::default()
    };
    let loader = Loader::new(Arc::clone(&ds), SamplerOptions::sequential(256), opts).unwrap();
    let (xe, ye) = (
        ds.layout().inputs.elements(),
        ds.layout().targets.elements(),
    );
    let mut out = Vec::new();
    for b in loader.epoch(0) {
        let b = b.unwrap();
        let x = b.inputs().to_vec::<f32>().unwrap();
        let y = b.targets().to_vec::<f32>().unwrap();
        for (i, &s) in b.samples().iter().enumerate() {
            out.push((
                ds.meta(s),
                x[i * xe..(i + 1) * xe].to_vec(),
                y[i * ye..(i + 1) * ye].to_vec(),
            ));
        }
    }
    out
}

#[test]
fn etth1_windows_equal_the_naive_reference() {
    // Naive: parse the CSV, z-score on the 8640 training rows, cut windows.
    let text = std::fs::read_to_string(data_file("ETT-small/ETTh1.csv")).unwrap();
    let mut times = Vec::new();
    let mut cols: Vec<Vec<f64>> = vec![Vec::new(); 7];
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let (d, t) = f[0].split_once(' ').unwrap();
        let ymd: Vec<i64> = d.split('-').map(|v| v.parse().unwrap()).collect();
        let hour: i64 = t[..2].parse().unwrap();
        times.push(days(ymd[0], ymd[1], ymd[2]) * 86_400 + hour * 3600);
        for k in 0..7 {
            cols[k].push(f[k + 1].parse().unwrap());
        }
    }
    assert_eq!(times.len(), 17_420);
    let st: Vec<(f64, f64)> = cols
        .iter()
        .map(|c| stats(c[..8640].iter().copied()))
        .collect();
    let norm = |k: usize, r: usize| (cols[k][r] - st[k].0) / st[k].1;
    let (l, h) = (96, 24);

    let splits = WindowSpec::new(l, h, &ETT_FEATURES, &["OT"])
        .time("date", TimeStep::HOUR)
        .normalize(Normalize::ZScore)
        .split(Split::Rows {
            train: 8640,
            val: 2880,
            test: 2880,
        })
        .build(&etth1())
        .unwrap();
    for (k, name) in ETT_FEATURES.iter().enumerate() {
        let s = splits.scaler.get(name).unwrap();
        assert!(
            (s.shift - st[k].0).abs() < 1e-9 && (s.scale - st[k].1).abs() < 1e-9,
            "{name}: {s:?} vs {:?}",
            st[k]
        );
    }
    // Targets inside each split; inputs may look back into the split before.
    let naive_starts = |lo: usize, hi: usize| -> Vec<usize> {
        (0..=17_420 - l - h)
            .filter(|&s| s + l >= lo && s + l + h <= hi)
            .collect()
    };
    let sets = [
        (splits.train, naive_starts(0, 8640)),
        (splits.val.unwrap(), naive_starts(8640, 11_520)),
        (splits.test.unwrap(), naive_starts(11_520, 14_400)),
    ];
    assert_eq!(
        sets.iter().map(|s| s.1.len()).collect::<Vec<_>>(),
        vec![8521, 2857, 2857]
    );
    for (ds, starts) in sets {
        let got = load_all(ds);
        assert_eq!(got.len(), starts.len());
        for ((meta, x, y), &s) in got.iter().zip(&starts) {
            assert_eq!(meta.row, Some(s));
            assert_eq!(
                meta.time,
                Some(times[s + l]),
                "time of the first target row"
            );
            for t in 0..l {
                for k in 0..7 {
                    assert!(
                        close(x[t * 7 + k], norm(k, s + t)),
                        "x window {s} row {t} col {k}"
                    );
                }
            }
            for (t, &v) in y.iter().enumerate() {
                assert!(close(v, norm(6, s + l + t)), "y window {s} row {t}");
            }
        }
    }
}

/// CAMELS rows of one basin: (day, prcp, srad, tmax, tmin, vp, flow),
/// parsed from the two text files and joined by date.
fn naive_camels(gauge: &str) -> Vec<(i64, [f64; 6])> {
    let forcing = std::fs::read_to_string(data_file(&format!(
        "camels_us_4basins/daymet/{gauge}_lump_cida_forcing_leap.txt"
    )))
    .unwrap();
    let flow = std::fs::read_to_string(data_file(&format!(
        "camels_us_4basins/usgs_streamflow/{gauge}_streamflow_qc.txt"
    )))
    .unwrap();
    let mut q = HashMap::new();
    for line in flow.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let v: f64 = f[4].parse().unwrap();
        if v != -999.0 {
            q.insert(
                days(
                    f[1].parse().unwrap(),
                    f[2].parse().unwrap(),
                    f[3].parse().unwrap(),
                ),
                v,
            );
        }
    }
    let mut rows = Vec::new();
    for line in forcing.lines().skip(4) {
        let f: Vec<f64> = line
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect();
        let d = days(f[0] as i64, f[1] as i64, f[2] as i64);
        // Year Mnth Day Hr dayl prcp srad swe tmax tmin vp
        if let Some(&flow) = q.get(&d) {
            rows.push((d, [f[5], f[6], f[8], f[9], f[10], flow]));
        }
    }
    rows.sort_by_key(|r| r.0);
    rows
}

const GAUGES: [&str; 4] = ["01022500", "01547700", "02064000", "03015500"];
const CAMELS_FEATURES: [&str; 5] = ["prcp", "srad", "tmax", "tmin", "vp"];

/// Forcing joined with streamflow on (gauge, date), sorted, without days of
/// more than 20 mm of rain (derived in code: real gaps in the time axis).
fn camels_pipeline(forcing: &Table, flow: &Table) -> Table {
    let flow = flow
        .project(&["gauge", "date", "flow"])
        .unwrap()
        .rename(&[("gauge", "g2"), ("date", "d2")])
        .unwrap();
    forcing
        .join(
            &flow,
            &JoinOptions::on_columns(&["gauge", "date"], &["g2", "d2"]),
        )
        .unwrap()
        .filter_sql("prcp <= 20")
        .unwrap()
        .sort(&[SortKey::asc("gauge"), SortKey::asc("date")])
        .unwrap()
}

fn camels_spec() -> WindowSpec {
    WindowSpec::new(30, 1, &CAMELS_FEATURES, &["flow"])
        .series("gauge")
        .time("date", TimeStep::DAY)
        .normalize(Normalize::ZScore)
        .split(Split::Fraction {
            train: 0.6,
            val: 0.2,
        })
}

/// The naive windows: (gauge, first target day, inputs, target) per split.
type NaiveWindow = (String, i64, Vec<f64>, f64);

fn naive_windows() -> [Vec<NaiveWindow>; 3] {
    let (l, need) = (30usize, 31usize);
    let per: Vec<Vec<(i64, [f64; 6])>> = GAUGES
        .iter()
        .map(|g| {
            naive_camels(g)
                .into_iter()
                .filter(|r| r.1[0] <= 20.0)
                .collect()
        })
        .collect();
    let borders = |n: usize| [0, (n as f64 * 0.6) as usize, (n as f64 * 0.8) as usize, n];
    let st: Vec<(f64, f64)> = (0..6)
        .map(|k| {
            stats(
                per.iter()
                    .flat_map(|rows| rows[..borders(rows.len())[1]].iter().map(move |r| r.1[k])),
            )
        })
        .collect();
    let mut out: [Vec<NaiveWindow>; 3] = Default::default();
    for (g, rows) in GAUGES.iter().zip(&per) {
        let b = borders(rows.len());
        for s in 0..rows.len().saturating_sub(need - 1) {
            let gap_free = (s + 1..s + need).all(|i| rows[i].0 - rows[i - 1].0 == 1);
            if !gap_free {
                continue;
            }
            let ts = s + l;
            if let Some(k) = (0..3).find(|&k| b[k] <= ts && ts < b[k + 1]) {
                let x = (s..s + l)
                    .flat_map(|i| (0..5).map(move |c| (i, c)))
                    .map(|(i, c)| (rows[i].1[c] - st[c].0) / st[c].1)
                    .collect();
                out[k].push((
                    g.to_string(),
                    rows[ts].0,
                    x,
                    (rows[ts].1[5] - st[5].0) / st[5].1,
                ));
            }
        }
    }
    out
}

fn assert_windows(got: &[(deeprc_bridge::SampleMeta, Vec<f32>, Vec<f32>)], want: &[NaiveWindow]) {
    assert_eq!(got.len(), want.len());
    for ((meta, x, y), (g, t, wx, wy)) in got.iter().zip(want) {
        assert_eq!(meta.series.as_deref(), Some(g.as_str()));
        assert_eq!(meta.time, Some(*t), "{g}");
        assert!(
            x.iter().zip(wx).all(|(a, &b)| close(*a, b)),
            "{g} day {t}: inputs differ"
        );
        assert!(close(y[0], *wy), "{g} day {t}: target {} vs {wy}", y[0]);
    }
}

#[test]
fn camels_windows_equal_the_naive_reference() {
    let root = data_file("camels_us_4basins");
    let forcing = read_camels_files(
        &camels_files(&root, CamelsKind::Forcing).unwrap(),
        CamelsKind::Forcing,
    )
    .unwrap();
    let flow = read_camels_files(
        &camels_files(&root, CamelsKind::Streamflow).unwrap(),
        CamelsKind::Streamflow,
    )
    .unwrap();
    let table = camels_pipeline(&forcing, &flow);
    let splits = camels_spec().build(&table).unwrap();
    let want = naive_windows();
    assert!(want[0].len() > 1000 && !want[1].is_empty() && !want[2].is_empty());
    assert_windows(&load_all(splits.train), &want[0]);
    assert_windows(&load_all(splits.val.unwrap()), &want[1]);
    assert_windows(&load_all(splits.test.unwrap()), &want[2]);
}

#[test]
fn camels_distributed_basins_give_the_same_windows() {
    // Three ranks, each reading whole basins; statistics all-reduced; the
    // windows balanced between the ranks. Together: the naive set.
    let root = data_file("camels_us_4basins");
    let per_rank = launch(3, |comm| {
        let forcing = DistTable::read_camels(Arc::clone(&comm), &root, CamelsKind::Forcing)?;
        let flow = DistTable::read_camels(Arc::clone(&comm), &root, CamelsKind::Streamflow)?;
        let local = camels_pipeline(forcing.partition(), flow.partition());
        let dist = DistTable::new(local, comm)?;
        let splits = camels_spec().build(&dist)?;
        Ok(load_all(splits.train))
    })
    .unwrap();
    let sizes: Vec<usize> = per_rank.iter().map(Vec::len).collect();
    assert!(
        sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1,
        "balanced: {sizes:?}"
    );
    let mut all: Vec<_> = per_rank.into_iter().flatten().collect();
    all.sort_by_key(|(m, _, _)| (m.series.clone(), m.time));
    assert_windows(&all, &naive_windows()[0]);
}
