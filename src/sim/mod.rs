//! The simulator: what the coordinator would do with a given mix of devices (real ones, as
//! their nodes reported themselves, and virtual ones from [`profile`]s) for a model directory
//! or a model's shapes alone, and how fast the pipeline would run.
//!
//! Placement is not modelled: [`predict::coordinator_placement`] calls the coordinator's own
//! pure placement (`coordinator::placement::place`), the one call site in the simulator, so a
//! change of policy changes the predictions too. [`timing`] prices each hop of a step (compute
//! per device, network per hop, the coordinator's share); [`predict::simulate`] puts it
//! together into a [`predict::Report`]: memory per device, decode tokens/s, time to first
//! token, bytes per hop, where a token's time goes, and every device left out or slowing the
//! pipeline, with the reason. [`scenario`] reads device mixes from TOML or JSON files.
//!
//! Everything here is a pure function of its inputs (except measuring this machine's CPU in
//! [`profile::DeviceProfile::this_cpu`]), so it is unit tested without sockets.

pub mod model;
pub mod predict;
pub mod profile;
pub mod scenario;
pub mod timing;

pub use model::{ModelShape, ShardShape, WeightType};
pub use predict::{Report, SimDevice, SimOptions, simulate, simulate_with};
pub use profile::DeviceProfile;

/// What can go wrong setting up a simulation.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A name, number or combination that makes no sense, with what to do instead.
    #[error("{0}")]
    Invalid(String),
    /// A scenario file that cannot be read or parsed.
    #[error("scenario {path}: {what}")]
    Scenario { path: String, what: String },
}
