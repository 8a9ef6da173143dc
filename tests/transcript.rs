//! Transcripts: what `run`, `chat` and `agent` write with `--transcript`
//! replays bit-exact (`decache replay`), decaching included; a corrupted
//! line is an error naming it, a torn last line is reported and left out;
//! and a writer killed with SIGKILL mid-generation leaves a transcript that
//! is intact up to its last flushed line and replays.
mod common;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn decache(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_decache")).args(args).output().expect("run decache")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn replay(t: &Path) -> Output {
    decache(&["replay", t.to_str().unwrap()])
}

fn lines(t: &Path) -> Vec<String> {
    std::fs::read_to_string(t).unwrap().lines().map(str::to_string).collect()
}

#[test]
fn run_chat_and_agent_transcripts_replay_bit_exact() {
    let m = common::smollm2();
    let m = m.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();

    let t = dir.path().join("run.jsonl");
    let o = decache(&[
        "run",
        "-m",
        m,
        "-p",
        "Write a haiku about the sea",
        "-n",
        "32",
        "--ignore-eos",
        "--temp",
        "0.8",
        "-t",
        "2",
        "--transcript",
        t.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let r = replay(&t);
    assert!(r.status.success() && text(&r).contains("32 tokens, all bit-exact"), "{}", text(&r));

    // A chat through a small cache: replies sampled with a random seed, and
    // decaching (seven long questions and their replies pass 90% of 320 cells).
    let t = dir.path().join("chat.jsonl");
    let mut child = Command::new(env!("CARGO_BIN_EXE_decache"))
        .args([
            "chat",
            "-m",
            m,
            "-c",
            "320",
            "-t",
            "2",
            "-n",
            "48",
            "--temp",
            "0.7",
            "--transcript",
            t.to_str().unwrap(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        for i in 1..=7 {
            writeln!(stdin, "Tell me something about the number {i}, in detail, with one example from history, one from science and one from art.").unwrap();
        }
        writeln!(stdin, "/exit").unwrap();
    }
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let l = lines(&t);
    assert!(
        l[1].contains("\"note\":\"settings\"") && l[1].contains("\"decache_at\""),
        "the chat's decache settings come first: {}",
        l[1]
    );
    let removes = l.iter().filter(|l| l.contains("\"type\":\"remove\"")).count();
    let reasons = l.iter().filter(|l| l.contains("\"note\":\"decache\"") && l.contains("\"reason\"")).count();
    assert!(removes > 0 && reasons == removes, "{removes} removals, {reasons} decache notes with a reason");
    let r = replay(&t);
    assert!(
        r.status.success() && text(&r).contains("7 generations") && text(&r).contains("all bit-exact"),
        "{}",
        text(&r)
    );

    // The agent, with a scripted model and a real command.
    let root = dir.path().join("proj");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("a.txt"), "alpha\nbeta\n").unwrap();
    let script = dir.path().join("s.txt");
    std::fs::write(&script, "<tool_call>\n{\"name\": \"read_file\", \"arguments\": {\"path\": \"a.txt\"}}\n</tool_call>\n---\nIt has two lines.\n").unwrap();
    let t = dir.path().join("agent.jsonl");
    let o = decache(&[
        "agent",
        root.to_str().unwrap(),
        "-m",
        m,
        "-c",
        "2048",
        "-t",
        "2",
        "--script",
        script.to_str().unwrap(),
        "-p",
        "Read a.txt",
        "--transcript",
        t.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let r = replay(&t);
    assert!(r.status.success() && text(&r).contains("all bit-exact"), "{}", text(&r));
    assert!(
        lines(&t).iter().any(|l| l.contains("\"note\":\"segment\"") && l.contains("FileRead")),
        "segments are annotated"
    );

    // Corrupted inside: an error naming the line. Torn at the end: reported, left out.
    let l = lines(&t);
    let mut bad = l.clone();
    bad[3] = "{\"type\": \"eval\", \"tokens\": [1, 2".into();
    let tb = dir.path().join("bad.jsonl");
    std::fs::write(&tb, bad.join("\n") + "\n").unwrap();
    let r = replay(&tb);
    assert!(!r.status.success() && text(&r).contains("bad.jsonl line 4: not JSON"), "{}", text(&r));
    let mut wrong = l.clone();
    wrong[2] = "{\"type\": \"remove\", \"p0\": 5, \"policy\": \"keep\"}".into();
    std::fs::write(&tb, wrong.join("\n") + "\n").unwrap();
    let r = replay(&tb);
    assert!(!r.status.success() && text(&r).contains("line 3: 'remove' needs \"p1\""), "{}", text(&r));
    let all = std::fs::read_to_string(&t).unwrap();
    std::fs::write(&tb, &all[..all.len() - 7]).unwrap();
    let r = replay(&tb);
    assert!(text(&r).contains("last line was cut short"), "{}", text(&r));
}

#[test]
fn a_writer_killed_mid_generation_leaves_a_replayable_transcript() {
    let m = common::smollm2();
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("killed.jsonl");
    let mut child = Command::new(env!("CARGO_BIN_EXE_decache"))
        .args([
            "run",
            "-m",
            m.to_str().unwrap(),
            "-p",
            "Once upon a time",
            "-n",
            "3000",
            "--ignore-eos",
            "--temp",
            "0.9",
            "-c",
            "4096",
            "-t",
            "2",
        ])
        .args(["--transcript", t.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while std::fs::read_to_string(&t).map_or(0, |s| s.matches("\"type\":\"token\"").count()) < 60 {
        assert!(t0.elapsed() < Duration::from_secs(120), "the transcript did not grow");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let s = std::fs::read_to_string(&t).unwrap();
    let tokens = s.matches("\"type\":\"token\"").count();
    assert!(!s.contains("generate_end"), "the generation was still running");
    let r = replay(&t);
    let out = text(&r);
    assert!(r.status.success(), "{out}");
    let replayed: usize = out
        .split(" tokens, all bit-exact")
        .next()
        .and_then(|p| p.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    eprintln!("killed after {tokens} token lines; replayed {replayed} tokens bit-exact");
    assert!(replayed + 1 >= tokens && replayed >= 60, "{out}");
}

#[test]
fn shipped_transcripts_replay_bit_exact() {
    // Made with the commands in docs/transcript.md ("Shipped transcripts").
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/transcripts");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()).collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    // Bit-exact needs the kernels of the recording: they were made on a CPU
    // whose Q4_1 weights run in ggml-cpu's AMX layout. On another CPU (an
    // AMD Zen 4 without AMX: the sums round differently) each must still
    // replay to the end, every op applied, with the recorded tokens fed back,
    // and the model must pick most of them (77-89% there).
    let same_kernels = decache::ggml::CpuDevice::get().extra_buffer_types().iter().any(|b| b.name().contains("AMX"));
    let mut generations = 0;
    for f in &files {
        let r = if same_kernels { replay(f) } else { decache(&["replay", "--agreement", f.to_str().unwrap()]) };
        let out = text(&r);
        eprintln!("{}: {}", f.file_name().unwrap().to_string_lossy(), out.trim());
        assert!(r.status.success(), "{}: {out}", f.display());
        if same_kernels {
            assert!(out.contains("all bit-exact"), "{}: {out}", f.display());
        } else {
            let share: f64 =
                out.split("% sampled").next().and_then(|p| p.rsplit(' ').next()).and_then(|n| n.parse().ok()).unwrap();
            assert!(out.contains(" 0 tokens") || share >= 70.0, "{}: {out}", f.display());
        }
        generations += out
            .split(" generations")
            .next()
            .and_then(|p| p.rsplit(' ').next())
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap();
    }
    assert!(generations >= 7, "the shipped transcripts hold sampled generations ({generations})");
    let chat = std::fs::read_to_string(dir.join("chat-decaching.jsonl")).unwrap();
    assert!(
        chat.contains("\"type\":\"remove\"") && chat.contains("\"note\":\"decache\""),
        "the chat transcript decaches"
    );
}

/// A copy of the model with every f32 norm weight bent (±20%) by a fixed pattern
/// and its name changed (so its fingerprint differs): another model with
/// the same vocabulary.
fn perturbed_copy(m: &Path, to: &Path) {
    let g = decache::gguf::GgufFile::open(m, false).unwrap();
    let mut bytes = std::fs::read(m).unwrap();
    let mut bent = 0;
    for t in g.tensors.iter().filter(|t| t.name.ends_with("norm.weight") && t.typ == decache::ggml::GgmlType::F32) {
        for i in 0..t.n_elements() as usize {
            let at = t.offset as usize + 4 * i;
            let w = f32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
            let w = w * (1.0 + 0.2 * ((i * 7 + bent) as f32).sin());
            bytes[at..at + 4].copy_from_slice(&w.to_le_bytes());
        }
        bent += 1;
    }
    assert!(bent > 10, "norm tensors found: {bent}");
    // A new name (same length): the file's identity changes, its layout not.
    // A GGUF string value follows its key as a u32 type and a u64 length.
    let key = b"general.name";
    let at = bytes[..1 << 20].windows(key.len()).position(|w| w == key).expect("the general.name key") + key.len() + 12;
    bytes[at] = if bytes[at] == b'X' { b'Y' } else { b'X' };
    std::fs::write(to, bytes).unwrap();
}

#[test]
fn replay_on_another_model_reports_agreement() {
    let m = common::smollm2();
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("greedy.jsonl");
    let o = decache(&[
        "run",
        "-m",
        m.to_str().unwrap(),
        "-p",
        "The three primary colors are",
        "-n",
        "40",
        "--temp",
        "0",
        "--ignore-eos",
        "-t",
        "2",
        "--transcript",
        t.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));

    // The same model, fed its own tokens: every one agrees.
    let r = decache(&["replay", t.to_str().unwrap(), "--agreement"]);
    let out = text(&r);
    eprintln!("same model: {}", out.trim());
    assert!(
        r.status.success() && out.contains("40 tokens; agreement 100.0% sampled (40 of 40), 100.0% top-1"),
        "{out}"
    );

    // Another model: agreement is measured over all 40 tokens, not stopped at the first difference.
    let other = dir.path().join("bent.gguf");
    perturbed_copy(&m, &other);
    let r = decache(&["replay", t.to_str().unwrap(), "-m", other.to_str().unwrap()]);
    let out = text(&r);
    eprintln!("bent model: {}", out.trim());
    assert!(r.status.success() && out.contains("not the transcript's model"), "{out}");
    let rate: f64 =
        out.split("agreement ").nth(1).and_then(|s| s.split('%').next()).and_then(|s| s.parse().ok()).expect("a rate");
    assert!(out.contains("40 tokens;") && rate < 100.0 && rate > 0.0, "{out}");
}
