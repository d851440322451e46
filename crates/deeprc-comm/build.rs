//! Builds the C++ shim of the `gloo` backend and the C shim of the `ucx`
//! backend. Without those features it does nothing and neither cxx-build
//! nor cc is even a dependency.

fn main() {
    // Without this line cargo would rerun the script (and rebuild the
    // crate) whenever any file of the package changes.
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "gloo")]
    if std::env::var_os("CARGO_FEATURE_GLOO").is_some() {
        gloo::build();
    }
    #[cfg(feature = "ucx")]
    if std::env::var_os("CARGO_FEATURE_UCX").is_some() {
        ucx::build();
    }
}

#[cfg(feature = "ucx")]
mod ucx {
    /// Compiles the shim; links Debian's shared libucp (libucx-dev).
    pub(crate) fn build() {
        cc::Build::new()
            .file("ucx-shim/shim.c")
            .warnings(true)
            .compile("deeprc_ucx_shim");
        for lib in ["ucp", "uct", "ucs"] {
            println!("cargo:rustc-link-lib=dylib={lib}");
        }
        println!("cargo:rerun-if-changed=ucx-shim/shim.c");
    }
}

#[cfg(feature = "gloo")]
mod gloo {
    /// Compiles the bridge and the shim; links Debian's shared libgloo.
    pub(crate) fn build() {
        cxx_build::bridge("src/gloo/ffi.rs")
            .file("gloo-shim/shim.cc")
            .std("c++17")
            // Gloo's headers are not warning-clean.
            .flag_if_supported("-Wno-unused-parameter")
            .flag_if_supported("-Wno-sign-compare")
            .flag_if_supported("-Wno-deprecated-declarations")
            .compile("deeprc_gloo_shim");
        println!("cargo:rustc-link-lib=dylib=gloo");
        println!("cargo:rustc-link-lib=dylib=pthread");
        println!("cargo:rerun-if-changed=src/gloo/ffi.rs");
        println!("cargo:rerun-if-changed=gloo-shim/shim.h");
        println!("cargo:rerun-if-changed=gloo-shim/shim.cc");
    }
}
