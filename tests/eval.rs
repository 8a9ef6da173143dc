//! `decache eval` on a shipped annotated set with the real model: every
//! strategy runs, the in-place strategies follow the annotations cell for
//! cell, decaching in place stays closer to a recompute than to full
//! context, and the report is written. Bad sets are named by place.
mod common;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

fn decache(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_decache")).args(args).output().expect("run decache")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn turns<'a>(r: &'a Value, strategy: &str) -> &'a Vec<Value> {
    let s = r["strategies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["strategy"] == strategy)
        .unwrap_or_else(|| panic!("{strategy} missing"));
    s["turns"].as_array().unwrap()
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// `decache eval` of the shipped dead-end set on `model`, its JSON written
/// to `json`, with `extra` flags.
fn eval_dead_end(model: &Path, json: &Path, extra: &[&str]) -> Output {
    let set = Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts/eval/04-dead-end.toml");
    let mut args = vec!["eval", set.to_str().unwrap(), "-m", model.to_str().unwrap(), "-t", "2"];
    args.extend(["--json", json.to_str().unwrap()]);
    args.extend(extra);
    decache(&args)
}

#[test]
fn eval_runs_every_strategy_and_decaching_follows_the_annotations() {
    let dir = tempfile::tempdir().unwrap();
    let (json, report) = (dir.path().join("r.json"), dir.path().join("report"));
    let o = eval_dead_end(&common::smollm2(), &json, &["--report", report.to_str().unwrap()]);
    let out = text(&o);
    eprintln!("{out}");
    assert!(o.status.success(), "{out}");
    let all: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let r = &all[0];
    let budget = r["budget"].as_u64().unwrap() as usize;
    assert_eq!(r["strategies"].as_array().unwrap().len(), 8);
    let (full, recompute, keep, shift, compaction, window) = (
        turns(r, "full"),
        turns(r, "recompute"),
        turns(r, "keep"),
        turns(r, "shift"),
        turns(r, "compaction"),
        turns(r, "window"),
    );
    let n = full.len();
    assert_eq!(n as u64, r["turns"].as_u64().unwrap());
    // The first decache happens at turn 3 in this set: until then the annotated strategies are full context.
    for t in 0..2 {
        for s in [recompute, keep, shift] {
            assert_eq!(num(&s[t]["vs_full"]["kl"]), 0.0, "turn {}: nothing forgotten yet, identical logits", t + 1);
            assert_eq!(s[t]["live"], full[t]["live"]);
        }
    }
    let mut kl_full = 0.0;
    let mut kl_recompute = 0.0;
    for t in 0..n {
        assert_eq!(num(&full[t]["vs_full"]["kl"]), 0.0);
        // Decaching in place keeps exactly the cells a recompute prefills again.
        assert_eq!(keep[t]["live"], recompute[t]["live"], "turn {}", t + 1);
        assert_eq!(shift[t]["live"], recompute[t]["live"], "turn {}", t + 1);
        assert_eq!(
            keep[t]["prefilled"], full[t]["prefilled"],
            "decaching in place evaluates only the turn's own tokens"
        );
        assert!(window[t]["live"].as_u64().unwrap() as usize <= budget, "the window stays within the budget");
        kl_full += num(&keep[t]["vs_full"]["kl"]);
        kl_recompute += num(&keep[t]["vs_recompute"]["kl"]);
    }
    assert!(
        full[n - 1]["live"].as_u64().unwrap() > keep[n - 1]["live"].as_u64().unwrap(),
        "the annotations forget something"
    );
    assert!(kl_full > 0.0, "forgetting changes the distributions");
    assert!(
        kl_recompute < kl_full,
        "in place is closer to recompute ({kl_recompute}) than to full context ({kl_full})"
    );
    // Boundary refresh: the same cells as keep, and only 16 tokens per gap
    // more evaluated (a recompute re-evaluates everything that stays).
    let (keep_r, shift_r) = (turns(r, "keep+refresh"), turns(r, "shift+refresh"));
    let mut refreshed = 0;
    for t in 0..n {
        assert_eq!(keep_r[t]["live"], keep[t]["live"], "turn {}", t + 1);
        assert_eq!(shift_r[t]["live"], keep[t]["live"], "turn {}", t + 1);
        let extra = keep_r[t]["prefilled"].as_u64().unwrap() - keep[t]["prefilled"].as_u64().unwrap();
        assert_eq!(keep_r[t]["refreshed"].as_u64().unwrap(), extra, "turn {}", t + 1);
        refreshed += extra;
    }
    assert!(refreshed > 0, "the refresh strategies re-evaluate tokens after the gaps");
    let sum = |ts: &Vec<Value>| ts.iter().map(|t| t["prefilled"].as_u64().unwrap()).sum::<u64>();
    assert!(sum(keep_r) < sum(recompute), "a refresh costs less than a recompute");
    assert!(sum(recompute) > sum(keep), "recompute evaluates more: {} vs {}", sum(recompute), sum(keep));
    assert!(compaction.iter().any(|t| t["compacted"] == true), "compaction compacts once the budget is passed");
    let summaries = r["strategies"].as_array().unwrap().iter().find(|s| s["strategy"] == "compaction").unwrap()
        ["summaries"]
        .clone();
    assert!(
        summaries.as_array().is_some_and(|s| !s.is_empty() && s.iter().all(|x| !x.as_str().unwrap().trim().is_empty())),
        "{summaries}"
    );
    for s in r["strategies"].as_array().unwrap() {
        let p = num(&s["answer_ppl"]);
        assert!(p.is_finite() && p > 1.0, "{}: answer perplexity {p}", s["strategy"]);
    }
    let md = std::fs::read_to_string(report.join("README.md")).unwrap();
    for s in ["full", "recompute", "keep", "shift", "keep+refresh", "shift+refresh", "compaction", "window"] {
        assert!(md.contains(&format!("| {s} |")), "report row for {s}");
    }
    for f in ["quality-vs-kept.svg", "time-per-turn.svg", "kl-per-turn.svg"] {
        let svg = std::fs::read_to_string(report.join(f)).unwrap();
        assert!(svg.contains("<svg") && svg.contains("<circle") && svg.contains("keep"), "{f} has points and a legend");
    }
}

/// `forget-tool`: before the turn that forgets, the scripted model's
/// `forget` call and the tool's answer with the note are evaluated and stay
/// cached; only the turn's own tokens are compared. `shift+refresh:auto`
/// refreshes at least one chunk per gap and keeps the same cells.
#[test]
fn forget_tool_keeps_the_exchange_and_compares_the_turns_own_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let o = eval_dead_end(
        &common::smollm2(),
        &json,
        &["--strategies", "recompute,shift+refresh,shift+refresh:auto,forget-tool", "--refresh", "16"],
    );
    let out = text(&o);
    eprintln!("{out}");
    assert!(o.status.success(), "{out}");
    let all: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let r = &all[0];
    let (recompute, shift, auto, forget) =
        (turns(r, "recompute"), turns(r, "shift+refresh"), turns(r, "shift+refresh:auto"), turns(r, "forget-tool"));
    let n = forget.len();
    let u = |v: &Value| v.as_u64().unwrap();
    // The dead-end set forgets at turn 3 only.
    for t in 0..2 {
        assert_eq!(forget[t]["prefilled"], shift[t]["prefilled"], "turn {}", t + 1);
        assert_eq!(num(&forget[t]["vs_recompute"]["kl"]), 0.0, "turn {}: nothing forgotten yet", t + 1);
    }
    let exchange = u(&forget[2]["live"]) - u(&shift[2]["live"]);
    assert!(exchange > 20, "the call and the note stay cached: {exchange} tokens");
    assert_eq!(u(&forget[2]["prefilled"]), u(&shift[2]["prefilled"]) + exchange, "and were evaluated once");
    for t in 2..n {
        assert_eq!(u(&forget[t]["live"]), u(&shift[t]["live"]) + exchange, "turn {}", t + 1);
        // Compared row for row with the recompute's (off by the exchange's
        // length, the distributions would be of other positions: KL of several nats).
        let kl = num(&forget[t]["vs_recompute"]["kl"]);
        assert!(kl > 0.0 && kl < 1.0, "turn {}: the exchange changes what follows, a little: {kl}", t + 1);
        assert_eq!(auto[t]["live"], shift[t]["live"], "turn {}", t + 1);
    }
    assert!(u(&auto[2]["refreshed"]) >= 16, "auto refreshes at least a chunk: {}", auto[2]["refreshed"]);
    assert!(u(&auto[2]["refreshed"]) < u(&recompute[2]["prefilled"]), "and less than a recompute");
}

#[test]
fn bad_eval_sets_are_named_by_file_and_place() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "name = \"b\"\n[[turn]]\n[[turn.message]]\nrole = \"user\"\ntext = \"hi\"\n[[turn]]\n[[turn.message]]\nrole = \"tool\"\ntext = \"x\"\ndecached_from = 1\n[question]\ntext = \"q\"\nanswer = \"a\"\n",
    )
    .unwrap();
    let o = decache(&["eval", bad.to_str().unwrap(), "--strategies", "keep"]);
    let out = text(&o);
    assert!(!o.status.success() && out.contains("bad.toml: turn 2, message 1: decached_from = 1"), "{out}");
    let o = decache(&["eval", bad.to_str().unwrap(), "--strategies", "keep,forget"]);
    assert!(!o.status.success() && text(&o).contains("unknown strategy 'forget'"), "{}", text(&o));
    std::fs::write(&bad, "name = \"b\"\n[[turn]]\n").unwrap();
    let o = decache(&["eval", bad.to_str().unwrap()]);
    assert!(!o.status.success() && text(&o).contains("bad.toml"), "{}", text(&o));
}

/// Gemma's template folds the system prompt into the first user turn and
/// trims messages: the set's parts are still placed (the system message
/// with the first user message, trimmed texts where the template trims),
/// and the eval runs on gemma-3.
#[test]
fn eval_places_parts_through_gemmas_folding_and_trimming_template() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let o = eval_dead_end(&common::gemma3(), &json, &["--strategies", "recompute,keep"]);
    assert!(o.status.success(), "{}", text(&o));
    let all: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let r = &all[0];
    for s in ["recompute", "keep"] {
        assert!(!turns(r, s).is_empty(), "{s}: {r}");
    }
}

/// `--calibrate` writes the model's choice by its fingerprint, the choice
/// follows the rule from the figures it records, and `decache chat
/// --positions auto` then runs with it (and says so).
#[test]
fn calibrate_writes_a_choice_that_positions_auto_follows() {
    let dir = tempfile::tempdir().unwrap();
    let calib = dir.path().join("calib");
    let set = Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts/eval/04-dead-end.toml");
    let m = common::smollm2();
    let o = Command::new(env!("CARGO_BIN_EXE_decache"))
        .args(["eval", set.to_str().unwrap(), "-m", m.to_str().unwrap(), "-t", "2", "--calibrate"])
        .args(["--strategies", "recompute,keep,shift,shift+refresh:8"])
        .env("DECACHE_CALIBRATION_DIR", &calib)
        .output()
        .unwrap();
    let out = text(&o);
    assert!(o.status.success() && out.contains("--positions auto for this model:"), "{out}");
    let files: Vec<_> = std::fs::read_dir(&calib).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let c: Value = serde_json::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
    assert_eq!(files[0].file_stem().unwrap().to_str().unwrap(), c["fingerprint"].as_str().unwrap());
    let cands = c["candidates"].as_array().unwrap();
    assert_eq!(cands.len(), 3, "keep, shift and shift+refresh:8: {c}");
    let (pos, refresh) = (c["choice"]["positions"].as_str().unwrap(), c["choice"]["refresh"].as_u64().unwrap());
    let chosen = cands.iter().find(|k| k["positions"] == pos && k["refresh"].as_u64() == Some(refresh)).unwrap();
    assert_eq!(chosen["eligible"], true);
    let best =
        cands.iter().filter(|k| k["eligible"] == true).map(|k| num(&k["ppl_vs_recompute"])).fold(f64::MAX, f64::min);
    assert!(num(&chosen["ppl_vs_recompute"]) <= best * 1.01, "{c}");
    let refresh8 = cands.iter().find(|k| k["strategy"] == "shift+refresh:8").unwrap();
    assert!(num(&refresh8["extra_share"]) > 0.0 && num(&refresh8["kl_recompute"]) >= 0.0);

    let mut child = Command::new(env!("CARGO_BIN_EXE_decache"))
        .args(["chat", "-m", m.to_str().unwrap(), "-c", "512", "-t", "2", "--positions", "auto"])
        .env("DECACHE_CALIBRATION_DIR", &calib)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "/exit").unwrap();
    }
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    let want = format!("--positions auto: {pos} with ");
    assert!(err.contains(&want) && err.contains(files[0].to_str().unwrap()), "{err}");
}
