//! The health panel (bottom): tokens per second over time and each link's round trip as plots,
//! a table of devices (speed, memory used and free, link bytes, wire compression) and the
//! sessions in progress. The table gets half the panel and scrolls sideways when even that is
//! too narrow, so no column is cut off; simulated devices are not in it (the Simulate tab has
//! their prediction).

use bevy::prelude::*;
use bevy_egui::{EguiContexts, EguiPrimaryContextPass, egui};
use egui_plot::{Legend, Line, Plot, PlotPoints};

use super::devices::{Device, Link};
use super::health::History;
use super::sessions::Session;
use super::shards::{HeldShards, Shard};
use super::simulate::Simulated;
use super::window::{FreeRect, UiOrder};

pub(super) fn plugin(app: &mut App) {
    app.add_systems(EguiPrimaryContextPass, panel.in_set(UiOrder::Bottom));
}

fn panel(
    mut contexts: EguiContexts,
    mut free: ResMut<FreeRect>,
    history: Res<History>,
    devices: Query<(&Device, &Link, Option<&HeldShards>), Without<Simulated>>,
    shards: Query<&Shard, Without<Simulated>>,
    sessions: Query<&Session>,
) -> Result {
    let ctx = contexts.ctx_mut()?.clone();
    let mut root = free.ui(&ctx, "health-root");
    egui::Panel::bottom("health")
        .default_size(200.0)
        .resizable(true)
        .show(&mut root, |ui| {
            let full = ui.available_width();
            let plot_w = (full * 0.25).max(120.0);
            let h = 150.0;
            ui.horizontal_top(|ui| {
                let mut cols: Vec<egui::Ui> = Vec::new();
                for (i, w) in [plot_w, plot_w, (full - 2.0 * plot_w - 16.0).max(160.0)]
                    .into_iter()
                    .enumerate()
                {
                    let (rect, _) = ui.allocate_exact_size(
                        egui::vec2(w, ui.available_height()),
                        egui::Sense::hover(),
                    );
                    cols.push(
                        ui.new_child(
                            egui::UiBuilder::new()
                                .max_rect(rect)
                                .id_salt(("health-col", i))
                                .layout(egui::Layout::top_down(egui::Align::Min)),
                        ),
                    );
                }
                cols[0].label("tokens/s (all sessions)");
                Plot::new("tps")
                    .height(h)
                    .include_y(0.0)
                    .include_y(5.0)
                    .allow_scroll(false)
                    .show(&mut cols[0], |p| {
                        let pts: Vec<[f64; 2]> =
                            history.tokens_per_second.iter().copied().collect();
                        p.line(Line::new("tokens/s", PlotPoints::from(pts)));
                    });
                cols[1].label("round trip per hop (ms)");
                Plot::new("hops")
                    .height(h)
                    .include_y(0.0)
                    .include_y(10.0)
                    .allow_scroll(false)
                    .legend(Legend::default())
                    .show(&mut cols[1], |p| {
                        for (node, q) in &history.hop_ms {
                            let name = devices
                                .iter()
                                .find(|(d, ..)| d.node == *node)
                                .map_or_else(|| format!("node {node}"), |(d, ..)| d.name.clone());
                            p.line(Line::new(
                                name,
                                PlotPoints::from(q.iter().copied().collect::<Vec<_>>()),
                            ));
                        }
                    });
                let ui = &mut cols[2];
                egui::ScrollArea::both().show(ui, |ui| {
                    egui::Grid::new("devices").striped(true).show(ui, |ui| {
                        for t in ["device", "tok/s", "used / free", "sent / recv", "wire"] {
                            ui.strong(t);
                        }
                        ui.end_row();
                        let mut devs: Vec<_> = devices.iter().collect();
                        devs.sort_by_key(|(d, ..)| d.node);
                        for (d, link, held) in devs {
                            let used: u64 = held
                                .map(|h| {
                                    h.shards()
                                        .iter()
                                        .filter_map(|s| shards.get(*s).ok())
                                        .map(|s| s.bytes)
                                        .sum()
                                })
                                .unwrap_or(0);
                            ui.label(&d.name);
                            ui.label(format!("{:.1}", link.tokens_per_second));
                            ui.label(format!(
                                "{:.0} / {:.0} MB",
                                used as f64 / 1e6,
                                d.memory_bytes.saturating_sub(used) as f64 / 1e6
                            ));
                            ui.label(format!(
                                "{:.1} / {:.1} MB",
                                link.bytes_sent as f64 / 1e6,
                                link.bytes_received as f64 / 1e6
                            ));
                            ui.label(link.compression.map_or("–".into(), |c| format!("{c:.1}×")));
                            ui.end_row();
                        }
                    });
                    ui.separator();
                    let mut ss: Vec<_> = sessions.iter().collect();
                    ss.sort_by_key(|s| s.id);
                    ui.strong(format!("sessions in progress: {}", ss.len()));
                    for s in ss {
                        ui.label(format!(
                            "#{}: {} prompt + {} generated tokens{}",
                            s.id,
                            s.prompt_tokens,
                            s.generated,
                            if s.replays > 0 {
                                format!(", replayed {}×", s.replays)
                            } else {
                                String::new()
                            }
                        ));
                    }
                });
            });
        });
    free.take(&root);
    Ok(())
}
