//! Parquet: whole files, or row groups of a file spread over the ranks.

use crate::dist::agree::agree;
use crate::dist_table::DistTable;
use crate::error::{Context, FrameError, Result};
use crate::io::{part_path, require};
use crate::table::Table;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::file::properties::WriterProperties;
use deeprc_comm::Communicator;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn builder(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>> {
    require(path, "a Parquet file")?;
    let f = File::open(path).ctx(&format!("opening {}", path.display()))?;
    ParquetRecordBatchReaderBuilder::try_new(f)
        .ctx(&format!("reading the footer of {}", path.display()))
}

/// Reads a whole Parquet file.
///
/// # Errors
/// [`FrameError::DataMissing`] for a missing file; [`FrameError::Parquet`]
/// naming the file when it is not Parquet (no or a damaged footer, wrong
/// magic, truncated pages).
pub fn read_parquet(path: impl AsRef<Path>) -> Result<Table> {
    read_row_groups(path.as_ref(), None)
}

/// The number of row groups of a Parquet file.
pub fn row_groups(path: &Path) -> Result<usize> {
    Ok(builder(path)?.metadata().num_row_groups())
}

/// Reads row groups `groups` of a Parquet file (all when `None`).
pub fn read_row_groups(path: &Path, groups: Option<Vec<usize>>) -> Result<Table> {
    let mut b = builder(path)?;
    let schema = Arc::clone(b.schema());
    if let Some(g) = groups {
        b = b.with_row_groups(g);
    }
    let reader = b
        .with_batch_size(64 * 1024)
        .build()
        .ctx("starting the Parquet reader")?;
    let batches = reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .ctx(&format!("reading {}", path.display()))?;
    Table::try_new(schema, batches)
}

/// Writes a table as one Parquet file (row groups of up to 1 Mi rows).
pub fn write_parquet(table: &Table, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let f = File::create(path).ctx(&format!("creating {}", path.display()))?;
    let props = WriterProperties::builder()
        .set_max_row_group_size(1 << 20)
        .build();
    let mut w = ArrowWriter::try_new(f, Arc::clone(table.schema()), Some(props))
        .ctx("starting the Parquet writer")?;
    for b in table.batches() {
        w.write(b).ctx("writing Parquet")?;
    }
    w.close().ctx("closing the Parquet writer")?;
    Ok(())
}

/// A (file, row group) pair: what ranks share when there are fewer files
/// than ranks.
type Unit = (usize, usize);

impl DistTable {
    /// Reads Parquet files, each rank its share of the (file, row group)
    /// pairs, in order. Collective.
    ///
    /// Every rank first checks every path and reads the footers it needs;
    /// the ranks agree on success then and after reading their shares, so a
    /// file missing (or unreadable) on one rank fails every rank at once:
    /// that rank with its own error, the others with
    /// [`FrameError::FailedOnRank`] naming it and its error.
    ///
    /// # Errors
    /// [`FrameError::DataMissing`] naming a missing file,
    /// [`FrameError::Parquet`] naming a file that is not Parquet, on every
    /// rank; communication errors.
    pub fn read_parquet(comm: Arc<dyn Communicator>, paths: &[PathBuf]) -> Result<DistTable> {
        const OP: &str = "read_parquet";
        let Some(first) = paths.first() else {
            return Err(FrameError::invalid(OP, "no file given"));
        };
        let c = comm.as_ref();
        let (rank, size) = (c.rank(), c.size());
        // The files as shares, or the (file, row group) pairs to share.
        let plan = (|| -> Result<(SchemaRef, Option<Vec<Unit>>)> {
            for p in paths {
                require(p, "a Parquet file")?;
            }
            let schema = Arc::clone(builder(first)?.schema());
            if paths.len() >= size {
                return Ok((schema, None));
            }
            let mut units = Vec::new();
            for (i, p) in paths.iter().enumerate() {
                for g in 0..row_groups(p)? {
                    units.push((i, g));
                }
            }
            Ok((schema, Some(units)))
        })();
        let (schema, units) = agree(c, OP, plan)?;
        let read = || -> Result<Table> {
            let Some(units) = &units else {
                let lo = rank * paths.len() / size;
                let hi = (rank + 1) * paths.len() / size;
                let mut batches = Vec::new();
                for p in &paths[lo..hi] {
                    batches.extend(read_parquet(p)?.into_batches());
                }
                return Table::try_new(Arc::clone(&schema), batches);
            };
            let lo = rank * units.len() / size;
            let hi = (rank + 1) * units.len() / size;
            let mut batches = Vec::new();
            let mut k = lo;
            while k < hi {
                let file = units[k].0;
                let mut groups = Vec::new();
                while k < hi && units[k].0 == file {
                    groups.push(units[k].1);
                    k += 1;
                }
                batches.extend(read_row_groups(&paths[file], Some(groups))?.into_batches());
            }
            Table::try_new(Arc::clone(&schema), batches)
        };
        let part = agree(c, OP, read())?;
        DistTable::new(part, comm)
    }

    /// Writes this rank's partition to `dir/part-NNNNN.parquet`; returns the path.
    pub fn write_parquet_per_rank(&self, dir: &Path) -> Result<PathBuf> {
        std::fs::create_dir_all(dir).ctx(&format!("creating {}", dir.display()))?;
        let p = part_path(dir, self.rank(), "parquet");
        write_parquet(self.partition(), &p)?;
        Ok(p)
    }

    /// Gathers the table to `root`, which writes it to `path`. Collective.
    pub fn write_parquet_gathered(&self, path: &Path, root: usize) -> Result<()> {
        if let Some(t) = self.gather(root)? {
            write_parquet(&t, path)?;
        }
        Ok(())
    }
}
