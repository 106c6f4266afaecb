//! The right panel: the Join tab (the URL a phone or laptop opens to join as a browser node, as
//! text and as a QR code to scan, and the command that joins a native node) and the Simulate
//! tab ([`super::simulate_panel`]).

use bevy::prelude::*;
use bevy_egui::egui::{self, Color32, Rect, Sense, Vec2};
use bevy_egui::{EguiContexts, EguiPrimaryContextPass};

use super::CoreInfo;
use super::bridge::CoreStopped;
use super::simulate::{SimCommand, SimState};
use super::simulate_panel::{self, Profiles};
use super::window::{FreeRect, UiOrder};

/// Which tab the right panel shows.
#[derive(Resource, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RightTab {
    #[default]
    Join,
    Simulate,
}

pub(super) fn plugin(app: &mut App) {
    app.init_resource::<RightTab>()
        .insert_resource(Profiles::start())
        .add_systems(EguiPrimaryContextPass, panel.in_set(UiOrder::Right));
}

/// The browser join URL, once the server listens.
pub fn join_url(info: &CoreInfo) -> Option<String> {
    let addr = info.addr?;
    Some(format!(
        "http://{}:{}/node/?token={}",
        info.host,
        addr.port(),
        info.token
    ))
}

/// The QR code's modules (true = dark), row by row, for `text`.
fn qr_modules(text: &str) -> Option<(usize, Vec<bool>)> {
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    let w = code.width();
    let dark = code
        .to_colors()
        .into_iter()
        .map(|c| c == qrcode::Color::Dark)
        .collect();
    Some((w, dark))
}

#[allow(clippy::too_many_arguments)]
fn panel(
    mut contexts: EguiContexts,
    mut free: ResMut<FreeRect>,
    info: Res<CoreInfo>,
    stopped: Res<CoreStopped>,
    mut tab: ResMut<RightTab>,
    sim: Res<SimState>,
    profiles: Res<Profiles>,
    mut sim_out: MessageWriter<SimCommand>,
    mut qr: Local<Option<(String, usize, Vec<bool>)>>,
) -> Result {
    let ctx = contexts.ctx_mut()?.clone();
    let mut root = free.ui(&ctx, "join-root");
    egui::Panel::right("join").default_size(260.0).show(&mut root, |ui| {
        ui.horizontal(|ui| {
            ui.selectable_value(&mut *tab, RightTab::Join, "Join");
            ui.selectable_value(&mut *tab, RightTab::Simulate, "Simulate");
        });
        ui.separator();
        if *tab == RightTab::Simulate {
            egui::ScrollArea::vertical().show(ui, |ui| {
                simulate_panel::show(ui, &sim, &profiles, &mut sim_out);
            });
            return;
        }
        ui.heading("Join this pipeline");
        if let Some(e) = &stopped.0 {
            ui.colored_label(Color32::from_rgb(240, 110, 80), format!("Coordinator stopped: {e}"));
        }
        let Some(url) = join_url(&info) else {
            ui.label("starting the coordinator…");
            return;
        };
        ui.label("Scan with a phone, or open on any device with a WebGPU browser:");
        if (*qr).as_ref().is_none_or(|q| q.0 != url) {
            *qr = qr_modules(&url).map(|(w, m)| (url.clone(), w, m));
        }
        if let Some((_, w, modules)) = (*qr).as_ref() {
            // Quiet zone of 2 modules around the code, white background.
            let side = ui.available_width().min(240.0);
            let (rect, _) = ui.allocate_exact_size(Vec2::splat(side), Sense::hover());
            let p = ui.painter();
            p.rect_filled(rect, 0.0, Color32::WHITE);
            let m = side / (*w as f32 + 4.0);
            for (i, _) in modules.iter().enumerate().filter(|(_, d)| **d) {
                let (x, y) = ((i % w) as f32 + 2.0, (i / w) as f32 + 2.0);
                p.rect_filled(
                    Rect::from_min_size(rect.min + Vec2::new(x * m, y * m), Vec2::splat(m + 0.5)),
                    0.0,
                    Color32::BLACK,
                );
            }
        }
        ui.add(egui::Label::new(egui::RichText::new(&url).monospace().small()).wrap());
        if ui.button("Copy URL").clicked() {
            ui.ctx().copy_text(url.clone());
        }
        if info.host.starts_with("127.") || info.host == "localhost" {
            ui.colored_label(
                Color32::from_rgb(240, 180, 80),
                "Listening on this machine only: start with --addr 0.0.0.0:8080 to let other devices join.",
            );
        }
        ui.separator();
        ui.label("A native node (another computer):");
        if let Some(addr) = info.addr {
            let cmd = format!(
                "synapse node --url 'ws://{}:{}/ws?token={}'",
                info.host,
                addr.port(),
                info.token
            );
            ui.add(egui::Label::new(egui::RichText::new(&cmd).monospace().small()).wrap());
            if ui.button("Copy command").clicked() {
                ui.ctx().copy_text(cmd);
            }
        }
    });
    free.take(&root);
    Ok(())
}
