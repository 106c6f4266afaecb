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
