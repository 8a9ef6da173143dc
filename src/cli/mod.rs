//! The `decache` command line: clap commands and the only layer that prints.
#[macro_use]
pub mod out;
pub mod agent;
pub mod args;
pub mod bench;
pub mod bench_replay;
pub mod chat;
pub mod chat_cmd;
pub mod compat;
pub mod eval;
pub mod info;
pub mod load;
pub mod perplexity;
pub mod pull;
pub mod reply_view;
pub mod rpc_server;
pub mod run;
pub mod serve;
pub mod tokenize;
pub mod transcript;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "decache",
    version,
    about = "Run GGUF language models locally; the KV cache forgets stale context in place"
)]
pub struct Cli {
    /// More log output (repeat for more); or set RUST_LOG.
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Generate text from a prompt (-p) or a prompt file (-f).
    Run(run::RunArgs),
    /// Chat interactively; stale context is forgotten in place near the limit.
    Chat(chat::ChatArgs),
    /// A coding agent in a project folder (read, grep, run, edit); stale context is forgotten in place.
    Agent(agent::AgentArgs),
    /// Serve the model over HTTP (OpenAI-compatible), with prefix and subconscious caching.
    Serve(serve::ServeArgs),
    /// Replay a transcript (--transcript) and check every generated token.
    Replay(transcript::ReplayArgs),
    /// Compare decaching with full context, recompute, compaction and a sliding window on annotated conversations.
    Eval(eval::EvalArgs),
    /// Show a model's architecture, size, quantization, context and chat template.
    Info(info::InfoArgs),
    /// Print the token ids (and pieces) of a text.
    Tokenize(tokenize::TokenizeArgs),
    /// Download a model (default: SmolLM2-135M-Instruct) into the cache.
    Pull(pull::PullArgs),
    /// Measure prompt processing and generation speed, beside llama.cpp.
    Bench(bench::BenchArgs),
    /// Compute perplexity over a text file, llama.cpp-style.
    Perplexity(perplexity::PerplexityArgs),
    /// Serve this machine's devices to other decache (or llama.cpp) processes over ggml's RPC protocol (--rpc).
    RpcServer(rpc_server::RpcServerArgs),
}
