//! Builds every guest component the tests and benchmarks run, from source:
//! the sample agents and Rust attack components with cargo for
//! `wasm32-wasip2`, the echo agent also for `wasm32-unknown-unknown`
//! (wrapped by wit-component, so it has no WASI imports), and the WAT attack
//! components with `wat` + `wit-component`, the Python agents with
//! componentize-py and the JavaScript agents with ComponentizeJS (both
//! installed into `toolchains/` by `scripts/setup.sh`). Writes their paths to
//! `$OUT_DIR/artifacts.rs`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).parent().unwrap().to_path_buf();
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    // OUT_DIR is <target>/<profile>/build/<pkg>/out: share <target>/guests with scripts/demo.sh.
    let target_dir = out.ancestors().nth(4).unwrap().join("guests");
    for dir in [
        "wit",
        "guest-sdk/src",
        "guest-sdk/Cargo.toml",
        "sample-agents",
        "attack-components",
        "toolchains/requirements.txt",
        "examples/wit",
        "toolchains/package-lock.json",
        "scripts/build-agent.sh",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }

    let mut consts = String::new();
    let wasip2 = target_dir.join("wasm32-wasip2/release");
    for (workspace, crates) in [
        (
            "sample-agents",
            &[
                "echo",
                "word-count",
                "kv-counter",
                "http-fetch",
                "flaky",
                "passthrough",
                "geo-lookup",
                "text-report",
                "api-call",
                "wasi-http-fetch",
            ][..],
        ),
        (
            "attack-components",
            &[
                "fs-escape",
                "sleeper",
                "snoop",
                "socket-escape",
                "kv-escape",
                "egress",
                "fork-bomb",
                "crowd-probe",
                "exit-early",
                "random-probe",
            ][..],
        ),
    ] {
        cargo_build(&root.join(workspace), "wasm32-wasip2", &target_dir);
        for name in crates {
            let file = wasip2.join(format!("{}.wasm", name.replace('-', "_")));
            assert!(file.exists(), "{} was not built", file.display());
            consts.push_str(&constant(name, &file));
        }
    }

    // The no-WASI build mode: a core module for wasm32-unknown-unknown wrapped
    // by wit-component, which imports only what the code calls.
    for (workspace, crates, suffix) in [
        ("sample-agents", &["echo"][..], "-no-wasi"),
        (
            "attack-components",
            &["env-read", "handle-exhaustion", "use-after-drop", "double-drop", "wrong-handle-type"][..],
            "",
        ),
    ] {
        cargo_build(&root.join(workspace), "wasm32-unknown-unknown", &target_dir);
        for name in crates {
            let module_path =
                target_dir.join(format!("wasm32-unknown-unknown/release/{}.wasm", name.replace('-', "_")));
            let module = std::fs::read(&module_path).unwrap_or_else(|e| panic!("{}: {e}", module_path.display()));
            let component = wit_component::ComponentEncoder::default()
                .module(&module)
                .and_then(|e| e.validate(true).encode())
                .unwrap_or_else(|e| panic!("{}: {e:#}", module_path.display()));
            let file = out.join(format!("{name}{suffix}.wasm"));
            std::fs::write(&file, component).unwrap();
            consts.push_str(&constant(&format!("{name}{suffix}"), &file));
        }
    }

    // WAT attack components, each declaring its world in a `;; world:` line.
    let mut resolve = wit_parser::Resolve::default();
    resolve.push_dir(root.join("wit")).unwrap();
    resolve.push_file(root.join("attack-components/wat/worlds.wit")).unwrap();
    let mut wats: Vec<_> = std::fs::read_dir(root.join("attack-components/wat"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wat"))
        .collect();
    wats.sort();
    for path in wats {
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        let file = out.join(format!("{name}.wasm"));
        if text.lines().any(|l| l.starts_with("(component")) {
            // Written as a component already: no world to embed.
            let component = wat::parse_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            std::fs::write(&file, component).unwrap();
            consts.push_str(&constant(&name, &file));
            continue;
        }
        let world_name = text
            .lines()
            .find_map(|l| l.trim().strip_prefix(";; world:"))
            .unwrap_or_else(|| panic!("{} has no `;; world:` line", path.display()))
            .trim();
        let (pkg, world) = world_name.rsplit_once('/').unwrap();
        let pkg_id =
            resolve.packages.iter().find(|(_, p)| p.name.to_string().starts_with(pkg)).map(|(id, _)| id).unwrap();
        let world_id = resolve.select_world(&[pkg_id], Some(world)).unwrap();
        let mut module = wat::parse_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        wit_component::embed_component_metadata(&mut module, &resolve, world_id, wit_component::StringEncoding::UTF8)
            .unwrap();
        let component = wit_component::ComponentEncoder::default()
            .module(&module)
            .and_then(|e| e.validate(true).encode())
            .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
        std::fs::write(&file, component).unwrap();
        consts.push_str(&constant(&name, &file));
    }
    // Python and JavaScript agents: one source file each, naming its world in
    // a `world:` comment, built by scripts/build-agent.sh. The two toolchains
    // run side by side (each is mostly one core); a component newer than its
    // source, `wit/` and the toolchain pins is not rebuilt.
    let scripted = [
        ("sample-agents/kv-counter-py/app.py", "kv-counter-py"),
        ("sample-agents/fetch-py/app.py", "fetch-py"),
        ("attack-components/python/py_escape.py", "py-escape"),
        ("sample-agents/kv-counter-js/app.js", "kv-counter-js"),
        ("sample-agents/fetch-js/app.js", "fetch-js"),
        ("attack-components/js/js_spin.js", "js-spin"),
        ("attack-components/js/js_runtime.js", "js-runtime"),
    ];
    let scripted_dir = target_dir.join("scripted");
    std::fs::create_dir_all(&scripted_dir).unwrap();
    let (python, js): (Vec<_>, Vec<_>) = scripted.iter().partition(|(src, _)| src.ends_with(".py"));
    std::thread::scope(|s| {
        for group in [python, js] {
            let (root, dir) = (&root, &scripted_dir);
            s.spawn(move || {
                for (src, name) in group {
                    build_scripted(root, &root.join(src), &dir.join(format!("{name}.wasm")));
                }
            });
        }
    });
    for (_, name) in scripted {
        consts.push_str(&constant(name, &scripted_dir.join(format!("{name}.wasm"))));
    }
    std::fs::write(out.join("artifacts.rs"), consts).unwrap();
}

/// Builds a Python or JavaScript agent into `output`, unless it is up to date.
fn build_scripted(root: &Path, source: &Path, output: &Path) {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut inputs = vec![source.to_path_buf()];
    inputs.extend(std::fs::read_dir(root.join("wit")).unwrap().map(|e| e.unwrap().path()));
    inputs.push(root.join("toolchains/requirements.txt"));
    inputs.push(root.join("toolchains/package-lock.json"));
    inputs.push(root.join("scripts/build-agent.sh"));
    if let Some(built) = modified(output) {
        if inputs.iter().all(|i| modified(i).is_some_and(|m| m < built)) {
            return;
        }
    }
    // The same command agent authors use, so the tests build what the docs say.
    let mut cmd = Command::new(root.join("scripts/build-agent.sh"));
    cmd.arg(source).arg(output);
    let result = cmd.output().unwrap_or_else(|e| panic!("cannot run the build of {}: {e}", source.display()));
    assert!(
        result.status.success() && output.exists(),
        "building {} failed:\n{}{}",
        source.display(),
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
}

fn constant(name: &str, file: &Path) -> String {
    format!("pub const {}: &str = {:?};\n", name.to_uppercase().replace('-', "_"), file.display().to_string())
}

fn cargo_build(workspace: &Path, target: &str, target_dir: &Path) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args(["build", "--release", "--locked", "--target", target, "--target-dir"])
        .arg(target_dir)
        // The outer build's flags and profile are for the host, not the guests.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_PROFILE_RELEASE_DEBUG");
    let status = cmd.status().unwrap_or_else(|e| panic!("cannot run cargo for {}: {e}", workspace.display()));
    assert!(
        status.success(),
        "building {} for {target} failed; is the target installed? (rustup target add {target})",
        workspace.display()
    );
}
