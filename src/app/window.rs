//! The desktop window: Bevy's default plugins (rendering on the machine's GPU through wgpu),
//! egui, the simulation of [`super::headless_plugin`], and the panels. Keeps updating (slowly)
//! while the window is unfocused or minimized; the coordinator runs on its own thread anyway.

use std::path::PathBuf;
use std::time::Duration;

use bevy::prelude::*;
use bevy::winit::{UpdateMode, WinitSettings};
use bevy_egui::{EguiContexts, EguiPlugin, EguiPrimaryContextPass, egui};

use super::bridge::Bridge;
use super::{headless_plugin, join, plots, prompt, screenshot, simulate, view};

/// What `synapse app` asks of the window beyond showing it.
#[derive(Debug, Clone)]
pub struct WindowOptions {
    /// Save a PNG of the window here after `exit_after` seconds (or 5 s), then exit.
    pub screenshot: Option<PathBuf>,
    /// Close the app after this many seconds.
    pub exit_after: Option<f64>,
    /// Start generating this prompt as soon as the pipeline is complete.
    pub prompt: Option<String>,
    /// Initial "max tokens" of the prompt panel.
    pub max_tokens: usize,
    /// Start in simulation mode with this scenario's devices.
    pub simulate: Option<crate::sim::scenario::Scenario>,
}

/// The egui passes, in order: each panel takes its side of what is left ([`FreeRect`]), the
/// central view gets the rest. Chained so the layout is the same every frame.
#[derive(SystemSet, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum UiOrder {
    Start,
    Left,
    Right,
    Bottom,
    Central,
}

/// The part of the window no panel has taken yet this frame.
#[derive(Resource, Debug)]
pub(super) struct FreeRect(pub egui::Rect);

impl Default for FreeRect {
    fn default() -> Self {
        FreeRect(egui::Rect::NOTHING)
    }
}

impl FreeRect {
    /// A background `Ui` over the free part, to show one panel in; pass it back to [`Self::take`].
    pub fn ui(&self, ctx: &egui::Context, id: &str) -> egui::Ui {
        egui::Ui::new(
            ctx.clone(),
            egui::Id::new(id),
            egui::UiBuilder::new()
                .layer_id(egui::LayerId::background())
                .max_rect(self.0),
        )
    }

    /// Records what the panel shown in `ui` left free.
    pub fn take(&mut self, ui: &egui::Ui) {
        self.0 = ui.available_rect_before_wrap();
    }
}

fn start_ui(mut contexts: EguiContexts, mut free: ResMut<FreeRect>) -> Result {
    free.0 = contexts.ctx_mut()?.viewport_rect();
    Ok(())
}

/// Opens the window and runs until it is closed (or `exit_after`); returns how it ended.
pub fn run(bridge: Bridge, opts: WindowOptions) -> AppExit {
    let mut app = App::new();
    app.add_plugins(
        DefaultPlugins
            .set(WindowPlugin {
                primary_window: Some(Window {
                    title: "Synapse".into(),
                    resolution: (1280, 800).into(),
                    ..default()
                }),
                ..default()
            })
            // `main` already installed the tracing subscriber.
            .disable::<bevy::log::LogPlugin>(),
    )
    .add_plugins(EguiPlugin::default())
    .insert_resource(WinitSettings {
        focused_mode: UpdateMode::Continuous,
        unfocused_mode: UpdateMode::reactive_low_power(Duration::from_millis(100)),
    })
    .insert_resource(ClearColor(Color::srgb(0.07, 0.08, 0.10)))
    .insert_resource(bridge)
    .configure_sets(
        EguiPrimaryContextPass,
        (
            UiOrder::Start,
            UiOrder::Left,
            UiOrder::Right,
            UiOrder::Bottom,
            UiOrder::Central,
        )
            .chain(),
    )
    .init_resource::<FreeRect>()
    .add_systems(EguiPrimaryContextPass, start_ui.in_set(UiOrder::Start))
    .add_systems(Startup, |mut commands: Commands| {
        commands.spawn(Camera2d);
    })
    .add_plugins(headless_plugin);
    prompt::plugin(&mut app, opts.prompt.clone(), opts.max_tokens);
    screenshot::plugin(&mut app, &opts);
    if let Some(s) = opts.simulate.clone() {
        app.add_systems(
            Startup,
            move |mut out: MessageWriter<simulate::SimCommand>, mut tab: ResMut<join::RightTab>| {
                for c in simulate::scenario_commands(&s) {
                    out.write(c);
                }
                *tab = join::RightTab::Simulate;
            },
        );
    }
    app.add_plugins((join::plugin, plots::plugin, view::plugin));
    app.run()
}
