//! The Simulate tab of the right panel: turn simulation mode on, add and remove virtual devices
//! by profile, pick the model (the served one, or a preset shape with its weight type), and read
//! the prediction: decode tokens/s, time to first token, where a token's time goes, and every
//! device that got nothing or slows the pipeline, with the reason. "This machine's CPU" is
//! measured on a thread of its own when the app starts, so no frame waits for it.

use std::sync::{Arc, Mutex};

use bevy::prelude::*;
use bevy_egui::egui::{self, Color32, RichText};

use super::simulate::{SimCommand, SimModel, SimState};
use super::view::SIMULATED;
use crate::sim::WeightType;
use crate::sim::model::PRESETS;
use crate::sim::predict::mb;
use crate::sim::profile::{BUILT_IN, DeviceProfile};
use crate::sim::scenario::ShardCount;

/// The built-in profiles, "this-cpu" once its measurement is done.
#[derive(Resource, Clone, Default)]
pub struct Profiles {
    fixed: Vec<DeviceProfile>,
    this_cpu: Arc<Mutex<Option<DeviceProfile>>>,
}

impl Profiles {
    /// Starts measuring this machine's CPU in the background.
    pub fn start() -> Profiles {
        let fixed = BUILT_IN
            .iter()
            .filter(|n| **n != "this-cpu")
            .filter_map(|n| DeviceProfile::built_in(n).ok())
            .collect();
        let this_cpu = Arc::new(Mutex::new(None));
        let slot = this_cpu.clone();
        let _ = std::thread::Builder::new()
            .name("synapse-measure-cpu".into())
            .spawn(move || {
                let p = DeviceProfile::this_cpu();
                *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(p);
            });
        Profiles { fixed, this_cpu }
    }

    /// Every profile available now.
    pub fn all(&self) -> Vec<DeviceProfile> {
        let mut v = self.fixed.clone();
        if let Some(p) = self
            .this_cpu
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            v.push(p);
        }
        v
    }
}

/// Draws the tab; changes go out as [`SimCommand`]s.
pub(super) fn show(
    ui: &mut egui::Ui,
    state: &SimState,
    profiles: &Profiles,
    out: &mut MessageWriter<SimCommand>,
) {
    let mut on = state.enabled;
    if ui
        .checkbox(&mut on, "Show the simulated pipeline")
        .on_hover_text("virtual devices join the real ones; nothing real is sent to them")
        .changed()
    {
        out.write(SimCommand::Enable(on));
    }
    ui.label(
        RichText::new("What if these devices joined? Placement is the coordinator's own.").small(),
    );
    ui.separator();
    egui::Grid::new("sim-devices").num_columns(3).show(ui, |ui| {
        for p in profiles.all() {
            let n = state.mix.iter().filter(|m| m.name == p.name).count();
            ui.label(&p.name).on_hover_text(format!(
                "{}\n{} lent · {:.0} GFLOP/s matvec · {:.0} GB/s · {:.0} ms round trip · {:.0} Mbit/s",
                p.label,
                mb(p.memory_bytes),
                p.matvec_gflops,
                p.bandwidth_gbs,
                p.rtt_ms,
                p.link_mbps
            ));
            ui.label(n.to_string());
            ui.horizontal(|ui| {
                if ui.small_button("-").clicked() && n > 0 {
                    out.write(SimCommand::Remove {
                        profile: p.name.clone(),
                        count: 1,
                    });
                }
                for k in [1usize, 5] {
                    if ui.small_button(format!("+{k}")).clicked() {
                        out.write(SimCommand::Add {
                            profile: p.clone(),
                            count: k,
                        });
                        if !state.enabled {
                            out.write(SimCommand::Enable(true));
                        }
                    }
                }
            });
            ui.end_row();
        }
    });
    if !state.mix.is_empty() && ui.small_button("remove all virtual devices").clicked() {
        out.write(SimCommand::Clear);
    }
    ui.horizontal(|ui| {
        let mut n = state.opts.sessions;
        ui.label("generations at once");
        if ui
            .add(egui::DragValue::new(&mut n).range(1..=256))
            .on_hover_text("a classroom: one per student; they overlap in the pipeline")
            .changed()
        {
            out.write(SimCommand::Options(crate::sim::SimOptions {
                sessions: n,
                ..state.opts.clone()
            }));
        }
    });
    ui.separator();
    model_picker(ui, state, out);
    ui.separator();
    prediction(ui, state);
}

fn model_picker(ui: &mut egui::Ui, state: &SimState, out: &mut MessageWriter<SimCommand>) {
    let current = match &state.model {
        SimModel::Served => "the served model".to_string(),
        SimModel::Shape { name, .. } => name.clone(),
    };
    let mut chosen: Option<SimModel> = None;
    egui::ComboBox::from_label("model")
        .selected_text(&current)
        .show_ui(ui, |ui| {
            if ui
                .selectable_label(state.model == SimModel::Served, "the served model")
                .clicked()
            {
                chosen = Some(SimModel::Served);
            }
            for name in PRESETS {
                let weights = match &state.model {
                    SimModel::Shape { weights, .. } => *weights,
                    SimModel::Served => WeightType::Q4KM,
                };
                if ui.selectable_label(current == name, name).clicked() {
                    chosen = Some(SimModel::Shape {
                        name: name.into(),
                        weights,
                        shards: ShardCount::Auto,
                    });
                }
            }
        });
    if let SimModel::Shape { name, weights, .. } = &state.model {
        egui::ComboBox::from_label("weights")
            .selected_text(weights.name())
            .show_ui(ui, |ui| {
                for w in WeightType::ALL {
                    if ui.selectable_label(*weights == w, w.name()).clicked() {
                        chosen = Some(SimModel::Shape {
                            name: name.clone(),
                            weights: w,
                            shards: ShardCount::Auto,
                        });
                    }
                }
            });
        ui.label(RichText::new("split: the shard count placed fastest on these devices").small());
    }
    if let Some(m) = chosen {
        out.write(SimCommand::Model(m));
    }
}

fn prediction(ui: &mut egui::Ui, state: &SimState) {
    let Some(r) = state.report.as_ref().filter(|_| state.enabled) else {
        ui.label(&state.status);
        return;
    };
    ui.colored_label(SIMULATED, RichText::new("Prediction").strong());
    if r.complete {
        ui.label(format!(
            "decode {:.2} tok/s ({:.0} ms a token)",
            r.decode_tokens_per_second, r.decode_ms_per_token
        ));
        if r.options.sessions > 1 {
            ui.label(format!(
                "{} at once: {:.1} tok/s in all, {:.2} each",
                r.options.sessions,
                r.aggregate_tokens_per_second,
                r.aggregate_tokens_per_second / r.options.sessions as f64
            ));
        }
        ui.label(format!(
            "first token after {} prompt tokens: {:.2} s",
            r.options.prompt_tokens, r.time_to_first_token_s
        ));
        let total = r.decode_ms_per_token.max(1e-9);
        for (what, ms) in [
            ("compute", r.decode.compute_ms),
            ("network", r.decode.network_ms),
            ("coordinator", r.decode.coordinator_ms),
        ] {
            ui.add(
                egui::ProgressBar::new((ms / total) as f32)
                    .text(format!("{what} {ms:.1} ms"))
                    .desired_height(14.0),
            );
        }
        ui.label(
            RichText::new(format!(
                "{} hops · {} between devices per token",
                r.hops.len(),
                r.hops.get(1).map_or("no bytes".into(), |h| format!(
                    "{} bytes",
                    h.decode.bytes_out
                ))
            ))
            .small(),
        );
    } else {
        ui.colored_label(
            Color32::from_rgb(250, 150, 90),
            "does not run on these devices",
        );
    }
    egui::ScrollArea::vertical()
        .max_height(220.0)
        .show(ui, |ui| {
            for p in &r.problems {
                ui.colored_label(Color32::from_rgb(250, 150, 90), p);
            }
            for s in &r.slowing {
                ui.colored_label(
                    Color32::from_rgb(250, 200, 90),
                    format!("{}: {}", s.name, s.reason),
                );
            }
            // Group the idle ones: 27 Chromebooks with the same reason are one line.
            let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
            for u in &r.unused {
                match groups.iter_mut().find(|(why, _)| *why == u.reason) {
                    Some((_, v)) => v.push(&u.name),
                    None => groups.push((&u.reason, vec![&u.name])),
                }
            }
            for (why, names) in groups {
                let who = if names.len() > 2 {
                    format!(
                        "{} devices ({} … {})",
                        names.len(),
                        names[0],
                        names[names.len() - 1]
                    )
                } else {
                    names.join(", ")
                };
                ui.label(RichText::new(format!("{who}: {why}")).small());
            }
        });
}
