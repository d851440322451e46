//! Build script of deeprc-bridge.
//!
//! - `tch`: compiles `cpp/tch_blob.cpp` (a tensor over Rust-owned memory
//!   with a deleter) against the libtorch that torch-sys found, and adds an
//!   rpath to libtorch so this crate's tests and examples run without
//!   `LD_LIBRARY_PATH`.
//! - `tensorflow`: adds an rpath to the TensorFlow libraries named by the
//!   `links` override that `scripts/setup-ml.sh` writes
//!   (`DEP_TENSORFLOW_RPATH`).
//! - Tells `mem.rs` where the venv's CUDA runtime is (`DEEPRC_CUDART_DIR`),
//!   for page-locking on machines with a GPU.

use std::env;
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=cpp/tch_blob.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let mut cudart_dirs: Vec<PathBuf> = Vec::new();

    if env::var_os("CARGO_FEATURE_TCH").is_some() {
        let lib = env::var("DEP_TCH_LIBTORCH_LIB")
            .expect("torch-sys did not say where libtorch is (DEP_TCH_LIBTORCH_LIB); run scripts/setup-ml.sh and source scripts/env-ml.sh");
        let lib = PathBuf::from(lib);
        let root = lib
            .parent()
            .expect("libtorch lib dir has a parent")
            .to_path_buf();
        let abi = env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
        cc::Build::new()
            .cpp(true)
            .pic(true)
            .warnings(false)
            .include(root.join("include"))
            .include(root.join("include/torch/csrc/api/include"))
            .flag("-std=c++17")
            .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
            .flag("-DGLOG_USE_GLOG_EXPORT")
            .file("cpp/tch_blob.cpp")
            .compile("deeprc_tch_blob");
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
        if let Some(site) = root.parent() {
            cudart_dirs.push(site.join("nvidia/cu13/lib"));
        }
    }

    if env::var_os("CARGO_FEATURE_TENSORFLOW").is_some() {
        match env::var("DEP_TENSORFLOW_RPATH") {
            Ok(dir) => println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}"),
            Err(_) => println!(
                "cargo:warning=no DEP_TENSORFLOW_RPATH (the links override of scripts/setup-ml.sh): binaries need LD_LIBRARY_PATH (scripts/env-ml.sh)"
            ),
        }
    }

    if let Ok(lt) = env::var("LIBTORCH") {
        if let Some(site) = Path::new(&lt).parent() {
            cudart_dirs.push(site.join("nvidia/cu13/lib"));
        }
    }
    if let Some(dir) = cudart_dirs
        .iter()
        .find(|d| d.join("libcudart.so.13").exists())
    {
        println!("cargo:rustc-env=DEEPRC_CUDART_DIR={}", dir.display());
    }
}
