//! Helpers shared by the test modules.

#![allow(dead_code)]

use deeprc_bridge::arrow::array::{ArrayRef, Float32Array, Int64Array, RecordBatch, StringArray};
use deeprc_bridge::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use deeprc_bridge::{BridgeError, DataSource};
use deeprc_frame::Table;
use std::path::PathBuf;
use std::sync::Arc;

/// The data folder: `$DEEPRC_DATA`, or `<workspace>/../shared/data`.
pub(crate) fn data_dir() -> PathBuf {
    std::env::var_os("DEEPRC_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data"))
        })
}

/// A file of the data folder; panics naming what is expected where.
pub(crate) fn data_file(rel: &str) -> PathBuf {
    let p = data_dir().join(rel);
    assert!(
        p.exists(),
        "missing {} (set DEEPRC_DATA to the folder with ETT-small/ETTh1.csv and camels_us_4basins/)",
        p.display()
    );
    p
}

/// ETTh1 as a table.
pub(crate) fn etth1() -> Table {
    deeprc_frame::io::read_etth1(data_file("ETT-small/ETTh1.csv")).expect("reading ETTh1")
}

pub(crate) const ETT_FEATURES: [&str; 7] = ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"];

pub(crate) fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("x", DataType::Float32, true),
        Field::new("g", DataType::Utf8, false),
    ]))
}

/// Rows `lo..hi`: id, x = id / 2, series g = "s{id / series_len}", split
/// into record batches of at most `chunk` rows.
pub(crate) fn rows(lo: i64, hi: i64, series_len: i64, chunk: usize) -> DataSource {
    let ids: Vec<i64> = (lo..hi).collect();
    let batches = ids
        .chunks(chunk.max(1))
        .map(|c| {
            RecordBatch::try_new(
                schema(),
                vec![
                    Arc::new(Int64Array::from(c.to_vec())) as ArrayRef,
                    Arc::new(Float32Array::from(
                        c.iter().map(|&i| i as f32 / 2.0).collect::<Vec<_>>(),
                    )),
                    Arc::new(StringArray::from(
                        c.iter()
                            .map(|&i| format!("s{}", i / series_len))
                            .collect::<Vec<_>>(),
                    )),
                ],
            )
            .unwrap()
        })
        .collect();
    DataSource::from_batches(schema(), batches).unwrap()
}

/// Runs `f` on `n` thread ranks.
pub(crate) fn launch<R: Send>(
    n: usize,
    f: impl Fn(Arc<dyn deeprc_comm::Communicator>) -> Result<R, BridgeError> + Sync,
) -> Result<Vec<R>, BridgeError> {
    deeprc_comm::local::launch(n, |comm| f(Arc::new(comm)))
}
