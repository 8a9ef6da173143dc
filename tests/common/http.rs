//! A `decache serve` child process on a free port, and a bare HTTP/1.1
//! client over TcpStream (so tests can send anything, malformed included).
#![allow(dead_code)]
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    child: Child,
    pub addr: String,
    /// Every line the server wrote to stderr so far (its access log included).
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    /// Start `decache serve --port 0 ARGS` and wait until /health says ok.
    pub fn start(args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_decache"))
            .arg("serve")
            .args(["--port", "0"])
            .args(args)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start decache serve");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line.clone());
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
                }
                if std::env::var_os("SERVER_LOG").is_some() {
                    eprintln!("[server] {line}");
                }
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(120)).expect("the server did not start listening");
        let s = Server { child, addr, log };
        let t0 = Instant::now();
        loop {
            if s.get("/health").0 == 200 {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(120), "the model did not load");
            std::thread::sleep(Duration::from_millis(100));
        }
        s
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        let r = request(&self.addr, "GET", path, &[], b"");
        (r.status, r.body)
    }

    pub fn post(&self, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        let r = request(&self.addr, "POST", path, &[("content-type", "application/json")], body.to_string().as_bytes());
        let v = serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {}", r.body));
        (r.status, v)
    }

    /// The server's stderr lines so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `decache replay TRANSCRIPT`: whether it succeeded, and what it printed.
pub fn replay(transcript: &std::path::Path) -> (bool, String) {
    let o =
        Command::new(env!("CARGO_BIN_EXE_decache")).arg("replay").arg(transcript).output().expect("run decache replay");
    let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    eprintln!("{}", out.trim());
    (o.status.success(), out)
}

pub struct Reply {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

/// One request on a fresh connection (`Connection: close`); a chunked body is de-chunked.
pub fn request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut raw =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    raw.push_str("\r\n");
    let mut bytes = raw.into_bytes();
    bytes.extend_from_slice(body);
    send_raw(addr, &bytes)
}

/// Send raw bytes and read the whole response.
pub fn send_raw(addr: &str, bytes: &[u8]) -> Reply {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
    s.write_all(bytes).expect("send");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    parse(out)
}

/// A POST whose response is read as it comes (a stream of events): wait
/// for some of it, do something else, then read the rest.
pub struct Streaming {
    s: TcpStream,
    out: Vec<u8>,
}

impl Streaming {
    pub fn post(addr: &str, path: &str, body: &serde_json::Value) -> Streaming {
        let body = body.to_string();
        let raw = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\ncontent-type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
        s.write_all(raw.as_bytes()).expect("send");
        Streaming { s, out: Vec::new() }
    }

    /// Read until `marker` has come `times` times (or the response ended).
    pub fn wait_for(&mut self, marker: &str, times: usize) {
        let mut buf = [0u8; 4096];
        while self.out.windows(marker.len()).filter(|w| *w == marker.as_bytes()).count() < times {
            match self.s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => self.out.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// The whole response.
    pub fn finish(mut self) -> Reply {
        let _ = self.s.read_to_end(&mut self.out);
        parse(self.out)
    }
}

fn parse(out: Vec<u8>) -> Reply {
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(out.len());
    let head = String::from_utf8_lossy(&out[..split]).into_owned();
    let raw_body = out.get(split + 4..).unwrap_or(&[]);
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(raw_body)
    } else {
        raw_body.to_vec()
    };
    Reply { status, headers: head, body: String::from_utf8_lossy(&body).into_owned() }
}

fn dechunk(mut s: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = s.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(String::from_utf8_lossy(&s[..eol]).trim(), 16).unwrap_or(0);
        let rest = &s[eol + 2..];
        if n == 0 || rest.len() < n {
            break;
        }
        out.extend_from_slice(&rest[..n]);
        s = rest[n..].strip_prefix(b"\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// The `data:` payloads of a server-sent event stream.
pub fn sse_data(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
        .map(str::to_string)
        .collect()
}
