#!/bin/bash
# One device call (session 17): decache's Vulkan build on the H200.
# Copy to target/gpu-carry/device.sh beside the xz-compressed stripped decache and
# gpu_offload test binaries (built with --features vulkan into target/vulkan), gen_llama and
# the Vulkan loader .debs in gl/; then: bash target/gpu-carry/device.sh, carry
# ["target/gpu-carry"], timeout_s 420 (docs/BENCHMARKS.md, "GPU: Vulkan on an NVIDIA H200").
set -x
C=target/gpu-carry
B=/tmp/dc
mkdir -p $B
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
exec > >(tee "$OUT/device.log") 2>&1
date -u
uname -m
for f in $C/gl/*.deb; do dpkg -x $f /; done
ldconfig
ldconfig -p | grep -E 'libvulkan|libGLX_nvidia|libGLdispatch'
for j in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia_icd.json; do
  if [ -f $j ]; then export VK_DRIVER_FILES=$j VK_ICD_FILENAMES=$j; cat $j; break; fi
done
nvidia-smi -L
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
grep -m1 'model name' /proc/cpuinfo; nproc
# binaries (xz-compressed to fit the 64 MiB carry)
for f in decache gpu_offload; do
  if command -v xz >/dev/null; then xz -dc $C/$f.xz > $B/$f
  else python3 -c "import lzma,sys; sys.stdout.buffer.write(lzma.open(sys.argv[1]).read())" $C/$f.xz > $B/$f; fi
  chmod +x $B/$f
done
cp $C/gen_llama $B/ && chmod +x $B/gen_llama
ldd $B/decache
# the test reads /work/main/prompts/perplexity.txt (path fixed at compile time)
if [ ! -f /work/main/prompts/perplexity.txt ]; then
  if [ -e /work/main ]; then mkdir -p /work/main/prompts && cp prompts/perplexity.txt /work/main/prompts/
  else mkdir -p /work && ln -sfn "$PWD" /work/main; fi
fi
ls -la /work/main/prompts/perplexity.txt
timeout 30 $B/gen_llama /tmp/smol.gguf
timeout 30 $B/decache info /tmp/smol.gguf
export GGML_VK_VISIBLE_DEVICES=0
set -o pipefail
timeout 100 env DECACHE_GPU_MODEL=/tmp/smol.gguf $B/gpu_offload --nocapture --test-threads=1 2>&1 | tee $OUT/gpu_offload.log
echo "gpu_offload rc=$?"
date -u
timeout 100 $B/decache bench --llama -m /tmp/smol.gguf -ngl all -t 16 -r 3 -p 512 -n 128 -d 0,4096 2>&1 | tee $OUT/bench.log
echo "bench gpu rc=$?"
date -u
# CPU only, for contrast: the Vulkan driver hidden, so ggml sees no GPU at all
# (with -ngl 0 and a visible GPU, llama.cpp would still offload large batches).
# Two runs, so that a timeout at depth 4096 (llama.cpp re-prefills it every run) keeps depth 0.
timeout 45 env VK_DRIVER_FILES=/nonexistent.json VK_ICD_FILENAMES=/nonexistent.json $B/decache bench --llama -m /tmp/smol.gguf -ngl 0 -t 16 -r 3 -p 512 -n 128 -d 0 2>&1 | tee $OUT/bench-cpu.log
echo "bench cpu d0 rc=$?"
date -u
timeout 110 env VK_DRIVER_FILES=/nonexistent.json VK_ICD_FILENAMES=/nonexistent.json $B/decache bench --llama -m /tmp/smol.gguf -ngl 0 -t 16 -r 3 -p 512 -n 128 -d 4096 2>&1 | tee $OUT/bench-cpu-d4096.log
echo "bench cpu d4096 rc=$?"
date -u
