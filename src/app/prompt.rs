//! The prompt panel: a prompt, the sampling settings and the speculation switch, a
//! Generate/Stop button, and the text as it streams in with its tokens per second and how many
//! speculative drafts were accepted. Generations go to the coordinator through the
//! bridge; `--prompt` starts one by itself as soon as every shard is ready.

use bevy::prelude::*;
use bevy_egui::{EguiContexts, EguiPrimaryContextPass, egui};

use super::AppStage;
use super::bridge::{Bridge, CoreCommand, CoreMessage, FromCore};
use super::shards::{Shard, ShardStatus};
use super::simulate::Simulated;
use super::window::{FreeRect, UiOrder};
use crate::coordinator::session::{GenerateEvent, GenerateRequest};
use crate::sampling::SamplingParams;

/// The panel's state.
#[derive(Resource, Debug)]
pub struct PromptPanel {
    pub prompt: String,
    pub max_tokens: usize,
    pub params: SamplingParams,
    /// Speculative decoding for the panel's generations (the coordinator's `--speculate`
    /// still applies: off there is off here).
    pub speculate: bool,
    /// Drafts of the last generation: (drafted, accepted).
    pub drafts: Option<(usize, usize)>,
    /// The generation this panel runs, if any.
    pub running: Option<u64>,
    next_request: u64,
    pub output: String,
    pub generated: usize,
    /// App time of the first token, for tokens per second.
    first_token_at: Option<f64>,
    pub tokens_per_second: Option<f64>,
    pub status: String,
    /// A prompt to start once the pipeline is complete (`--prompt`).
    auto: Option<String>,
}

pub(super) fn plugin(app: &mut App, auto: Option<String>, max_tokens: usize) {
    app.insert_resource(PromptPanel {
        prompt: auto
            .clone()
            .unwrap_or_else(|| "The capital of France is".into()),
        max_tokens: max_tokens.max(1),
        params: SamplingParams::default(),
        speculate: true,
        drafts: None,
        running: None,
        next_request: 1,
        output: String::new(),
        generated: 0,
        first_token_at: None,
        tokens_per_second: None,
        status: String::new(),
        auto,
    })
    .add_systems(Update, (auto_start, stream).in_set(AppStage::Traffic))
    .add_systems(EguiPrimaryContextPass, panel.in_set(UiOrder::Left));
}

impl PromptPanel {
    fn start(&mut self, bridge: &Bridge) {
        let request = self.next_request;
        self.next_request += 1;
        let req = GenerateRequest {
            stream: true,
            prompt: self.prompt.clone(),
            max_tokens: self.max_tokens,
            sampling: self.params.clone(),
            speculate: Some(self.speculate),
        };
        if let Err(e) = req.sampling.validate() {
            self.status = e;
            return;
        }
        if bridge.send(CoreCommand::Generate { request, req }) {
            self.running = Some(request);
            self.output.clear();
            self.generated = 0;
            self.first_token_at = None;
            self.tokens_per_second = None;
            self.drafts = None;
            self.status = "waiting for the pipeline…".into();
        } else {
            self.status = "the coordinator is not running".into();
        }
    }
}

fn auto_start(
    mut panel: ResMut<PromptPanel>,
    bridge: Option<Res<Bridge>>,
    shards: Query<&Shard, Without<Simulated>>,
) {
    if panel.auto.is_none() || panel.running.is_some() {
        return;
    }
    let ready = !shards.is_empty() && shards.iter().all(|s| s.state == ShardStatus::Ready);
    if let (true, Some(bridge)) = (ready, bridge) {
        panel.auto = None;
        panel.start(&bridge);
    }
}

fn stream(mut msgs: MessageReader<FromCore>, mut panel: ResMut<PromptPanel>, time: Res<Time>) {
    let now = time.elapsed_secs_f64();
    for FromCore(m) in msgs.read() {
        let CoreMessage::Generation { request, event } = m else {
            continue;
        };
        if panel.running != Some(*request) {
            continue;
        }
        match event {
            GenerateEvent::Start { prompt_ids, .. } => {
                panel.status = format!("prompt: {} tokens", prompt_ids.len());
            }
            GenerateEvent::Token { text, .. } => {
                panel.output.push_str(text);
                panel.generated += 1;
                if panel.first_token_at.is_none() {
                    info!("generation {request}: first token");
                }
                let first = *panel.first_token_at.get_or_insert(now);
                if panel.generated > 1 && now > first {
                    panel.tokens_per_second = Some((panel.generated - 1) as f64 / (now - first));
                }
                panel.status = "generating…".into();
            }
            GenerateEvent::Done {
                reason,
                tokens_per_second,
                drafted,
                accepted,
                ..
            } => {
                panel.tokens_per_second = Some(*tokens_per_second);
                panel.drafts = Some((*drafted, *accepted));
                panel.status = format!("done ({reason})");
                panel.running = None;
            }
            GenerateEvent::Error { message } | GenerateEvent::Unavailable { message, .. } => {
                panel.status = format!("error: {message}");
                panel.running = None;
            }
        }
    }
}

fn panel(
    mut contexts: EguiContexts,
    mut free: ResMut<FreeRect>,
    mut panel: ResMut<PromptPanel>,
    bridge: Option<Res<Bridge>>,
) -> Result {
    let ctx = contexts.ctx_mut()?.clone();
    let mut root = free.ui(&ctx, "prompt-root");
    egui::Panel::left("prompt")
        .default_size(330.0)
        .show(&mut root, |ui| {
            ui.heading("Prompt");
            ui.add(
                egui::TextEdit::multiline(&mut panel.prompt)
                    .desired_rows(3)
                    .desired_width(f32::INFINITY),
            );
            egui::Grid::new("sampling").num_columns(2).show(ui, |ui| {
                let p = &mut *panel;
                ui.label("temperature");
                ui.add(egui::Slider::new(&mut p.params.temperature, 0.0..=2.0).text("0 = greedy"));
                ui.end_row();
                ui.label("top-k");
                ui.add(egui::Slider::new(&mut p.params.top_k, 0..=200).text("0 = all"));
                ui.end_row();
                ui.label("top-p");
                ui.add(egui::Slider::new(&mut p.params.top_p, 0.05..=1.0));
                ui.end_row();
                ui.label("max tokens");
                ui.add(egui::Slider::new(&mut p.max_tokens, 1..=4096).logarithmic(true));
                ui.end_row();
                ui.label("seed");
                ui.add(egui::DragValue::new(&mut p.params.seed));
                ui.end_row();
                ui.label("speculate");
                ui.checkbox(&mut p.speculate, "draft by prompt lookup")
                    .on_hover_text("verify several drafted tokens in one trip; output unchanged");
                ui.end_row();
            });
            ui.horizontal(|ui| {
                match (panel.running, &bridge) {
                    (Some(request), Some(b)) => {
                        if ui.button("■ Stop").clicked() {
                            b.send(CoreCommand::Cancel { request });
                        }
                    }
                    (None, Some(b)) => {
                        if ui.button("▶ Generate").clicked() {
                            panel.start(b);
                        }
                    }
                    _ => {
                        ui.label("no coordinator");
                    }
                }
                if let Some(tps) = panel.tokens_per_second {
                    ui.label(format!("{tps:.1} tokens/s · {} tokens", panel.generated));
                }
            });
            ui.label(egui::RichText::new(&panel.status).small());
            if let Some((drafted, accepted)) = panel.drafts.filter(|d| d.0 > 0) {
                ui.label(
                    egui::RichText::new(format!(
                        "speculation: {accepted} of {drafted} drafted tokens accepted"
                    ))
                    .small(),
                );
            }
            ui.separator();
            egui::ScrollArea::vertical()
                .stick_to_bottom(true)
                .show(ui, |ui| {
                    ui.label(
                        egui::RichText::new(format!("{}{}", panel.prompt, panel.output))
                            .monospace(),
                    );
                });
        });
    free.take(&root);
    Ok(())
}
