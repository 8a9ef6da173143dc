//! The `decache` binary as a user drives it: seeded sampling is reproducible,
//! bad input gets one clear line and a non-zero exit, `info` and `tokenize`
//! report what the model is.
mod common;
use std::process::{Command, Output};

fn decache(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_decache")).args(args).output().expect("run decache")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn the_same_seed_gives_the_same_text() {
    let m = common::smollm2();
    let m = m.to_str().unwrap();
    let run = |seed: &str| {
        let o = decache(&[
            "run",
            "-m",
            m,
            "--raw",
            "-p",
            "Once upon a time",
            "-n",
            "32",
            "--temp",
            "0.9",
            "-s",
            seed,
            "-t",
            "2",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
    };
    let a = run("42");
    assert!(a.trim().len() > 20, "too little text generated: {a:?}");
    assert_eq!(a, run("42"), "seed 42 gave two different texts");
    assert_ne!(a, run("7"), "seeds 42 and 7 gave the same 32 sampled tokens");
    let err = stderr(&decache(&["run", "-m", m, "--raw", "-p", "hi", "-n", "4", "-t", "2"]));
    assert!(err.contains("tokens per second"), "timings missing from stderr: {err}");
}

#[test]
fn bad_input_gets_a_clear_error_and_a_nonzero_exit() {
    let m = common::smollm2();
    let m = m.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let latin1 = dir.path().join("latin1.txt");
    std::fs::write(&latin1, b"caf\xe9 au lait").unwrap();
    let missing = dir.path().join("missing.txt");
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (vec!["run", "-m", m, "-f", latin1.to_str().unwrap()], vec!["latin1.txt", "not valid UTF-8", "offset 3"]),
        (vec!["run", "-m", m, "-f", missing.to_str().unwrap()], vec!["missing.txt"]),
        (vec!["run", "-m", m, "-p", "hi", "-ctv", "q8_0", "-fa", "off"], vec!["-ctv q8_0", "flash attention"]),
        (vec!["run", "-m", m, "-p", "hi", "-ctk", "q3_k"], vec!["-ctk", "supported cache types"]),
        (vec!["run", "-m", m, "-p", "hi", "--top-p", "1.5"], vec!["top_p"]),
        (vec!["run", "-m", m, "-p", "hi", "-t", "0"], vec!["-t 0"]),
        (vec!["run", "-m", m, "-p", "hi", "--spec", "maybe"], vec!["--spec maybe", "off, on or auto"]),
        (vec!["run", "-m", m, "-p", "hi", "--spec", "on", "--draft-max", "0"], vec!["--draft-max 0"]),
        (vec!["run", "-m", m, "-p", "hi", "--spec-ngram-size-n", "0"], vec!["--spec-ngram-size-n 0"]),
        (vec!["run", "-m", m], vec!["no prompt"]),
        // 16M cells of SmolLM2 would take 368 GB: refused before allocating, with the figure.
        (
            vec!["run", "-m", m, "-p", "hi", "-c", "16000000"],
            vec!["16000000 cells needs", "MiB for its KV cache", "lower -c"],
        ),
        (vec!["info", dir.path().to_str().unwrap()], vec!["is a directory"]),
    ];
    for (args, keywords) in cases {
        let o = decache(&args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?} should fail with exit 1: {err}");
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
        for k in keywords {
            assert!(err.contains(k), "{args:?}: error does not mention {k:?}: {err}");
        }
    }
}

#[test]
fn info_and_tokenize_describe_the_model() {
    let m = common::smollm2();
    let m = m.to_str().unwrap();
    let info = stdout(&decache(&["info", m]));
    for k in [
        "architecture:    llama",
        "134.52 M",
        "file type:       Q4_1",
        "context length:  8192",
        "gpt2 BPE (pre: smollm)",
        "<|im_start|>",
    ] {
        assert!(info.contains(k), "info lacks {k:?}:\n{info}");
    }
    let o = decache(&["tokenize", "-m", m, "-p", "<|im_start|>user\nHello world", "--ids"]);
    assert_eq!(stdout(&o).trim(), "[1, 4093, 198, 19556, 905]", "{}", stderr(&o));
    let o = decache(&["tokenize", "-m", m, "-p", "<|im_start|>", "--ids", "--no-parse-special"]);
    assert_ne!(stdout(&o).trim(), "[1]", "special text must be plain text with --no-parse-special");
}

/// `-f FILE` reads the file without one trailing newline, as llama.cpp's
/// tools do: a file saved by an editor gives the tokens of its text.
#[test]
fn a_prompt_file_loses_one_trailing_newline() {
    let m = common::smollm2();
    let m = m.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ids = |args: &[&str]| {
        let o = decache(&[&["tokenize", "-m", m, "--ids"], args].concat());
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o).trim().to_string()
    };
    for (text, as_if) in [("Hello world\n", "Hello world"), ("Hello world\n\n", "Hello world\n"), ("Hello", "Hello")] {
        let f = dir.path().join("prompt.txt");
        std::fs::write(&f, text).unwrap();
        assert_eq!(ids(&["-f", f.to_str().unwrap()]), ids(&["-p", as_if]), "-f with {text:?}");
    }
    assert_ne!(ids(&["-p", "Hello world\n"]), ids(&["-p", "Hello world"]), "the newline is a token of its own");
}

#[test]
fn a_context_past_the_trained_one_warns() {
    let m = common::smollm2();
    let o = decache(&["run", "-m", m.to_str().unwrap(), "-p", "hi", "-n", "1", "-c", "9000", "-t", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("warning: -c 9000 is beyond the 8192 positions this model was trained on"),
        "{}",
        stderr(&o)
    );
    let o = decache(&["run", "-m", m.to_str().unwrap(), "-p", "hi", "-n", "1", "-c", "4096", "-t", "2"]);
    assert!(o.status.success() && !stderr(&o).contains("warning: -c"), "{}", stderr(&o));
}
