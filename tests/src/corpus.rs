//! The kept corpus of the fuzz targets (`fuzz/corpus/<target>/`: the seeds and every input
//! a fuzzer ever crashed on), as the proptest twins use it in `cargo test`: the twins of the
//! IPC library's targets (`tests/tests/twins.rs`) and those of acrnd's
//! (`acrnd/tests/it/twins.rs`). Each twin names its corpus directory relative to its own
//! `CARGO_MANIFEST_DIR`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Every file of the corpus directory `dir` with its bytes, sorted by path.
///
/// # Panics
///
/// If `dir` or one of its files cannot be read: a twin must not pass on a corpus it did
/// not read.
pub fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<(PathBuf, Vec<u8>)> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let path = e.expect("a directory entry").path();
            let bytes = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path, bytes)
        })
        .collect();
    files.sort();
    files
}

/// The seed files (`seed-<name>` in `dir`) that are missing or hold other bytes than
/// `seeds` (name → bytes). With `write`, `dir` is created and every seed written first, so
/// nothing is missing afterwards.
///
/// # Panics
///
/// With `write`, if `dir` cannot be created or a seed cannot be written.
pub fn stale_seeds(dir: &Path, seeds: &BTreeMap<String, Vec<u8>>, write: bool) -> Vec<PathBuf> {
    if write {
        fs::create_dir_all(dir).expect("create the corpus dir");
    }
    let mut stale = Vec::new();
    for (name, bytes) in seeds {
        let path = dir.join(format!("seed-{name}"));
        if write {
            fs::write(&path, bytes).expect("write a seed");
        }
        if fs::read(&path).ok().as_ref() != Some(bytes) {
            stale.push(path);
        }
    }
    stale
}

/// One edit of a seed, as the twins' mutation strategy draws it. `pick` chooses an index
/// in `0..n` for `n` = the current length + 1; `how` 0 overwrites the byte there with
/// `byte`, 1 inserts `byte` there, 2 cuts the input there; an overwrite or a cut at the
/// end appends `byte` instead.
pub fn edit(bytes: &mut Vec<u8>, pick: impl FnOnce(usize) -> usize, byte: u8, how: u8) {
    let i = pick(bytes.len() + 1);
    match how {
        0 if i < bytes.len() => bytes[i] = byte,
        1 => bytes.insert(i, byte),
        _ if i < bytes.len() => bytes.truncate(i),
        _ => bytes.push(byte),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_overwrite_insert_cut_or_append() {
        let mut b = vec![1, 2, 3];
        edit(&mut b, |_| 1, 9, 0);
        assert_eq!(b, [1, 9, 3]);
        edit(&mut b, |n| n - 1, 7, 1);
        assert_eq!(b, [1, 9, 3, 7], "insert at the end");
        edit(&mut b, |_| 2, 0, 2);
        assert_eq!(b, [1, 9]);
        edit(&mut b, |n| n - 1, 5, 0);
        assert_eq!(b, [1, 9, 5], "an overwrite at the end appends");
        edit(&mut b, |n| n - 1, 6, 2);
        assert_eq!(b, [1, 9, 5, 6], "a cut at the end appends");
    }

    #[test]
    fn seeds_are_written_then_current() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let corpus = dir.path().join("t");
        let seeds = BTreeMap::from([("a".to_owned(), vec![1u8]), ("b".to_owned(), vec![])]);
        assert_eq!(stale_seeds(&corpus, &seeds, false).len(), 2);
        assert!(stale_seeds(&corpus, &seeds, true).is_empty());
        assert!(stale_seeds(&corpus, &seeds, false).is_empty());
        fs::write(corpus.join("seed-a"), [2u8]).expect("overwrite");
        assert_eq!(stale_seeds(&corpus, &seeds, false), [corpus.join("seed-a")]);
        assert_eq!(files(&corpus).len(), 2);
    }
}
