//! A split model directory: its manifest, tokenizer and shard files, and loading them into a
//! local pipeline.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use splitter::Manifest;

use crate::engine::ShardExecutor;
use crate::engine::cpu::CpuShard;
use crate::engine::gpu::{GpuContext, GpuShard};
use crate::generate::LocalPipeline;
use crate::tokenizer::Tokenizer;

/// An opened model directory.
pub struct ModelDir {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl ModelDir {
    /// Reads and validates `dir/manifest.json`.
    pub fn open(dir: &Path) -> Result<Self> {
        let manifest = Manifest::load(dir).with_context(|| {
            format!(
                "{} is not a Synapse model directory (make one with `synapse split`)",
                dir.display()
            )
        })?;
        Ok(ModelDir {
            dir: dir.to_path_buf(),
            manifest,
        })
    }

    /// The model's tokenizer.
    pub fn tokenizer(&self) -> Result<Tokenizer> {
        Ok(Tokenizer::load(
            &self.dir.join(&self.manifest.tokenizer),
            &self.manifest.config,
        )?)
    }

    /// Path of shard `i`'s file.
    pub fn shard_path(&self, i: usize) -> PathBuf {
        self.dir.join(&self.manifest.shards[i].file)
    }

    /// Checks every shard file's size and sha256 against the manifest.
    pub fn verify(&self) -> Result<()> {
        for s in &self.manifest.shards {
            let path = self.dir.join(&s.file);
            let got = crate::fetch::sha256_file(&path)?;
            if got != s.sha256 {
                bail!(
                    "{}: sha256 {got}, the manifest says {}",
                    path.display(),
                    s.sha256
                );
            }
        }
        Ok(())
    }

    /// Loads every shard on the CPU engine, in order.
    pub fn cpu_pipeline(&self) -> Result<LocalPipeline> {
        let shards = (0..self.manifest.shards.len())
            .map(|i| {
                Ok(Box::new(CpuShard::load(&self.dir, &self.manifest, i)?)
                    as Box<dyn ShardExecutor>)
            })
            .collect::<Result<Vec<_>>>()?;
        LocalPipeline::new(shards)
    }

    /// Loads every shard on the GPU engine, all on `ctx`'s device, in order.
    pub fn gpu_pipeline(&self, ctx: &Arc<GpuContext>) -> Result<LocalPipeline> {
        let shards = (0..self.manifest.shards.len())
            .map(|i| {
                let shard = GpuShard::load(ctx.clone(), &self.dir, &self.manifest, i)
                    .with_context(|| format!("loading shard {i} on the GPU"))?;
                Ok(Box::new(shard) as Box<dyn ShardExecutor>)
            })
            .collect::<Result<Vec<_>>>()?;
        LocalPipeline::new(shards)
    }
}
