//! A real ComfyUI client against `flow serve`: the Python package
//! `comfy-api-simplified` (installed by this test into its own virtual
//! environment under the target folder) queues ComfyUI's default API
//! workflow on the tiny single-file checkpoint, in a ComfyUI-layout models
//! folder, waits on the WebSocket and fetches the PNG from the history.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[path = "common/comfy_sandbox.rs"]
mod comfy_sandbox;

use comfy_sandbox::{root, sandbox};

/// The client's package, pinned so the test means the same thing tomorrow.
const PACKAGE: &str = "comfy-api-simplified==1.6.0";

/// A virtual environment with the client installed (made once, reused).
fn client_python() -> PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("venv-comfy-api-simplified");
    let python = venv.join("bin/python");
    let installed = || {
        Command::new(&python)
            .args(["-c", "import comfy_api_simplified"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if installed() {
        return python;
    }
    let made = Command::new("python3").args(["-m", "venv"]).arg(&venv).status();
    assert!(
        made.is_ok_and(|s| s.success()),
        "cannot make a Python virtual environment at {} (python3 with its venv module is needed)",
        venv.display()
    );
    let pip = Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", PACKAGE])
        .output()
        .unwrap();
    assert!(
        pip.status.success() && installed(),
        "cannot install {PACKAGE} from the Python package index (this test needs it):\n{}",
        String::from_utf8_lossy(&pip.stderr)
    );
    python
}

/// The client's side: queue the workflow with 2 steps, wait, save the images in `out`.
const SCRIPT: &str = r#"
import sys
from pathlib import Path
from comfy_api_simplified import ComfyApiWrapper, ComfyWorkflowWrapper

url, workflow, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
api = ComfyApiWrapper(url)
wf = ComfyWorkflowWrapper(workflow)
wf.set_node_param("KSampler", "steps", 2)
images = api.queue_and_wait_images(wf, "Save Image")
for name, data in images.items():
    (out / name).write_bytes(data)
    print(name)
"#;

#[test]
fn comfy_api_simplified_gets_the_png_of_the_default_workflow() {
    let python = client_python();
    let dir = sandbox();
    let mut server = Command::new(env!("CARGO_BIN_EXE_flow"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--models-dir",
            "models",
            "--input-dir",
            "input",
        ])
        .args(["--output-dir", "output", "--cache-dir", "cache"])
        .current_dir(dir.path())
        .env_remove("FLOW_MODELS_DIR")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Kept open while the server runs (it may print more).
    let mut stdout = std::io::BufReader::new(server.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let url = line.trim().rsplit(' ').next().unwrap().to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{line}");

    let got = dir.path().join("got");
    std::fs::create_dir(&got).unwrap();
    let script = dir.path().join("client.py");
    std::fs::write(&script, SCRIPT).unwrap();
    let workflow = root().join("graphs/comfy/default_txt2img.json");
    let client = Command::new(&python)
        .arg(&script)
        .arg(&url)
        .arg(&workflow)
        .arg(&got)
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    let stdout = String::from_utf8_lossy(&client.stdout);
    assert!(
        client.status.success(),
        "the client failed:\n{stdout}{}",
        String::from_utf8_lossy(&client.stderr)
    );
    assert_eq!(stdout.trim(), "ComfyUI_00001_.png");
    let png = std::fs::read(got.join("ComfyUI_00001_.png")).unwrap();
    assert_eq!(
        png,
        std::fs::read(dir.path().join("output/ComfyUI_00001_.png")).unwrap()
    );
    let image = image::load_from_memory(&png).unwrap();
    assert_eq!((image.width(), image.height()), (64, 64));
}
