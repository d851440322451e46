//! Generated tables, rank launchers and comparisons shared by the tests.

#![allow(dead_code, unreachable_pub)]

use deeprc_comm::tcp::{StoreSpec, TcpComm, TcpOptions};
use deeprc_comm::{local, Communicator};
use deeprc_frame::arrow::array::{
    ArrayRef, Float64Array, Int32Array, Int64Array, StringArray, TimestampMillisecondArray,
};
use deeprc_frame::arrow::datatypes::DataType;
use deeprc_frame::{DistTable, FrameContext, FrameError, SortKey, Table};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::PathBuf;
use std::sync::Arc;

/// How to generate a table.
#[derive(Clone, Copy, Debug)]
pub struct Gen {
    pub rows: usize,
    /// Distinct values of the key `k`.
    pub keys: i64,
    /// Fraction of rows whose key is 7.
    pub skew: f64,
    /// Fraction of nulls in nullable columns.
    pub nulls: f64,
}

impl Gen {
    pub fn new(rows: usize) -> Self {
        Self {
            rows,
            keys: 20,
            skew: 0.0,
            nulls: 0.1,
        }
    }
    pub fn keys(mut self, k: i64) -> Self {
        self.keys = k;
        self
    }
    pub fn skew(mut self, s: f64) -> Self {
        self.skew = s;
        self
    }
    pub fn nulls(mut self, n: f64) -> Self {
        self.nulls = n;
        self
    }
}

/// A table with columns k (i64, nullable), s (utf8, nullable), f (f64,
/// nullable, multiples of 0.25 so sums are exact), t (timestamp ms,
/// nullable), i (i32), id (i64 unique).
pub fn gen_table(rng: &mut StdRng, g: Gen) -> Table {
    let n = g.rows;
    let opt = |rng: &mut StdRng| rng.gen::<f64>() >= g.nulls;
    let k: Int64Array = (0..n)
        .map(|_| {
            if !opt(rng) {
                None
            } else if rng.gen::<f64>() < g.skew {
                Some(7)
            } else {
                Some(rng.gen_range(0..g.keys))
            }
        })
        .collect();
    let words = ["ant", "bee", "cat", "dog", "eel", "fox", ""];
    let s: StringArray = (0..n)
        .map(|_| opt(rng).then(|| words[rng.gen_range(0..words.len())]))
        .collect();
    let f: Float64Array = (0..n)
        .map(|_| opt(rng).then(|| rng.gen_range(-400i32..400) as f64 * 0.25))
        .collect();
    let t: TimestampMillisecondArray = (0..n)
        .map(|_| opt(rng).then(|| 1_600_000_000_000 + rng.gen_range(0..50i64) * 3_600_000))
        .collect();
    let i: Int32Array = (0..n).map(|_| Some(rng.gen_range(-5..5))).collect();
    let id: Int64Array = (0..n as i64).map(Some).collect();
    Table::from_columns(vec![
        ("k", Arc::new(k) as ArrayRef),
        ("s", Arc::new(s) as ArrayRef),
        ("f", Arc::new(f) as ArrayRef),
        ("t", Arc::new(t) as ArrayRef),
        ("i", Arc::new(i) as ArrayRef),
        ("id", Arc::new(id) as ArrayRef),
    ])
    .unwrap()
}

/// Splits `t` into `n` uneven partitions (some empty, sometimes all rows on
/// one rank).
pub fn split(rng: &mut StdRng, t: &Table, n: usize) -> Vec<Table> {
    let rows = t.num_rows();
    let mut cuts: Vec<usize> = match rng.gen_range(0..4) {
        0 => {
            let r = rng.gen_range(0..n);
            (0..n - 1).map(|j| if j < r { 0 } else { rows }).collect()
        }
        _ => (0..n - 1).map(|_| rng.gen_range(0..=rows)).collect(),
    };
    cuts.sort_unstable();
    let mut out = Vec::new();
    let mut prev = 0;
    for c in cuts.into_iter().chain([rows]) {
        out.push(t.slice(prev, c - prev));
        prev = c;
    }
    out
}

/// Runs `f` on `n` thread ranks, rank r with partition `parts[r]`.
pub fn on_threads<R: Send>(
    parts: &[Table],
    f: impl Fn(DistTable) -> Result<R, FrameError> + Sync,
) -> Vec<R> {
    let n = parts.len();
    local::launch(n, |comm| {
        let r = comm.rank();
        let d = DistTable::new(parts[r].clone(), Arc::new(comm))?;
        f(d)
    })
    .unwrap()
}

/// Runs `f` on `n` thread ranks with a raw communicator.
pub fn on_threads_comm<R: Send>(
    n: usize,
    f: impl Fn(Arc<dyn Communicator>) -> Result<R, FrameError> + Sync,
) -> Vec<Result<R, FrameError>> {
    let comms = local::create(n, Default::default()).unwrap();
    std::thread::scope(|s| {
        let hs: Vec<_> = comms
            .into_iter()
            .map(|c| {
                let f = &f;
                s.spawn(move || f(Arc::new(c)))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Runs `f` on `n` tcp ranks that are threads of this process.
pub fn on_tcp_threads<R: Send>(
    n: usize,
    f: impl Fn(Arc<dyn Communicator>) -> Result<R, FrameError> + Sync,
) -> Vec<Result<R, FrameError>> {
    let dir = temp_dir("tcp");
    let out = std::thread::scope(|s| {
        let hs: Vec<_> = (0..n)
            .map(|r| {
                let (dir, f) = (&dir, &f);
                s.spawn(move || {
                    let o = TcpOptions::new(r, n, StoreSpec::Dir(dir.clone()), "frame-test-token");
                    let c = TcpComm::connect(o)?;
                    f(Arc::new(c))
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let _ = std::fs::remove_dir_all(dir);
    out
}

pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "deeprc-frame-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn concat(parts: &[Table]) -> Table {
    Table::concat(parts).unwrap()
}

/// Runs SQL over named tables with DataFusion (the single-node reference).
pub fn df_sql(tables: &[(&str, &Table)], query: &str) -> Table {
    let ctx = FrameContext::new().unwrap();
    for (n, t) in tables {
        ctx.register(n, t).unwrap();
    }
    ctx.sql(query).unwrap()
}

/// Sorts by every column that is not a float (then floats too), so that two
/// tables with the same rows line up.
pub fn canonical(t: &Table) -> Table {
    let mut keys: Vec<SortKey> = Vec::new();
    for f in t.schema().fields() {
        if !f.data_type().is_floating() {
            keys.push(SortKey::asc(f.name().as_str()));
        }
    }
    for f in t.schema().fields() {
        if f.data_type().is_floating() {
            keys.push(SortKey::asc(f.name().as_str()));
        }
    }
    if keys.is_empty() || t.num_rows() == 0 {
        return t.compact().unwrap();
    }
    t.sort(&keys).unwrap()
}

/// Asserts same column names and types, and equal rows up to order; floats
/// within a relative 1e-9.
pub fn assert_same_rows(actual: &Table, expected: &Table, what: &str) {
    assert_eq!(
        actual.column_names(),
        expected.column_names(),
        "{what}: column names"
    );
    assert_eq!(actual.num_rows(), expected.num_rows(), "{what}: row count");
    let (a, e) = (canonical(actual), canonical(expected));
    for (fa, fe) in a.schema().fields().iter().zip(e.schema().fields()) {
        assert_eq!(
            fa.data_type(),
            fe.data_type(),
            "{what}: type of {}",
            fa.name()
        );
        let name = fa.name();
        if fa.data_type().is_floating() {
            let x = a.column_as::<f64>(name).unwrap();
            let y = e.column_as::<f64>(name).unwrap();
            for (r, (p, q)) in x.iter().zip(&y).enumerate() {
                match (p, q) {
                    (Some(p), Some(q)) => assert!(
                        (p - q).abs() <= 1e-9 * p.abs().max(q.abs()).max(1.0),
                        "{what}: column {name} row {r}: {p} vs {q}"
                    ),
                    _ => assert_eq!(p, q, "{what}: column {name} row {r}"),
                }
            }
        } else {
            let x = a.column(name).unwrap();
            let y = e.column(name).unwrap();
            assert_eq!(
                x.to_data(),
                y.to_data(),
                "{what}: column {name}\n{}\n{}",
                a.pretty().unwrap(),
                e.pretty().unwrap()
            );
        }
    }
}

/// The same table relabelled with `names` (DataFusion names joined columns
/// by their unqualified names).
pub fn with_names(t: &Table, names: &[String]) -> Table {
    let fields: Vec<_> = t
        .schema()
        .fields()
        .iter()
        .zip(names)
        .map(|(f, n)| f.as_ref().clone().with_name(n.as_str()).with_nullable(true))
        .collect();
    let schema = Arc::new(deeprc_frame::arrow::datatypes::Schema::new(fields));
    t.with_schema(schema).unwrap()
}

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

pub fn is_float(dt: &DataType) -> bool {
    dt.is_floating()
}

/// The data folder of the real data sets.
pub fn data_dir() -> PathBuf {
    std::env::var_os("DEEPRC_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"))
}
