//! Real agent harnesses against `decache serve`: Claude Code, Codex,
//! opencode, Qwen Code and aider, each installed at a pinned version by
//! `make clients` (which `make test` runs), each pointed at the server as
//! the README says, each doing the same task in a fixture folder: read
//! `notes.txt`, change `count = 1` to `count = 2`, run `cat notes.txt`, and
//! answer. The model is scripted (`serve --script`): the replies and tool
//! calls come from tests/clients/scripts/CLIENT.txt, every token through the
//! cache, on the tiny random-weight model with SmolLM2's vocabulary, so a
//! harness's 10k–20k-token prompt costs seconds.
//!
//! Checked: the harness exits 0 and says `count = 2`, the file is really
//! edited, every request it made got a 2xx (the server's access log), and
//! every turn after the first prefilled fewer tokens than the turn's new
//! text plus 64 (a table per client in the output). A turn's new text is
//! counted from what the client sent (`--record-requests`): the tokens of
//! its prompt that are not the previous turn's prompt and reply in the same
//! order (the longest common subsequence), so text the client changed or
//! moved is new where it now stands.
//!
//! `DECACHE_CLIENTS_MODEL=smollm2` runs the same harnesses on the real
//! SmolLM2 model without a script (`make clients-smollm2`): then each
//! harness's first request must be accepted and answered, and the run is
//! stopped there (a 135M model does not finish the task).
mod common;
#[path = "common/http.rs"]
mod http;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A client's program, from `make clients`.
fn installed(rel: &str) -> PathBuf {
    let p = root().join("target/clients").join(rel);
    assert!(p.exists(), "{} is missing: run `make clients` (make test does)", p.display());
    p
}

const TASK: &str = "Read notes.txt, change count = 1 to count = 2, run `cat notes.txt`, and tell me the result";

fn real_model() -> bool {
    std::env::var("DECACHE_CLIENTS_MODEL").is_ok_and(|m| m == "smollm2")
}

/// One request as the slot's transcript tells it.
#[derive(Debug, Default, Clone)]
struct Turn {
    prompt: usize,
    reused: usize,
    /// Cached tokens deleted to fit this request (text the client replaced, moved or dropped).
    removed: usize,
    /// The reply's tokens.
    reply: Vec<u32>,
}

/// The requests of a slot's transcript, in order.
fn turns(transcripts: &Path) -> Vec<Turn> {
    let mut out: Vec<Turn> = Vec::new();
    for f in std::fs::read_dir(transcripts).unwrap().flatten() {
        for line in std::fs::read_to_string(f.path()).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            match (v["type"].as_str(), v["note"].as_str()) {
                (Some("note"), Some("request")) => out.push(Turn {
                    prompt: v["prompt_tokens"].as_u64().unwrap() as usize,
                    reused: v["reused"].as_u64().unwrap() as usize,
                    removed: v["removed"].as_u64().unwrap() as usize,
                    reply: Vec::new(),
                }),
                (Some("token"), _) => out.last_mut().unwrap().reply.push(v["id"].as_u64().unwrap() as u32),
                _ => {}
            }
        }
    }
    out
}

/// Requests shorter than this are a harness's side requests (a title), not
/// turns of its conversation: every harness's main system prompt is longer.
const SIDE_REQUEST_TOKENS: usize = 1500;

/// The length of the longest common subsequence of `a` and `b` (Myers'
/// diff: time grows with the number of differences, few between turns).
fn lcs(a: &[u32], b: &[u32]) -> usize {
    let (n, m) = (a.len() as isize, b.len() as isize);
    let off = n + m + 1;
    let mut v = vec![0isize; 2 * off as usize + 1];
    for d in 0..=n + m {
        for k in (-d..=d).step_by(2) {
            let at = |k: isize| (k + off) as usize;
            let mut x =
                if k == -d || (k != d && v[at(k - 1)] < v[at(k + 1)]) { v[at(k + 1)] } else { v[at(k - 1)] + 1 };
            let mut y = x - k;
            while x < n && y < m && a[x as usize] == b[y as usize] {
                (x, y) = (x + 1, y + 1);
            }
            v[at(k)] = x;
            if x >= n && y >= m {
                return ((n + m - d) / 2) as usize;
            }
        }
    }
    0
}

/// The prompt tokens each recorded generation request renders to, in order.
fn recorded_prompts(s: &http::Server, dir: &Path) -> Vec<Vec<u32>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().flatten().map(|e| e.path()).collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let rec: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        let path = rec["path"].as_str().unwrap().split('?').next().unwrap().to_string();
        let render = match path.as_str() {
            "/v1/messages" => "/v1/messages/apply-template",
            "/v1/chat/completions" | "/v1/responses" => "/apply-template",
            _ => continue,
        };
        let (st, v) = s.post(render, &rec["body"]);
        assert_eq!(st, 200, "{render} of {}: {v}", f.display());
        let ask = serde_json::json!({"content": v["prompt"], "add_special": false, "parse_special": true});
        let (_, t) = s.post("/tokenize", &ask);
        out.push(t["tokens"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect());
    }
    out
}

/// The first answered turn of the client's main loop (side requests are
/// shorter; a request the client gave up on has no reply).
fn first_main(turns: &[Turn]) -> Option<&Turn> {
    turns.iter().find(|t| t.prompt >= SIDE_REQUEST_TOKENS && !t.reply.is_empty())
}

/// Print the table of prefilled tokens per turn; check each turn after the
/// first prefilled fewer than its new text plus 64. (aider moves its ~800
/// tokens of rules from its first request's last message to the end of
/// the next one: the server's heaviest-chain matcher keeps them and
/// evaluates what now comes before them in place.)
fn check_turns(client: &str, turns: &[Turn], prompts: &[Vec<u32>]) {
    let main: Vec<&Turn> = turns.iter().filter(|t| t.prompt >= SIDE_REQUEST_TOKENS).collect();
    // Each turn's prompt, found among the recorded requests by its length.
    let mut unused: Vec<&Vec<u32>> = prompts.iter().collect();
    let tokens: Vec<&Vec<u32>> = main
        .iter()
        .map(|t| {
            let i = unused
                .iter()
                .position(|p| p.len() == t.prompt)
                .unwrap_or_else(|| panic!("{client}: no recorded request renders to {} tokens", t.prompt));
            unused.remove(i)
        })
        .collect();
    eprintln!("\n{client}: prefilled tokens per turn ({} side requests left out)", turns.len() - main.len());
    eprintln!("| turn | prompt | reused | removed | prefilled | new text | limit |");
    eprintln!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (i, t) in main.iter().enumerate() {
        let prefilled = t.prompt - t.reused;
        let new = i.checked_sub(1).map(|p| {
            let before: Vec<u32> = tokens[p].iter().chain(&main[p].reply).copied().collect();
            t.prompt - lcs(&before, tokens[i])
        });
        let limit = new.map(|n| n + 64);
        let show = |v: Option<usize>| v.map_or("-".to_string(), |v| v.to_string());
        eprintln!(
            "| {} | {} | {} | {} | {prefilled} | {} | {} |",
            i + 1,
            t.prompt,
            t.reused,
            t.removed,
            show(new),
            show(limit)
        );
        if let Some(limit) = limit {
            assert!(prefilled < limit, "{client}: turn {} prefilled {prefilled} tokens, over its limit {limit}", i + 1);
        }
    }
    assert!(main.len() >= 2, "{client}: at least two turns of the conversation: {turns:?}");
}

/// The access log's requests: (method and path, status).
fn requests(log: &[String]) -> Vec<(String, u16)> {
    log.iter()
        .filter_map(|l| l.split("request: ").nth(1))
        // The test's own wait for the model to load.
        .filter(|r| !r.starts_with("GET /health"))
        .filter_map(|r| {
            let w: Vec<&str> = r.split_whitespace().collect();
            Some((format!("{} {}", w.first()?, w.get(1)?), w.get(2)?.parse().ok()?))
        })
        .collect()
}

struct Run {
    /// The client's command, with its environment (HOME and PATH are set here).
    cmd: Command,
    /// Requests the scripted task needs at least.
    min_requests: usize,
}

/// Start the server, run the client in a fresh fixture folder, check it all.
fn drive(client: &str, make: impl FnOnce(&Path, &Path, &str) -> Run) {
    let dir = tempfile::tempdir().unwrap();
    let (fix, home, tdir) = (dir.path().join("fx"), dir.path().join("home"), dir.path().join("transcripts"));
    let rdir = dir.path().join("requests");
    std::fs::create_dir_all(&fix).unwrap();
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(fix.join("notes.txt"), "count = 1\n").unwrap();
    let script_path = dir.path().join("script.txt");
    let template = std::fs::read_to_string(root().join(format!("tests/clients/scripts/{client}.txt"))).unwrap();
    std::fs::write(&script_path, template.replace("{FIX}", fix.to_str().unwrap())).unwrap();
    let model = if real_model() { common::smollm2() } else { common::tiny_smollm2() };
    let (model, script, tdir_s) =
        (model.display().to_string(), script_path.display().to_string(), tdir.display().to_string());
    let rdir_s = rdir.display().to_string();
    let mut args = vec!["-m", &model, "-c", "32768", "-t", "2", "--transcripts", &tdir_s, "--alias", "decache"];
    args.extend(["--record-requests", &rdir_s]);
    if real_model() {
        // A 135M model on a 20k-token prompt may ramble to the cap: keep
        // the answers short (the protocol is what is checked).
        args.extend(["-n", "256"]);
    } else {
        args.extend(["--script", &script]);
    }
    let s = http::Server::start(&args);
    let base = format!("http://{}", s.addr);
    let Run { mut cmd, min_requests } = make(&fix, &home, &base);
    cmd.current_dir(&fix).env("HOME", &home).env("TERM", "dumb").stdin(Stdio::null());
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    // The client's requests: the access log from here on (not the health checks).
    let skip = s.log().len();
    let t0 = Instant::now();
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{client}: cannot start: {e}"));
    let limit = Duration::from_secs(if real_model() { 1800 } else { 300 });
    let answered =
        |s: &http::Server| requests(&s.log()[skip..]).iter().any(|(r, st)| r.starts_with("POST") && *st < 300);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        // On the real model, stop at the first answer to the main loop (a
        // side request, opencode's title, may come first; the transcript has
        // its end).
        if real_model() && answered(&s) && first_main(&turns(&tdir)).is_some() {
            std::thread::sleep(Duration::from_secs(2));
            let _ = child.kill();
            break;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{client}: no end after {limit:?}\nstdout: {}\nstderr: {}\nserver: {:#?}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                s.log()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let reqs = requests(&s.log()[skip..]);
    eprintln!("{client}: {} requests in {:.1} s: {reqs:?}", reqs.len(), t0.elapsed().as_secs_f64());
    let show = || format!("stdout:\n{stdout}\nstderr:\n{stderr}\nserver log:\n{}", s.log().join("\n"));
    assert!(!reqs.is_empty(), "{client} made no request\n{}", show());
    for (r, status) in &reqs {
        assert!((200..300).contains(status), "{client}: {r} got {status}\n{}", show());
    }
    if real_model() {
        let t = turns(&tdir);
        let main = first_main(&t).unwrap_or_else(|| panic!("{client}: no answer to its main loop: {t:?}"));
        let all: Vec<(usize, usize)> = t.iter().map(|t| (t.prompt, t.reply.len())).collect();
        eprintln!(
            "{client} on SmolLM2: its main loop's first answer: {} prompt tokens, answered with {} tokens \
             (every generation, prompt and reply tokens: {all:?})",
            main.prompt,
            main.reply.len()
        );
        return;
    }
    assert!(out.status.success(), "{client} exited with {}\n{}", out.status, show());
    assert!(reqs.len() >= min_requests, "{client}: {} requests, the task needs {min_requests}\n{}", reqs.len(), show());
    let notes = std::fs::read_to_string(fix.join("notes.txt")).unwrap();
    assert_eq!(notes.trim(), "count = 2", "{client} did not edit the file\n{}", show());
    assert!(stdout.contains("count = 2"), "{client}'s answer\n{}", show());
    check_turns(client, &turns(&tdir), &recorded_prompts(&s, &rdir));
}

#[test]
fn the_diff_counts_what_is_new() {
    assert_eq!(lcs(&[1, 2, 3, 4], &[1, 3, 4, 5]), 3);
    assert_eq!(lcs(&[], &[1, 2]), 0);
    // Moved text is matched once, in order.
    assert_eq!(lcs(&[1, 2, 3, 7, 7, 7], &[1, 2, 9, 7, 7, 7, 3]), 5);
}

#[test]
fn claude_code() {
    drive("claude-code", |_, _, base| {
        let mut cmd = Command::new(installed("claude-code/node_modules/.bin/claude"));
        cmd.env_clear().env("PATH", "/usr/bin:/bin").env("IS_SANDBOX", "1");
        cmd.env("ANTHROPIC_BASE_URL", base).env("ANTHROPIC_API_KEY", "sk-local");
        for v in ["ANTHROPIC_MODEL", "ANTHROPIC_DEFAULT_HAIKU_MODEL", "ANTHROPIC_DEFAULT_SONNET_MODEL"] {
            cmd.env(v, "decache");
        }
        cmd.env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
            .env("CLAUDE_CODE_MAX_CONTEXT_TOKENS", "32768")
            .env("CLAUDE_CODE_MAX_OUTPUT_TOKENS", "4096");
        cmd.args(["-p", TASK, "--allowedTools", "Read,Edit,Write,Bash", "--permission-mode", "acceptEdits"]);
        Run { cmd, min_requests: 4 }
    });
}

#[test]
fn codex() {
    drive("codex", |fix, home, base| {
        let mut cmd = Command::new(installed("codex/node_modules/.bin/codex"));
        cmd.env_clear().env("PATH", "/usr/bin:/bin").env("CODEX_HOME", home.join("codex"));
        std::fs::create_dir_all(home.join("codex")).unwrap();
        let provider = format!(
            "model_providers.decache={{name=\"decache\",base_url=\"{base}/v1\",wire_api=\"responses\",request_max_retries=1,stream_max_retries=1}}"
        );
        cmd.args(["exec", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox", "-C"]).arg(fix);
        for c in ["model=\"decache\"", "model_provider=\"decache\"", &provider, "check_for_update_on_startup=false"] {
            cmd.args(["-c", c]);
        }
        cmd.args(["-c", "analytics.enabled=false", "-c", "features.plugins=false", TASK]);
        Run { cmd, min_requests: 4 }
    });
}

#[test]
fn opencode() {
    drive("opencode", |_, home, base| {
        let config = serde_json::json!({
            "$schema": "https://opencode.ai/config.json",
            "provider": {"decache": {
                "npm": "@ai-sdk/openai-compatible", "name": "decache",
                "options": {"baseURL": format!("{base}/v1"), "apiKey": "sk-local"},
                "models": {"decache": {"name": "decache", "limit": {"context": 32768, "output": 4096}}}
            }},
            "model": "decache/decache", "small_model": "decache/decache", "autoupdate": false, "share": "disabled"
        });
        let path = home.join("opencode.json");
        std::fs::write(&path, config.to_string()).unwrap();
        let mut cmd = Command::new(installed("opencode/node_modules/.bin/opencode"));
        cmd.env_clear().env("PATH", "/usr/bin:/bin").env("OPENCODE_CONFIG", &path);
        for v in [
            "OPENCODE_DISABLE_AUTOUPDATE",
            "OPENCODE_DISABLE_MODELS_FETCH",
            "OPENCODE_DISABLE_LSP_DOWNLOAD",
            "OPENCODE_DISABLE_DEFAULT_PLUGINS",
            "OPENCODE_DISABLE_SHARE",
            "OPENCODE_DISABLE_CLAUDE_CODE",
            "OPENCODE_DISABLE_EXTERNAL_SKILLS",
        ] {
            cmd.env(v, "1");
        }
        // Its background plugin install fails at once instead of waiting on the registry.
        cmd.env("npm_config_registry", "http://127.0.0.1:9/");
        cmd.args(["run", TASK]);
        Run { cmd, min_requests: 4 }
    });
}

#[test]
fn qwen_code() {
    drive("qwen-code", |_, home, base| {
        std::fs::create_dir_all(home.join(".qwen")).unwrap();
        let settings = serde_json::json!({
            "privacy": {"usageStatisticsEnabled": false}, "telemetry": {"enabled": false},
            "general": {"disableAutoUpdate": true, "disableUpdateNag": true},
            "security": {"auth": {"selectedType": "openai"}},
            "tools": {"shell": {"enableInteractiveShell": false}}
        });
        std::fs::write(home.join(".qwen/settings.json"), settings.to_string()).unwrap();
        let node22 = installed("node22/node_modules/.bin");
        let mut cmd = Command::new(installed("qwen-code/node_modules/.bin/qwen"));
        cmd.env_clear().env("PATH", format!("{}:/usr/bin:/bin", node22.display()));
        cmd.env("OPENAI_BASE_URL", format!("{base}/v1")).env("OPENAI_API_KEY", "sk-local");
        cmd.env("OPENAI_MODEL", "decache").env("QWEN_CODE_SUPPRESS_YOLO_WARNING", "1");
        // Its request timeout: a CPU prefill of its 18k-token prompt takes
        // minutes, and at its default it gives up and sends the request again.
        cmd.env("QWEN_CODE_API_TIMEOUT_MS", "1800000");
        cmd.args(["--yolo", "--auth-type", "openai", TASK]);
        Run { cmd, min_requests: 4 }
    });
}

#[test]
fn aider() {
    drive("aider", |_, home, base| {
        // A fresh (empty) price list, so aider does not fetch one; the model's window.
        std::fs::create_dir_all(home.join(".aider/caches")).unwrap();
        std::fs::write(home.join(".aider/caches/model_prices_and_context_window.json"), "{}").unwrap();
        let meta = serde_json::json!({"openai/decache": {
            "max_input_tokens": 32768, "max_output_tokens": 4096, "max_tokens": 4096,
            "input_cost_per_token": 0, "output_cost_per_token": 0, "litellm_provider": "openai", "mode": "chat"}});
        std::fs::write(home.join("model-metadata.json"), meta.to_string()).unwrap();

        let mut cmd = Command::new(installed("aider/bin/aider"));
        cmd.env_clear().env("PATH", "/usr/bin:/bin").env("LITELLM_LOCAL_MODEL_COST_MAP", "True");
        cmd.env("OPENAI_API_BASE", format!("{base}/v1")).env("OPENAI_API_KEY", "sk-local");
        cmd.args(["--model", "openai/decache", "--model-metadata-file"]).arg(home.join("model-metadata.json"));
        cmd.args(["--no-git", "--no-auto-commits", "--yes-always", "--analytics-disable", "--no-check-update"]);
        cmd.args(["--no-show-model-warnings", "--no-pretty", "--no-fancy-input", "--no-detect-urls"]);
        cmd.args(["--no-restore-chat-history", "--chat-history-file"]).arg(home.join("chat.md"));
        cmd.arg("--input-history-file").arg(home.join("input.hist"));
        // The edit comes as a SEARCH/REPLACE block; the test command's output
        // goes back to the model only when it fails, hence the `exit 1`.
        cmd.args(["--edit-format", "diff", "--auto-test", "--test-cmd", "cat notes.txt; exit 1"]);
        cmd.args(["--message", TASK, "notes.txt"]);
        Run { cmd, min_requests: 2 }
    });
}
