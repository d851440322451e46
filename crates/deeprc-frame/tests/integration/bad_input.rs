//! Bad input for the readers: every case a typed error naming the file and
//! the line (or field), on every rank of a distributed read, and no panic.
//! The inputs are generated here, in temporary folders.

use super::common::*;
use deeprc_frame::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use deeprc_frame::io::{csv::CsvOptions, read_csv, read_parquet, write_parquet};
use deeprc_frame::prelude::*;
use deeprc_frame::FrameError;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The line a [`FrameError::Malformed`] names.
fn line_of(e: &FrameError) -> Option<usize> {
    match e {
        FrameError::Malformed { line, .. } => *line,
        _ => None,
    }
}

/// A timeout or a lost peer: what a rank saw when another failed alone.
fn is_comm_failure(e: &FrameError) -> bool {
    matches!(e, FrameError::Comm(c) if c.is_peer_failure())
}

fn schema(fields: &[(&str, DataType)]) -> SchemaRef {
    Arc::new(Schema::new(
        fields
            .iter()
            .map(|(n, t)| Field::new(*n, t.clone(), true))
            .collect::<Vec<_>>(),
    ))
}

fn ab_int() -> SchemaRef {
    schema(&[("a", DataType::Int64), ("b", DataType::Int64)])
}

/// A CSV file `a,b` with `rows` good rows, then `bad` as the next line,
/// then `after` more good rows; returns the path and the line of `bad`.
fn csv_with_bad_line(
    dir: &Path,
    name: &str,
    rows: usize,
    bad: &[u8],
    after: usize,
) -> (PathBuf, usize) {
    let mut text = b"a,b\n".to_vec();
    for i in 0..rows {
        text.extend_from_slice(format!("{i},{}\n", i * 2).as_bytes());
    }
    text.extend_from_slice(bad);
    text.push(b'\n');
    for i in 0..after {
        text.extend_from_slice(format!("{i},{}\n", i * 3).as_bytes());
    }
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    (p, rows + 2)
}

#[test]
fn csv_line_numbers_count_the_header_as_line_1() {
    let dir = temp_dir("csv-lines");
    let opts = CsvOptions::default().with_schema(ab_int());
    // A short row, a long row: the line of the row, not the one after.
    for bad in [&b"7"[..], b"7,8,9"] {
        let (p, line) = csv_with_bad_line(&dir, "ragged.csv", 3, bad, 2);
        let e = read_csv(&p, &opts).unwrap_err();
        assert_eq!(line_of(&e), Some(line), "{e}");
        assert!(
            e.to_string().contains(&format!("ragged.csv:{line}:")),
            "{e}"
        );
    }
    // Without a header the first line is a row.
    let p = dir.join("noheader.csv");
    std::fs::write(&p, "1,2\n3\n").unwrap();
    let mut no_header = opts.clone();
    no_header.has_header = false;
    assert_eq!(line_of(&read_csv(&p, &no_header).unwrap_err()), Some(2));
    // Invalid UTF-8 in a string column: its own line.
    let text_schema = schema(&[("a", DataType::Int64), ("s", DataType::Utf8)]);
    let (p, line) = csv_with_bad_line(&dir, "utf8.csv", 4, b"9,ab\xff\xfecd", 3);
    let e = read_csv(&p, &CsvOptions::default().with_schema(text_schema)).unwrap_err();
    assert_eq!(line_of(&e), Some(line), "{e}");
    // A value that does not parse (this one was right before).
    let (p, line) = csv_with_bad_line(&dir, "value.csv", 5, b"1,x", 1);
    let e = read_csv(&p, &opts).unwrap_err();
    assert_eq!(line_of(&e), Some(line), "{e}");
    // Inferring the schema reports lines the same way.
    let (p, line) = csv_with_bad_line(&dir, "infer.csv", 2, b"1,2,3", 1);
    let e = read_csv(&p, &CsvOptions::default()).unwrap_err();
    assert_eq!(line_of(&e), Some(line), "{e}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Every rank's error: none a timeout or a lost peer, each naming `file`
/// and `line`.
fn assert_root_cause_everywhere<T: std::fmt::Debug>(
    out: Vec<Result<T, FrameError>>,
    file: &str,
    line: usize,
) {
    for (r, res) in out.into_iter().enumerate() {
        let e = res.expect_err("every rank fails");
        assert!(!is_comm_failure(&e), "rank {r}: {e}");
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("{file}:{line}:")),
            "rank {r} does not name {file}:{line}: {msg}"
        );
    }
}

#[test]
fn distributed_csv_read_fails_on_every_rank_with_the_root_cause() {
    let dir = temp_dir("csv-agree");
    // The bad line is near the end: in the last rank's byte range.
    let (p, line) = csv_with_bad_line(&dir, "late.csv", 300, b"1,oops", 3);
    let opts = CsvOptions::default().with_schema(ab_int());
    for n in [2, 3] {
        let out = on_threads_comm(n, |comm| {
            DistTable::read_csv(comm, std::slice::from_ref(&p), &opts).map(|d| d.local_rows())
        });
        assert_root_cause_everywhere(out, "late.csv", line);
        let out = on_tcp_threads(n, |comm| {
            DistTable::read_csv(comm, std::slice::from_ref(&p), &opts).map(|d| d.local_rows())
        });
        assert_root_cause_everywhere(out, "late.csv", line);
    }
    // Whole files, one per rank: the second file is bad.
    let (good, _) = csv_with_bad_line(&dir, "good.csv", 10, b"5,5", 0);
    let files = vec![good.clone(), p.clone(), good];
    let out = on_threads_comm(3, |comm| {
        DistTable::read_csv(comm, &files, &opts).map(|d| d.local_rows())
    });
    assert_root_cause_everywhere(out, "late.csv", line);
    // Schema inference on rank 0 fails: the others do not wait for it.
    let (early, line) = csv_with_bad_line(&dir, "early.csv", 2, b"1,2,3", 1);
    let out = on_threads_comm(3, |comm| {
        DistTable::read_csv(comm, std::slice::from_ref(&early), &CsvOptions::default())
            .map(|d| d.local_rows())
    });
    assert_root_cause_everywhere(out, "early.csv", line);
    let _ = std::fs::remove_dir_all(dir);
}

fn small_table() -> Table {
    gen_table(&mut rng(3), Gen::new(50))
        .project(&["k", "f", "id"])
        .unwrap()
}

#[test]
fn distributed_parquet_read_names_a_missing_file_on_every_rank() {
    let dir = temp_dir("pq-missing");
    let t = small_table();
    let files: Vec<PathBuf> = (0..3)
        .map(|i| {
            let p = dir.join(format!("p{i}.parquet"));
            write_parquet(&t, &p).unwrap();
            p
        })
        .collect();
    let missing = dir.join("gone.parquet");
    // Missing for everyone (a shared file system): each rank says so itself.
    let shared = vec![files[0].clone(), files[1].clone(), missing.clone()];
    let out = on_threads_comm(3, |comm| {
        DistTable::read_parquet(comm, &shared).map(|d| d.local_rows())
    });
    for (r, res) in out.into_iter().enumerate() {
        match res {
            Err(FrameError::DataMissing { path, .. }) => assert_eq!(path, missing, "rank {r}"),
            other => panic!("rank {r}: {other:?}"),
        }
    }
    // Missing on rank 1 only (a node-local disk): the others name it too.
    let out = on_threads_comm(3, |comm| {
        let mut mine = files.clone();
        if comm.rank() == 1 {
            mine[2] = missing.clone();
        }
        DistTable::read_parquet(comm, &mine).map(|d| d.local_rows())
    });
    for (r, res) in out.into_iter().enumerate() {
        let e = res.expect_err("every rank fails");
        assert!(!is_comm_failure(&e), "rank {r}: {e}");
        let msg = e.to_string();
        assert!(msg.contains("gone.parquet"), "rank {r}: {msg}");
        if r == 1 {
            assert!(matches!(e, FrameError::DataMissing { .. }), "{e:?}");
        } else {
            assert!(msg.contains("rank 1"), "rank {r}: {msg}");
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A bad CSV file: name, content, schema, the line and the column (when
/// the error is about one) it must name.
type CsvCase = (
    &'static str,
    &'static [u8],
    SchemaRef,
    usize,
    Option<&'static str>,
);

/// Runs `f`, turning a panic into a test failure that names `case`.
fn no_panic<T>(case: &str, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| panic!("{case}: the reader panicked"))
}

#[test]
fn bad_input_corpus_gets_typed_errors_naming_file_and_line() {
    let dir = temp_dir("corpus");
    // ---- Parquet ----
    let t = small_table();
    let good = dir.join("good.parquet");
    write_parquet(&t, &good).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let mut wrong_magic = bytes.clone();
    let end = wrong_magic.len();
    wrong_magic[end - 4..].copy_from_slice(b"PARX");
    let mut wrong_head = bytes.clone();
    wrong_head[..4].copy_from_slice(b"NOPE");
    let mut bad_footer_len = bytes.clone();
    bad_footer_len[end - 8..end - 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let parquet_cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty.parquet", Vec::new()),
        ("tiny.parquet", b"PAR1".to_vec()),
        ("half.parquet", bytes[..bytes.len() / 2].to_vec()),
        ("nofooter.parquet", bytes[..bytes.len() - 1].to_vec()),
        ("magic.parquet", wrong_magic),
        ("head.parquet", wrong_head),
        ("footerlen.parquet", bad_footer_len),
        ("text.parquet", b"a,b\n1,2\n".to_vec()),
    ];
    for (name, content) in &parquet_cases {
        let p = dir.join(name);
        std::fs::write(&p, content).unwrap();
        let r = no_panic(name, || read_parquet(&p));
        if *name == "head.parquet" && r.is_ok() {
            // The reader only reads the footer and the pages: a damaged
            // leading magic goes unnoticed, which is harmless.
            continue;
        }
        let e = r.expect_err(name);
        assert!(
            matches!(e, FrameError::Parquet { .. }),
            "{name}: not a Parquet error: {e:?}"
        );
        assert!(e.to_string().contains(name), "{name}: {e}");
        let out = no_panic(name, || {
            on_threads_comm(2, |comm| {
                DistTable::read_parquet(comm, &[good.clone(), p.clone()]).map(|d| d.local_rows())
            })
        });
        for (r, res) in out.into_iter().enumerate() {
            let e = res.expect_err(name);
            assert!(!is_comm_failure(&e), "{name}, rank {r}: {e}");
            assert!(e.to_string().contains(name), "{name}, rank {r}: {e}");
        }
    }

    // ---- CSV ----
    let text = schema(&[("a", DataType::Int64), ("s", DataType::Utf8)]);
    let small = schema(&[("a", DataType::Int8), ("u", DataType::UInt32)]);
    let csv_cases: Vec<CsvCase> = vec![
        ("short.csv", b"a,b\n1,2\n3\n4,5\n", ab_int(), 3, None),
        ("long.csv", b"a,b\n1,2\n3,4\n5,6,7\n", ab_int(), 4, None),
        (
            "utf8.csv",
            b"a,s\n1,x\n2,y\xc3\x28z\n3,w\n",
            Arc::clone(&text),
            3,
            Some("s"),
        ),
        (
            "utf8int.csv",
            b"a,b\n1,2\n\xff1,2\n",
            ab_int(),
            3,
            Some("a"),
        ),
        (
            "quote.csv",
            b"a,s\n1,x\n2,\"open\n3,y\n4,z\n",
            Arc::clone(&text),
            3,
            Some("s"),
        ),
        (
            "quoteint.csv",
            b"a,b\n1,2\n\"3,4\n5,6\n",
            ab_int(),
            3,
            Some("a"),
        ),
        (
            "i8.csv",
            b"a,u\n1,2\n300,2\n",
            Arc::clone(&small),
            3,
            Some("a"),
        ),
        (
            "u32.csv",
            b"a,u\n1,2\n2,-1\n",
            Arc::clone(&small),
            3,
            Some("u"),
        ),
        (
            "u32big.csv",
            b"a,u\n1,4294967296\n",
            Arc::clone(&small),
            2,
            Some("u"),
        ),
        (
            "i64.csv",
            b"a,b\n1,2\n3,99999999999999999999\n",
            ab_int(),
            3,
            Some("b"),
        ),
        ("float.csv", b"a,b\n1,2.5\n", ab_int(), 2, Some("b")),
    ];
    for (name, content, schema, line, column) in &csv_cases {
        let p = dir.join(name);
        std::fs::write(&p, content).unwrap();
        let opts = CsvOptions::default().with_schema(Arc::clone(schema));
        let check = |e: &FrameError, who: &str| match e {
            FrameError::Malformed {
                file,
                line: l,
                column: c,
                ..
            } => {
                assert_eq!(file, &p, "{name} ({who})");
                assert_eq!(*l, Some(*line), "{name} ({who}): {e}");
                if let Some(col) = column {
                    assert_eq!(c, col, "{name} ({who}): {e}");
                }
            }
            other => panic!("{name} ({who}): not Malformed: {other:?}"),
        };
        let e = no_panic(name, || read_csv(&p, &opts)).expect_err(name);
        check(&e, "whole file");
        // Byte ranges on 2 and 3 ranks: the rank holding the line says so,
        // the others name it too.
        for n in [2, 3] {
            let out = no_panic(name, || {
                on_threads_comm(n, |comm| {
                    DistTable::read_csv(comm, std::slice::from_ref(&p), &opts)
                        .map(|d| d.local_rows())
                })
            });
            let mut own = 0;
            for (r, res) in out.into_iter().enumerate() {
                let e = res.expect_err(name);
                assert!(!is_comm_failure(&e), "{name}, rank {r}: {e}");
                if matches!(e, FrameError::Malformed { .. }) {
                    own += 1;
                    check(&e, &format!("rank {r} of {n}"));
                } else {
                    assert!(
                        e.to_string().contains(&format!("{name}:{line}:")),
                        "{name}, rank {r} of {n}: {e}"
                    );
                }
            }
            assert!(own >= 1, "{name}: no rank reported its own error");
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Four CAMELS streamflow files, the last one (the last rank's share)
/// with a date that does not exist on line 3.
fn camels_with_bad_last_file(dir: &Path) -> PathBuf {
    let root = dir.join("camels_us_4basins");
    std::fs::create_dir_all(root.join("usgs_streamflow")).unwrap();
    for (k, g) in ["01000001", "01000002", "01000003", "01000004"]
        .iter()
        .enumerate()
    {
        let mut text = String::new();
        for day in 1..=5 {
            let d = if k == 3 && day == 3 { 30 } else { day };
            text.push_str(&format!("{g} 2001 02 {d:02}   10.00 A\n"));
        }
        std::fs::write(
            root.join(format!("usgs_streamflow/{g}_streamflow_qc.txt")),
            text,
        )
        .unwrap();
    }
    root
}

#[test]
fn a_malformed_camels_file_on_one_rank_fails_every_rank_with_its_line() {
    use deeprc_frame::io::camels::CamelsKind;
    let dir = temp_dir("camels-agree");
    let root = camels_with_bad_last_file(&dir);
    for n in [2, 4] {
        let out = on_threads_comm(n, |comm| {
            DistTable::read_camels(comm, &root, CamelsKind::Streamflow).map(|d| d.local_rows())
        });
        assert_root_cause_everywhere(out, "01000004_streamflow_qc.txt", 3);
        let out = on_tcp_threads(n, |comm| {
            DistTable::read_camels(comm, &root, CamelsKind::Streamflow).map(|d| d.local_rows())
        });
        assert_root_cause_everywhere(out, "01000004_streamflow_qc.txt", 3);
    }
    let _ = std::fs::remove_dir_all(dir);
}
