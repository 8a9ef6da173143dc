//! Read-only memory maps of model files (the mapping that ggml's CPU buffers
//! wrap in place).
use std::fs::File;

/// Map `f` read-only.
pub fn map_file_readonly(f: &File) -> std::io::Result<memmap2::Mmap> {
    // SAFETY: read-only mapping; the program never writes through it. A file
    // truncated by another process while mapped would fault, as in every
    // mmap-based runner; decache never modifies model files it has open.
    unsafe { memmap2::Mmap::map(f) }
}
