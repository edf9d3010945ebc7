//! Builds the sandbox guest component and hands it to the crate to embed.
//!
//! The guest (CPython plus `guest/app`, made a component by componentize-py) is built by
//! `guest/build.sh`, the one way it is built, into `OUT_DIR/rlm_guest.wasm`; its BLAKE3 hash goes
//! to the crate as `RLM_GUEST_BLAKE3`, so a process finds the guest's precompiled artifact without
//! hashing 23 MB at start. `RLM_EMBED_GUEST=/path/to/rlm_guest.wasm` embeds a prebuilt guest
//! instead (builds without Python).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").ok_or("cargo did not set OUT_DIR")?);
    let manifest = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").ok_or("cargo did not set CARGO_MANIFEST_DIR")?,
    );
    let out = out_dir.join("rlm_guest.wasm");
    println!("cargo::rerun-if-env-changed=RLM_EMBED_GUEST");

    if let Some(prebuilt) = std::env::var_os("RLM_EMBED_GUEST") {
        let prebuilt = PathBuf::from(prebuilt);
        println!("cargo::rerun-if-changed={}", prebuilt.display());
        std::fs::copy(&prebuilt, &out).map_err(|e| {
            format!(
                "RLM_EMBED_GUEST={}: cannot copy it ({e}); point it at a built rlm_guest.wasm \
                 or unset it to build the guest from guest/",
                prebuilt.display()
            )
        })?;
    } else {
        build_guest(&manifest, &out_dir)?;
    }

    let bytes = std::fs::read(&out).map_err(|e| format!("reading {}: {e}", out.display()))?;
    println!(
        "cargo::rustc-env=RLM_GUEST_BLAKE3={}",
        blake3::hash(&bytes).to_hex()
    );
    Ok(())
}

/// Run `guest/build.sh OUT_DIR` from the repository this crate lives in.
fn build_guest(manifest: &Path, out_dir: &Path) -> Result<(), String> {
    let root = manifest.join("../..");
    let script = root.join("guest/build.sh");
    if !script.is_file() {
        return Err(format!(
            "the guest sources are not beside this crate ({} is missing). Use rlm-sandbox from \
             its repository (a path or git dependency), or set RLM_EMBED_GUEST to a prebuilt \
             rlm_guest.wasm",
            script.display()
        ));
    }
    for input in ["guest/wit", "guest/app", "guest/build.sh"] {
        println!("cargo::rerun-if-changed={}", root.join(input).display());
    }
    for var in ["RLM_GUEST_VENV", "RLM_CACHE_DIR", "PYTHON"] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    let output = Command::new("bash")
        .arg(&script)
        .arg(out_dir)
        .output()
        .map_err(|e| {
            format!("cannot run bash for {} ({e}); bash is needed to build the guest, or set RLM_EMBED_GUEST to a prebuilt rlm_guest.wasm", script.display())
        })?;
    // The script's progress goes to cargo's build log; on failure it is the message.
    let log = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(format!(
            "building the sandbox guest failed ({}):\n{log}",
            output.status
        ));
    }
    eprint!("{log}");
    Ok(())
}
