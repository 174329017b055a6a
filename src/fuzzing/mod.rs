//! Fuzz targets: one plain function per target, each taking the fuzzer's bytes, calling the real
//! code and asserting what must hold for every input — not only that nothing panics.
//!
//! Each invariant is checked against a small reference written here, independently of the code
//! under test. The cargo-fuzz crate in `fuzz/` wraps each function in a `fuzz_target!`
//! (`scripts/fuzz-check` builds them and replays the corpus), and the unit test at the bottom
//! replays the committed corpus `fuzz/corpus/<target>/` on the stable toolchain. Never called
//! by the sidecar itself; hidden from the docs.

mod cookie;
mod dotenv;
mod header_fold;
mod jwt;
mod paths;

pub use cookie::cookie;
pub use dotenv::dotenv;
pub use header_fold::header_fold;
pub use jwt::jwt;
pub use paths::{next, path};

/// A fuzz target: the fuzzer's bytes in, a panic when an invariant breaks.
pub type Target = fn(&[u8]);

/// Every target, by the name of its corpus directory and its `fuzz_targets/<name>.rs`.
pub const TARGETS: &[(&str, Target)] = &[
    ("cookie", cookie),
    ("next", next),
    ("path", path),
    ("jwt", jwt),
    ("dotenv", dotenv),
    ("header_fold", header_fold),
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Every file of the committed corpus, through its target, on the stable toolchain; every
    /// failing file is named.
    #[test]
    fn the_committed_fuzz_corpus_replays() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        let mut failures = Vec::new();
        for (name, target) in TARGETS {
            let dir = root.join(name);
            let files: Vec<_> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("corpus directory {}: {e}", dir.display()))
                .map(|e| e.unwrap().path())
                .filter(|p| p.is_file())
                .collect();
            assert!(
                !files.is_empty(),
                "corpus directory {} is empty",
                dir.display()
            );
            for f in files {
                let data = match std::fs::read(&f) {
                    Ok(data) => data,
                    // A fuzzer running beside the test replaces files as it reduces them.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => panic!("{}: {e}", f.display()),
                };
                if let Err(e) = std::panic::catch_unwind(|| target(&data)) {
                    let why = e
                        .downcast_ref::<String>()
                        .map(String::as_str)
                        .or_else(|| e.downcast_ref::<&str>().copied())
                        .unwrap_or("panic");
                    failures.push(format!("{}: {why}", f.display()));
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        for entry in std::fs::read_dir(&root).unwrap() {
            let name = entry.unwrap().file_name();
            let name = name.to_string_lossy();
            assert!(
                TARGETS.iter().any(|(t, _)| *t == name),
                "fuzz/corpus/{name} has no target"
            );
        }
    }
}
