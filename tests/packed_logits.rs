//! decache's packed products (Q4_1 on SmolLM2, Q5_0 on gemma-3) against
//! llama.cpp's logits over a whole text, token by token and as one batch:
//! the same bits, attention through ggml's op as llama.cpp's.
mod common;
use decache::ggml::oracle::{OracleContext, OracleModel, OracleParams};
use decache::model::{LoadOptions, Model};
use decache::session::{Session, SessionConfig};
use std::path::Path;
use std::sync::Arc;

const TEXT: &str = "The lighthouse keeper climbed the stairs every evening at dusk. He trimmed the wick, \
polished the lens and wrote the weather in a small book: wind from the west, a light rain, three ships \
passing north. In winter the storms came often, and he stayed awake through the night, listening to the \
sea against the rocks below.";

fn check(path: &Path) {
    let model = Arc::new(Model::load(path, &LoadOptions::default()).unwrap());
    assert!(model.packed().is_some_and(|p| !p.is_empty()), "{}: nothing packed", path.display());
    let toks = model.tokenizer.encode(TEXT, true, true).unwrap();
    // decache with ggml's attention (llama.cpp's kernel), its products
    // packed or ggml's; token by token, or the text as one batch.
    let decache = |ggml_matmul: bool, one_by_one: bool| {
        let cfg =
            SessionConfig { n_ctx: 512, n_threads: 2, ggml_attention: true, ggml_matmul, ..SessionConfig::default() };
        let mut s = Session::new(model.clone(), cfg).unwrap();
        if one_by_one {
            toks.iter().flat_map(|&t| s.eval(&[t], true).unwrap()).collect::<Vec<f32>>()
        } else {
            s.eval(&toks, true).unwrap()
        }
    };
    let oracle = OracleModel::load(path).unwrap();
    let p = OracleParams { n_ctx: 512, n_threads: 2, ..OracleParams::default() };
    let ids: Vec<i32> = toks.iter().map(|&t| t as i32).collect();
    let mut oc = OracleContext::new(&oracle, &p).unwrap();
    let one_by_one: Vec<f32> =
        ids.iter().enumerate().flat_map(|(i, &t)| oc.decode(&[t], &[i as i32], true).unwrap().concat()).collect();
    let mut oc = OracleContext::new(&oracle, &p).unwrap();
    let batch = oc.decode(&ids, &(0..ids.len() as i32).collect::<Vec<_>>(), true).unwrap().concat();

    let name = path.file_name().unwrap().to_string_lossy().to_string();
    let differ = |a: &[f32], b: &[f32]| a.iter().zip(b).filter(|(x, y)| x.to_bits() != y.to_bits()).count();
    for ggml_matmul in [false, true] {
        let (ours, ours_batch) = (decache(ggml_matmul, true), decache(ggml_matmul, false));
        eprintln!(
            "{name}, {} tokens, {} products: {} of {} logits differ token by token, {} in a batch",
            toks.len(),
            if ggml_matmul { "ggml's" } else { "packed" },
            differ(&ours, &one_by_one),
            ours.len(),
            differ(&ours_batch, &batch)
        );
        assert!(
            ours == one_by_one && ours_batch == batch,
            "{name}: not llama.cpp's logits (ggml_matmul {ggml_matmul})"
        );
    }
    // The two ways of computing differ at llama.cpp too (its batch and lone
    // steps attend by other kernels): equal bits above are no accident.
    assert!(batch[batch.len() - 1000..] != one_by_one[one_by_one.len() - 1000..]);
}

#[test]
fn smollm2_packed_products_give_llama_cpps_logits() {
    check(&common::smollm2());
}

#[test]
fn gemma3_packed_products_give_llama_cpps_logits() {
    check(&common::gemma3());
}
