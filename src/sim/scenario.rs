//! Scenario files: a mix of devices and the models to try on it, in TOML or JSON (by the file's
//! extension). Unknown keys are refused, so a typo never silently falls back to a default.
//!
//! ```toml
//! name = "A classroom of 30 Chromebooks"
//! prompt_tokens = 128          # optional, default 128
//! gen_tokens = 128             # optional, default 128
//! sessions = 30                # optional: generations at once, default 1
//!
//! [[devices]]
//! profile = "chromebook"       # a built-in profile (see `profile::BUILT_IN`)
//! count = 30                   # optional, default 1
//! rtt_ms = 15                  # optional: any profile number can be overridden
//!
//! [[models]]
//! shape = "Llama-3.2-1B"       # a preset, or `dir = "path/to/model"` (relative to the file)
//! weights = "q4_0"             # optional, default f16
//! shards = "auto"              # optional: a number, or auto (the fastest split), default auto
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::SimError;
use super::model::WeightType;
use super::predict::{SimDevice, VIRTUAL_ID_BASE};
use super::profile::DeviceProfile;

/// A parsed scenario.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default = "default_tokens")]
    pub prompt_tokens: usize,
    #[serde(default = "default_tokens")]
    pub gen_tokens: usize,
    /// Generations running at once (default 1).
    #[serde(default = "one")]
    pub sessions: usize,
    pub devices: Vec<DeviceGroup>,
    #[serde(default)]
    pub models: Vec<ModelChoice>,
}

fn default_tokens() -> usize {
    128
}

/// `count` devices of one profile, with optional overrides.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceGroup {
    pub profile: String,
    #[serde(default = "one")]
    pub count: usize,
    /// Name prefix (the profile's name by default); devices are numbered after it.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub memory_gb: Option<f64>,
    #[serde(default)]
    pub matvec_gflops: Option<f64>,
    #[serde(default)]
    pub matmul_gflops: Option<f64>,
    #[serde(default)]
    pub bandwidth_gbs: Option<f64>,
    #[serde(default)]
    pub layer_overhead_us: Option<f64>,
    #[serde(default)]
    pub step_overhead_ms: Option<f64>,
    #[serde(default)]
    pub rtt_ms: Option<f64>,
    #[serde(default)]
    pub link_mbps: Option<f64>,
}

fn one() -> usize {
    1
}

/// A model to simulate on the scenario's devices.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelChoice {
    /// A preset shape (`model::PRESETS`).
    #[serde(default)]
    pub shape: Option<String>,
    /// A model directory, relative to the scenario file.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    #[serde(default)]
    pub weights: Option<String>,
    #[serde(default)]
    pub shards: Option<ShardCount>,
}

/// How many shards to cut a shape into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardCount {
    /// The split the coordinator places fastest on these devices.
    Auto,
    Exactly(usize),
}

impl ShardCount {
    /// `auto` or a positive number.
    pub fn parse(s: &str) -> Result<ShardCount, SimError> {
        if s.eq_ignore_ascii_case("auto") {
            return Ok(ShardCount::Auto);
        }
        match s.parse::<usize>() {
            Ok(n) if n > 0 => Ok(ShardCount::Exactly(n)),
            _ => Err(SimError::Invalid(format!(
                "shards must be `auto` or a positive number, not `{s}`"
            ))),
        }
    }
}

impl<'de> Deserialize<'de> for ShardCount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(0) => Err(serde::de::Error::custom("shards must be at least 1")),
            Raw::N(n) => Ok(ShardCount::Exactly(n as usize)),
            Raw::S(s) => ShardCount::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

/// Most devices a scenario may describe.
pub const MAX_DEVICES: usize = 1024;

impl Scenario {
    /// Reads a `.toml` or `.json` scenario file.
    pub fn load(path: &Path) -> Result<Scenario, SimError> {
        let err = |what: String| SimError::Scenario {
            path: path.display().to_string(),
            what,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let mut s: Scenario = match ext.as_deref() {
            Some("toml") => toml::from_str(&text).map_err(|e| err(e.to_string()))?,
            Some("json") => serde_json::from_str(&text).map_err(|e| err(e.to_string()))?,
            _ => return Err(err("the file name must end in .toml or .json".into())),
        };
        let base = path.parent().unwrap_or(Path::new("."));
        for m in &mut s.models {
            if let Some(d) = &m.dir
                && d.is_relative()
            {
                m.dir = Some(base.join(d));
            }
        }
        s.validate().map_err(|e| err(e.to_string()))?;
        Ok(s)
    }

    /// Checks counts, names and the models' choices.
    pub fn validate(&self) -> Result<(), SimError> {
        let n: usize = self.devices.iter().map(|g| g.count).sum();
        if n > MAX_DEVICES {
            return Err(SimError::Invalid(format!(
                "{n} devices: at most {MAX_DEVICES} can be simulated"
            )));
        }
        if self.prompt_tokens == 0 || self.gen_tokens == 0 || self.sessions == 0 {
            return Err(SimError::Invalid(
                "prompt_tokens, gen_tokens and sessions must be at least 1".into(),
            ));
        }
        for m in &self.models {
            match (&m.shape, &m.dir) {
                (Some(_), Some(_)) => {
                    return Err(SimError::Invalid(
                        "a model gives either `shape` or `dir`, not both".into(),
                    ));
                }
                (None, None) => {
                    return Err(SimError::Invalid("a model needs `shape` or `dir`".into()));
                }
                _ => {}
            }
            if let Some(w) = &m.weights {
                WeightType::parse(w)?;
            }
        }
        self.devices(0)?;
        Ok(())
    }

    /// The scenario's devices, with ids after `first_free` (real nodes keep theirs).
    pub fn devices(&self, first_free: u64) -> Result<Vec<SimDevice>, SimError> {
        let mut out = Vec::new();
        for g in &self.devices {
            let mut p = DeviceProfile::built_in(&g.profile)?;
            let set = |v: &mut f64, o: Option<f64>| {
                if let Some(o) = o {
                    *v = o;
                }
            };
            if let Some(gb) = g.memory_gb {
                if !(gb.is_finite() && gb >= 0.0) {
                    return Err(SimError::Invalid(format!(
                        "profile `{}`: memory_gb must be a number >= 0, not {gb}",
                        g.profile
                    )));
                }
                p.memory_bytes = (gb * 1e9) as u64;
            }
            set(&mut p.matvec_gflops, g.matvec_gflops);
            set(&mut p.matmul_gflops, g.matmul_gflops);
            set(&mut p.bandwidth_gbs, g.bandwidth_gbs);
            set(&mut p.layer_overhead_us, g.layer_overhead_us);
            set(&mut p.step_overhead_ms, g.step_overhead_ms);
            set(&mut p.rtt_ms, g.rtt_ms);
            set(&mut p.link_mbps, g.link_mbps);
            p.validate()?;
            let prefix = g.name.clone().unwrap_or_else(|| p.name.clone());
            for i in 0..g.count {
                let id = VIRTUAL_ID_BASE.max(first_free) + out.len() as u64;
                let name = if g.count == 1 {
                    prefix.clone()
                } else {
                    format!("{prefix}-{:02}", i + 1)
                };
                out.push(SimDevice {
                    id,
                    name,
                    profile: p.clone(),
                    real: false,
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        (dir, p)
    }

    #[test]
    fn toml_and_json_say_the_same() {
        let (_a, t) = write(
            "s.toml",
            "name = \"x\"\n[[devices]]\nprofile = \"phone\"\ncount = 4\nrtt_ms = 20\n\
             [[devices]]\nprofile = \"laptop-igpu\"\n[[models]]\nshape = \"Llama-3.2-1B\"\n\
             weights = \"q4_0\"\nshards = \"auto\"\n",
        );
        let (_b, j) = write(
            "s.json",
            r#"{"name": "x", "devices": [{"profile": "phone", "count": 4, "rtt_ms": 20},
               {"profile": "laptop-igpu"}],
               "models": [{"shape": "Llama-3.2-1B", "weights": "q4_0", "shards": "auto"}]}"#,
        );
        let (a, b) = (Scenario::load(&t).unwrap(), Scenario::load(&j).unwrap());
        assert_eq!(a, b);
        let d = a.devices(0).unwrap();
        assert_eq!(d.len(), 5);
        assert_eq!(d[0].name, "phone-01");
        assert_eq!(d[0].profile.rtt_ms, 20.0);
        assert_eq!(d[4].name, "laptop-igpu");
        assert_eq!(a.models[0].shards, Some(ShardCount::Auto));
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            (
                "typo.toml",
                "name = \"x\"\n[[devices]]\nprofle = \"phone\"\n",
                "profle",
            ),
            (
                "p.toml",
                "name = \"x\"\n[[devices]]\nprofile = \"fridge\"\n",
                "fridge",
            ),
            (
                "w.toml",
                "name = \"x\"\ndevices = []\n[[models]]\nshape = \"Llama-3.2-1B\"\nweights = \"q2\"\n",
                "q2",
            ),
            (
                "n.toml",
                "name = \"x\"\ndevices = []\n[[models]]\nshape = \"Llama-3.2-1B\"\nshards = 0\n",
                "at least 1",
            ),
            (
                "r.toml",
                "name = \"x\"\n[[devices]]\nprofile = \"phone\"\nrtt_ms = -1\n",
                "rtt_ms",
            ),
            ("e.yaml", "name: x", ".toml or .json"),
            ("bad.json", "{", "bad.json"),
        ];
        for (file, text, want) in cases {
            let (_d, p) = write(file, text);
            let e = Scenario::load(&p).unwrap_err().to_string();
            assert!(e.contains(want), "{file}: {e}");
        }
    }

    #[test]
    fn model_dirs_are_relative_to_the_file() {
        let (_d, p) = write(
            "s.toml",
            "name = \"x\"\ndevices = []\n[[models]]\ndir = \"m\"\n",
        );
        let s = Scenario::load(&p).unwrap();
        assert_eq!(
            s.models[0].dir.as_deref(),
            Some(p.parent().unwrap().join("m").as_path())
        );
    }
}
