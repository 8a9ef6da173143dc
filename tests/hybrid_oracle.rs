//! Hybrid models (Qwen3.5: gated-delta-net recurrent layers beside gated
//! attention) on random-weight `qwen35` and `qwen35moe` files: logits at
//! every position, after a middle span is decached (keep and shift: the
//! attention cells go, the recurrent state keeps what it absorbed, which is
//! also what llama.cpp's hybrid memory does for such a removal) and greedy
//! generations, against llama.cpp on the same file.
#[path = "common/arch_check.rs"]
mod arch_check;
#[path = "common/gguf_writer.rs"]
mod gguf_writer;
#[path = "common/qwen35_file.rs"]
mod qwen35_file;
use arch_check::{check, shift_against, Recompute};
use qwen35_file::{qwen35, Qwen35Shape};

#[test]
fn qwen35_hybrid_matches_llama_cpp() {
    // (llama.cpp cannot move positions of a multi-section RoPE model:
    // `seq_add` asserts. The shift is checked on its own below.)
    for line in check("qwen35", qwen35(&Qwen35Shape::tiny(), 0x3500), false) {
        eprintln!("{line}");
    }
    // Two attention layers among four recurrent ones.
    let s = Qwen35Shape { n_layer: 6, full_attention_interval: 3, ..Qwen35Shape::tiny() };
    for line in check("qwen35 6 layers", qwen35(&s, 0x3501), false) {
        eprintln!("{line}");
    }
}

#[test]
fn qwen35moe_hybrid_experts_match_llama_cpp() {
    for line in check("qwen35moe", qwen35(&Qwen35Shape::tiny_moe(), 0x3502), false) {
        eprintln!("{line}");
    }
}

/// Closing a gap re-rotates the kept keys of the attention layers: for the
/// interleaved multi-section RoPE of text tokens that is a NeoX rotation of
/// the whole. Checked where a recompute of the kept tokens is the exact
/// reference: a file of one attention layer (interval 1; with more layers
/// the kept tokens' deeper keys saw the removed span). llama.cpp
/// cannot run that file (its hybrid memory needs a recurrent layer), so
/// the recompute is decache's own prefill, which the tests above hold to
/// llama.cpp's.
#[test]
fn qwen35_shift_rotates_like_a_recompute() {
    let s = Qwen35Shape { n_layer: 1, full_attention_interval: 1, ..Qwen35Shape::tiny() };
    eprintln!("{}", shift_against("qwen35 attention-only", &qwen35(&s, 0x3503), Recompute::Decache));
}

/// `decache info` names the recurrent layers and their state.
#[test]
fn info_names_the_recurrent_layers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.gguf");
    qwen35(&Qwen35Shape { n_layer: 6, full_attention_interval: 3, ..Qwen35Shape::tiny() }, 1).write(&path);
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_decache")).arg("info").arg(&path).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("architecture:    qwen35"), "{out}");
    assert!(
        out.contains(
            "recurrent:       4 of 6 layers (RRARRA): gated delta net, 2 key / 4 value heads of 16, convolution 4 taps"
        ),
        "{out}"
    );
    assert!(out.contains("sections [3, 3, 2, 0]"), "{out}");
}

/// Recurrent hyper-parameters that cannot work are refused with the key named.
#[test]
fn bad_recurrent_keys_are_refused_by_name() {
    use decache::model::{LoadOptions, Model};
    use gguf_writer::Value;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.gguf");
    let cases: [(&str, Value, &str); 4] = [
        ("qwen35.ssm.time_step_rank", Value::U32(3), "ssm.time_step_rank"),
        ("qwen35.ssm.inner_size", Value::U32(60), "ssm.inner_size"),
        ("qwen35.ssm.conv_kernel", Value::U32(1), "ssm.conv_kernel"),
        ("qwen35.full_attention_interval", Value::U32(0), "full_attention_interval"),
    ];
    for (key, v, named) in cases {
        let mut g = qwen35(&Qwen35Shape::tiny(), 2);
        g.set(key, v);
        g.write(&path);
        let e = Model::load(&path, &LoadOptions::default()).err().expect("refused").to_string();
        assert!(e.contains(named), "{key}: {e}");
    }
    let mut g = qwen35(&Qwen35Shape::tiny(), 2);
    g.remove("qwen35.ssm.state_size");
    g.write(&path);
    let e = Model::load(&path, &LoadOptions::default()).err().expect("refused").to_string();
    assert!(e.contains("ssm.state_size") && e.contains("missing"), "{e}");
}

/// `--refresh` is refused by name where it cannot work: on a hybrid model.
#[test]
fn refresh_is_refused_where_it_cannot_work() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.gguf");
    qwen35(&Qwen35Shape::tiny(), 3).write(&path);
    for (args, says) in [
        (vec!["chat", "--refresh", "4"], "not available for hybrid models"),
        (vec!["agent", "--refresh", "4"], "not available for hybrid models"),
    ] {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_decache"))
            .args(&args)
            .arg("-m")
            .arg(&path)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(says), "{args:?}: {err}");
    }
}
