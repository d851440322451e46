//! CSV: whole files or byte ranges cut at line ends (Arrow's CSV reader),
//! with errors that name file, line and column. ETTh1 is a CSV file with a
//! timestamp column.

use crate::dist_table::DistTable;
use crate::error::{Context, FrameError, Result};
use crate::io::{part_path, require, share, Share};
use crate::ipc;
use crate::table::Table;
use datafusion::arrow::csv::reader::{Format, ReaderBuilder};
use datafusion::arrow::csv::WriterBuilder;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::error::ArrowError;
use deeprc_comm::Communicator;
use std::fs::File;
use std::io::{BufReader, Cursor, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Options of the CSV reader.
#[derive(Debug, Clone)]
pub struct CsvOptions {
    /// The first line names the columns.
    pub has_header: bool,
    /// The field delimiter.
    pub delimiter: u8,
    /// The schema; inferred from the first `infer_rows` rows when `None`.
    pub schema: Option<SchemaRef>,
    /// Rows read to infer a schema.
    pub infer_rows: usize,
    /// Rows per record batch.
    pub batch_size: usize,
}

impl Default for CsvOptions {
    fn default() -> Self {
        Self {
            has_header: true,
            delimiter: b',',
            schema: None,
            infer_rows: 1000,
            batch_size: 64 * 1024,
        }
    }
}

impl CsvOptions {
    /// Uses `schema` instead of inferring one.
    #[must_use]
    pub fn with_schema(mut self, schema: SchemaRef) -> Self {
        self.schema = Some(schema);
        self
    }

    fn format(&self, header: bool) -> Format {
        Format::default()
            .with_header(header)
            .with_delimiter(self.delimiter)
    }
}

fn open(path: &Path) -> Result<File> {
    require(path, "a CSV file")?;
    File::open(path).ctx(&format!("opening {}", path.display()))
}

/// The schema of a CSV file: the given one, or inferred from its first rows.
pub fn infer_schema(path: &Path, options: &CsvOptions) -> Result<SchemaRef> {
    if let Some(s) = &options.schema {
        return Ok(Arc::clone(s));
    }
    let f = open(path)?;
    let (schema, _) = options
        .format(options.has_header)
        .infer_schema(BufReader::new(f), Some(options.infer_rows))
        .map_err(|e| malformed(path, 0, options.has_header, &e))?;
    Ok(Arc::new(schema))
}

/// Reads a whole CSV file.
///
/// # Errors
/// [`FrameError::DataMissing`] for a missing file; [`FrameError::Malformed`]
/// naming the file, line and column of a value that does not parse or a
/// line with the wrong number of fields.
pub fn read_csv(path: impl AsRef<Path>, options: &CsvOptions) -> Result<Table> {
    let path = path.as_ref();
    let schema = infer_schema(path, options)?;
    let f = open(path)?;
    read_from(
        path,
        BufReader::new(f),
        schema,
        options,
        options.has_header,
        0,
    )
}

/// Reads several CSV files of one schema into one table.
pub fn read_csv_files(paths: &[PathBuf], options: &CsvOptions) -> Result<Table> {
    let Some(first) = paths.first() else {
        return Err(FrameError::invalid("read_csv_files", "no file given"));
    };
    let schema = infer_schema(first, options)?;
    let opts = options.clone().with_schema(Arc::clone(&schema));
    let mut batches = Vec::new();
    for p in paths {
        batches.extend(read_csv(p, &opts)?.into_batches());
    }
    Table::try_new(schema, batches)
}

fn read_from<R: Read>(
    path: &Path,
    reader: R,
    schema: SchemaRef,
    options: &CsvOptions,
    header: bool,
    first_line: usize,
) -> Result<Table> {
    let r = ReaderBuilder::new(Arc::clone(&schema))
        .with_format(options.format(header))
        .with_batch_size(options.batch_size)
        .build(reader)
        .ctx("starting the CSV reader")?;
    let mut batches = Vec::new();
    for b in r {
        batches.push(b.map_err(|e| malformed(path, first_line, header, &e))?);
    }
    Table::try_new(schema, batches)
}

/// Turns an Arrow CSV error into [`FrameError::Malformed`]: Arrow reports
/// the 0-based data row and column index in its message.
fn malformed(path: &Path, first_line: usize, header: bool, e: &ArrowError) -> FrameError {
    let msg = e.to_string();
    let num_after = |pat: &str| -> Option<usize> {
        let i = msg.find(pat)? + pat.len();
        let digits: String = msg[i..]
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        digits.parse().ok()
    };
    let row = num_after("at line ").or_else(|| num_after("for line "));
    let column = num_after("for column ").map_or_else(|| "?".to_string(), |c| c.to_string());
    // Arrow counts lines from 0, its header line included; the lines before
    // this reader's byte range come first.
    let _ = header;
    let line = first_line + row.unwrap_or(0) + 1;
    FrameError::Malformed {
        file: path.to_path_buf(),
        line,
        column,
        reason: msg,
    }
}

/// The byte range of part `part` of `parts` of a file, moved to line starts:
/// the part holds the lines whose first byte lies in its raw range.
fn line_range(f: &mut File, len: u64, part: usize, parts: usize) -> Result<(u64, u64)> {
    let raw = |p: usize| len * p as u64 / parts as u64;
    let mut next_line = |pos: u64| -> Result<u64> {
        if pos == 0 {
            return Ok(0);
        }
        if pos >= len {
            return Ok(len);
        }
        // The first line start at or after `pos`: after the first '\n' at
        // or after pos - 1.
        f.seek(SeekFrom::Start(pos - 1))
            .ctx("seeking in a CSV file")?;
        let mut buf = [0u8; 64 * 1024];
        let mut at = pos - 1;
        loop {
            let n = f.read(&mut buf).ctx("reading a CSV file")?;
            if n == 0 {
                return Ok(len);
            }
            if let Some(i) = buf[..n].iter().position(|&b| b == b'\n') {
                return Ok(at + i as u64 + 1);
            }
            at += n as u64;
        }
    };
    Ok((next_line(raw(part))?, next_line(raw(part + 1))?))
}

/// Reads part `part` of `parts` of a CSV file (byte ranges cut at line
/// ends; fields must not hold line breaks).
pub fn read_csv_part(
    path: &Path,
    schema: SchemaRef,
    options: &CsvOptions,
    part: usize,
    parts: usize,
) -> Result<Table> {
    let mut f = open(path)?;
    let len = f.metadata().ctx("reading file size")?.len();
    let (start, end) = line_range(&mut f, len, part, parts)?;
    if start >= end {
        return Ok(Table::empty(schema));
    }
    f.seek(SeekFrom::Start(start))
        .ctx("seeking in a CSV file")?;
    let mut bytes = vec![0u8; (end - start) as usize];
    f.read_exact(&mut bytes).ctx("reading a CSV file")?;
    let header = options.has_header && start == 0;
    match read_from(
        path,
        Cursor::new(&bytes),
        Arc::clone(&schema),
        options,
        header,
        0,
    ) {
        Ok(t) => Ok(t),
        Err(FrameError::Malformed {
            file,
            line,
            column,
            reason,
        }) => {
            // Line numbers relative to the range: add the lines before it.
            let before = count_lines(path, start)?;
            Err(FrameError::Malformed {
                file,
                line: line + before,
                column,
                reason,
            })
        }
        Err(e) => Err(e),
    }
}

fn count_lines(path: &Path, upto: u64) -> Result<usize> {
    let f = open(path)?;
    let mut r = BufReader::new(f).take(upto);
    let mut buf = [0u8; 64 * 1024];
    let mut n = 0;
    loop {
        let k = r.read(&mut buf).ctx("reading a CSV file")?;
        if k == 0 {
            return Ok(n);
        }
        n += buf[..k].iter().filter(|&&b| b == b'\n').count();
    }
}

/// Writes a table as one CSV file with a header line.
pub fn write_csv(table: &Table, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let f = File::create(path).ctx(&format!("creating {}", path.display()))?;
    let mut w = WriterBuilder::new()
        .with_header(true)
        .build(std::io::BufWriter::new(f));
    for b in table.batches() {
        w.write(b).ctx("writing CSV")?;
    }
    Ok(())
}

/// The schema of ETTh1 (`date` as a timestamp, seven `f64` columns).
pub fn etth1_schema() -> SchemaRef {
    let mut fields = vec![Field::new(
        "date",
        DataType::Timestamp(TimeUnit::Second, None),
        false,
    )];
    for c in ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"] {
        fields.push(Field::new(c, DataType::Float64, true));
    }
    Arc::new(Schema::new(fields))
}

/// Reads ETTh1 (`ETT-small/ETTh1.csv` of the data folder, or any file of
/// that layout).
pub fn read_etth1(path: impl AsRef<Path>) -> Result<Table> {
    let path = path.as_ref();
    require(
        path,
        "ETTh1.csv: date,HUFL,HULL,MUFL,MULL,LUFL,LULL,OT (hourly)",
    )?;
    read_csv(path, &CsvOptions::default().with_schema(etth1_schema()))
}

impl DistTable {
    /// Reads CSV files, each rank its share (whole files, or byte ranges of
    /// a file when there are fewer files than ranks). The schema is given
    /// or inferred on rank 0 and broadcast. Collective.
    pub fn read_csv(
        comm: Arc<dyn Communicator>,
        paths: &[PathBuf],
        options: &CsvOptions,
    ) -> Result<DistTable> {
        if paths.is_empty() {
            return Err(FrameError::invalid("read_csv", "no file given"));
        }
        // Every rank checks every path first: a missing file fails all
        // ranks at once instead of leaving the others in a collective.
        for p in paths {
            require(p, "a CSV file")?;
        }
        let schema = match &options.schema {
            Some(s) => Arc::clone(s),
            None => {
                let mine = if comm.rank() == 0 {
                    ipc::encode_schema(infer_schema(&paths[0], options)?.as_ref())?
                } else {
                    bytes::Bytes::new()
                };
                ipc::decode_schema_from(comm.broadcast(0, mine)?, "read_csv", 0)?
            }
        };
        let opts = options.clone().with_schema(Arc::clone(&schema));
        let part = match share(paths.len(), comm.rank(), comm.size()) {
            Share::Nothing => Table::empty(Arc::clone(&schema)),
            Share::Files(files) => {
                let mut batches = Vec::new();
                for i in files {
                    batches.extend(read_csv(&paths[i], &opts)?.into_batches());
                }
                Table::try_new(Arc::clone(&schema), batches)?
            }
            Share::Piece { file, part, parts } => {
                read_csv_part(&paths[file], Arc::clone(&schema), &opts, part, parts)?
            }
        };
        DistTable::new(part, comm)
    }

    /// Reads ETTh1 with each rank reading a byte range.
    pub fn read_etth1(comm: Arc<dyn Communicator>, path: &Path) -> Result<DistTable> {
        require(
            path,
            "ETTh1.csv: date,HUFL,HULL,MUFL,MULL,LUFL,LULL,OT (hourly)",
        )?;
        DistTable::read_csv(
            comm,
            &[path.to_path_buf()],
            &CsvOptions::default().with_schema(etth1_schema()),
        )
    }

    /// Writes this rank's partition to `dir/part-NNNNN.csv`; returns the path.
    pub fn write_csv_per_rank(&self, dir: &Path) -> Result<PathBuf> {
        std::fs::create_dir_all(dir).ctx(&format!("creating {}", dir.display()))?;
        let p = part_path(dir, self.rank(), "csv");
        write_csv(self.partition(), &p)?;
        Ok(p)
    }

    /// Gathers the table to `root`, which writes it to `path`. Collective.
    pub fn write_csv_gathered(&self, path: &Path, root: usize) -> Result<()> {
        if let Some(t) = self.gather(root)? {
            write_csv(&t, path)?;
        }
        Ok(())
    }
}
