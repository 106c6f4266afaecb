//! The central view: the coordinator in the middle, every device around it with the shards it
//! holds, each link with its packets in flight; or, in simulation mode, the same for the
//! simulated pipeline (virtual devices beside the real ones, the predicted placement and
//! packets), marked as simulated. Where things go is [`super::layout`]'s job; this draws them,
//! reports every card and text rectangle it drew ([`LayoutReport`]), pans and zooms the canvas,
//! and turns a shard dragged onto another device into a [`DropShard`] message.

use bevy::prelude::*;
use bevy_egui::egui::{
    self, Align2, Color32, FontId, Painter, Pos2, Rect, Sense, Stroke, StrokeKind, Vec2,
};
use bevy_egui::{EguiContexts, EguiPrimaryContextPass};

use super::devices::{Device, Health, Link};
use super::drag::{DropShard, PendingDrop, Refused, UnpinShard};
use super::layout::{self, LayoutReport, TextBox, ViewTransform, r4};
use super::packets::{Direction, OnLink, Packet, PacketKind};
use super::shards::{HeldBy, HeldShards, MovingTo, Pinned, Shard, ShardStatus};
use super::simulate::{SimState, Simulated};
use super::window::{FreeRect, UiOrder};
use super::{CoreInfo, Notices};
use crate::coordinator::wire::NodeKind;
use crate::sim::predict::{DeviceReport, mb};

/// Detailed chips: one line per shard.
const CHIP: Vec2 = Vec2::new(210.0, 22.0);
/// Compact chips: a small box per shard.
const SMALL_CHIP: Vec2 = Vec2::new(22.0, 14.0);
/// Room kept at a detailed chip's right end for the pinned marker and its unpin button.
const PIN_SLOT: f32 = 18.0;
/// The colour that marks everything simulated.
pub const SIMULATED: Color32 = Color32::from_rgb(180, 130, 250);

/// A shard as the view draws it.
type ShardView = (
    Entity,
    &'static Shard,
    Option<&'static HeldBy>,
    Option<&'static MovingTo>,
    Option<&'static PendingDrop>,
    Option<&'static Refused>,
    Has<Simulated>,
    Has<Pinned>,
);

/// A device as the view draws it (the flag: it is simulated).
type DeviceView = (
    Entity,
    &'static Device,
    &'static Link,
    Option<&'static HeldShards>,
    Has<Simulated>,
);

/// What is being dragged (egui's drag-and-drop payload).
#[derive(Debug, Clone, Copy)]
struct DraggedShard(Entity);

pub(super) fn plugin(app: &mut App) {
    app.init_resource::<ViewTransform>()
        .init_resource::<LayoutReport>()
        .add_systems(EguiPrimaryContextPass, draw.in_set(UiOrder::Central));
}

pub fn packet_color(kind: PacketKind) -> Color32 {
    match kind {
        PacketKind::Tokens => Color32::from_rgb(250, 200, 60),
        PacketKind::Activation => Color32::from_rgb(80, 200, 250),
        PacketKind::TopLogits => Color32::from_rgb(240, 90, 200),
    }
}

/// Draws text no wider than `max_width` (cut with an ellipsis) and records it.
struct Writer<'a> {
    painter: &'a Painter,
    report: &'a mut LayoutReport,
}

impl Writer<'_> {
    #[allow(clippy::too_many_arguments)]
    fn text(
        &mut self,
        pos: Pos2,
        align: Align2,
        text: &str,
        size: f32,
        color: Color32,
        max_width: f32,
        within: Rect,
    ) -> Rect {
        let font = FontId::proportional(size);
        let mut shown = text.to_string();
        let mut galley = self
            .painter
            .layout_no_wrap(shown.clone(), font.clone(), color);
        while galley.size().x > max_width && !shown.is_empty() {
            shown.pop();
            while shown.ends_with(' ') {
                shown.pop();
            }
            galley = self
                .painter
                .layout_no_wrap(format!("{shown}…"), font.clone(), color);
        }
        let rect = align.anchor_size(pos, galley.size());
        self.painter.galley(rect.min, galley, color);
        self.report.texts.push(TextBox {
            text: text.to_string(),
            rect: r4(rect),
            within: r4(within),
        });
        rect
    }
}

#[allow(clippy::too_many_arguments)]
fn draw(
    mut contexts: EguiContexts,
    free: Res<FreeRect>,
    devices: Query<DeviceView>,
    shards: Query<ShardView>,
    packets: Query<(&Packet, &OnLink, Has<Simulated>)>,
    info: Res<CoreInfo>,
    notices: Res<Notices>,
    sim: Res<SimState>,
    time: Res<Time>,
    mut transform: ResMut<ViewTransform>,
    mut report: ResMut<LayoutReport>,
    mut drops: MessageWriter<DropShard>,
    mut unpins: MessageWriter<UnpinShard>,
) -> Result {
    let ctx = contexts.ctx_mut()?.clone();
    let ctx = &ctx;
    let now = time.elapsed_secs_f64();
    let simulating = sim.enabled;
    let mut root = free.ui(ctx, "view-root");
    egui::CentralPanel::default().show(&mut root, |ui| {
        let area = ui.available_rect_before_wrap();
        // Devices in node order: real ones first (virtual ids come after every real one).
        let mut devs: Vec<_> = devices.iter().filter(|d| simulating || !d.4).collect();
        devs.sort_by_key(|(_, d, ..)| d.node);
        // Pan with a drag on empty space, zoom with the wheel, double-click to fit.
        let bg = ui.interact(area, ui.id().with("view-bg"), Sense::click_and_drag());
        let dragging = egui::DragAndDrop::payload::<DraggedShard>(ctx).map(|p| p.0);
        if bg.dragged() && dragging.is_none() {
            transform.pan += bg.drag_delta();
        }
        if bg.double_clicked() {
            *transform = ViewTransform::default();
        }
        if bg.hovered() {
            let (scroll, pinch) = ctx.input(|i| (i.smooth_scroll_delta.y, i.zoom_delta()));
            let factor = pinch * (1.0 + scroll * 0.002);
            if (factor - 1.0).abs() > 1e-4 {
                transform.zoom = (transform.zoom * factor).clamp(0.3, 3.0);
            }
        }
        let l = layout::layout(area, devs.len(), *transform);
        let z = l.zoom;
        let painter = ui.painter_at(area);
        *report = LayoutReport {
            area: r4(area),
            zoom: z,
            compact: l.compact,
            ..LayoutReport::default()
        };
        let canvas = painter.with_clip_rect(l.body);
        let predicted = |node: u64| -> Option<&DeviceReport> {
            sim.report.as_ref()?.devices.iter().find(|d| d.id == node)
        };

        // Links and packets under the cards.
        for (i, (e, _, link, ..)) in devs.iter().enumerate() {
            let c = l.cards[i].center();
            canvas.line_segment([l.hub, c], Stroke::new(2.0 * z, Color32::from_gray(70)));
            if !l.compact && !simulating && link.frames > 0 {
                // The hop's numbers beside its link, where no card or the coordinator covers
                // them; nowhere free, no label (the table below has them too).
                let label = format!(
                    "{:.0} ms/hop · sent {} · back {}",
                    link.last_ms,
                    kb(link.bytes_sent),
                    kb(link.bytes_received)
                );
                let size = canvas
                    .layout_no_wrap(label.clone(), FontId::proportional(11.0), Color32::WHITE)
                    .size();
                let hub_box = Rect::from_center_size(l.hub, Vec2::splat(2.0 * l.hub_radius));
                let spot = [0.5f32, 0.35, 0.65, 0.25, 0.75].into_iter().find_map(|t| {
                    let r = Rect::from_center_size(l.hub + (c - l.hub) * t, size);
                    let free = l.body.contains_rect(r)
                        && !r.intersects(hub_box)
                        && !l.cards.iter().any(|k| k.intersects(r));
                    free.then_some(r)
                });
                if let Some(r) = spot {
                    Writer {
                        painter: &canvas,
                        report: &mut report,
                    }
                    .text(
                        r.center(),
                        Align2::CENTER_CENTER,
                        &label,
                        11.0,
                        Color32::from_gray(160),
                        l.body.width(),
                        l.body,
                    );
                }
            }
            for (p, on, sim_packet) in &packets {
                if on.0 != *e || p.progress < 0.0 || sim_packet != simulating {
                    continue;
                }
                let t = match p.direction {
                    Direction::Out => p.progress,
                    Direction::Back => 1.0 - p.progress,
                };
                let r = (3.0 + (p.bytes.max(1) as f32).log2() * 0.6) * z.max(0.6);
                canvas.circle_filled(l.hub + (c - l.hub) * t, r, packet_color(p.kind));
            }
        }
        // The coordinator.
        canvas.circle_filled(l.hub, l.hub_radius, Color32::from_rgb(40, 60, 90));
        let hub_rect = Rect::from_center_size(l.hub, Vec2::splat(2.0 * l.hub_radius));
        Writer {
            painter: &canvas,
            report: &mut report,
        }
        .text(
            l.hub,
            Align2::CENTER_CENTER,
            "coordinator",
            12.0 * z,
            Color32::WHITE,
            hub_rect.width(),
            hub_rect,
        );
        if devs.is_empty() {
            Writer {
                painter: &canvas,
                report: &mut report,
            }
            .text(
                l.hub + Vec2::new(0.0, 60.0),
                Align2::CENTER_TOP,
                "No device yet: open the join URL (right) on a phone or laptop",
                16.0,
                Color32::from_gray(200),
                l.body.width() - 16.0,
                l.body,
            );
        }

        let pointer = ctx.pointer_latest_pos();
        let released = ctx.input(|i| i.pointer.any_released());
        for (i, (e, d, link, held, virtual_device)) in devs.iter().enumerate() {
            let rect = l.cards[i];
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
            let lines = card_lines(d, link, simulating.then(|| predicted(d.node)).flatten());
            report.cards.push((d.name.clone(), r4(rect)));
            draw_card(
                &canvas,
                &mut report,
                rect,
                d,
                &lines,
                hovered_drop,
                *virtual_device,
                l.compact,
                z,
            );
            // This world's shards held here, in index order.
            let mut listed: Vec<_> = held
                .map(|h| h.shards().to_vec())
                .unwrap_or_default()
                .into_iter()
                .filter_map(|s| shards.get(s).ok())
                .filter(|s| s.6 == simulating)
                .collect();
            listed.sort_by_key(|s| s.1.index);
            let mut slot = 0usize;
            let max_small =
                (((rect.width() - 12.0 * z) / ((SMALL_CHIP.x + 3.0) * z)).floor() as usize).max(1);
            // Compact cards show what fits in one row and "+N" for the rest.
            let visible = if l.compact && listed.len() > max_small {
                max_small - 1
            } else {
                listed.len()
            };
            let hidden = listed.len() - visible;
            for (se, shard, _, moving, _, refused, _, pinned) in listed.into_iter().take(visible) {
                let (chip, shown) = if l.compact {
                    let at = rect.left_top()
                        + Vec2::new(6.0 + slot as f32 * (SMALL_CHIP.x + 3.0), 34.0) * z;
                    (
                        Rect::from_min_size(at, SMALL_CHIP * z),
                        shard.index.to_string(),
                    )
                } else {
                    let at = Pos2::new(rect.left() + 10.0, rect.top() + 62.0 + slot as f32 * 26.0);
                    let label = format!(
                        "shard {} · layers {}-{} · {}{}",
                        shard.index,
                        shard.layers[0],
                        shard.layers[1],
                        mb(shard.bytes),
                        if moving.is_some() { " (moving)" } else { "" }
                    );
                    (Rect::from_min_size(at, CHIP), label)
                };
                slot += 1;
                let mut chip = chip;
                if let Some(r) = refused.filter(|r| now - r.at < 0.6) {
                    // Snap back: shake where it is.
                    let k = (1.0 - (now - r.at) / 0.6) as f32;
                    chip = chip.translate(Vec2::new(8.0 * k * ((now * 60.0).sin() as f32), 0.0));
                }
                let fill = match shard.state {
                    ShardStatus::Ready => 1.0,
                    _ => shard.progress,
                };
                let resp = ui.interact(chip, ui.id().with(("shard", se)), Sense::drag());
                if resp.drag_started() {
                    egui::DragAndDrop::set_payload(ctx, DraggedShard(se));
                }
                let resp = resp.on_hover_text(format!(
                    "shard {} · layers {}-{} · {}{}",
                    shard.index,
                    shard.layers[0],
                    shard.layers[1],
                    mb(shard.bytes),
                    if pinned { " · pinned here" } else { "" }
                ));
                let ghost = dragging == Some(se);
                let mut w = Writer {
                    painter: &canvas,
                    report: &mut report,
                };
                draw_chip(
                    &mut w,
                    chip,
                    &shown,
                    fill,
                    if ghost { 0.35 } else { 1.0 },
                    refused.is_some_and(|r| now - r.at < 3.0),
                    simulating,
                    l.compact,
                    z,
                    pinned,
                );
                if pinned && !l.compact {
                    // The pin slot doubles as the unpin button.
                    let pin = Rect::from_min_max(
                        Pos2::new(chip.right() - PIN_SLOT, chip.top()),
                        chip.right_bottom(),
                    );
                    let b = ui
                        .interact(pin, ui.id().with(("unpin", se)), Sense::click())
                        .on_hover_text("pinned here by a move: click to unpin");
                    if b.clicked() {
                        unpins.write(UnpinShard { shard: se });
                    }
                }
                if resp.hovered() && !ghost {
                    ctx.set_cursor_icon(egui::CursorIcon::Grab);
                }
            }
            if hidden > 0 {
                let at = rect.left_top()
                    + Vec2::new(
                        6.0 + slot as f32 * (SMALL_CHIP.x + 3.0),
                        34.0 + SMALL_CHIP.y / 2.0,
                    ) * z;
                Writer {
                    painter: &canvas,
                    report: &mut report,
                }
                .text(
                    at,
                    Align2::LEFT_CENTER,
                    &format!("+{hidden}"),
                    10.0 * z,
                    Color32::from_gray(200),
                    rect.right() - at.x - 4.0 * z,
                    rect,
                );
            }
            if !l.compact {
                // Shards moving here or asked to.
                for (_, shard, _, moving, pending, _, sim_shard, _) in &shards {
                    let here = moving.is_some_and(|m| m.device == *e);
                    let asked = pending.is_some_and(|p| p.device == *e);
                    if sim_shard != simulating || !(here || asked) {
                        continue;
                    }
                    let at = Pos2::new(rect.left() + 10.0, rect.top() + 62.0 + slot as f32 * 26.0);
                    if at.y + CHIP.y > rect.bottom() {
                        break;
                    }
                    let chip = Rect::from_min_size(at, CHIP);
                    let (label, fill) = match moving {
                        Some(m) if here => (
                            format!("loading shard {} · {:.0}%", shard.index, m.progress * 100.0),
                            m.progress,
                        ),
                        _ => (format!("shard {} requested…", shard.index), 0.0),
                    };
                    let mut w = Writer {
                        painter: &canvas,
                        report: &mut report,
                    };
                    draw_chip(
                        &mut w, chip, &label, fill, 0.6, false, simulating, false, 1.0, false,
                    );
                    slot += 1;
                }
            }
        }

        // Header: the model (or the simulated one) and the latest notices.
        let mut w = Writer {
            painter: &painter,
            report: &mut report,
        };
        let title = if simulating {
            match &sim.report {
                Some(r) => format!(
                    "SIMULATED · {} ({}, {} shards) · {}",
                    r.model,
                    r.weights,
                    r.shards.len(),
                    sim.status
                        .split_once(": ")
                        .map_or(sim.status.as_str(), |x| x.1)
                ),
                None => format!("SIMULATED · {}", sim.status),
            }
        } else {
            info.model.as_ref().map_or_else(
                || "starting the coordinator…".to_string(),
                |m| format!("model {} · {} shards", m.name, m.shards.len()),
            )
        };
        w.text(
            l.header.left_top() + Vec2::new(8.0, 4.0),
            Align2::LEFT_TOP,
            &title,
            13.0,
            if simulating {
                SIMULATED
            } else {
                Color32::from_gray(210)
            },
            l.header.width() - 16.0,
            l.header,
        );
        if let Some(n) = notices.0.iter().rev().find(|n| now - n.at < 12.0) {
            let color = if n.warning {
                Color32::from_rgb(250, 150, 90)
            } else {
                Color32::from_gray(170)
            };
            w.text(
                l.header.left_top() + Vec2::new(8.0, 22.0),
                Align2::LEFT_TOP,
                &n.text,
                12.0,
                color,
                l.header.width() - 16.0,
                l.header,
            );
        }
        // Footer: legend, shards no device holds, how to move around.
        let mut x = l.footer.left() + 8.0;
        let y = l.footer.center().y;
        for (name, kind) in [
            ("token ids", PacketKind::Tokens),
            ("activation", PacketKind::Activation),
            ("top logits", PacketKind::TopLogits),
        ] {
            painter.circle_filled(Pos2::new(x + 5.0, y), 5.0, packet_color(kind));
            let r = w.text(
                Pos2::new(x + 14.0, y),
                Align2::LEFT_CENTER,
                name,
                12.0,
                Color32::from_gray(180),
                120.0,
                l.footer,
            );
            x = r.right() + 14.0;
        }
        for (s, shard, held, ..) in shards.iter().filter(|s| s.6 == simulating) {
            if held.is_some() {
                continue;
            }
            let chip = Rect::from_min_size(Pos2::new(x, y - 8.0), Vec2::new(70.0, 16.0));
            if chip.right() > l.footer.right() - 260.0 {
                break;
            }
            let resp = ui.interact(chip, ui.id().with(("free", s)), Sense::drag());
            if resp.drag_started() {
                egui::DragAndDrop::set_payload(ctx, DraggedShard(s));
            }
            draw_chip(
                &mut w,
                chip,
                &format!("shard {} free", shard.index),
                0.0,
                0.8,
                true,
                simulating,
                true,
                1.0,
                false,
            );
            x = chip.right() + 6.0;
        }
        let hint = if l.overflows {
            "drag empty space to pan · scroll to zoom · double-click: fit"
        } else {
            "scroll to zoom · double-click: fit"
        };
        w.text(
            l.footer.right_center() - Vec2::new(8.0, 0.0),
            Align2::RIGHT_CENTER,
            hint,
            11.0,
            Color32::from_gray(130),
            250.0,
            l.footer,
        );
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

/// The numbers under a card's name: measured ones, or the prediction in simulation mode.
fn card_lines(d: &Device, link: &Link, predicted: Option<&DeviceReport>) -> [String; 2] {
    match predicted {
        Some(p) if !p.shards.is_empty() => [
            format!(
                "{:.0} ms/tok · {}",
                p.decode_compute_ms,
                mb(p.weight_bytes + p.kv_bytes)
            ),
            format!("of {} · {:.1} GFLOP/s", mb(p.memory_bytes), d.gflops),
        ],
        Some(p) => [
            format!("idle · {} lent", mb(p.memory_bytes)),
            format!("{:.1} GFLOP/s", d.gflops),
        ],
        None => {
            let speed = if link.frames > 0 {
                format!("{:.1} tok/s", link.tokens_per_second)
            } else {
                format!("{:.1} GFLOP/s", d.gflops)
            };
            [
                format!("{speed} · {} offered", mb(d.memory_bytes)),
                format!("{} tokens", d.tokens_processed),
            ]
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn draw_card(
    p: &Painter,
    report: &mut LayoutReport,
    rect: Rect,
    d: &Device,
    lines: &[String; 2],
    drop_target: bool,
    simulated: bool,
    compact: bool,
    z: f32,
) {
    let border = match (&d.health, drop_target, simulated) {
        (_, true, _) => Stroke::new(3.0, Color32::from_rgb(120, 200, 120)),
        (Health::Failed(_), ..) => Stroke::new(2.0, Color32::from_rgb(230, 80, 60)),
        (_, _, true) => Stroke::new(1.5, SIMULATED),
        _ => Stroke::new(1.0, Color32::from_gray(90)),
    };
    let fill = if simulated {
        Color32::from_rgb(34, 30, 48)
    } else {
        Color32::from_rgb(28, 32, 40)
    };
    p.rect(rect, 8.0 * z, fill, border, StrokeKind::Inside);
    let kind = match d.kind {
        NodeKind::Browser => "browser",
        NodeKind::Native => "native",
        NodeKind::Local => "local",
    };
    let inner = rect.width() - 12.0 * z;
    let mut w = Writer { painter: p, report };
    let mut tag_width = 0.0;
    if simulated {
        let r = w.text(
            rect.right_top() + Vec2::new(-6.0, 4.0) * z,
            Align2::RIGHT_TOP,
            "sim",
            10.0 * z,
            SIMULATED,
            inner,
            rect,
        );
        tag_width = r.width() + 6.0 * z;
    }
    if compact {
        let at = |dy: f32| rect.left_top() + Vec2::new(6.0, dy) * z;
        w.text(
            at(3.0),
            Align2::LEFT_TOP,
            &d.name,
            12.0 * z,
            Color32::WHITE,
            inner - tag_width,
            rect,
        );
        w.text(
            at(19.0),
            Align2::LEFT_TOP,
            &lines[0],
            10.0 * z,
            Color32::from_gray(175),
            inner,
            rect,
        );
        return;
    }
    let at = |dy: f32| rect.left_top() + Vec2::new(10.0, dy);
    w.text(
        at(6.0),
        Align2::LEFT_TOP,
        &format!("{} ({kind})", d.name),
        14.0,
        Color32::WHITE,
        rect.width() - 20.0 - tag_width,
        rect,
    );
    w.text(
        at(24.0),
        Align2::LEFT_TOP,
        &d.adapter,
        11.0,
        Color32::from_gray(170),
        rect.width() - 20.0,
        rect,
    );
    w.text(
        at(40.0),
        Align2::LEFT_TOP,
        &format!("{} · {}", lines[0], lines[1]),
        11.0,
        Color32::from_gray(170),
        rect.width() - 20.0,
        rect,
    );
    if let Health::Failed(e) = &d.health {
        w.text(
            rect.left_bottom() + Vec2::new(10.0, -6.0),
            Align2::LEFT_BOTTOM,
            &format!("failed: {e}"),
            10.0,
            Color32::from_rgb(230, 80, 60),
            rect.width() - 20.0,
            rect,
        );
    }
}

#[allow(clippy::too_many_arguments)]
fn draw_chip(
    w: &mut Writer,
    rect: Rect,
    label: &str,
    fill: f32,
    alpha: f32,
    warn: bool,
    simulated: bool,
    small: bool,
    z: f32,
    pinned: bool,
) {
    let p = w.painter;
    let a = (alpha * 255.0) as u8;
    p.rect_filled(
        rect,
        4.0 * z,
        Color32::from_rgba_unmultiplied(50, 56, 70, a),
    );
    let mut done = rect;
    done.set_width(rect.width() * fill.clamp(0.0, 1.0));
    let (r, g, b) = if simulated {
        (96, 70, 140)
    } else {
        (50, 110, 80)
    };
    p.rect_filled(done, 4.0 * z, Color32::from_rgba_unmultiplied(r, g, b, a));
    if warn {
        p.rect_stroke(
            rect,
            4.0 * z,
            Stroke::new(1.5, Color32::from_rgb(230, 120, 60)),
            StrokeKind::Inside,
        );
    }
    let text = Color32::from_rgba_unmultiplied(240, 240, 240, a);
    let pin_room = if small { 0.0 } else { PIN_SLOT };
    if small {
        w.text(
            rect.center(),
            Align2::CENTER_CENTER,
            label,
            10.0 * z,
            text,
            rect.width() - 2.0,
            rect,
        );
    } else {
        w.text(
            rect.left_center() + Vec2::new(6.0, 0.0),
            Align2::LEFT_CENTER,
            label,
            11.0,
            text,
            rect.width() - 8.0 - pin_room,
            rect,
        );
    }
    if pinned {
        // A pin: a dot in the chip's corner (compact) or in its pin slot.
        let c = if small {
            rect.right_top() + Vec2::new(-3.0, 3.0) * z
        } else {
            Pos2::new(rect.right() - PIN_SLOT / 2.0, rect.center().y)
        };
        p.circle_filled(
            c,
            if small { 2.5 * z } else { 4.0 },
            Color32::from_rgb(250, 210, 90),
        );
    }
}
