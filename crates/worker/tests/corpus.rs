//! Replay the parser fuzz corpus through the parser's invariant checks: what
//! CI runs instead of a fuzzing session. tests/corpus/ holds hand-written
//! seeds (replayed with every truncation and a few byte substitutions each),
//! tests/corpus/fuzz/ the minimized corpus of a cargo-fuzz run (replayed as
//! is).

use std::path::Path;

use ferrocorn_worker::parse::fuzz_one;

#[test]
fn corpus_replays_without_panics() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files = 0;
    let mut runs = 0;
    for entry in std::fs::read_dir(dir.join("fuzz")).unwrap() {
        fuzz_one(&std::fs::read(entry.unwrap().path()).unwrap());
        runs += 1;
    }
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            continue;
        }
        let data = std::fs::read(path).unwrap();
        files += 1;
        fuzz_one(&data);
        for end in 0..data.len() {
            fuzz_one(&data[..end]);
            runs += 1;
        }
        let mut mutated = data.clone();
        for i in 0..data.len() {
            for b in [b'\r', b'\n', b' ', b':', b'0', 0u8, 0xff] {
                mutated[i] = b;
                fuzz_one(&mutated);
                runs += 1;
            }
            mutated[i] = data[i];
        }
    }
    assert!(files >= 50, "corpus too small: {files} files");
    eprintln!("{files} corpus files, {runs} runs");
}
