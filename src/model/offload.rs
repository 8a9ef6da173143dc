//! Which layers run where. `-ngl N` offloads the last N layers, counting
//! the output layer as the last one (as llama.cpp counts them), to the devices,
//! spread in proportion to `--tensor-split` or else to each device's free
//! memory, as llama.cpp spreads them. The token embeddings stay on the CPU.
//! A layer's weights and its KV cache rows live on its device; the backend
//! scheduler splits each graph between the devices and the CPU.
use crate::ggml::{BufferType, Device};

/// `-ngl`: how many layers to offload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum GpuLayers {
    /// Every layer when there is a device to offload to.
    #[default]
    Auto,
    All,
    Count(usize),
}

impl GpuLayers {
    /// `auto`, `all` or a count (llama.cpp's spelling: `-ngl 99` for all).
    pub fn parse(s: &str) -> Result<GpuLayers, String> {
        match s {
            "auto" => Ok(GpuLayers::Auto),
            "all" | "-1" => Ok(GpuLayers::All),
            n => n
                .parse()
                .map(GpuLayers::Count)
                .map_err(|_| format!("-ngl {n}: expected a layer count, 'all' or 'auto'")),
        }
    }
}

/// Where each part of a model lives.
#[derive(Clone, Debug, Default)]
pub struct Offload {
    pub devices: Vec<Device>,
    /// Per repeating layer: the index of its device in `devices`; `None` is the CPU.
    pub layers: Vec<Option<usize>>,
    /// The output norm and projection's device.
    pub output: Option<usize>,
}

impl Offload {
    /// Spread `ngl` layers of `n_layer` over `devices`, weighted by `split`
    /// (one value per device) or, if it is empty, by free memory.
    pub fn plan(devices: Vec<Device>, n_layer: usize, ngl: GpuLayers, split: &[f32]) -> Result<Offload, String> {
        let n_off = match (ngl, devices.is_empty()) {
            (_, true) => 0,
            (GpuLayers::Auto | GpuLayers::All, false) => n_layer + 1,
            (GpuLayers::Count(n), false) => n.min(n_layer + 1),
        };
        let weights: Vec<f64> = if split.is_empty() {
            let free: Vec<f64> = devices.iter().map(|d| d.memory().0 as f64).collect();
            if free.iter().all(|&f| f <= 0.0) {
                vec![1.0; devices.len()]
            } else {
                free
            }
        } else {
            if split.len() != devices.len() {
                return Err(format!("--tensor-split has {} values for {} devices", split.len(), devices.len()));
            }
            if split.iter().any(|v| !v.is_finite() || *v < 0.0) || split.iter().all(|&v| v == 0.0) {
                return Err(format!("--tensor-split {split:?}: the shares must be non-negative numbers, not all zero"));
            }
            split.iter().map(|&v| v as f64).collect()
        };
        // Layer index n_layer is the output.
        let device_of = spread(&weights, n_off);
        let first = n_layer + 1 - n_off;
        let mut layers = vec![None; n_layer];
        let mut output = None;
        for (k, il) in (first..=n_layer).enumerate().take(n_off) {
            match layers.get_mut(il) {
                Some(l) => *l = Some(device_of[k]),
                None => output = Some(device_of[k]),
            }
        }
        Ok(Offload { devices, layers, output })
    }

    /// Everything on the CPU.
    pub fn cpu_only(n_layer: usize) -> Offload {
        Offload { devices: Vec::new(), layers: vec![None; n_layer], output: None }
    }

    pub fn layer_device(&self, il: usize) -> Option<Device> {
        self.layers.get(il).copied().flatten().map(|d| self.devices[d])
    }

    /// Where a weight goes, from its name: `blk.N.*` with layer N,
    /// `output*` with the output, the rest (embeddings, RoPE factors) on the CPU.
    pub fn device_of_weight(&self, name: &str) -> Option<Device> {
        if let Some(rest) = name.strip_prefix("blk.") {
            let il: usize = rest.split('.').next()?.parse().ok()?;
            return self.layer_device(il);
        }
        if name.starts_with("output") {
            return self.output.map(|d| self.devices[d]);
        }
        None
    }

    /// The buffer type of layer `il`'s KV rows: its device's, else `cpu`.
    pub fn kv_buffer_type(&self, il: usize, cpu: BufferType) -> BufferType {
        self.layer_device(il).map_or(cpu, |d| d.buffer_type())
    }

    /// Layers (the output counted as one) per device, for the load report.
    pub fn summary(&self) -> Vec<(String, usize)> {
        let mut out: Vec<(String, usize)> =
            self.devices.iter().map(|d| (format!("{} ({})", d.name(), d.description()), 0)).collect();
        for d in self.layers.iter().chain(std::iter::once(&self.output)).flatten() {
            out[*d].1 += 1;
        }
        out.retain(|(_, n)| *n > 0);
        out
    }

    /// Layers offloaded, the output counted as one: llama.cpp's `n_gpu_layers` for the same placement.
    pub fn n_offloaded(&self) -> usize {
        self.layers.iter().chain(std::iter::once(&self.output)).flatten().count()
    }

    /// The devices that hold at least one layer, in order.
    pub fn used_devices(&self) -> Vec<Device> {
        let mut used: Vec<usize> = self.layers.iter().chain(std::iter::once(&self.output)).flatten().copied().collect();
        used.sort_unstable();
        used.dedup();
        used.into_iter().map(|i| self.devices[i]).collect()
    }

    /// Whether anything runs off the CPU.
    pub fn is_offloaded(&self) -> bool {
        self.output.is_some() || self.layers.iter().any(Option::is_some)
    }
}

/// For each of `n` consecutive items, the device it goes to: device `d`
/// takes the items whose fraction `k / n` falls in its share of the
/// cumulative weights.
fn spread(weights: &[f64], n: usize) -> Vec<usize> {
    let total: f64 = weights.iter().sum();
    let mut cum = Vec::with_capacity(weights.len());
    let mut acc = 0.0;
    for w in weights {
        acc += w / total;
        cum.push(acc);
    }
    (0..n)
        .map(|k| {
            let x = k as f64 / n as f64;
            cum.iter().position(|&c| c > x).unwrap_or(weights.len().saturating_sub(1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_spread_like_llama_cpp() {
        // 30 layers + output over two equal devices: 16 then 15.
        let d = spread(&[1.0, 1.0], 31);
        assert_eq!(d.iter().filter(|&&x| x == 0).count(), 16);
        assert!(d.windows(2).all(|w| w[0] <= w[1]));
        // A zero share gets nothing.
        assert!(spread(&[0.0, 1.0], 10).iter().all(|&x| x == 1));
        assert_eq!(spread(&[3.0, 1.0], 8), vec![0, 0, 0, 0, 0, 0, 1, 1]);
    }

    #[test]
    fn ngl_parses_and_counts_from_the_top() {
        assert_eq!(GpuLayers::parse("all").unwrap(), GpuLayers::All);
        assert_eq!(GpuLayers::parse("12").unwrap(), GpuLayers::Count(12));
        assert!(GpuLayers::parse("many").is_err());
        let cpu = Offload::plan(Vec::new(), 4, GpuLayers::All, &[]).unwrap();
        assert!(!cpu.is_offloaded());
        assert_eq!(cpu.device_of_weight("blk.3.attn_q.weight"), None);
        let dev = Device::cpu(); // stands in for an accelerator: only the indices matter here
                                 // The output counts as the last layer: -ngl 2 of 4 is layer 3 and the output.
        let o = Offload::plan(vec![dev], 4, GpuLayers::Count(2), &[]).unwrap();
        assert_eq!(o.layers, vec![None, None, None, Some(0)]);
        assert_eq!(o.output, Some(0));
        assert_eq!(o.device_of_weight("blk.3.ffn_up.weight"), Some(dev));
        assert_eq!(o.device_of_weight("blk.1.ffn_up.weight"), None);
        assert_eq!(o.device_of_weight("output.weight"), Some(dev));
        let o = Offload::plan(vec![dev], 4, GpuLayers::Count(4), &[]).unwrap();
        assert_eq!(o.layers, vec![None, Some(0), Some(0), Some(0)]);
        let o = Offload::plan(vec![dev], 4, GpuLayers::Count(9), &[]).unwrap();
        assert_eq!((&o.layers, o.output), (&vec![Some(0); 4], Some(0)));
        assert_eq!(o.device_of_weight("token_embd.weight"), None);
        assert!(Offload::plan(vec![dev], 4, GpuLayers::All, &[1.0, 1.0]).is_err());
        assert!(Offload::plan(vec![dev], 4, GpuLayers::All, &[0.0]).is_err());
    }
}
