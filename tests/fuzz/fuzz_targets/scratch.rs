//! Where the file-based targets write each input: a per-process file in /dev/shm (memory, so a
//! run is not bound by the disk) where it exists, else the temporary directory.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The per-process scratch file `name` of target `target` (one per binary), its directory
/// created on first use.
pub fn file(target: &str, name: &str) -> &'static Path {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
        let dir = base.join(format!("synapse-fuzz-{target}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("creating the scratch directory");
        dir.join(name)
    })
}
