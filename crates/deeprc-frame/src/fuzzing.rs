//! Entry points for the fuzz targets in `fuzz/` (not an API: hidden, and
//! free to change with the decoders they reach).
//!
//! Each takes bytes that come from outside (a peer, a data file) and runs
//! the decoder that reads them as the frame does, checking what must hold
//! of any input: no panic, and where it decodes, a result that agrees with
//! itself (a decoded IPC stream re-encodes to the same table, a CSV file
//! read in parts is the file read whole).

use crate::dist::{agree, gather, sort};
use crate::io::{camels, csv, CsvOptions};
use crate::ipc;
use crate::table::Table;
use bytes::Bytes;
use datafusion::arrow::array::{RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::row::SortField;
use datafusion::arrow::util::display::array_value_to_string;
use std::path::PathBuf;
use std::sync::Arc;

/// Splits the fuzz input into `N` selector bytes (zeros when it is
/// shorter) and the rest.
fn split<const N: usize>(data: &[u8]) -> ([u8; N], &[u8]) {
    let mut sel = [0u8; N];
    let n = data.len().min(N);
    sel[..n].copy_from_slice(&data[..n]);
    (sel, &data[n..])
}

/// Every cell of a table as text, row by row (NaN equals NaN here, unlike
/// in `Table::equals`).
fn cells(t: &Table) -> Vec<String> {
    let mut out = Vec::new();
    for b in t.batches() {
        for i in 0..b.num_rows() {
            for c in b.columns() {
                out.push(array_value_to_string(c, i).unwrap_or_else(|e| format!("<{e}>")));
            }
        }
    }
    out
}

/// An Arrow IPC stream as a rank receives it in an exchange: the checked
/// decoder, the relabelling to the table's schema that the shuffle does,
/// and then the rows touched as the operators touch them (row encoding of
/// every column, as sort and join keys do). What decodes re-encodes to the
/// same table.
pub fn ipc_received(data: &[u8]) {
    let Ok((schema, batches)) =
        ipc::decode_batches_from(Bytes::copy_from_slice(data), "exchange", 1)
    else {
        return;
    };
    let relabelled: Vec<RecordBatch> = batches
        .iter()
        .filter_map(|b| {
            RecordBatch::try_new_with_options(
                Arc::clone(&schema),
                b.columns().to_vec(),
                &RecordBatchOptions::new().with_row_count(Some(b.num_rows())),
            )
            .ok()
        })
        .collect();
    let Ok(table) = Table::try_new(Arc::clone(&schema), relabelled) else {
        return;
    };
    // Rows that no bytes back (no columns, or only null-typed ones) may
    // number up to the row limit; walking them cell by cell would test
    // nothing but patience. Their count must survive the round trip.
    if schema
        .fields()
        .iter()
        .all(|f| f.data_type() == &DataType::Null)
    {
        let again = ipc::encode(&table).expect("a decoded table encodes");
        let back = ipc::decode(again).expect("a re-encoded table decodes");
        assert_eq!(back.num_rows(), table.num_rows(), "IPC round trip");
        return;
    }
    let fields: Vec<SortField> = schema
        .fields()
        .iter()
        .map(|f| SortField::new(f.data_type().clone()))
        .collect();
    let types: Vec<&DataType> = schema.fields().iter().map(|f| f.data_type()).collect();
    if let Ok(conv) = crate::local::keys::row_converter("fuzzing", &types, fields) {
        for b in table.batches() {
            let _ = conv.convert_columns(b.columns());
        }
    }
    let again = ipc::encode(&table).expect("a decoded table encodes");
    let back = ipc::decode(again).expect("a re-encoded table decodes");
    assert_eq!(cells(&back), cells(&table), "IPC round trip");
}

/// The hand-rolled peer messages: sort samples from several ranks, a
/// rank's error report and the row counts of every rank.
pub fn peer_data(data: &[u8]) {
    let ([sel], rest) = split::<1>(data);
    match sel % 3 {
        0 => {
            // Up to four ranks' samples: the rest cut at the next bytes.
            let ([a, b], rest) = split::<2>(rest);
            let cut = |x: u8| usize::from(x).min(rest.len());
            let (i, j) = (cut(a).min(cut(b)), cut(a).max(cut(b)));
            let parts = vec![
                Bytes::copy_from_slice(&rest[..i]),
                Bytes::new(),
                Bytes::copy_from_slice(&rest[i..j]),
                Bytes::copy_from_slice(&rest[j..]),
            ];
            let _ = sort::decode_samples(parts);
        }
        1 => {
            let _ = agree::decode_error("read_csv", 2, rest);
        }
        _ => {
            let words: Vec<u64> = rest
                .chunks(8)
                .map(|c| {
                    let mut w = [0u8; 8];
                    w[..c.len()].copy_from_slice(c);
                    u64::from_le_bytes(w)
                })
                .collect();
            // Ranks with 0, 1 or 2 counts each, as the selector says.
            let mut parts = Vec::new();
            let mut it = words.into_iter();
            for k in 0..4 {
                let n = usize::from((sel >> (2 * k)) & 3).min(2);
                parts.push(it.by_ref().take(n).collect());
            }
            if let Ok(counts) = gather::decode_row_counts(parts) {
                assert!(counts
                    .iter()
                    .try_fold(0u64, |a, &c| a.checked_add(c))
                    .is_some());
            }
        }
    }
}

/// A file of this process for the fuzzed bytes, named `name`.
fn scratch(name: &str, bytes: &[u8]) -> PathBuf {
    let base = std::path::Path::new("/dev/shm");
    let base = if base.is_dir() {
        base.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("deeprc-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creating the scratch directory");
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("writing the scratch file");
    path
}

/// A schema of every type the CSV reader parses.
fn mixed_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("i", DataType::Int64, true),
        Field::new("f", DataType::Float64, true),
        Field::new("s", DataType::Utf8, true),
        Field::new("b", DataType::Boolean, true),
        Field::new("d", DataType::Date32, true),
        Field::new("t", DataType::Timestamp(TimeUnit::Second, None), true),
        Field::new("u", DataType::UInt8, false),
    ]))
}

/// CSV with options chosen by the first three bytes: header or not, the
/// delimiter, an inferred or a given schema (every parsed type, ETTh1's,
/// text only), rows to infer from, the batch size; the file read whole
/// and in 1 to 4 parts. Without quotes (parts are cut at line ends) the
/// parts make the whole.
pub fn csv(data: &[u8]) {
    let ([a, b, c], text) = split::<3>(data);
    let delimiter = [b',', b';', b'\t', b'|', b' ', b'"', b'\n', c][usize::from(a >> 1 & 7)];
    let schema = match a >> 4 & 3 {
        0 => None,
        1 => Some(mixed_schema()),
        2 => Some(csv::etth1_schema()),
        _ => Some(Arc::new(Schema::new(
            ["x", "y", "z"]
                .map(|n| Field::new(n, DataType::Utf8, true))
                .to_vec(),
        )) as SchemaRef),
    };
    let options = CsvOptions {
        has_header: a & 1 == 1,
        delimiter,
        schema,
        infer_rows: usize::from(b >> 4) + 1,
        batch_size: usize::from(b & 15) + 1,
    };
    let path = scratch("data.csv", text);
    let whole = csv::read_csv(&path, &options);
    let parts = usize::from(c & 3) + 1;
    let Ok(schema) = csv::infer_schema(&path, &options) else {
        return;
    };
    let pieces: Vec<_> = (0..parts)
        .map(|p| csv::read_csv_part(&path, Arc::clone(&schema), &options, p, parts))
        .collect();
    if let (Ok(whole), false) = (&whole, text.contains(&b'"') || delimiter == b'\n') {
        if let Ok(pieces) = pieces.into_iter().collect::<crate::Result<Vec<_>>>() {
            let joined = Table::concat(&pieces).expect("parts of one schema concatenate");
            assert_eq!(
                cells(&joined),
                cells(whole),
                "{parts} parts != the whole file"
            );
        }
    }
}

/// ETTh1: CSV with a timestamp and seven floats.
pub fn etth1(data: &[u8]) {
    let path = scratch("ETTh1.csv", data);
    if let Ok(t) = csv::read_etth1(&path) {
        assert_eq!(t.schema().fields().len(), 8);
    }
}

/// A CAMELS-US file: the selector's low bit chooses a Daymet forcing file
/// or a USGS streamflow file.
pub fn camels(data: &[u8]) {
    let ([sel], text) = split::<1>(data);
    if sel & 1 == 0 {
        let path = scratch("01013500_lump_cida_forcing_leap.txt", text);
        let _ = camels::read_forcing(&path);
    } else {
        let path = scratch("01013500_streamflow_qc.txt", text);
        if let Ok(t) = camels::read_streamflow(&path) {
            assert_eq!(t.schema().fields().len(), 4);
        }
    }
}

/// Inputs to start the target `target` from (selector bytes included):
/// IPC streams of tables of many types, peer messages as ranks write them,
/// and small files of each format.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    use datafusion::arrow::array::{
        ArrayRef, BooleanArray, Date32Array, DictionaryArray, Float64Array, Int32Array, Int64Array,
        LargeStringArray, ListArray, StringArray, StructArray, TimestampSecondArray, UInt8Array,
    };
    use datafusion::arrow::datatypes::Int32Type;
    let with = |sel: &[u8], body: &[u8]| [sel, body].concat();
    match target {
        "frame_ipc" => {
            let cols: Vec<(&str, ArrayRef)> = vec![
                ("i", Arc::new(Int64Array::from(vec![Some(1), None, Some(-3)]))),
                ("f", Arc::new(Float64Array::from(vec![0.5, f64::NAN, -1e300]))),
                ("s", Arc::new(StringArray::from(vec![Some("a"), None, Some("héllo")]))),
                ("b", Arc::new(BooleanArray::from(vec![Some(true), Some(false), None]))),
                ("d", Arc::new(Date32Array::from(vec![0, 11_000, -1]))),
                ("t", Arc::new(TimestampSecondArray::from(vec![0, 1, 2]))),
                ("u", Arc::new(UInt8Array::from(vec![0, 255, 7]))),
                ("l", Arc::new(LargeStringArray::from(vec!["x", "", "yz"]))),
                (
                    "dict",
                    Arc::new(
                        vec!["p", "q", "p"]
                            .into_iter()
                            .collect::<DictionaryArray<Int32Type>>(),
                    ),
                ),
                (
                    "list",
                    Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
                        Some(vec![Some(1), None]),
                        None,
                        Some(vec![]),
                    ])),
                ),
                (
                    "st",
                    Arc::new(StructArray::from(vec![(
                        Arc::new(Field::new("x", DataType::Int32, true)),
                        Arc::new(Int32Array::from(vec![1, 2, 3])) as ArrayRef,
                    )])),
                ),
            ];
            let mut out = Vec::new();
            for (name, col) in &cols {
                let t = Table::from_columns(vec![(*name, Arc::clone(col))]).expect("a table");
                out.push(ipc::encode(&t).expect("encoding").to_vec());
                let two = Table::concat(&[t.slice(0, 1), t.slice(1, 2)]).expect("concat");
                out.push(ipc::encode(&two).expect("encoding").to_vec());
            }
            let all = Table::from_columns(cols).expect("a table");
            out.push(ipc::encode(&all).expect("encoding").to_vec());
            out.push(ipc::encode_schema(all.schema()).expect("encoding").to_vec());
            out
        }
        "frame_peer_data" => {
            let mut samples = Vec::new();
            for row in [&b"abc"[..], b"", b"\x00\x01row"] {
                crate::wire::put_bytes(&mut samples, "sort", row).expect("a small row");
            }
            let errors = [
                crate::FrameError::Malformed {
                    file: "/d/a.csv".into(),
                    line: Some(12),
                    column: "b".into(),
                    reason: "bad".into(),
                },
                crate::FrameError::DataMissing {
                    path: "/d/b.parquet".into(),
                    expected: "a Parquet file".into(),
                },
                crate::FrameError::Remote("boom".into()),
            ];
            let mut out = vec![with(&[0, 7, 12], &samples)];
            for e in &errors {
                out.push(with(&[1], &agree::encode_error("read_csv", e).expect("encoding")));
            }
            let counts: Vec<u8> = [5u64, 0, u64::MAX, 3].iter().flat_map(|c| c.to_le_bytes()).collect();
            out.push(with(&[0b0101_0110], &counts));
            out
        }
        "csv" => {
            let text = b"i,f,s,b,d,t,u\n1,0.5,a,true,2020-01-01,2020-01-01T00:00:00,7\n\
                         2,,\"q,\"\"x\"\"\",false,1970-01-02,1970-01-01T00:00:01,255\n";
            let plain = b"x,y,z\n1,2,3\n4,5,6\n7,8,9\n";
            vec![
                with(&[0b0001_0001, 0x11, 2], text),
                with(&[0b0000_0001, 0x22, 1], text),
                with(&[0b0011_0001, 0x01, 3], plain),
                with(&[0b0011_0000, 0x33, 0], plain),
                with(&[0b0000_0011, 0x11, 1], b"a;b\n1;2\n3;4\n"),
                with(&[0b0010_0001, 0x11, 2], etth1_text().as_bytes()),
            ]
        }
        "etth1" => vec![etth1_text().into_bytes()],
        "camels" => vec![
            with(
                &[0],
                b"  44.82\n 133.00\n 587675987\nYear Mnth Day Hr dayl(s) prcp(mm/day) srad(W/m2) swe(mm) tmax(C) tmin(C) vp(Pa)\n\
                  2000 01 01 12\t31185.97\t0.00\t189.56\t0.00\t-2.36\t-14.36\t202.51\n\
                  2000 02 29 12\t31302.05\t0.00\t200.48\t0.00\t4.81\t-8.61\t319.42\n",
            ),
            with(
                &[1],
                b"01022500 2000 01 01   255.00 A:e\n01022500 2000 01 02  -999.00 M\n01022500 2000 12 31   337.00 A\n",
            ),
        ],
        _ => Vec::new(),
    }
}

fn etth1_text() -> String {
    "date,HUFL,HULL,MUFL,MULL,LUFL,LULL,OT\n\
     2016-07-01 00:00:00,5.827000141143799,2.009000062942505,1.5989999771118164,0.4620000123977661,4.203000068664552,1.3400000333786009,30.5310001373291\n\
     2016-07-01 01:00:00,5.692999839782715,2.075999975204468,1.4919999837875366,0.4259999990463257,4.142000198364259,1.371000051498413,27.78700065612793\n\
     2016-07-01 02:00:00,5.1570000648498535,1.741000056266785,1.2790000438690186,0.35499998927116394,3.776999950408936,,27.78700065612793\n"
        .to_string()
}
