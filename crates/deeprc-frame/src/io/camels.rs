//! CAMELS-US: Daymet forcing and USGS streamflow files (whitespace
//! separated, hand-parsed: neither is CSV).
//!
//! ```text
//! daymet/<gauge>_lump_cida_forcing_leap.txt      usgs_streamflow/<gauge>_streamflow_qc.txt
//!   latitude                                       gauge year month day flow qc_flag
//!   elevation                                      (no header; flow -999 = missing)
//!   area
//!   Year Mnth Day Hr dayl(s) prcp(mm/day) ...
//!   2000 01 01 12 31185.97 0.00 ...
//! ```
//!
//! Both become tables keyed by `gauge` (text, leading zeros kept) and `date`
//! (Date32), so forcing and streamflow join on `(gauge, date)`.

use crate::dist_table::DistTable;
use crate::error::{Context, FrameError, Result};
use crate::io::require;
use crate::table::Table;
use datafusion::arrow::array::{ArrayRef, Date32Array, Float64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use deeprc_comm::Communicator;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The two kinds of CAMELS time series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CamelsKind {
    /// `daymet/<gauge>_lump_cida_forcing_leap.txt`.
    Forcing,
    /// `usgs_streamflow/<gauge>_streamflow_qc.txt`.
    Streamflow,
}

impl CamelsKind {
    fn folder(&self) -> &'static str {
        match self {
            CamelsKind::Forcing => "daymet",
            CamelsKind::Streamflow => "usgs_streamflow",
        }
    }

    fn suffix(&self) -> &'static str {
        match self {
            CamelsKind::Forcing => "_lump_cida_forcing_leap.txt",
            CamelsKind::Streamflow => "_streamflow_qc.txt",
        }
    }
}

/// The files of one kind under a CAMELS folder (e.g.
/// `<data>/camels_us_4basins`), sorted by gauge.
pub fn camels_files(root: &Path, kind: CamelsKind) -> Result<Vec<PathBuf>> {
    let dir = root.join(kind.folder());
    let expected = format!(
        "{}/<gauge>{} files (CAMELS-US)",
        kind.folder(),
        kind.suffix()
    );
    require(&dir, &expected)?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .ctx(&format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(kind.suffix()))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(FrameError::DataMissing {
            path: dir,
            expected,
        });
    }
    Ok(files)
}

/// Days since 1970-01-01 of a civil date, or `None` when it is not a date.
pub(crate) fn days_from_civil(y: i64, m: i64, d: i64) -> Option<i32> {
    // Days since 1970 fit an i32 for about 5.8 million years either way:
    // a year beyond a million is no date (and the arithmetic below cannot
    // overflow; a fuzzed year of -888888888888888899 made it).
    if !(1..=12).contains(&m) || d < 1 || !(-1_000_000..=1_000_000).contains(&y) {
        return None;
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let mdays = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if d > mdays[(m - 1) as usize] {
        return None;
    }
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    i32::try_from(era * 146_097 + doe - 719_468).ok()
}

struct LineParser<'a> {
    file: &'a Path,
    line: usize,
    names: &'a [String],
}

impl LineParser<'_> {
    fn err(&self, col: usize, reason: impl Into<String>) -> FrameError {
        FrameError::Malformed {
            file: self.file.to_path_buf(),
            line: Some(self.line),
            column: self
                .names
                .get(col)
                .cloned()
                .unwrap_or_else(|| format!("#{}", col + 1)),
            reason: reason.into(),
        }
    }

    fn int(&self, fields: &[&str], col: usize) -> Result<i64> {
        fields[col]
            .parse()
            .map_err(|_| self.err(col, format!("{:?} is not an integer", fields[col])))
    }

    fn float(&self, fields: &[&str], col: usize) -> Result<f64> {
        fields[col]
            .parse()
            .map_err(|_| self.err(col, format!("{:?} is not a number", fields[col])))
    }

    fn date(&self, fields: &[&str], y: usize) -> Result<i32> {
        let (yy, mm, dd) = (
            self.int(fields, y)?,
            self.int(fields, y + 1)?,
            self.int(fields, y + 2)?,
        );
        days_from_civil(yy, mm, dd)
            .ok_or_else(|| self.err(y, format!("{yy}-{mm}-{dd} is not a date")))
    }
}

fn gauge_of(path: &Path, kind: CamelsKind) -> String {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    name.strip_suffix(kind.suffix())
        .unwrap_or_else(|| name.split('_').next().unwrap_or(name))
        .to_string()
}

fn read_text(path: &Path, what: &str) -> Result<String> {
    require(path, what)?;
    std::fs::read_to_string(path).ctx(&format!("reading {}", path.display()))
}

/// A column name without its unit: `prcp(mm/day)` -> `prcp`.
fn clean_name(h: &str) -> String {
    h.split('(').next().unwrap_or(h).trim().to_lowercase()
}

/// The schema of a forcing table: `gauge, date, dayl, prcp, srad, swe,
/// tmax, tmin, vp` (units in the field metadata).
pub fn forcing_schema(value_names: &[String]) -> SchemaRef {
    let mut fields = vec![
        Field::new("gauge", DataType::Utf8, false),
        Field::new("date", DataType::Date32, false),
    ];
    fields.extend(
        value_names
            .iter()
            .map(|n| Field::new(n, DataType::Float64, false)),
    );
    Arc::new(Schema::new(fields))
}

/// Reads one Daymet forcing file. The gauge id comes from the file name;
/// latitude, elevation and area (the three header lines) go into the
/// schema metadata.
///
/// # Errors
/// [`FrameError::Malformed`] naming the file, the 1-based line and the
/// column of the first bad value or a line with the wrong number of fields.
pub fn read_forcing(path: impl AsRef<Path>) -> Result<Table> {
    let path = path.as_ref();
    let text = read_text(
        path,
        "a CAMELS forcing file (daymet/<gauge>_lump_cida_forcing_leap.txt)",
    )?;
    let gauge = gauge_of(path, CamelsKind::Forcing);
    let mut lines = text.lines().enumerate();
    let mut meta = HashMap::new();
    for key in ["latitude", "elevation", "area"] {
        let (i, l) = lines.next().ok_or_else(|| FrameError::Malformed {
            file: path.to_path_buf(),
            line: None,
            column: key.into(),
            reason: "the file ends before its three header lines".into(),
        })?;
        let v: f64 = l.trim().parse().map_err(|_| FrameError::Malformed {
            file: path.to_path_buf(),
            line: Some(i + 1),
            column: key.into(),
            reason: format!("{:?} is not a number", l.trim()),
        })?;
        meta.insert(key.to_string(), v.to_string());
    }
    let (hi, header) = lines.next().ok_or_else(|| FrameError::Malformed {
        file: path.to_path_buf(),
        line: Some(4),
        column: "header".into(),
        reason: "no column header line".into(),
    })?;
    let headers: Vec<String> = header.split_whitespace().map(str::to_string).collect();
    if headers.len() < 5 || clean_name(&headers[0]) != "year" {
        return Err(FrameError::Malformed {
            file: path.to_path_buf(),
            line: Some(hi + 1),
            column: "header".into(),
            reason: format!("expected `Year Mnth Day Hr <values>...`, found {header:?}"),
        });
    }
    let value_names: Vec<String> = headers[4..].iter().map(|h| clean_name(h)).collect();
    for (h, n) in headers[4..].iter().zip(&value_names) {
        meta.insert(format!("unit:{n}"), h.clone());
    }
    let ncols = headers.len();
    let mut dates = Vec::new();
    let mut values: Vec<Vec<f64>> = vec![Vec::new(); value_names.len()];
    for (i, l) in lines {
        if l.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = l.split_whitespace().collect();
        let p = LineParser {
            file: path,
            line: i + 1,
            names: &headers,
        };
        if fields.len() != ncols {
            return Err(p.err(
                fields.len().min(ncols - 1),
                format!("expected {ncols} fields, found {}", fields.len()),
            ));
        }
        dates.push(p.date(&fields, 0)?);
        for (k, v) in values.iter_mut().enumerate() {
            v.push(p.float(&fields, 4 + k)?);
        }
    }
    let schema = forcing_schema(&value_names);
    let schema = Arc::new(schema.as_ref().clone().with_metadata(meta));
    let n = dates.len();
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![gauge.as_str(); n])),
        Arc::new(Date32Array::from(dates)),
    ];
    cols.extend(
        values
            .into_iter()
            .map(|v| Arc::new(Float64Array::from(v)) as ArrayRef),
    );
    let batch = RecordBatch::try_new(Arc::clone(&schema), cols).ctx("building a forcing table")?;
    Table::try_new(schema, vec![batch])
}

/// The schema of a streamflow table: `gauge, date, flow, qc_flag`.
pub fn streamflow_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("gauge", DataType::Utf8, false),
        Field::new("date", DataType::Date32, false),
        Field::new("flow", DataType::Float64, true),
        Field::new("qc_flag", DataType::Utf8, false),
    ]))
}

/// Reads one USGS streamflow file; `flow` is null where the file says -999.
///
/// # Errors
/// [`FrameError::Malformed`] naming the file, line and column.
pub fn read_streamflow(path: impl AsRef<Path>) -> Result<Table> {
    let path = path.as_ref();
    let text = read_text(
        path,
        "a CAMELS streamflow file (usgs_streamflow/<gauge>_streamflow_qc.txt)",
    )?;
    let names: Vec<String> = ["gauge", "year", "month", "day", "flow", "qc_flag"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let (mut gauges, mut dates, mut flows, mut flags) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, l) in text.lines().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = l.split_whitespace().collect();
        let p = LineParser {
            file: path,
            line: i + 1,
            names: &names,
        };
        if fields.len() != 6 {
            return Err(p.err(
                fields.len().min(5),
                format!("expected 6 fields, found {}", fields.len()),
            ));
        }
        if !fields[0].chars().all(|c| c.is_ascii_digit()) {
            return Err(p.err(0, format!("{:?} is not a gauge id", fields[0])));
        }
        gauges.push(fields[0].to_string());
        dates.push(p.date(&fields, 1)?);
        let q = p.float(&fields, 4)?;
        flows.push((q != -999.0).then_some(q));
        flags.push(fields[5].to_string());
    }
    let schema = streamflow_schema();
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(StringArray::from(gauges)),
            Arc::new(Date32Array::from(dates)),
            Arc::new(Float64Array::from(flows)),
            Arc::new(StringArray::from(flags)),
        ],
    )
    .ctx("building a streamflow table")?;
    Table::try_new(schema, vec![batch])
}

/// Reads every file of `files` of one kind into one table.
pub fn read_camels_files(files: &[PathBuf], kind: CamelsKind) -> Result<Table> {
    let tables = files
        .iter()
        .map(|f| match kind {
            CamelsKind::Forcing => read_forcing(f),
            CamelsKind::Streamflow => read_streamflow(f),
        })
        .collect::<Result<Vec<_>>>()?;
    if tables.is_empty() {
        return Err(FrameError::invalid("read_camels_files", "no file given"));
    }
    // Forcing files carry per-basin metadata: drop it from the union.
    let schema = Arc::new(
        tables[0]
            .schema()
            .as_ref()
            .clone()
            .with_metadata(HashMap::new()),
    );
    let batches = tables.into_iter().flat_map(Table::into_batches).collect();
    Table::try_new(schema, batches)
}

impl DistTable {
    /// Reads the CAMELS files of `kind` under `root` (e.g.
    /// `<data>/camels_us_4basins`), each rank a block of basins. Collective:
    /// the ranks agree on success, so a malformed file on one rank fails
    /// every rank promptly with that file's error
    /// ([`FrameError::FailedOnRank`] on the others), never a lost peer.
    pub fn read_camels(
        comm: Arc<dyn Communicator>,
        root: &Path,
        kind: CamelsKind,
    ) -> Result<DistTable> {
        let local = camels_files(root, kind).and_then(|files| {
            let (r, n) = (comm.rank(), comm.size());
            let mine = &files[r * files.len() / n..(r + 1) * files.len() / n];
            if mine.is_empty() {
                // The schema of an empty share: read the first file's header.
                let t = read_camels_files(&files[..1], kind)?;
                Ok(Table::empty(Arc::clone(t.schema())))
            } else {
                read_camels_files(mine, kind)
            }
        });
        let part = crate::dist::agree::agree(comm.as_ref(), "read_camels", local)?;
        DistTable::new(part, comm)
    }
}

#[cfg(test)]
mod tests {
    use super::days_from_civil;

    #[test]
    fn civil_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), Some(0));
        assert_eq!(days_from_civil(2000, 3, 1), Some(11_017));
        assert_eq!(days_from_civil(2000, 2, 29), Some(11_016));
        assert_eq!(days_from_civil(2001, 2, 29), None);
        assert_eq!(days_from_civil(2001, 13, 1), None);
        assert_eq!(days_from_civil(-1_000_000, 1, 1), Some(-365_962_028));
        assert_eq!(days_from_civil(1_000_000, 12, 31), Some(364_523_337));
    }

    /// Found by the `camels` fuzz target (its input inline): a year far out
    /// of range overflowed the date arithmetic (a panic in debug builds, a
    /// wrapped, silently wrong date in release builds). Now it is not a
    /// date: a typed error naming file, line and column.
    #[test]
    fn absurd_years_are_errors_not_overflows() {
        for y in [
            i64::MIN,
            -888_888_888_888_888_899,
            -1_000_001,
            1_000_001,
            i64::MAX,
        ] {
            assert_eq!(days_from_civil(y, 9, 1), None, "{y}");
        }
        let dir = std::env::temp_dir().join(format!("deeprc-camels-year-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("02_streamflow_qc.txt");
        std::fs::write(&path, b"02 -888888888888888899 9 01 0 0").unwrap();
        match super::read_streamflow(&path) {
            Err(crate::FrameError::Malformed {
                line,
                column,
                reason,
                ..
            }) => {
                assert_eq!((line, column.as_str()), (Some(1), "year"), "{reason}");
                assert!(reason.contains("not a date"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
