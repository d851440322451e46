//! IO (CSV, Parquet, CAMELS, ETTh1; whole files and per-rank shares) and
//! typed errors for bad input.

use super::common::*;
use deeprc_frame::arrow::datatypes::DataType;
use deeprc_frame::io::camels::{camels_files, read_camels_files, CamelsKind};
use deeprc_frame::io::{
    csv::CsvOptions, read_csv, read_etth1, read_forcing, read_parquet, read_streamflow, write_csv,
    write_parquet,
};
use deeprc_frame::prelude::*;
use deeprc_frame::FrameError;
use std::path::PathBuf;
use std::sync::Arc;

fn camels_root() -> PathBuf {
    data_dir().join("camels_us_4basins")
}

#[test]
fn csv_and_parquet_round_trip_whole_and_per_rank() {
    let dir = temp_dir("io");
    // CSV cannot tell an empty string from a null: no empty strings here.
    let t = gen_table(&mut rng(1), Gen::new(500))
        .project(&["k", "s", "f", "id"])
        .unwrap()
        .filter_sql("s IS NULL OR s <> ''")
        .unwrap();
    let rows = t.num_rows() as u64;
    let csv = dir.join("t.csv");
    write_csv(&t, &csv).unwrap();
    let back = read_csv(
        &csv,
        &CsvOptions::default().with_schema(Arc::clone(t.schema())),
    )
    .unwrap();
    assert!(back.equals(&t).unwrap());
    let pq = dir.join("t.parquet");
    write_parquet(&t, &pq).unwrap();
    assert!(read_parquet(&pq).unwrap().equals(&t).unwrap());
    // Many row groups, for the per-rank Parquet share.
    let many = dir.join("many.parquet");
    {
        use deeprc_frame::parquet::arrow::ArrowWriter;
        use deeprc_frame::parquet::file::properties::WriterProperties;
        let props = WriterProperties::builder()
            .set_max_row_group_size(37)
            .build();
        let mut w = ArrowWriter::try_new(
            std::fs::File::create(&many).unwrap(),
            Arc::clone(t.schema()),
            Some(props),
        )
        .unwrap();
        w.write(&t.to_batch().unwrap()).unwrap();
        w.close().unwrap();
    }
    for n in 1..=5 {
        let opts = CsvOptions::default().with_schema(Arc::clone(t.schema()));
        let out = on_threads_comm(n, |comm| {
            let c = DistTable::read_csv(Arc::clone(&comm), std::slice::from_ref(&csv), &opts)?;
            let p = DistTable::read_parquet(Arc::clone(&comm), std::slice::from_ref(&many))?;
            let inferred = DistTable::read_csv(
                Arc::clone(&comm),
                std::slice::from_ref(&csv),
                &CsvOptions::default(),
            )?;
            let sub = dir.join(format!("out{n}"));
            c.write_parquet_per_rank(&sub)?;
            c.write_csv_gathered(&dir.join(format!("all{n}.csv")), 0)?;
            Ok((c.gather(0)?, p.gather(0)?, inferred.num_rows()?))
        });
        for (r, res) in out.into_iter().enumerate() {
            let want_rows = rows;
            let (c, p, rows) = res.unwrap();
            assert_eq!(rows, want_rows);
            if r == 0 {
                assert!(
                    c.unwrap().equals(&t).unwrap(),
                    "csv byte ranges on {n} ranks"
                );
                assert!(
                    p.unwrap().equals(&t).unwrap(),
                    "parquet row groups on {n} ranks"
                );
            }
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join(format!("out{n}")))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert_eq!(files.len(), n);
        let parts: Vec<Table> = files.iter().map(|f| read_parquet(f).unwrap()).collect();
        assert!(Table::concat(&parts).unwrap().equals(&t).unwrap());
        let all = read_csv(
            dir.join(format!("all{n}.csv")),
            &CsvOptions::default().with_schema(Arc::clone(t.schema())),
        )
        .unwrap();
        assert!(all.equals(&t).unwrap());
        // Files as shares: one file per rank part.
        let out = on_threads_comm(3, |comm| DistTable::read_parquet(comm, &files)?.gather(0));
        assert!(out[0]
            .as_ref()
            .unwrap()
            .as_ref()
            .unwrap()
            .equals(&t)
            .unwrap());
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn malformed_csv_names_file_line_and_column() {
    let dir = temp_dir("bad");
    let p = dir.join("bad.csv");
    let mut text = String::from("a,b\n");
    for i in 0..100 {
        text.push_str(&format!("{i},{}\n", i * 2));
    }
    text.push_str("100,oops\n");
    std::fs::write(&p, &text).unwrap();
    let schema = Arc::new(deeprc_frame::arrow::datatypes::Schema::new(vec![
        deeprc_frame::arrow::datatypes::Field::new("a", DataType::Int64, true),
        deeprc_frame::arrow::datatypes::Field::new("b", DataType::Int64, true),
    ]));
    let opts = CsvOptions::default().with_schema(schema);
    match read_csv(&p, &opts) {
        Err(FrameError::Malformed {
            file, line, column, ..
        }) => {
            assert_eq!(file, p);
            assert_eq!(line, Some(102));
            assert_eq!(column, "b");
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
    // Read in byte ranges by 3 ranks: the rank holding the line reports it.
    let out = on_threads_comm(3, |comm| {
        DistTable::read_csv(comm, std::slice::from_ref(&p), &opts).map(|_| ())
    });
    let errs: Vec<_> = out.into_iter().filter_map(|r| r.err()).collect();
    assert!(
        errs.iter().any(|e| matches!(
            e,
            FrameError::Malformed {
                line: Some(102),
                ..
            }
        )),
        "{errs:?}"
    );
    // CAMELS: a bad value and a short line.
    let f = dir.join("01022500_streamflow_qc.txt");
    std::fs::write(
        &f,
        "01022500 2000 01 01   255.00 A:e\n01022500 2000 01 02   2x2.00 A\n",
    )
    .unwrap();
    match read_streamflow(&f) {
        Err(FrameError::Malformed {
            line: Some(2),
            column,
            ..
        }) => assert_eq!(column, "flow"),
        other => panic!("{other:?}"),
    }
    std::fs::write(
        &f,
        "01022500 2000 01 01   255.00 A:e\n01022500 2000 02 30 1.0 A\n",
    )
    .unwrap();
    assert!(matches!(
        read_streamflow(&f),
        Err(FrameError::Malformed { line: Some(2), .. })
    ));
    let g = dir.join("01022500_lump_cida_forcing_leap.txt");
    std::fs::write(&g, " 44.8\n 133\n 5.8e8\nYear Mnth Day Hr dayl(s) prcp(mm/day)\n2000 01 01 12 1.0 2.0\n2000 01 02 12 1.0\n").unwrap();
    match read_forcing(&g) {
        Err(FrameError::Malformed { line: Some(6), .. }) => {}
        other => panic!("{other:?}"),
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn missing_data_says_what_is_expected_where() {
    let e = camels_files(
        std::path::Path::new("/nonexistent/camels"),
        CamelsKind::Forcing,
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, FrameError::DataMissing { .. }));
    assert!(
        msg.contains("daymet") && msg.contains("DEEPRC_DATA"),
        "{msg}"
    );
    assert!(matches!(
        read_etth1("/nonexistent/ETTh1.csv"),
        Err(FrameError::DataMissing { .. })
    ));
}

#[test]
fn real_camels_and_etth1() {
    let root = camels_root();
    if !root.exists() {
        eprintln!("skipping: {} not found (set DEEPRC_DATA)", root.display());
        return;
    }
    let forcing = camels_files(&root, CamelsKind::Forcing).unwrap();
    let flow = camels_files(&root, CamelsKind::Streamflow).unwrap();
    assert_eq!((forcing.len(), flow.len()), (4, 4));
    let f = read_forcing(&forcing[0]).unwrap();
    assert_eq!(
        f.column_names(),
        vec!["gauge", "date", "dayl", "prcp", "srad", "swe", "tmax", "tmin", "vp"]
    );
    assert_eq!(
        f.schema().metadata().get("latitude").map(String::as_str),
        Some("44.82")
    );
    let q = read_camels_files(&flow, CamelsKind::Streamflow).unwrap();
    assert_eq!(q.num_rows(), 4 * 1096);
    assert_eq!(
        q.column_as::<String>("gauge").unwrap()[0].as_deref(),
        Some("01022500")
    );
    // Distributed: forcing and streamflow joined on (gauge, date).
    for n in [1, 3, 4, 6] {
        let out = on_threads_comm(n, |comm| {
            let fo = DistTable::read_camels(Arc::clone(&comm), &root, CamelsKind::Forcing)?;
            let fl = DistTable::read_camels(Arc::clone(&comm), &root, CamelsKind::Streamflow)?;
            let j = fo.join(&fl, &JoinOptions::on(&["gauge", "date"]))?;
            j.num_rows()
        });
        for r in out {
            assert_eq!(r.unwrap(), 4 * 1096, "{n} ranks");
        }
    }
    let etth1 = data_dir().join("ETT-small/ETTh1.csv");
    let e = read_etth1(&etth1).unwrap();
    assert_eq!(e.num_rows(), 17_420);
    assert_eq!(e.num_columns(), 8);
    let out = on_threads_comm(3, |comm| {
        let d = DistTable::read_etth1(comm, &etth1)?;
        Ok((d.num_rows()?, d.gather(0)?))
    });
    for (r, res) in out.into_iter().enumerate() {
        let (rows, g) = res.unwrap();
        assert_eq!(rows, 17_420);
        if r == 0 {
            assert!(g.unwrap().equals(&e).unwrap());
        }
    }
}

#[test]
fn bad_input_gets_typed_errors() {
    let t = gen_table(&mut rng(1), Gen::new(20));
    assert!(matches!(
        t.project(&["nope"]),
        Err(FrameError::ColumnNotFound { .. })
    ));
    assert!(matches!(
        t.sort(&[SortKey::asc("nope")]),
        Err(FrameError::ColumnNotFound { .. })
    ));
    let e = t.filter_sql("nope > 1");
    assert!(matches!(e, Err(FrameError::ColumnNotFound { .. })), "{e:?}");
    assert!(matches!(
        t.filter_sql("k + 1"),
        Err(FrameError::InvalidArgument { .. })
    ));
    assert!(matches!(
        t.group_by(&["k"], &[Agg::sum("s")]),
        Err(FrameError::Unsupported { .. })
    ));
    assert!(matches!(
        t.group_by(&["k"], &[Agg::quantile("f", 2.0)]),
        Err(FrameError::InvalidArgument { .. })
    ));
    match t.join(&t, &JoinOptions::on_columns(&["k"], &["s"])) {
        Err(FrameError::KeyTypeMismatch {
            left,
            right,
            left_type,
            right_type,
        }) => {
            assert_eq!((left.as_str(), right.as_str()), ("k", "s"));
            assert_eq!((left_type, right_type), (DataType::Int64, DataType::Utf8));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        t.union(&t.project(&["k"]).unwrap()),
        Err(FrameError::IncompatibleSchemas { .. })
    ));
    let msg = t.project(&["nope"]).unwrap_err().to_string();
    assert!(msg.contains("nope") && msg.contains("id"), "{msg}");

    // Distributed: every rank gets the same error, no hang.
    for n in [2, 4] {
        let out = on_threads_comm(n, |comm| {
            let d = DistTable::new(t.clone(), Arc::clone(&comm))?;
            let e1 = d
                .join(&d, &JoinOptions::on_columns(&["k"], &["s"]))
                .unwrap_err();
            let e2 = d.sort(&[SortKey::asc("nope")]).unwrap_err();
            let e3 = d.group_by(&["nope"], &[]).unwrap_err();
            Ok((e1, e2, e3))
        });
        for r in out {
            let (e1, e2, e3) = r.unwrap();
            assert!(matches!(e1, FrameError::KeyTypeMismatch { .. }));
            assert!(matches!(e2, FrameError::ColumnNotFound { .. }));
            assert!(matches!(e3, FrameError::ColumnNotFound { .. }));
        }
        // Schema mismatch across ranks: ranks 1.. have another type of `k`.
        let other = t.with_column_sql("k", "CAST(k AS DOUBLE)").unwrap();
        let out = on_threads_comm(n, |comm| {
            let part = if comm.rank() == 0 {
                t.clone()
            } else {
                other.clone()
            };
            DistTable::new(part, comm).map(|_| ())
        });
        for r in out {
            match r {
                Err(FrameError::SchemaMismatch { column, ranks, .. }) => {
                    assert_eq!(column, "k");
                    assert_eq!(ranks, (1..n).collect::<Vec<_>>());
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
