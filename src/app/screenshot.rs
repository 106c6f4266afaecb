//! `--screenshot FILE` and `--exit-after SECS`: after the given time (5 s by default with a
//! screenshot), capture the window to a PNG and exit; or just exit. For tests and for people who
//! want a picture for a bug report. A screenshot that cannot be saved makes the app exit with
//! an error. Beside `FILE.png` it writes `FILE.layout.json`: every card and text rectangle the
//! central view drew ([`super::layout::LayoutReport`]), which the screenshot test checks.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bevy::prelude::*;
use bevy::render::view::screenshot::{Screenshot, ScreenshotCaptured};

use super::layout::LayoutReport;
use super::prompt::PromptPanel;
use super::window::WindowOptions;

/// Seconds to wait for a requested screenshot before giving up.
const CAPTURE_TIMEOUT_S: f64 = 30.0;

#[derive(Resource)]
struct Capture {
    path: Option<PathBuf>,
    at: f64,
    requested: Option<f64>,
    /// Set by the observer: Ok once written, Err with why not.
    result: Arc<Mutex<Option<Result<(), String>>>>,
}

pub(super) fn plugin(app: &mut App, opts: &WindowOptions) {
    let at = match (opts.exit_after, &opts.screenshot) {
        (Some(s), _) => s,
        (None, Some(_)) => 5.0,
        (None, None) => return,
    };
    app.insert_resource(Capture {
        path: opts.screenshot.clone(),
        at,
        requested: None,
        result: Arc::default(),
    })
    .add_systems(Update, capture_and_exit);
}

fn capture_and_exit(
    mut commands: Commands,
    mut cap: ResMut<Capture>,
    time: Res<Time<Real>>,
    panel: Option<Res<PromptPanel>>,
    layout: Option<Res<LayoutReport>>,
    mut exit: MessageWriter<AppExit>,
) {
    let now = time.elapsed_secs_f64();
    if now < cap.at {
        return;
    }
    let Some(path) = cap.path.clone() else {
        exit.write(AppExit::Success);
        return;
    };
    match cap.requested {
        None => {
            // Say what the picture shows: tests (and bug reports) rely on it.
            match panel.as_deref() {
                Some(p) if p.running.is_some() => info!(
                    "capturing the window: generation running, {} tokens so far",
                    p.generated
                ),
                _ => info!("capturing the window: no generation running"),
            }
            let result = cap.result.clone();
            commands.spawn(Screenshot::primary_window()).observe(
                move |shot: On<ScreenshotCaptured>| {
                    let saved = shot
                        .image
                        .clone()
                        .try_into_dynamic()
                        .map_err(|e| format!("converting the screenshot: {e}"))
                        .and_then(|img| {
                            img.to_rgb8()
                                .save(&path)
                                .map_err(|e| format!("writing {}: {e}", path.display()))
                        });
                    if saved.is_ok() {
                        info!("screenshot saved to {}", path.display());
                    }
                    *result.lock().unwrap_or_else(|p| p.into_inner()) = Some(saved);
                },
            );
            cap.requested = Some(now);
        }
        Some(since) => {
            let done = cap.result.lock().unwrap_or_else(|p| p.into_inner()).clone();
            match done {
                Some(Ok(())) => {
                    let file = path.with_extension("layout.json");
                    let written =
                        serde_json::to_vec_pretty(&layout.as_deref().cloned().unwrap_or_default())
                            .map_err(|e| e.to_string())
                            .and_then(|j| std::fs::write(&file, j).map_err(|e| e.to_string()));
                    match written {
                        Ok(()) => {
                            info!("layout saved to {}", file.display());
                            exit.write(AppExit::Success);
                        }
                        Err(e) => {
                            error!("writing {}: {e}", file.display());
                            exit.write(AppExit::error());
                        }
                    }
                }
                Some(Err(e)) => {
                    error!("screenshot: {e}");
                    exit.write(AppExit::error());
                }
                None if now - since > CAPTURE_TIMEOUT_S => {
                    error!("screenshot: no frame was captured in {CAPTURE_TIMEOUT_S} s");
                    exit.write(AppExit::error());
                }
                None => {}
            }
        }
    }
}
