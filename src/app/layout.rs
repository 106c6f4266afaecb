//! Where the central view puts things: a header strip (model title, notices), a footer strip
//! (legend), the coordinator in the middle of the rest, and the device cards on a grid around
//! it, nearest cells first and clockwise from the top, so a few devices form a ring and forty
//! fill concentric rings of cells. Cards never overlap each other, the coordinator or the
//! strips. Up to six devices get detailed cards; more get compact ones. When even compact
//! cards do not fit, the grid grows past the view and the person pans and zooms.
//!
//! Pure geometry over egui's `Rect`, so it is unit tested for every count from 1 to 40; the
//! view reports what it drew ([`LayoutReport`]) for the screenshot test.

use bevy::prelude::Resource;
use bevy_egui::egui::{Pos2, Rect, Vec2};
use serde::Serialize;

/// Detailed cards: name, adapter, speed and memory, one chip per shard.
pub const DETAILED: Vec2 = Vec2::new(230.0, 150.0);
/// Compact cards: name, one line of numbers, a row of small shard chips.
pub const COMPACT: Vec2 = Vec2::new(124.0, 52.0);
/// Space between cards.
pub const GAP: f32 = 10.0;
/// Height of the header strip (title and one line of notices) and of the footer (legend).
pub const HEADER: f32 = 40.0;
pub const FOOTER: f32 = 22.0;
/// The coordinator's circle.
pub const HUB_RADIUS: f32 = 34.0;
/// Most devices that get detailed cards.
pub const MAX_DETAILED: usize = 6;
/// Zoom limits.
pub const MIN_ZOOM: f32 = 0.4;
pub const MAX_ZOOM: f32 = 2.5;

/// The view's geometry for one frame, in screen coordinates (pan and zoom applied to the
/// canvas: hub and cards; the strips stay put).
#[derive(Debug, Clone, PartialEq)]
pub struct ViewLayout {
    pub header: Rect,
    pub footer: Rect,
    /// The part of the view the canvas is shown in.
    pub body: Rect,
    pub hub: Pos2,
    pub hub_radius: f32,
    pub cards: Vec<Rect>,
    pub compact: bool,
    /// Canvas scale: 1 at fit-to-view when everything fits unscaled.
    pub zoom: f32,
    /// Whether the canvas extends past the body (panning shows the rest).
    pub overflows: bool,
}

/// Pan and zoom of the canvas, as the person left them.
#[derive(Resource, Debug, Clone, Copy, PartialEq)]
pub struct ViewTransform {
    pub zoom: f32,
    pub pan: Vec2,
}

impl Default for ViewTransform {
    fn default() -> Self {
        ViewTransform {
            zoom: 1.0,
            pan: Vec2::ZERO,
        }
    }
}

/// The grid cells around the centre of `body` for cards of `card`, in placement order, and the
/// smallest grid (growing past `body` when needed) that holds `n`.
fn cells(body: Rect, card: Vec2, n: usize) -> Vec<Rect> {
    let step = card + Vec2::splat(GAP);
    let hub_clear = Rect::from_center_size(body.center(), Vec2::splat(2.0 * HUB_RADIUS + 4.0));
    let room = body.shrink(4.0);
    let mut cols = ((room.width() + GAP) / step.x).floor().max(1.0) as i32;
    let mut rows = ((room.height() + GAP) / step.y).floor().max(1.0) as i32;
    loop {
        let origin =
            body.center() - Vec2::new(cols as f32 * step.x - GAP, rows as f32 * step.y - GAP) / 2.0;
        let mut out: Vec<(f32, f32, Rect)> = Vec::new();
        for r in 0..rows {
            for c in 0..cols {
                let rect = Rect::from_min_size(
                    origin + Vec2::new(c as f32 * step.x, r as f32 * step.y),
                    card,
                );
                if rect.intersects(hub_clear) {
                    continue;
                }
                let d = rect.center() - body.center();
                // Rings of cells: distance in cell units, then clockwise from the top.
                let ring = (d.x / step.x).abs().max((d.y / step.y).abs());
                let angle = (d.x.atan2(-d.y) + std::f32::consts::TAU) % std::f32::consts::TAU;
                out.push((ring, angle, rect));
            }
        }
        if out.len() >= n {
            out.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
            let mut chosen: Vec<(f32, Rect)> =
                out.into_iter().take(n).map(|(_, a, r)| (a, r)).collect();
            // Within the chosen cells, devices go round clockwise from the top.
            chosen.sort_by(|a, b| a.0.total_cmp(&b.0));
            return chosen.into_iter().map(|(_, r)| r).collect();
        }
        // Grow the short side first, keeping the canvas about as wide as the view is.
        if (cols as f32 * step.x) / body.width().max(1.0)
            <= (rows as f32 * step.y) / body.height().max(1.0)
        {
            cols += 1;
        } else {
            rows += 1;
        }
    }
}

/// Lays out `n` device cards in `area` (the central panel) with the person's `view` transform.
pub fn layout(area: Rect, n: usize, view: ViewTransform) -> ViewLayout {
    let header = Rect::from_min_size(area.min, Vec2::new(area.width(), HEADER));
    let footer = Rect::from_min_max(Pos2::new(area.min.x, area.max.y - FOOTER), area.max);
    let body = Rect::from_min_max(
        Pos2::new(area.min.x, header.max.y),
        Pos2::new(area.max.x, footer.min.y),
    );
    let fits = |card: Vec2| {
        let c = cells(body, card, n);
        c.iter().all(|r| body.contains_rect(*r))
    };
    let compact = n > MAX_DETAILED || !fits(DETAILED);
    let card = if compact { COMPACT } else { DETAILED };
    let canvas_cells = cells(body, card, n);
    let bounds = canvas_cells.iter().fold(
        Rect::from_center_size(body.center(), Vec2::splat(2.0 * HUB_RADIUS)),
        |b, r| b.union(*r),
    );
    // Fit: shrink (not below MIN_ZOOM) so the canvas fits the body, then the person's zoom.
    // A few points of margin, so that no card touches a strip.
    let room = body.shrink(4.0);
    let fit = (room.width() / bounds.width())
        .min(room.height() / bounds.height())
        .clamp(MIN_ZOOM, 1.0);
    let zoom = (fit * view.zoom).clamp(MIN_ZOOM, MAX_ZOOM);
    let centre = body.center();
    let place = |p: Pos2| centre + (p - centre) * zoom + view.pan;
    let cards: Vec<Rect> = canvas_cells
        .iter()
        .map(|r| Rect::from_min_max(place(r.min), place(r.max)))
        .collect();
    let overflows = cards.iter().any(|r| !body.contains_rect(*r));
    ViewLayout {
        header,
        footer,
        body,
        hub: place(centre),
        hub_radius: HUB_RADIUS * zoom,
        cards,
        compact,
        zoom,
        overflows,
    }
}

/// What the view drew last frame, for tests and `--screenshot`'s layout file: every card and
/// every piece of text with the rectangle it must stay inside.
#[derive(Resource, Debug, Clone, Default, Serialize)]
pub struct LayoutReport {
    /// The central view.
    pub area: [f32; 4],
    pub zoom: f32,
    pub compact: bool,
    /// Device name and card rectangle (min x, min y, max x, max y).
    pub cards: Vec<(String, [f32; 4])>,
    pub texts: Vec<TextBox>,
}

/// One piece of text as drawn.
#[derive(Debug, Clone, Serialize)]
pub struct TextBox {
    pub text: String,
    pub rect: [f32; 4],
    /// The card or strip it belongs to.
    pub within: [f32; 4],
}

/// A rectangle as four numbers.
pub fn r4(r: Rect) -> [f32; 4] {
    [r.min.x, r.min.y, r.max.x, r.max.y]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(area: Rect, n: usize) -> ViewLayout {
        let l = layout(area, n, ViewTransform::default());
        assert_eq!(l.cards.len(), n);
        for (i, a) in l.cards.iter().enumerate() {
            assert!(
                !a.intersects(l.header) && !a.intersects(l.footer),
                "{n}: card {i} in a strip"
            );
            let hub = Rect::from_center_size(l.hub, Vec2::splat(2.0 * l.hub_radius));
            assert!(!a.intersects(hub), "{n}: card {i} over the coordinator");
            for (j, b) in l.cards.iter().enumerate().skip(i + 1) {
                assert!(
                    !a.intersects(*b),
                    "{n} devices: cards {i} and {j} overlap: {a:?} {b:?}"
                );
            }
        }
        l
    }

    #[test]
    fn one_to_forty_devices_never_overlap() {
        // The app's central view at 1280 x 800 with its panels, and a big window.
        for area in [
            Rect::from_min_size(Pos2::new(345.0, 0.0), Vec2::new(660.0, 560.0)),
            Rect::from_min_size(Pos2::ZERO, Vec2::new(1600.0, 900.0)),
        ] {
            for n in 1..=40 {
                check(area, n);
            }
        }
    }

    #[test]
    fn a_classroom_fits_the_default_window_without_panning() {
        let area = Rect::from_min_size(Pos2::new(345.0, 0.0), Vec2::new(660.0, 560.0));
        let l = check(area, 30);
        assert!(l.compact);
        assert!(!l.overflows, "30 cards must fit: zoom {}", l.zoom);
        assert!(l.zoom >= 0.75, "readable: zoom {}", l.zoom);
        let few = check(area, 3);
        assert!(!few.compact && few.zoom == 1.0);
    }

    #[test]
    fn zoom_and_pan_move_the_canvas_not_the_strips() {
        let area = Rect::from_min_size(Pos2::ZERO, Vec2::new(800.0, 600.0));
        let a = layout(area, 10, ViewTransform::default());
        let b = layout(
            area,
            10,
            ViewTransform {
                zoom: 2.0,
                pan: Vec2::new(30.0, -10.0),
            },
        );
        assert_eq!(a.header, b.header);
        assert!((b.cards[0].width() / a.cards[0].width() - 2.0).abs() < 1e-3);
        assert_eq!(b.hub, a.hub + Vec2::new(30.0, -10.0));
        assert!(b.overflows);
    }
}
