//! CSV: whole files or byte ranges cut at line ends (Arrow's CSV reader),
//! with errors that name file, line and column. ETTh1 is a CSV file with a
//! timestamp column.

use crate::dist::agree::agree;
use crate::dist_table::DistTable;
use crate::error::{Context, FrameError, Result};
use crate::io::{part_path, require, share, Share};
use crate::ipc;
use crate::table::Table;
use bytes::Bytes;
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
///
/// # Errors
/// [`FrameError::DataMissing`] for a missing file; [`FrameError::Malformed`]
/// naming the line of a row that does not fit.
pub fn infer_schema(path: &Path, options: &CsvOptions) -> Result<SchemaRef> {
    if let Some(s) = &options.schema {
        return Ok(Arc::clone(s));
    }
    let f = open(path)?;
    let (schema, _) = options
        .format(options.has_header)
        .infer_schema(BufReader::new(f), Some(options.infer_rows))
        .map_err(|e| malformed(path, None, 0, Numbering::Inference, &e))?;
    Ok(Arc::new(schema))
}

/// Reads a whole CSV file.
///
/// Lines are numbered from 1, the header (if any) being line 1.
///
/// # Errors
/// [`FrameError::DataMissing`] for a missing file; [`FrameError::Malformed`]
/// naming the file, line and column of a value that does not parse (a
/// number out of range of its type included), of invalid UTF-8, of a
/// quoted field that is never closed, or a line with the wrong number of
/// fields.
pub fn read_csv(path: impl AsRef<Path>, options: &CsvOptions) -> Result<Table> {
    let path = path.as_ref();
    let schema = infer_schema(path, options)?;
    let f = open(path)?;
    read_from(
        path,
        BufReader::new(f),
        0,
        schema,
        options,
        options.has_header,
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

/// Reads the CSV bytes of `path` that `reader` holds from byte `start` (a
/// line start) on; errors name lines of the whole file.
fn read_from<R: Read>(
    path: &Path,
    reader: R,
    start: u64,
    schema: SchemaRef,
    options: &CsvOptions,
    header: bool,
) -> Result<Table> {
    let mut tracked = QuoteTracker::new(reader, options.delimiter);
    let mut batches = Vec::new();
    let mut failed: Option<ArrowError> = None;
    {
        let r = ReaderBuilder::new(Arc::clone(&schema))
            .with_format(options.format(header))
            .with_batch_size(options.batch_size)
            .build(&mut tracked)
            .ctx("starting the CSV reader")?;
        for b in r {
            match b {
                Ok(b) => batches.push(b),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
    }
    if failed.is_some() {
        // An unclosed quote swallows the rest of the input into one field:
        // read on to see whether that is the cause of Arrow's error.
        std::io::copy(&mut tracked, &mut std::io::sink())
            .ctx(&format!("reading {}", path.display()))?;
    }
    let before = || -> Result<usize> {
        if start == 0 {
            Ok(0)
        } else {
            count_lines(path, start)
        }
    };
    let arrow_error = match &failed {
        Some(e) => Some(malformed(
            path,
            Some(&schema),
            before()?,
            Numbering::Reader,
            e,
        )),
        None => None,
    };
    if let Some(offset) = tracked.unclosed_quote() {
        let (line, field) = locate(path, start + offset, options.delimiter)?;
        let arrow_line = match &arrow_error {
            Some(FrameError::Malformed { line, .. }) => *line,
            _ => None,
        };
        // Arrow's error, when it comes from an earlier line, is the first.
        if arrow_line.is_none_or(|l| l >= line) {
            return Err(FrameError::Malformed {
                file: path.to_path_buf(),
                line: Some(line),
                column: column_name(Some(&schema), field),
                reason: "a quoted field opens here and is never closed (unclosed quote)".into(),
            });
        }
    }
    if let Some(e) = arrow_error {
        return Err(e);
    }
    Table::try_new(schema, batches)
}

/// How the message of an Arrow CSV error counts lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Numbering {
    /// Schema inference (the `csv` crate): "at line N" counts physical
    /// lines from 1.
    Inference,
    /// The reader: "for line N" (field counts, UTF-8) counts records from
    /// 1, "at line N" (values) from 0; both count the header.
    Reader,
}

/// The name of column `i` (its position when there is no such column).
fn column_name(schema: Option<&Schema>, i: usize) -> String {
    schema
        .and_then(|s| s.fields().get(i))
        .map_or_else(|| i.to_string(), |f| f.name().clone())
}

/// Turns an Arrow CSV error into [`FrameError::Malformed`]: Arrow's message
/// has the line (numbered as `numbering` says) and the column, when it
/// knows them; `before` is the number of lines of the file before the bytes
/// that were read. Without a line number in the message the error names
/// none.
fn malformed(
    path: &Path,
    schema: Option<&Schema>,
    before: usize,
    numbering: Numbering,
    e: &ArrowError,
) -> FrameError {
    let msg = e.to_string();
    let num_after = |pat: &str| -> Option<usize> {
        let i = msg.find(pat)? + pat.len();
        let digits: String = msg[i..]
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        digits.parse().ok()
    };
    let line = match numbering {
        Numbering::Inference => num_after("at line "),
        Numbering::Reader => {
            num_after("for line ").or_else(|| num_after("at line ").map(|n| n + 1))
        }
    };
    let column = num_after("for column ")
        .or_else(|| num_after("parsing column "))
        .or_else(|| num_after("and field ").and_then(|f| f.checked_sub(1)));
    FrameError::Malformed {
        file: path.to_path_buf(),
        line: line.map(|l| before + l),
        column: column.map_or_else(|| "?".to_string(), |i| column_name(schema, i)),
        reason: msg,
    }
}

/// Where a CSV parser (csv-core, under Arrow's reader) is in the quoting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quoting {
    /// At the start of a field (or a record).
    FieldStart,
    /// In a field that is not quoted.
    Unquoted,
    /// In a quoted field.
    Quoted,
    /// Just after a quote in a quoted field (`""` is a quote, anything else
    /// closes the field).
    QuoteInQuoted,
}

/// Follows the quoting of the bytes Arrow's reader reads, as csv-core
/// parses them (a quote opens a quoted field only at the start of a field,
/// `""` in one is a quote), to find a quoted field that is never closed:
/// the reader silently takes the rest of the input as that field. Chunks
/// without a quote, outside a quoted field, are skipped with one `memchr`.
struct QuoteTracker<R> {
    inner: R,
    delimiter: u8,
    state: Quoting,
    /// Bytes read so far.
    pos: u64,
    /// The offset of the quote that opened the current quoted field.
    opened_at: u64,
}

impl<R: Read> QuoteTracker<R> {
    fn new(inner: R, delimiter: u8) -> Self {
        Self {
            inner,
            delimiter,
            state: Quoting::FieldStart,
            pos: 0,
            opened_at: 0,
        }
    }

    /// The offset of the opening quote of a field still open at the end.
    fn unclosed_quote(&self) -> Option<u64> {
        (self.state == Quoting::Quoted).then_some(self.opened_at)
    }

    fn track(&mut self, chunk: &[u8]) {
        let Some(&last) = chunk.last() else {
            return;
        };
        let d = self.delimiter;
        let ends_field = |c: u8| c == d || c == b'\n' || c == b'\r';
        let outside = matches!(self.state, Quoting::FieldStart | Quoting::Unquoted);
        if outside && !chunk.contains(&b'"') {
            self.state = if ends_field(last) {
                Quoting::FieldStart
            } else {
                Quoting::Unquoted
            };
        } else {
            for (i, &c) in chunk.iter().enumerate() {
                self.state = match self.state {
                    Quoting::FieldStart if c == b'"' => {
                        self.opened_at = self.pos + i as u64;
                        Quoting::Quoted
                    }
                    Quoting::FieldStart | Quoting::Unquoted | Quoting::QuoteInQuoted
                        if ends_field(c) =>
                    {
                        Quoting::FieldStart
                    }
                    Quoting::QuoteInQuoted if c == b'"' => Quoting::Quoted,
                    Quoting::FieldStart | Quoting::Unquoted | Quoting::QuoteInQuoted => {
                        Quoting::Unquoted
                    }
                    Quoting::Quoted if c == b'"' => Quoting::QuoteInQuoted,
                    Quoting::Quoted => Quoting::Quoted,
                };
            }
        }
        self.pos += chunk.len() as u64;
    }
}

impl<R: Read> Read for QuoteTracker<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.track(&buf[..n]);
        Ok(n)
    }
}

/// The 1-based line of byte `offset` of a CSV file, and the 0-based field
/// of that line it falls in.
fn locate(path: &Path, offset: u64, delimiter: u8) -> Result<(usize, usize)> {
    let f = open(path)?;
    let mut r = BufReader::new(f).take(offset);
    let mut buf = [0u8; 64 * 1024];
    let (mut line, mut field, mut quoted) = (1, 0, false);
    loop {
        let k = r.read(&mut buf).ctx("reading a CSV file")?;
        if k == 0 {
            return Ok((line, field));
        }
        for &c in &buf[..k] {
            match c {
                b'\n' => {
                    line += 1;
                    field = 0;
                    quoted = false;
                }
                b'"' => quoted = !quoted,
                c if c == delimiter && !quoted => field += 1,
                _ => {}
            }
        }
    }
}

/// The byte range of part `part` of `parts` of the bytes `from..len` of a
/// file (`from` a line start), moved to line starts: the part holds the
/// lines whose first byte lies in its raw range.
fn line_range(f: &mut File, from: u64, len: u64, part: usize, parts: usize) -> Result<(u64, u64)> {
    let raw = |p: usize| from + (len - from) * p as u64 / parts as u64;
    let mut next_line = |pos: u64| -> Result<u64> {
        if pos == from {
            return Ok(from);
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

/// The end of the header: the byte after the first line that is not empty
/// (the CSV reader skips empty lines, `""` or `"\r"`, before the header as
/// it does everywhere), or `len` when there is none.
fn header_end(f: &mut File, len: u64) -> Result<u64> {
    f.seek(SeekFrom::Start(0)).ctx("seeking in a CSV file")?;
    let mut r = BufReader::new(f).take(len);
    let mut line = Vec::new();
    let mut at = 0u64;
    loop {
        line.clear();
        let n = std::io::BufRead::read_until(&mut r, b'\n', &mut line).ctx("reading a CSV file")?;
        if n == 0 {
            return Ok(len);
        }
        at += n as u64;
        if line.iter().any(|&b| b != b'\n' && b != b'\r') {
            return Ok(at);
        }
    }
}

/// Reads part `part` of `parts` of a CSV file (byte ranges cut at line
/// ends; fields must not hold line breaks). Errors name lines of the whole
/// file. With a header, the parts split the lines after it and part 0
/// reads the header too (however many empty lines come before it).
pub fn read_csv_part(
    path: &Path,
    schema: SchemaRef,
    options: &CsvOptions,
    part: usize,
    parts: usize,
) -> Result<Table> {
    let mut f = open(path)?;
    let len = f.metadata().ctx("reading file size")?.len();
    let body = if options.has_header {
        header_end(&mut f, len)?
    } else {
        0
    };
    let (mut start, end) = line_range(&mut f, body, len, part, parts)?;
    if part == 0 {
        start = 0;
    }
    if start >= end {
        return Ok(Table::empty(schema));
    }
    f.seek(SeekFrom::Start(start))
        .ctx("seeking in a CSV file")?;
    let mut bytes = vec![0u8; (end - start) as usize];
    f.read_exact(&mut bytes).ctx("reading a CSV file")?;
    let header = options.has_header && start == 0;
    read_from(path, Cursor::new(&bytes), start, schema, options, header)
}

/// The number of lines that end before byte `upto`.
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

/// What ETTh1 is, for a missing file.
const ETTH1: &str = "ETTh1.csv: date,HUFL,HULL,MUFL,MULL,LUFL,LULL,OT (hourly)";

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
    require(path, ETTH1)?;
    read_csv(path, &CsvOptions::default().with_schema(etth1_schema()))
}

impl DistTable {
    /// Reads CSV files, each rank its share (whole files, or byte ranges of
    /// a file when there are fewer files than ranks). The schema is given
    /// or inferred on rank 0 and broadcast. Collective.
    ///
    /// The ranks agree on success after checking the paths (and inferring
    /// the schema) and after reading their shares, before anything else is
    /// exchanged: when one rank fails, every rank fails at once, the failing
    /// rank with its own error and the others with
    /// [`FrameError::FailedOnRank`] naming it and its error.
    ///
    /// # Errors
    /// As [`read_csv`], on every rank; communication errors.
    pub fn read_csv(
        comm: Arc<dyn Communicator>,
        paths: &[PathBuf],
        options: &CsvOptions,
    ) -> Result<DistTable> {
        const OP: &str = "read_csv";
        if paths.is_empty() {
            return Err(FrameError::invalid(OP, "no file given"));
        }
        let c = comm.as_ref();
        // Every rank checks every path; rank 0 infers the schema.
        let checked = (|| -> Result<Bytes> {
            for p in paths {
                require(p, "a CSV file")?;
            }
            if options.schema.is_none() && c.rank() == 0 {
                return ipc::encode_schema(infer_schema(&paths[0], options)?.as_ref());
            }
            Ok(Bytes::new())
        })();
        let mine = agree(c, OP, checked)?;
        let schema = match &options.schema {
            Some(s) => Arc::clone(s),
            None => ipc::decode_schema_from(c.broadcast(0, mine)?, OP, 0)?,
        };
        let opts = options.clone().with_schema(Arc::clone(&schema));
        let read = || -> Result<Table> {
            match share(paths.len(), c.rank(), c.size()) {
                Share::Nothing => Ok(Table::empty(Arc::clone(&schema))),
                Share::Files(files) => {
                    let mut batches = Vec::new();
                    for i in files {
                        batches.extend(read_csv(&paths[i], &opts)?.into_batches());
                    }
                    Table::try_new(Arc::clone(&schema), batches)
                }
                Share::Piece { file, part, parts } => {
                    read_csv_part(&paths[file], Arc::clone(&schema), &opts, part, parts)
                }
            }
        };
        let part = agree(c, OP, read())?;
        DistTable::new(part, comm)
    }

    /// Reads ETTh1 with each rank reading a byte range.
    pub fn read_etth1(comm: Arc<dyn Communicator>, path: &Path) -> Result<DistTable> {
        agree(comm.as_ref(), "read_etth1", require(path, ETTH1))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An Arrow message without a line number names no line (it used to
    /// claim line 1).
    #[test]
    fn errors_without_a_line_claim_none() {
        let e = ArrowError::CsvError("Error reading CSV file".into());
        let m = malformed(Path::new("/d/x.csv"), None, 7, Numbering::Reader, &e);
        assert!(
            matches!(m, FrameError::Malformed { line: None, .. }),
            "{m:?}"
        );
        assert!(m.to_string().starts_with("/d/x.csv: column \"?\""), "{m}");
        // With one, lines before the bytes read are added.
        let e = ArrowError::CsvError("incorrect number of fields for line 3, expected 2".into());
        let m = malformed(Path::new("/d/x.csv"), None, 7, Numbering::Reader, &e);
        assert!(
            matches!(m, FrameError::Malformed { line: Some(10), .. }),
            "{m:?}"
        );
    }

    /// The state after feeding `text` to a tracker in chunks of `chunk`.
    fn unclosed(text: &[u8], chunk: usize) -> Option<u64> {
        let mut t = QuoteTracker::new(std::io::empty(), b',');
        for c in text.chunks(chunk) {
            t.track(c);
        }
        t.unclosed_quote()
    }

    #[test]
    fn quote_tracker_follows_csv_quoting_across_chunks() {
        let cases: [(&[u8], Option<u64>); 8] = [
            (b"a,b\n1,2\n", None),
            (b"a,b\n1,\"x,y\"\n", None),
            (b"a,b\n1,\"x\"\"y\"\n", None),
            (b"a,b\n1,\"x\n2,3\n", Some(6)),
            (b"a,b\n1,\"x\"\"\n", Some(6)),
            // A quote inside an unquoted field is a character.
            (b"a,b\n1,5'11\"\n2,3\n", None),
            (b"\"a\",b\n1,2\n", None),
            (b"a,b\n1,\"\n", Some(6)),
        ];
        for (text, want) in cases {
            for chunk in 1..=text.len() {
                assert_eq!(
                    unclosed(text, chunk),
                    want,
                    "{:?} in chunks of {chunk}",
                    String::from_utf8_lossy(text)
                );
            }
        }
    }

    /// Found by the `csv` fuzz target (input inline): with empty lines
    /// before the header, the header fell into part 1 and was read as a
    /// row; the parts of a file must make the file.
    #[test]
    fn parts_make_the_whole_file_when_empty_lines_precede_the_header() {
        let dir = std::env::temp_dir().join(format!("deeprc-csv-parts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cases: [(&[u8], u8); 4] = [
            (b"\n;(\n", b';'),
            (b"\n\n\r\na,b\n1,2\n3,4\n", b','),
            (b"\n\n\n\n\n\n\na,b\n1,2\n", b','),
            (b"a,b\n\n1,2\n\n3,4\n", b','),
        ];
        for (k, (text, delimiter)) in cases.into_iter().enumerate() {
            let path = dir.join(format!("{k}.csv"));
            std::fs::write(&path, text).unwrap();
            let options = CsvOptions {
                delimiter,
                ..CsvOptions::default()
            };
            let whole = read_csv(&path, &options).unwrap();
            let schema = infer_schema(&path, &options).unwrap();
            for parts in 1..=4 {
                let pieces: Vec<Table> = (0..parts)
                    .map(|p| read_csv_part(&path, Arc::clone(&schema), &options, p, parts).unwrap())
                    .collect();
                let joined = Table::concat(&pieces).unwrap();
                assert!(
                    joined.equals(&whole).unwrap(),
                    "case {k}, {parts} parts: {} rows, the whole file {}",
                    joined.num_rows(),
                    whole.num_rows()
                );
            }
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
