//! Generates raw bindings for ggml's public headers. The headers and the static
//! libraries come from the `llama-cpp-sys-2` build (CMake installs them into its
//! OUT_DIR and it exports the location through `DEP_LLAMA_GGML_CMAKE_DIR`), so there
//! is exactly one ggml in the program, shared by the engine and the oracle.
use std::{env, path::PathBuf};

fn main() {
    let cmake_dir =
        env::var("DEP_LLAMA_GGML_CMAKE_DIR").expect("llama-cpp-sys-2 did not export DEP_LLAMA_GGML_CMAKE_DIR");
    // <out>/lib/cmake -> <out>/include
    let include = PathBuf::from(&cmake_dir)
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("include"))
        .expect("unexpected ggml cmake dir layout");
    let wrapper = include.join("ggml.h");
    assert!(wrapper.exists(), "ggml headers not found in {}", include.display());
    println!("cargo:rerun-if-env-changed=DEP_LLAMA_GGML_CMAKE_DIR");
    println!("cargo:include={}", include.display());

    let mut builder = bindgen::Builder::default()
        .clang_arg(format!("-I{}", include.display()))
        .allowlist_function("ggml_.*")
        .allowlist_function("gguf_.*")
        .allowlist_type("ggml_.*")
        .allowlist_type("gguf_.*")
        .allowlist_var("GGML_.*")
        .allowlist_var("GGUF_.*")
        .allowlist_var("RPC_PROTO_.*")
        .prepend_enum_name(false)
        .derive_default(true)
        .layout_tests(false)
        .raw_line("pub type FILE = ::std::os::raw::c_void;")
        .blocklist_type("FILE")
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
    for h in ["ggml.h", "ggml-alloc.h", "ggml-backend.h", "ggml-cpu.h", "ggml-rpc.h", "gguf.h"] {
        builder = builder.header(include.join(h).display().to_string());
    }
    let bindings = builder.generate().expect("bindgen failed on the ggml headers");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("bindings.rs");
    bindings.write_to_file(out).expect("could not write bindings");
}
