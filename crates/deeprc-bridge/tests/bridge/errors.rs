//! Bad input gets a typed error naming the column, the series or the rank.

use super::common::{launch, rows, schema};
use deeprc_bridge::arrow::array::{ArrayRef, Float32Array, Int64Array, RecordBatch, StringArray};
use deeprc_bridge::{
    Balance, BridgeError, DataSource, Loader, LoaderOptions, NullPolicy, RowSpec, SamplerOptions,
    TimeStep, WindowSpec, ZeroCopy,
};
use std::sync::Arc;

fn with_nulls() -> DataSource {
    let b = RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(vec![0, 1, 2, 3, 4, 5])) as ArrayRef,
            Arc::new(Float32Array::from(vec![
                Some(0.0),
                None,
                Some(1.0),
                Some(1.5),
                None,
                Some(2.5),
            ])),
            Arc::new(StringArray::from(vec!["a"; 6])),
        ],
    )
    .unwrap();
    DataSource::from_batches(schema(), vec![b]).unwrap()
}

#[test]
fn nulls_without_a_fill_policy_name_the_column() {
    let e = RowSpec::new(&["x"], &["id"])
        .build(with_nulls())
        .unwrap_err();
    assert!(
        matches!(&e, BridgeError::NullsInColumn { column, count: 2 } if column == "x"),
        "{e}"
    );
    assert!(e.to_string().contains("\"x\""), "{e}");
    let e = WindowSpec::new(2, 1, &["x"], &["x"])
        .build(with_nulls())
        .unwrap_err();
    assert!(
        matches!(&e, BridgeError::NullsInColumn { column, .. } if column == "x"),
        "{e}"
    );
    // With a policy they load.
    let filled = RowSpec::new(&["x"], &["id"])
        .nulls(NullPolicy::Fill(-1.0))
        .build(with_nulls())
        .unwrap()
        .train;
    let l = Loader::new(
        filled,
        SamplerOptions::sequential(6),
        LoaderOptions::default(),
    )
    .unwrap();
    let b = l.epoch(0).next().unwrap().unwrap();
    assert_eq!(
        b.inputs().to_vec::<f32>().unwrap(),
        vec![0.0, -1.0, 1.0, 1.5, -1.0, 2.5]
    );
    let skipped = RowSpec::new(&["x"], &["id"])
        .nulls(NullPolicy::Skip)
        .build(with_nulls())
        .unwrap()
        .train;
    assert_eq!(deeprc_bridge::Dataset::len(&skipped), 4);
    // Skip in windows: a null row is a gap. Rows 2, 3 and 5 are the only
    // valid runs of length >= 2: one window (2, 3) of 1 + 1.
    let w = WindowSpec::new(1, 1, &["x"], &["x"])
        .nulls(NullPolicy::Skip)
        .build(with_nulls())
        .unwrap()
        .train;
    assert_eq!(deeprc_bridge::Dataset::len(&w), 1);
}

#[test]
fn a_non_numeric_column_is_named_with_its_type() {
    let e = RowSpec::new(&["g"], &["id"])
        .build(rows(0, 5, 10, 5))
        .unwrap_err();
    assert!(
        matches!(&e, BridgeError::NotNumeric { column, .. } if column == "g"),
        "{e}"
    );
    assert!(e.to_string().contains("Utf8"), "{e}");
    let e = WindowSpec::new(2, 1, &["x"], &["nope"])
        .build(rows(0, 5, 10, 5))
        .unwrap_err();
    assert!(
        matches!(&e, BridgeError::ColumnNotFound { column, .. } if column == "nope"),
        "{e}"
    );
}

#[test]
fn a_window_longer_than_a_series_names_the_series() {
    // Series s0 has 10 rows, s1 has 3 (ids 10..13 with series_len 10).
    let e = WindowSpec::new(3, 2, &["x"], &["x"])
        .series("g")
        .build(rows(0, 13, 10, 4))
        .unwrap_err();
    match &e {
        BridgeError::WindowTooLong { series, len, need } => {
            assert_eq!((series.as_str(), *len, *need), ("s1", 3, 5));
        }
        other => panic!("expected WindowTooLong, got {other}"),
    }
    assert!(e.to_string().contains("\"s1\""), "{e}");
    let ok = WindowSpec::new(3, 2, &["x"], &["x"])
        .series("g")
        .skip_short_series(true)
        .build(rows(0, 13, 10, 4))
        .unwrap();
    assert_eq!(deeprc_bridge::Dataset::len(&ok.train), 6);
    // Time gaps break series into runs: ids as times, step 1, id 5 missing.
    let src = rows(0, 5, 100, 10);
    let src2 = rows(6, 9, 100, 10);
    let both =
        DataSource::from_batches(schema(), [src.batches(), src2.batches()].concat()).unwrap();
    let e = WindowSpec::new(4, 2, &["x"], &["x"])
        .time("id", TimeStep::Raw(1))
        .build(both.clone())
        .unwrap_err();
    assert!(
        matches!(&e, BridgeError::WindowTooLong { series, len: 5, need: 6 } if series == "<all rows>"),
        "{e}"
    );
    // Without the time axis the 8 rows would be one run.
    assert!(WindowSpec::new(4, 2, &["x"], &["x"])
        .build(both.clone())
        .is_ok());
    let ok = WindowSpec::new(3, 2, &["x"], &["x"])
        .time("id", TimeStep::Raw(1))
        .build(both)
        .unwrap();
    assert_eq!(
        deeprc_bridge::Dataset::len(&ok.train),
        1,
        "one window in 0..5, none across the gap"
    );
}

#[test]
fn unsorted_time_names_the_series() {
    let a = rows(5, 8, 100, 10);
    let b = rows(0, 3, 100, 10);
    let src = DataSource::from_batches(schema(), [a.batches(), b.batches()].concat()).unwrap();
    let e = WindowSpec::new(1, 1, &["x"], &["x"])
        .series("g")
        .time("id", 1i64)
        .build(src)
        .unwrap_err();
    assert!(
        matches!(&e, BridgeError::NotSorted { series, row: 3, prev: 7, next: 0 } if series == "s0"),
        "{e}"
    );
}

#[test]
fn an_empty_partition_names_the_rank() {
    // Balance::Local keeps rows where they are: rank 2 would have nothing.
    let e = launch(3, |comm| {
        let (lo, hi) = [(0, 5), (5, 9), (9, 9)][comm.rank()];
        RowSpec::new(&["x"], &["id"])
            .balance(Balance::Local)
            .build(rows(lo, hi, 10, 4).partitioned(comm))?;
        Ok(())
    })
    .unwrap_err();
    assert!(
        matches!(e, BridgeError::EmptyPartition { rank: 2, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("rank 2"), "{e}");
    // Balance::Move: fewer samples than ranks.
    let e = launch(3, |comm| {
        let (lo, hi) = [(0, 2), (2, 2), (2, 2)][comm.rank()];
        RowSpec::new(&["x"], &["id"]).build(rows(lo, hi, 10, 4).partitioned(comm))?;
        Ok(())
    })
    .unwrap_err();
    assert!(
        matches!(e, BridgeError::EmptyPartition { rank: 2, .. }),
        "{e}"
    );
    // A single process with no rows at all.
    let e = RowSpec::new(&["x"], &["id"])
        .build(rows(0, 0, 10, 4))
        .unwrap_err();
    assert!(
        matches!(e, BridgeError::EmptyPartition { rank: 0, .. }),
        "{e}"
    );
}

#[test]
fn one_rank_fails_and_the_others_do_not_hang() {
    // Rank 1 has nulls: it reports them, the others report PeerFailed, and
    // launch returns the root cause.
    let e = launch(3, |comm| {
        let src = if comm.rank() == 1 {
            with_nulls().partitioned(Arc::clone(&comm))
        } else {
            rows(0, 6, 10, 3).partitioned(comm)
        };
        RowSpec::new(&["x"], &["id"]).build(src)?;
        Ok(())
    })
    .unwrap_err();
    assert!(
        matches!(&e, BridgeError::NullsInColumn { column, .. } if column == "x"),
        "{e}"
    );
}

#[test]
fn zero_copy_required_but_impossible_says_why() {
    let ds = RowSpec::new(&["x"], &["id"])
        .build(rows(0, 40, 100, 40))
        .unwrap()
        .train;
    let opts = LoaderOptions {
        zero_copy: ZeroCopy::Require,
        ..Default::default()
    };
    let loader = Loader::new(ds, SamplerOptions::shuffled(8, 1), opts).unwrap();
    let e = loader.epoch(0).next().unwrap().unwrap_err();
    match &e {
        BridgeError::ZeroCopyUnavailable { part, reason } => {
            assert_eq!(*part, "inputs");
            assert!(reason.contains("not consecutive"), "{reason}");
        }
        other => panic!("expected ZeroCopyUnavailable, got {other}"),
    }
}
