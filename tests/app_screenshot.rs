//! The desktop app end to end, under Xvfb on the machine's Vulkan (lavapipe without a GPU):
//! `synapse app` with one local CPU node on the default model starts a generation from
//! `--prompt`, saves a screenshot while it runs, and exits. The PNG must exist, decode, and
//! be far from blank. Takes about a minute here (model load, CPU generation, rendering on the
//! CPU). Needs `Xvfb` (tests/run.sh installs it): without it the test fails and says so.
#![cfg(feature = "gui")]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An Xvfb server on a free display, killed when dropped.
struct Xvfb {
    child: Child,
    display: String,
}

impl Xvfb {
    fn start() -> Xvfb {
        let n = (140..400)
            .find(|n| {
                !Path::new(&format!("/tmp/.X{n}-lock")).exists()
                    && !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
            })
            .expect("a free X display number between 140 and 400");
        let child = Command::new("Xvfb")
            .args([&format!(":{n}"), "-screen", "0", "1280x800x24", "-nolisten", "tcp"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("starting Xvfb failed ({e}): install it (apt-get install -y xvfb) or run tests/run.sh")
            });
        let mut x = Xvfb {
            child,
            display: format!(":{n}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists() {
            if let Ok(Some(status)) = x.child.try_wait() {
                panic!("Xvfb :{n} exited at start: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "Xvfb :{n} did not come up in 20 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        x
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Distinct RGB colours of a PNG and its size, through ImageMagick's `identify`.
fn png_stats(path: &Path) -> (usize, u32, u32) {
    let out = Command::new("identify")
        .args(["-format", "%k %w %h"])
        .arg(path)
        .output()
        .expect("running identify (ImageMagick; tests/run.sh installs it)");
    assert!(
        out.status.success(),
        "identify could not read {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(v.len(), 3, "identify said {text:?}");
    (
        v[0].parse().unwrap(),
        v[1].parse().unwrap(),
        v[2].parse().unwrap(),
    )
}

#[test]
fn the_app_renders_a_running_pipeline_to_a_png() {
    let model = common::default_model();
    let x = Xvfb::start();
    let dir = tempfile::tempdir().unwrap();
    let shot = dir.path().join("shot.png");
    let out = Command::new(env!("CARGO_BIN_EXE_synapse"))
        .args([
            "app",
            "--addr",
            "127.0.0.1:0",
            "--local-nodes",
            "1",
            "--backend",
            "cpu",
        ])
        .arg("--model")
        .arg(&model)
        .args([
            "--prompt",
            // A long greedy continuation, so the generation is still running at the capture.
            "Counting from 1 to 1000: 1, 2, 3, 4, 5,",
        ])
        .args(["--max-tokens", "4000", "--exit-after", "30"])
        .arg("--screenshot")
        .arg(&shot)
        .env("DISPLAY", &x.display)
        .env_remove("WAYLAND_DISPLAY")
        .env("SYNAPSE_LOG", "info,wgpu=warn,naga=warn")
        .output()
        .expect("running synapse app");
    drop(x);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "synapse app failed: {}\n{log}",
        out.status
    );
    assert!(
        log.contains("first token"),
        "no token was generated before the screenshot:\n{log}"
    );
    assert!(log.contains("screenshot saved"), "{log}");
    assert!(
        log.contains("capturing the window: generation running"),
        "the screenshot must show a generation in progress:\n{log}"
    );
    let (colours, w, h) = png_stats(&shot);
    assert_eq!((w, h), (1280, 800), "the window's size");
    assert!(
        colours > 200,
        "only {colours} distinct colours: the screenshot looks blank"
    );
}

/// A rectangle from the layout file: `[min x, min y, max x, max y]`.
type R4 = [f32; 4];

fn overlaps(a: R4, b: R4) -> bool {
    a[0] < b[2] && b[0] < a[2] && a[1] < b[3] && b[1] < a[3]
}

fn inside(a: R4, outer: R4, slack: f32) -> bool {
    a[0] >= outer[0] - slack
        && a[1] >= outer[1] - slack
        && a[2] <= outer[2] + slack
        && a[3] <= outer[3] + slack
}

#[test]
fn a_simulated_classroom_of_30_is_laid_out_without_overlaps_or_clipped_text() {
    let model = common::default_model();
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets/scenarios/classroom-30-chromebooks.toml");
    let x = Xvfb::start();
    let dir = tempfile::tempdir().unwrap();
    let shot = dir.path().join("classroom.png");
    let out = Command::new(env!("CARGO_BIN_EXE_synapse"))
        .args(["app", "--addr", "127.0.0.1:0", "--local-nodes", "0"])
        .arg("--model")
        .arg(&model)
        .arg("--simulate")
        .arg(&scenario)
        .args(["--exit-after", "8"])
        .arg("--screenshot")
        .arg(&shot)
        .env("DISPLAY", &x.display)
        .env_remove("WAYLAND_DISPLAY")
        .env("SYNAPSE_LOG", "info,wgpu=warn,naga=warn")
        .output()
        .expect("running synapse app");
    drop(x);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "synapse app failed: {}\n{log}",
        out.status
    );
    let (colours, w, h) = png_stats(&shot);
    assert_eq!((w, h), (1280, 800), "the window's size");
    assert!(
        colours > 200,
        "only {colours} distinct colours: the screenshot looks blank"
    );

    let text = std::fs::read_to_string(shot.with_extension("layout.json"))
        .unwrap_or_else(|e| panic!("the layout file beside the screenshot: {e}\n{log}"));
    let layout: serde_json::Value = serde_json::from_str(&text).unwrap();
    let r4 = |v: &serde_json::Value| -> R4 {
        let a: Vec<f32> = v
            .as_array()
            .expect("a rectangle")
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        [a[0], a[1], a[2], a[3]]
    };
    let area = r4(&layout["area"]);
    let cards: Vec<(String, R4)> = layout["cards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c[0].as_str().unwrap().to_string(), r4(&c[1])))
        .collect();
    assert_eq!(
        cards.len(),
        30,
        "30 simulated Chromebooks: {:?}",
        cards.iter().map(|c| &c.0).collect::<Vec<_>>()
    );
    assert!(cards.iter().all(|(n, _)| n.starts_with("chromebook")));
    for (i, (na, a)) in cards.iter().enumerate() {
        assert!(
            inside(*a, area, 0.5),
            "{na}'s card {a:?} leaves the view {area:?}"
        );
        for (nb, b) in &cards[i + 1..] {
            assert!(
                !overlaps(*a, *b),
                "cards of {na} {a:?} and {nb} {b:?} overlap"
            );
        }
    }
    let texts = layout["texts"].as_array().unwrap();
    assert!(
        texts.len() > 60,
        "names and numbers of 30 cards: {} texts",
        texts.len()
    );
    for t in texts {
        let (rect, within) = (r4(&t["rect"]), r4(&t["within"]));
        assert!(
            inside(rect, within, 0.5),
            "text {:?} at {rect:?} is clipped by its box {within:?}",
            t["text"]
        );
        assert!(
            inside(rect, area, 0.5),
            "text {:?} leaves the view",
            t["text"]
        );
    }
    // Texts of different cards never overlap either (each stays in its own card).
    assert!(layout["compact"].as_bool().unwrap());
    let zoom = layout["zoom"].as_f64().unwrap();
    assert!(zoom >= 0.75, "the classroom is drawn readable: zoom {zoom}");
}
