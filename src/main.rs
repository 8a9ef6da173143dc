//! The `decache` binary.
mod cli;

use clap::Parser;
use cli::{Cli, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse_from(cli::compat::expand_llama_aliases(std::env::args_os()));
    init_logging(cli.verbose);
    let res = match &cli.command {
        Command::Run(a) => cli::run::run(a),
        Command::Chat(a) => cli::chat::run(a),
        Command::Replay(a) => cli::transcript::run(a),
        Command::Eval(a) => cli::eval::run(a),
        Command::Agent(a) => cli::agent::run(a),
        Command::Serve(a) => cli::serve::run(a),
        Command::Info(a) => cli::info::run(a),
        Command::Tokenize(a) => cli::tokenize::run(a),
        Command::Pull(a) => cli::pull::run(a).map_err(decache::Error::from),
        Command::Bench(a) => cli::bench::run(a),
        Command::Perplexity(a) => cli::perplexity::run(a),
        Command::RpcServer(a) => cli::rpc_server::run(a),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        // The server's access log (a line per request) shows by default.
        0 => "warn,ggml=error,decache::access=info",
        1 => "info,ggml=warn",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi)
        .init();
}
