//! A graph that owns its context, so it can be kept and run again: decode
//! steps with the same shapes reuse the previous graph and its allocation
//! (only the inputs change), as llama.cpp does.
use super::context::{Context, Graph, Tensor};
use ggml_sys as sys;
use std::ptr::NonNull;

pub struct OwnedGraph {
    graph: NonNull<sys::ggml_cgraph>,
    tensors: Vec<NonNull<sys::ggml_tensor>>,
    _ctx: Context,
}

// SAFETY: the graph's metadata lives in the owned context; used by one session.
unsafe impl Send for OwnedGraph {}

impl OwnedGraph {
    /// Build a graph in `ctx`; `f` returns the graph and the tensors the
    /// caller will need again (inputs, outputs), kept in that order. Tensors
    /// living longer than the graph (weights, KV cache: lifetime `'m`) may be
    /// used inside; the second argument only states that `'m` outlives `'c`.
    pub fn build<'m, F>(ctx: Context, f: F) -> OwnedGraph
    where
        F: for<'c> FnOnce(&'c Context, &'c &'m ()) -> (Graph<'c>, Vec<Tensor<'c>>),
    {
        let (graph, tensors) = {
            let (g, ts) = f(&ctx, &&());
            let graph = NonNull::new(g.raw()).expect("graph");
            (graph, ts.iter().map(|t| NonNull::new(t.raw()).expect("tensor")).collect())
        };
        OwnedGraph { graph, tensors, _ctx: ctx }
    }

    pub fn graph(&self) -> Graph<'_> {
        Graph::from_raw(self.graph.as_ptr())
    }

    pub fn tensor(&self, i: usize) -> Tensor<'_> {
        Tensor::from_raw(self.tensors[i].as_ptr())
    }
}
