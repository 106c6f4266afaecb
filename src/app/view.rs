//! The central view: the coordinator in the middle, every device around it with the shards it
//! holds, each link with its packets in flight. Shards are dragged from one device onto another
//! (egui drag and drop); the drop becomes a [`DropShard`] message.

use bevy::prelude::*;
use bevy_egui::egui::{self, Align2, Color32, FontId, Pos2, Rect, Sense, Stroke, StrokeKind, Vec2};
use bevy_egui::{EguiContexts, EguiPrimaryContextPass};

use super::devices::{Device, Health, Link};
use super::drag::{DropShard, PendingDrop, Refused};
use super::packets::{Direction, OnLink, Packet, PacketKind};
use super::shards::{HeldBy, HeldShards, MovingTo, Shard, ShardStatus, Shards};
use super::window::{FreeRect, UiOrder};
use super::{CoreInfo, Notices};
use crate::coordinator::wire::NodeKind;

const CARD: Vec2 = Vec2::new(230.0, 150.0);
const CHIP: Vec2 = Vec2::new(210.0, 22.0);

/// A shard as the view draws it.
type ShardView = (
    Entity,
    &'static Shard,
    Option<&'static HeldBy>,
    Option<&'static MovingTo>,
    Option<&'static PendingDrop>,
    Option<&'static Refused>,
);

/// What is being dragged (egui's drag-and-drop payload).
#[derive(Debug, Clone, Copy)]
struct DraggedShard(Entity);

pub(super) fn plugin(app: &mut App) {
    app.add_systems(EguiPrimaryContextPass, draw.in_set(UiOrder::Central));
}

pub fn packet_color(kind: PacketKind) -> Color32 {
    match kind {
        PacketKind::Tokens => Color32::from_rgb(250, 200, 60),
        PacketKind::Activation => Color32::from_rgb(80, 200, 250),
        PacketKind::TopLogits => Color32::from_rgb(240, 90, 200),
    }
}

fn mb(bytes: u64) -> String {
    if bytes >= 10_000_000_000 {
        format!("{:.0} GB", bytes as f64 / 1e9)
    } else {
        format!("{:.0} MB", bytes as f64 / 1e6)
    }
}

#[allow(clippy::too_many_arguments)]
fn draw(
    mut contexts: EguiContexts,
    free: Res<FreeRect>,
    devices: Query<(Entity, &Device, &Link, Option<&HeldShards>)>,
    shards: Query<ShardView>,
    packets: Query<(&Packet, &OnLink)>,
    index: Res<Shards>,
    info: Res<CoreInfo>,
    notices: Res<Notices>,
    time: Res<Time>,
    mut drops: MessageWriter<DropShard>,
) -> Result {
    let ctx = contexts.ctx_mut()?.clone();
    let ctx = &ctx;
    let now = time.elapsed_secs_f64();
    let mut root = free.ui(ctx, "view-root");
    egui::CentralPanel::default().show(&mut root, |ui| {
        let area = ui.available_rect_before_wrap();
        let painter = ui.painter_at(area);
        let hub = area.center();
        // Devices on an ellipse around the coordinator, in node order.
        let mut devs: Vec<_> = devices.iter().collect();
        devs.sort_by_key(|(_, d, _, _)| d.node);
        let n = devs.len().max(1) as f32;
        let (rx, ry) = (
            (area.width() / 2.0 - CARD.x / 2.0 - 10.0).max(0.0),
            (area.height() / 2.0 - CARD.y / 2.0 - 10.0).max(0.0),
        );
        let card_of = |i: usize| {
            let a = std::f32::consts::TAU * i as f32 / n - std::f32::consts::FRAC_PI_2;
            Rect::from_center_size(hub + Vec2::new(rx * a.cos(), ry * a.sin()), CARD)
        };
        // Links and packets under the cards.
        for (i, (e, _, link, _)) in devs.iter().enumerate() {
            let c = card_of(i).center();
            painter.line_segment([hub, c], Stroke::new(2.0, Color32::from_gray(70)));
            let mid = hub + (c - hub) * 0.5;
            if link.frames > 0 {
                painter.text(
                    mid + Vec2::new(0.0, -10.0),
                    Align2::CENTER_BOTTOM,
                    format!(
                        "{:.0} ms/hop · sent {} · back {}",
                        link.last_ms,
                        kb(link.bytes_sent),
                        kb(link.bytes_received)
                    ),
                    FontId::proportional(11.0),
                    Color32::from_gray(160),
                );
            }
            for (p, on) in &packets {
                if on.0 != *e || p.progress < 0.0 {
                    continue;
                }
                let t = match p.direction {
                    Direction::Out => p.progress,
                    Direction::Back => 1.0 - p.progress,
                };
                let pos = hub + (c - hub) * t;
                let r = 3.0 + (p.bytes.max(1) as f32).log2() * 0.6;
                painter.circle_filled(pos, r, packet_color(p.kind));
            }
        }
        // The coordinator.
        painter.circle_filled(hub, 34.0, Color32::from_rgb(40, 60, 90));
        painter.text(
            hub,
            Align2::CENTER_CENTER,
            "coordinator",
            FontId::proportional(12.0),
            Color32::WHITE,
        );
        if devs.is_empty() {
            painter.text(
                hub + Vec2::new(0.0, 60.0),
                Align2::CENTER_TOP,
                "No device yet: open the join URL (right) on a phone or laptop",
                FontId::proportional(16.0),
                Color32::from_gray(200),
            );
        }
        let dragging = egui::DragAndDrop::payload::<DraggedShard>(ctx).map(|p| p.0);
        let pointer = ctx.pointer_latest_pos();
        let released = ctx.input(|i| i.pointer.any_released());
        for (i, (e, d, link, held)) in devs.iter().enumerate() {
            let rect = card_of(i);
            let hovered_drop = dragging.is_some() && pointer.is_some_and(|p| rect.contains(p));
            if hovered_drop
                && released
                && let Some(shard) = egui::DragAndDrop::take_payload::<DraggedShard>(ctx)
            {
                drops.write(DropShard {
                    shard: shard.0,
                    device: *e,
                });
            }
            draw_card(ui, rect, d, link, hovered_drop);
            // Shards held, then shards moving here or asked to.
            let mut y = rect.top() + 62.0;
            let mut listed: Vec<_> = held.map(|h| h.shards().to_vec()).unwrap_or_default();
            listed.sort_by_key(|s| shards.get(*s).map(|x| x.1.index).unwrap_or(usize::MAX));
            for s in listed {
                let Ok((se, shard, _, moving, _, refused)) = shards.get(s) else {
                    continue;
                };
                let mut chip = Rect::from_min_size(Pos2::new(rect.left() + 10.0, y), CHIP);
                if let Some(r) = refused.filter(|r| now - r.at < 0.6) {
                    // Snap back: shake where it is.
                    let k = (1.0 - (now - r.at) / 0.6) as f32;
                    chip = chip.translate(Vec2::new(8.0 * k * ((now * 60.0).sin() as f32), 0.0));
                }
                let label = format!(
                    "shard {} · layers {}–{} · {}{}",
                    shard.index,
                    shard.layers[0],
                    shard.layers[1],
                    mb(shard.bytes),
                    if moving.is_some() { " (moving)" } else { "" }
                );
                let fill = match shard.state {
                    ShardStatus::Ready => 1.0,
                    _ => shard.progress,
                };
                let resp = ui.interact(chip, ui.id().with(("shard", se)), Sense::drag());
                if resp.drag_started() {
                    egui::DragAndDrop::set_payload(ctx, DraggedShard(se));
                }
                let ghost = dragging == Some(se);
                draw_chip(
                    ui,
                    chip,
                    &label,
                    fill,
                    if ghost { 0.35 } else { 1.0 },
                    refused.is_some_and(|r| now - r.at < 3.0),
                );
                if resp.hovered() && !ghost {
                    ctx.set_cursor_icon(egui::CursorIcon::Grab);
                }
                y += CHIP.y + 4.0;
            }
            for (_, shard, _, moving, pending, _) in &shards {
                let here = moving.is_some_and(|m| m.device == *e);
                let asked = pending.is_some_and(|p| p.device == *e);
                if !(here || asked) {
                    continue;
                }
                let chip = Rect::from_min_size(Pos2::new(rect.left() + 10.0, y), CHIP);
                let (label, fill) = match moving {
                    Some(m) if here => (
                        format!("loading shard {} · {:.0}%", shard.index, m.progress * 100.0),
                        m.progress,
                    ),
                    _ => (format!("shard {} requested…", shard.index), 0.0),
                };
                draw_chip(ui, chip, &label, fill, 0.6, false);
                y += CHIP.y + 4.0;
            }
        }
        // Unassigned shards float under the coordinator.
        let mut y = hub.y + 44.0;
        for &s in &index.0 {
            let Ok((_, shard, held, ..)) = shards.get(s) else {
                continue;
            };
            if held.is_none() {
                let chip = Rect::from_center_size(Pos2::new(hub.x, y + CHIP.y / 2.0), CHIP);
                draw_chip(
                    ui,
                    chip,
                    &format!("shard {} · unassigned", shard.index),
                    0.0,
                    0.8,
                    true,
                );
                y += CHIP.y + 4.0;
            }
        }
        // The dragged chip follows the pointer.
        if let (Some(s), Some(p)) = (dragging, pointer)
            && let Ok((_, shard, ..)) = shards.get(s)
        {
            let chip = Rect::from_center_size(p, CHIP);
            let layer = ui.ctx().layer_painter(egui::LayerId::new(
                egui::Order::Tooltip,
                ui.id().with("drag"),
            ));
            layer.rect_filled(chip, 4.0, Color32::from_rgb(60, 120, 200));
            layer.text(
                chip.center(),
                Align2::CENTER_CENTER,
                format!("shard {}: drop it on a device", shard.index),
                FontId::proportional(12.0),
                Color32::WHITE,
            );
        }
        // Legend and the latest notices.
        let mut y = area.bottom() - 8.0;
        for (name, kind) in [
            ("top logits", PacketKind::TopLogits),
            ("activation", PacketKind::Activation),
            ("token ids", PacketKind::Tokens),
        ] {
            painter.circle_filled(
                Pos2::new(area.left() + 14.0, y - 6.0),
                5.0,
                packet_color(kind),
            );
            painter.text(
                Pos2::new(area.left() + 24.0, y),
                Align2::LEFT_BOTTOM,
                name,
                FontId::proportional(12.0),
                Color32::from_gray(180),
            );
            y -= 18.0;
        }
        if let Some(m) = &info.model {
            painter.text(
                area.left_top() + Vec2::new(8.0, 6.0),
                Align2::LEFT_TOP,
                format!("model {} · {} shards", m.name, m.shards.len()),
                FontId::proportional(13.0),
                Color32::from_gray(200),
            );
        }
        let mut y = area.top() + 26.0;
        for n in notices.0.iter().rev().filter(|n| now - n.at < 12.0).take(4) {
            let color = if n.warning {
                Color32::from_rgb(250, 150, 90)
            } else {
                Color32::from_gray(170)
            };
            painter.text(
                Pos2::new(area.left() + 8.0, y),
                Align2::LEFT_TOP,
                &n.text,
                FontId::proportional(12.0),
                color,
            );
            y += 16.0;
        }
    });
    Ok(())
}

fn kb(bytes: u64) -> String {
    if bytes >= 1_000_000 {
        format!("{:.1} MB", bytes as f64 / 1e6)
    } else {
        format!("{:.1} kB", bytes as f64 / 1e3)
    }
}

fn draw_card(ui: &egui::Ui, rect: Rect, d: &Device, link: &Link, drop_target: bool) {
    let p = ui.painter();
    let border = match (&d.health, drop_target) {
        (_, true) => Stroke::new(3.0, Color32::from_rgb(120, 200, 120)),
        (Health::Failed(_), _) => Stroke::new(2.0, Color32::from_rgb(230, 80, 60)),
        (Health::Ok, _) => Stroke::new(1.0, Color32::from_gray(90)),
    };
    p.rect(
        rect,
        8.0,
        Color32::from_rgb(28, 32, 40),
        border,
        StrokeKind::Inside,
    );
    let kind = match d.kind {
        NodeKind::Browser => "browser",
        NodeKind::Native => "native",
        NodeKind::Local => "local",
    };
    let at = |dy: f32| rect.left_top() + Vec2::new(10.0, dy);
    p.text(
        at(6.0),
        Align2::LEFT_TOP,
        format!("{} ({kind})", d.name),
        FontId::proportional(14.0),
        Color32::WHITE,
    );
    let mut adapter = d.adapter.clone();
    if adapter.len() > 34 {
        adapter = format!("{}…", adapter.chars().take(33).collect::<String>());
    }
    p.text(
        at(24.0),
        Align2::LEFT_TOP,
        adapter,
        FontId::proportional(11.0),
        Color32::from_gray(170),
    );
    let speed = if link.frames > 0 {
        format!("{:.1} tok/s", link.tokens_per_second)
    } else {
        format!("{:.1} GFLOP/s", d.gflops)
    };
    p.text(
        at(40.0),
        Align2::LEFT_TOP,
        format!(
            "{speed} · {} tokens · {} offered",
            d.tokens_processed,
            mb(d.memory_bytes)
        ),
        FontId::proportional(11.0),
        Color32::from_gray(170),
    );
    if let Health::Failed(e) = &d.health {
        p.text(
            rect.left_bottom() + Vec2::new(10.0, -6.0),
            Align2::LEFT_BOTTOM,
            format!("failed: {e}"),
            FontId::proportional(10.0),
            Color32::from_rgb(230, 80, 60),
        );
    }
}

fn draw_chip(ui: &egui::Ui, rect: Rect, label: &str, fill: f32, alpha: f32, warn: bool) {
    let p = ui.painter();
    let a = (alpha * 255.0) as u8;
    p.rect_filled(rect, 4.0, Color32::from_rgba_unmultiplied(50, 56, 70, a));
    let mut done = rect;
    done.set_width(rect.width() * fill.clamp(0.0, 1.0));
    p.rect_filled(done, 4.0, Color32::from_rgba_unmultiplied(50, 110, 80, a));
    if warn {
        p.rect_stroke(
            rect,
            4.0,
            Stroke::new(1.5, Color32::from_rgb(230, 120, 60)),
            StrokeKind::Inside,
        );
    }
    p.text(
        rect.left_center() + Vec2::new(6.0, 0.0),
        Align2::LEFT_CENTER,
        label,
        FontId::proportional(11.0),
        Color32::from_rgba_unmultiplied(240, 240, 240, a),
    );
}
