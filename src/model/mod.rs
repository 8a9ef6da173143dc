//! Models: hyper-parameters, weights placed in ggml buffers, the tokenizer,
//! and per-architecture graph recipes built from shared blocks.
pub mod arch;
pub mod blocks;
pub mod decoder;
pub mod delta_net;
pub mod graph;
pub mod hparams;
pub mod moe;
pub mod offload;
pub mod plan;
pub mod runner;

pub use arch::Arch;
pub use hparams::HParams;
pub use offload::{GpuLayers, Offload};

use crate::error::{Error, Result};
use crate::ggml::{CpuDevice, Device, GgmlType, PackedWeights, Placement, TensorSpec, TensorStore};
use crate::gguf::{GgufFile, TensorInfo};
use crate::tokenizer::{Tokenizer, VocabSpec};
use plan::Usage;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

/// How to load a model.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Read tensors into memory instead of mapping the file.
    pub no_mmap: bool,
    /// Use ggml-cpu's repacked/AMX weight layouts where they apply (as llama.cpp does).
    pub extra_buffers: bool,
    /// `-ngl`: layers to offload to the devices (GPUs of this build, RPC servers).
    pub gpu_layers: GpuLayers,
    /// `--rpc`: servers ("host:port") whose devices take layers.
    pub rpc: Vec<String>,
    /// `--tensor-split`: each device's share of the offloaded layers.
    pub tensor_split: Vec<f32>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            no_mmap: false,
            extra_buffers: true,
            gpu_layers: GpuLayers::Auto,
            rpc: Vec::new(),
            tensor_split: Vec::new(),
        }
    }
}

/// Memory the system can still give (Linux `MemAvailable`); `None` where
/// it cannot be read.
pub fn available_memory() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// How long `--rpc` waits for a server's handshake.
const RPC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The devices layers may go to: the RPC servers' (in the order given), then this build's GPUs.
fn offload_devices(opts: &LoadOptions) -> Result<Vec<Device>> {
    let mut devices = Vec::new();
    for ep in &opts.rpc {
        crate::ggml::rpc::probe(ep, RPC_TIMEOUT).map_err(Error::InvalidArgument)?;
        devices.extend(crate::ggml::rpc_devices(ep).map_err(Error::InvalidArgument)?);
    }
    devices.extend(Device::gpus());
    Ok(devices)
}

/// Facts about a loaded model, for `decache info` and the bench table.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    pub path: PathBuf,
    pub name: Option<String>,
    pub file_size: u64,
    pub n_params: u64,
    /// Tensor count per ggml type name.
    pub quant_types: BTreeMap<String, usize>,
    /// `general.file_type` as llama.cpp names it (e.g. "Q4_1"), when known.
    pub file_type: Option<String>,
    /// Weight bytes per buffer kind (mmap, CPU, CPU_REPACK, AMX, ...).
    pub buffers: Vec<(String, usize)>,
    /// Identity of the file's contents (see `GgufFile::fingerprint`): a
    /// saved session only loads into the model it was made with.
    pub fingerprint: String,
    /// Layers (the output counted as one) per device they were offloaded to; empty when all run on the CPU.
    pub offloaded: Vec<(String, usize)>,
}

pub struct Model {
    pub arch: Arch,
    pub hparams: HParams,
    pub tokenizer: Tokenizer,
    pub info: ModelInfo,
    pub(crate) weights: TensorStore,
    /// Which layers run on which device.
    pub offload: Offload,
    graph_size: usize,
    /// Weights in repacked layouts, and weights of types ggml-cpu multiplies
    /// in tiles: see `rows_multiply_alone`.
    repacked: bool,
    tiled: bool,
    /// Q4_1 and Q5_0 weights packed for decache's products (see
    /// `SessionConfig::ggml_matmul`), unless loaded with --no-repack.
    packed: Option<PackedWeights>,
}

impl Model {
    /// Open, validate and load a GGUF model.
    pub fn load(path: &Path, opts: &LoadOptions) -> Result<Model> {
        Self::load_with_progress(path, opts, &mut |_, _| {})
    }

    pub fn load_with_progress(
        path: &Path,
        opts: &LoadOptions,
        on_progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Model> {
        let file = GgufFile::open(path, opts.no_mmap)?;
        let model_err = |msg: String| Error::Model { path: path.to_path_buf(), msg };
        let arch_name = file.architecture()?;
        let arch = Arch::from_name(arch_name).ok_or_else(|| Error::UnsupportedArch {
            path: path.to_path_buf(),
            arch: arch_name.to_string(),
            supported: Arch::supported(),
        })?;
        let hparams = HParams::from_gguf(&file, arch.hparams())?;
        let tokenizer =
            Tokenizer::from_spec(VocabSpec::from_gguf(&file)?).map_err(|e| model_err(format!("tokenizer: {e}")))?;
        if tokenizer.n_vocab() != hparams.n_vocab as usize {
            return Err(model_err(format!(
                "the vocabulary has {} tokens but {}.vocab_size says {}",
                tokenizer.n_vocab(),
                arch_name,
                hparams.n_vocab
            )));
        }

        let offload =
            Offload::plan(offload_devices(opts)?, hparams.n_layer as usize, opts.gpu_layers, &opts.tensor_split)
                .map_err(Error::InvalidArgument)?;
        let specs = plan_weights(&file, arch, &hparams, opts, &offload).map_err(model_err)?;
        // Weights copied out of the file (repacked layouts, or all of them
        // with --no-mmap) are allocated: refuse up front what cannot fit.
        // Mapped weights are paged from the file and need no such room.
        // Weights offloaded to a device take none of this machine's memory.
        // Q4_1 and Q5_0 products on the CPU get packed copies of the same
        // size (below).
        let multiplied: HashSet<String> =
            arch.tensors(&hparams).into_iter().filter(|r| r.usage == Usage::MulMat).map(|r| r.name).collect();
        let packs = |s: &TensorSpec| {
            opts.extra_buffers
                && multiplied.contains(&s.name)
                && offload.device_of_weight(&s.name).is_none()
                && crate::ggml::packs(s.typ, s.ne)
        };
        let copied: u64 = specs
            .iter()
            .filter(|s| matches!(s.placement, Placement::Upload(_)) && offload.device_of_weight(&s.name).is_none())
            .chain(specs.iter().filter(|s| packs(s)))
            .filter_map(|s| file.tensor(&s.source))
            .map(|t| t.nbytes)
            .sum();
        if let Some(avail) = available_memory().filter(|&a| copied > a) {
            let why = if opts.no_mmap {
                "read into memory with --no-mmap"
            } else {
                "copied into repacked layouts; --no-repack maps them from the file instead"
            };
            return Err(model_err(format!(
                "its weights need {} MiB of memory ({why}), but {} MiB are available",
                copied >> 20,
                avail >> 20
            )));
        }
        let weights = TensorStore::load(
            &specs,
            file.mapping(),
            |s| file.tensor_bytes(file.tensor(&s.source).expect("planned tensor exists")),
            on_progress,
        )
        .map_err(|e| model_err(format!("loading weights: {e}")))?;

        // Products the CPU multiplies get packed copies for decache's kernels
        // (the mapped originals stay for ggml's).
        let packed = if opts.extra_buffers {
            let to_pack: Vec<&TensorSpec> = specs.iter().filter(|s| packs(s)).collect();
            PackedWeights::pack(&weights, &to_pack, CpuDevice::get().buffer_type(), |s| {
                file.tensor_bytes(file.tensor(&s.source).expect("planned tensor exists"))
            })
            .map_err(|e| model_err(format!("packing weights: {e}")))?
        } else {
            None
        };

        let mut quant_types = BTreeMap::new();
        for t in &file.tensors {
            *quant_types.entry(t.typ.name().to_string()).or_insert(0) += 1;
        }
        let mut info = ModelInfo {
            path: path.to_path_buf(),
            name: file.get_str("general.name").ok().flatten().map(str::to_string),
            file_size: file.file_size,
            n_params: file.n_params(),
            fingerprint: file.fingerprint()?,
            quant_types,
            file_type: file.get_u32("general.file_type").ok().flatten().map(file_type_name),
            buffers: weights.buffer_sizes().to_vec(),
            offloaded: offload.summary(),
        };
        let repacked = info.buffers.iter().any(|(name, _)| name != "mmap" && name != "CPU");
        if let Some(p) = &packed {
            info.buffers.push(("packed".to_string(), p.total_bytes()));
        }
        let tiled = info.quant_types.keys().any(|t| crate::ggml::row_kernels::tiled(t));
        // Room for steps whose rows are computed alone (on the CPU): per
        // layer, a fused op with its views and reorderings per run of rows
        // (about 17 nodes) and a join, and a reshape or two per weight product.
        let by_row = offload.used_devices().is_empty();
        let row_room = if by_row { (20 * runner::ROWS_ALONE_GROUPS + 32) * hparams.n_layer as usize } else { 0 };
        let graph_size = (8 * specs.len()).max(2048) + row_room;
        Ok(Model { arch, hparams, tokenizer, info, weights, offload, graph_size, repacked, tiled, packed })
    }

    /// RoPE parameters of layer `il` (also used to re-rotate its cached
    /// keys): sliding-window layers have their own base and no scaling.
    pub fn rope_params(&self, il: usize) -> crate::ggml::RopeParams {
        let hp = &self.hparams;
        let (freq_base, freq_scale) = match &hp.swa {
            Some(s) if hp.is_swa(il) => (s.rope_base, s.rope_scale),
            _ => (hp.rope_base, hp.rope_scale),
        };
        crate::ggml::RopeParams {
            n_dims: hp.layer(il).n_rot as i32,
            mode: hp.rope_kind as i32,
            n_ctx_orig: hp.n_ctx_orig as i32,
            freq_base,
            freq_scale,
            ext_factor: if hp.yarn.is_some() { 1.0 } else { 0.0 },
            attn_factor: hp.rope_attn_factor,
            beta_fast: hp.yarn.map_or(32.0, |y| y.beta_fast),
            beta_slow: hp.yarn.map_or(1.0, |y| y.beta_slow),
        }
    }

    /// The RoPE frequency factors for a cache of `n_ctx` cells, if the
    /// model has any: Llama 3's `rope_freqs`, or Phi-3's long factors when
    /// the context (rounded up to 256, as llama.cpp does) passes the
    /// original one, else its short factors.
    pub fn rope_factors_name(&self, n_ctx: usize) -> Option<&'static str> {
        if self.weights.id("rope_freqs.weight").is_some() {
            return Some("rope_freqs.weight");
        }
        let long = n_ctx.div_ceil(256) * 256 > self.hparams.n_ctx_orig as usize;
        let name = if long { "rope_factors_long.weight" } else { "rope_factors_short.weight" };
        self.weights.id(name).map(|_| name)
    }

    /// Layer `il`'s RoPE frequency factors for a cache of `n_ctx` cells:
    /// the model's (`rope_factors_name`), except on sliding-window layers
    /// of a model whose layers differ in shape (Gemma 4 rotates those
    /// plainly and only its global layers by `rope_freqs`).
    pub fn rope_factors(&self, il: usize, n_ctx: usize) -> Option<crate::ggml::Tensor<'_>> {
        if self.hparams.layer_shapes && self.hparams.is_swa(il) {
            return None;
        }
        self.rope_factors_name(n_ctx).and_then(|n| self.weights.id(n)).map(|id| self.weights.get(id))
    }

    /// Nodes reserved per step graph (llama.cpp's rule of thumb).
    pub fn graph_size(&self) -> usize {
        self.graph_size
    }

    /// Whether a step can multiply this model's weights by a batch of
    /// `n_rows` rows as by each row alone, bit for bit. Dense weights always
    /// can (`Context::multiply_rows_alone` lays the batch out a row per plane
    /// where ggml-cpu's batch kernel differs). Experts' per-token products
    /// (`mul_mat_id`) go by the rows routed to each expert: only where no
    /// weight was repacked (from 4 rows on a batch takes another kernel than
    /// a lone row) and, from 8 rows on, no type is multiplied in tiles.
    pub fn rows_multiply_alone(&self, n_rows: usize) -> bool {
        self.hparams.experts.is_none() || (!self.repacked && (n_rows < 8 || !self.tiled))
    }

    /// The packed copies of the Q4_1 and Q5_0 weights the CPU multiplies.
    pub fn packed(&self) -> Option<&PackedWeights> {
        self.packed.as_ref()
    }
}

/// Check every tensor against the architecture's plan (presence, exact
/// shape, no leftovers) and choose where each one's data goes.
fn plan_weights(
    file: &GgufFile,
    arch: Arch,
    hp: &HParams,
    opts: &LoadOptions,
    offload: &Offload,
) -> Result<Vec<TensorSpec>, String> {
    let reqs = arch.tensors(hp);
    arch.check_tensors(hp, &|name| file.tensor(name).is_some())?;
    let cpu = CpuDevice::get();
    let extra = if opts.extra_buffers { cpu.extra_buffer_types() } else { Vec::new() };
    let mut specs = Vec::with_capacity(reqs.len());
    let mut used = HashSet::new();
    for r in &reqs {
        let tied = || r.tied_to.as_deref().and_then(|src| file.tensor(src));
        let Some(t) = file.tensor(&r.name).or_else(tied) else {
            if r.required {
                return Err(format!("tensor '{}' is missing (required by the {} architecture)", r.name, arch.name()));
            }
            continue;
        };
        check_shape(t, &r.ne)?;
        used.insert(t.name.as_str());
        let ne = t.ne;
        let experts_used = (r.usage == Usage::MulMatId).then(|| hp.experts.as_ref().map_or(1, |x| x.n_used as i64));
        check_type(t, r.usage, &cpu, experts_used)?;
        let upload_to = matches!(r.usage, Usage::MulMat | Usage::MulMatId)
            .then(|| extra.iter().copied().find(|b| cpu.supports_mul_mat_weight(t.typ, ne, *b, experts_used)))
            .flatten();
        let placement = match (offload.device_of_weight(&r.name), upload_to) {
            (Some(d), _) => Placement::Upload(d.buffer_type()),
            (None, Some(b)) => Placement::Upload(b),
            (None, None) if file.is_mapped() => Placement::Mapped,
            (None, None) => Placement::Upload(cpu.buffer_type()),
        };
        specs.push(TensorSpec {
            name: r.name.clone(),
            source: t.name.clone(),
            typ: t.typ,
            ne,
            n_dims: t.n_dims as usize,
            file_offset: t.offset,
            placement,
        });
    }
    let unused: Vec<&str> = file.tensors.iter().map(|t| t.name.as_str()).filter(|n| !used.contains(n)).collect();
    if !unused.is_empty() {
        let shown: Vec<&str> = unused.iter().take(5).copied().collect();
        return Err(format!(
            "{} tensor(s) not used by the {} architecture (e.g. {}): the file does not match what this architecture expects",
            unused.len(), arch.name(), shown.join(", ")
        ));
    }
    Ok(specs)
}

/// Whether ggml's CPU backend can use a weight of this type for its op:
/// norms must be f32; matmul and embedding weights must be float or
/// quantized types that ggml-cpu multiplies (checked with a probe op).
fn check_type(t: &TensorInfo, usage: Usage, cpu: &CpuDevice, experts_used: Option<i64>) -> Result<(), String> {
    let ok = match usage {
        Usage::Elementwise => t.typ == GgmlType::F32,
        Usage::MulMat | Usage::MulMatId | Usage::GetRows => {
            (t.typ.is_quantized() || t.typ.is_float())
                && cpu.supports_mul_mat_weight(t.typ, t.ne, cpu.buffer_type(), experts_used)
        }
    };
    if ok {
        Ok(())
    } else {
        Err(format!("tensor '{}' has type {}, which cannot be used for its role ({usage:?})", t.name, t.typ))
    }
}

fn check_shape(t: &TensorInfo, want: &[i64]) -> Result<(), String> {
    let mut w = [1i64; 4];
    w[..want.len()].copy_from_slice(want);
    if t.ne != w {
        return Err(format!("tensor '{}' has shape {:?}, expected {:?}", t.name, t.shape(), want));
    }
    Ok(())
}

/// llama.cpp's names for `general.file_type` (the dominant quantization).
fn file_type_name(ft: u32) -> String {
    let n = match ft {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        38 => "MXFP4",
        _ => return format!("type {ft}"),
    };
    n.to_string()
}
