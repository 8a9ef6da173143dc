//! `decache rpc-server`: serve this machine's devices (its GPUs, else its
//! CPU) over ggml's RPC protocol, so that `--rpc host:port` elsewhere can
//! put layers here. The same protocol as llama.cpp's `rpc-server`.
use clap::Args;
use decache::ggml::Device;
use decache::Error;

#[derive(Args, Debug)]
pub struct RpcServerArgs {
    /// Address to listen on. Anything but localhost exposes the machine's memory to the network: the protocol has no authentication.
    #[arg(short = 'H', long = "host", default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on.
    #[arg(short = 'p', long = "port", default_value_t = 50052)]
    pub port: u16,
    /// CPU threads, when the CPU is the device served.
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,
    /// Serve the CPU even when this build has GPUs.
    #[arg(long = "cpu")]
    pub cpu: bool,
    /// Keep large tensors sent by clients in this folder, so a model's weights are not sent again next time (llama.cpp's -c).
    #[arg(long = "cache-dir")]
    pub cache_dir: Option<std::path::PathBuf>,
}

pub fn run(a: &RpcServerArgs) -> Result<(), Error> {
    if a.port == 0 {
        return Err(Error::InvalidArgument("--port 0: give the port clients will use".into()));
    }
    let endpoint = format!("{}:{}", a.host, a.port);
    // Fail here, with a reason, rather than inside ggml with none.
    std::net::TcpListener::bind((a.host.as_str(), a.port))
        .map_err(|e| Error::InvalidArgument(format!("cannot listen on {endpoint}: {e}")))?;
    if let Some(d) = &a.cache_dir {
        std::fs::create_dir_all(d).map_err(|source| Error::Io { path: d.clone(), source })?;
    }
    if !matches!(a.host.as_str(), "127.0.0.1" | "localhost" | "::1") {
        eprintln!("warning: serving on {endpoint}: anyone who can reach this address can use this machine's devices and memory (RPC has no authentication)");
    }
    let gpus = Device::gpus();
    let devices = if a.cpu || gpus.is_empty() { vec![Device::cpu()] } else { gpus };
    let threads = a.threads.unwrap_or_else(decache::session::default_threads);
    // Blocks, serving one client at a time, until the process is stopped.
    decache::ggml::serve_rpc(&endpoint, a.cache_dir.as_deref(), threads, &devices).map_err(Error::InvalidArgument)
}
