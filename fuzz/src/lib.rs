//! What the fuzz targets share: seeding an empty corpus.

/// Writes `seeds` into the corpus directory libFuzzer was given (the first
/// argument that is a directory) when it is empty: the targets start from
/// inputs made by the current encoders, so the seeds never go stale.
pub fn seed_corpus(seeds: Vec<Vec<u8>>) {
    let Some(dir) = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .map(std::path::PathBuf::from)
        .find(|p| p.is_dir())
    else {
        return;
    };
    let empty = std::fs::read_dir(&dir).map_or(false, |mut d| d.next().is_none());
    if empty {
        for (i, s) in seeds.iter().enumerate() {
            let _ = std::fs::write(dir.join(format!("seed-{i:03}")), s);
        }
    }
}
