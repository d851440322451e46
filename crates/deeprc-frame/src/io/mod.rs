//! Reading and writing tables: CSV (and ETTh1), Parquet, CAMELS-US.
//!
//! Distributed readers give each rank its share: whole files when there are
//! at least as many files as ranks, otherwise byte ranges of a CSV file (cut
//! at line ends) or row groups of a Parquet file. Writers write one file per
//! rank or gather to one file.
//!
//! The real data sets live outside the repository, in the folder named by
//! `DEEPRC_DATA` (default `../shared/data`, relative to the working
//! directory; see [`data_dir`]).

pub mod camels;
pub mod csv;
pub mod parquet;

use crate::error::{FrameError, Result};
use std::path::{Path, PathBuf};

pub use self::csv::{read_csv, read_etth1, write_csv, CsvOptions};
pub use self::parquet::{read_parquet, write_parquet};
pub use camels::{read_forcing, read_streamflow, CamelsKind};

/// The data folder: `$DEEPRC_DATA`, or `../shared/data`.
pub fn data_dir() -> PathBuf {
    std::env::var_os("DEEPRC_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../shared/data"))
}

/// Fails with [`FrameError::DataMissing`] when `path` does not exist.
pub fn require(path: &Path, expected: &str) -> Result<()> {
    if path.exists() {
        Ok(())
    } else {
        Err(FrameError::DataMissing {
            path: path.to_path_buf(),
            expected: format!(
                "{expected} (set DEEPRC_DATA to the data folder; default ../shared/data)"
            ),
        })
    }
}

/// How a distributed reader splits its inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Share {
    /// Whole files.
    Files(Vec<usize>),
    /// Part `part` of `parts` of one file.
    Piece {
        file: usize,
        part: usize,
        parts: usize,
    },
    /// Nothing.
    Nothing,
}

/// This rank's share of `files` inputs: contiguous blocks of files when
/// there are at least as many files as ranks; otherwise the ranks are split
/// over the files in blocks and each block splits its file.
pub(crate) fn share(files: usize, rank: usize, size: usize) -> Share {
    if files == 0 {
        return Share::Nothing;
    }
    if files >= size {
        let lo = rank * files / size;
        let hi = (rank + 1) * files / size;
        return Share::Files((lo..hi).collect());
    }
    // Ranks [f * size / files, (f + 1) * size / files) share file f.
    let file = (0..files)
        .find(|&f| rank < (f + 1) * size / files)
        .unwrap_or(files - 1);
    let first = file * size / files;
    let last = (file + 1) * size / files;
    Share::Piece {
        file,
        part: rank - first,
        parts: last - first,
    }
}

/// `path` with a per-rank file name: `dir/part-00003.ext`.
pub(crate) fn part_path(dir: &Path, rank: usize, ext: &str) -> PathBuf {
    dir.join(format!("part-{rank:05}.{ext}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_every_file_once() {
        for files in 0..6 {
            for size in 1..8 {
                let mut seen = vec![0usize; files];
                for r in 0..size {
                    match share(files, r, size) {
                        Share::Files(f) => f.iter().for_each(|&i| seen[i] += 10),
                        Share::Piece { file, part, parts } => {
                            assert!(part < parts);
                            seen[file] += 1
                        }
                        Share::Nothing => assert_eq!(files, 0),
                    }
                }
                for s in seen {
                    assert!(s == 10 || (1..=size).contains(&s), "{files} {size} {s}");
                }
            }
        }
    }
}
