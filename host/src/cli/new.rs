//! `chimera new --lang rust|python|js NAME`: a ready agent project — its
//! source, policy, build script, a test that runs it through the host, and
//! a README — that builds and runs as created.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// A language `chimera new` writes projects in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum Lang {
    Rust,
    Python,
    Js,
}

const README: &str = include_str!("../../templates/new/README.md");
const POLICY: &str = include_str!("../../templates/new/policy.toml");
const BUILD: &str = include_str!("../../templates/new/build.sh");
const TEST: &str = include_str!("../../templates/new/test.sh");
const RUST_CARGO: &str = include_str!("../../templates/new/rust-Cargo.toml");
const RUST_LIB: &str = include_str!("../../templates/new/rust-lib.rs");
const PYTHON_APP: &str = include_str!("../../templates/new/python-app.py");
const JS_APP: &str = include_str!("../../templates/new/js-app.js");

/// The Chimera source tree this binary was built from, when it is still
/// there (its SDK and the Python/JS build script), or `$CHIMERA_SOURCE`.
fn source_tree() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("CHIMERA_SOURCE").map(PathBuf::from),
        Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf),
    ];
    candidates.into_iter().flatten().find(|dir| dir.join("guest-sdk/Cargo.toml").is_file())
}

/// A project name: lower-case letters, digits and `-`, starting with a letter.
fn check_project_name(name: &str) -> Result<()> {
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok {
        bail!("{name:?} is not a usable agent name; use 1-64 characters from a-z, 0-9 and '-', starting with a letter (e.g. my-agent)");
    }
    Ok(())
}

/// Writes the project `name` in `lang` into `dir/name`; returns its path.
pub(super) fn create(lang: Lang, name: &str, dir: &Path) -> Result<PathBuf> {
    check_project_name(name)?;
    let project = dir.join(name);
    if project.exists() {
        bail!("{} already exists; choose another name or remove it", project.display());
    }
    let source = source_tree();
    let crate_name = name.replace('-', "_");
    let chimera = std::env::current_exe().context("cannot find this chimera binary")?;
    let absolute = std::path::absolute(&project)?;
    // Paths into the source tree: relative when the project sits beside or
    // inside it (they move together), absolute otherwise.
    let near = source.as_ref().and_then(|t| t.parent()).is_some_and(|parent| absolute.starts_with(parent));
    let from_project = |target: &Path| {
        let relative = pathdiff::diff_paths(target, &absolute).filter(|_| near);
        relative.unwrap_or_else(|| target.to_path_buf()).display().to_string()
    };
    let build_agent = || -> Result<String> {
        let tree = source.as_ref().with_context(|| {
            format!(
                "a {lang:?} agent is built with the Chimera source tree's scripts/build-agent.sh and toolchains \
                 (scripts/setup.sh installs them); set CHIMERA_SOURCE to a Chimera checkout"
            )
        })?;
        Ok(from_project(&tree.join("scripts/build-agent.sh")))
    };
    type Parts = (Vec<(&'static str, &'static str)>, &'static str, String, &'static str, &'static str, &'static str);
    let (files, source_file, build, wasi, language, guide): Parts = match lang {
        Lang::Rust => (
            vec![("Cargo.toml", RUST_CARGO), ("src/lib.rs", RUST_LIB)],
            "src/lib.rs",
            format!(
                "cargo build --release --target wasm32-wasip2\n\
                 cp \"${{CARGO_TARGET_DIR:-target}}/wasm32-wasip2/release/{crate_name}.wasm\" {name}.wasm"
            ),
            "",
            "Rust",
            "The SDK: `chimera-agent` (docs in its README: logging, kv, http, tasks, config).",
        ),
        Lang::Python => (
            vec![("app.py", PYTHON_APP)],
            "app.py",
            format!("{:?} app.py {name}.wasm", build_agent()?),
            "\n# CPython imports the filesystem and sockets at start-up: linked inert.\n[wasi]\nfilesystem = \"inert\"\nsockets = \"inert\"\n",
            "Python",
            "The guide: docs/python-agents.md in the Chimera repository (worlds, errors, HTTP, secrets).",
        ),
        Lang::Js => (
            vec![("app.js", JS_APP)],
            "app.js",
            format!("{:?} app.js {name}.wasm", build_agent()?),
            "\n# The JS engine imports the filesystem for its stdio: linked inert.\n[wasi]\nfilesystem = \"inert\"\n",
            "JavaScript",
            "The guide: docs/javascript-agents.md in the Chimera repository (worlds, errors, HTTP, secrets).",
        ),
    };
    let sdk = match &source {
        Some(tree) => format!("chimera-agent = {{ path = {:?} }}", from_project(&tree.join("guest-sdk"))),
        // Without the source tree, the published crate.
        None => "chimera-agent = \"0.1\"".to_string(),
    };
    let fill = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{sdk}}", &sdk)
            .replace("{{build}}", &build)
            .replace("{{wasi}}", wasi)
            .replace("{{chimera}}", &chimera.display().to_string())
            .replace("{{language}}", language)
            .replace("{{source}}", source_file)
            .replace("{{guide}}", guide)
    };
    let mut all = files;
    all.extend([("policy.toml", POLICY), ("build.sh", BUILD), ("test.sh", TEST), ("README.md", README)]);
    for (file, template) in all {
        let path = project.join(file);
        std::fs::create_dir_all(path.parent().expect("a file in the project"))
            .with_context(|| format!("cannot create {}", project.display()))?;
        std::fs::write(&path, fill(template)).with_context(|| format!("cannot write {}", path.display()))?;
        if file.ends_with(".sh") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    if lang == Lang::Rust {
        std::fs::write(project.join(".gitignore"), "/target\n*.wasm\n")?;
    } else {
        std::fs::write(project.join(".gitignore"), "*.wasm\n")?;
    }
    Ok(project)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_a_project_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["", "My-Agent", "1agent", "a b", "../x", "a_b"] {
            let e = create(Lang::Rust, bad, dir.path()).unwrap_err().to_string();
            assert!(e.contains("is not a usable agent name"), "{bad}: {e}");
        }
        let project = create(Lang::Rust, "greeter", dir.path()).unwrap();
        let cargo = std::fs::read_to_string(project.join("Cargo.toml")).unwrap();
        assert!(cargo.contains("name = \"greeter\"") && cargo.contains("chimera-agent = "), "{cargo}");
        assert!(!cargo.contains("{{"), "{cargo}");
        let again = create(Lang::Rust, "greeter", dir.path()).unwrap_err().to_string();
        assert!(again.ends_with("already exists; choose another name or remove it"), "{again}");
        for (lang, name) in [(Lang::Rust, "r"), (Lang::Python, "p"), (Lang::Js, "j")] {
            let project = create(lang, name, dir.path()).unwrap();
            let policy = std::fs::read_to_string(project.join("policy.toml")).unwrap();
            crate::Policy::from_toml(&policy).unwrap_or_else(|e| panic!("{lang:?}: {e}"));
            for file in ["build.sh", "test.sh", "README.md", "policy.toml"] {
                let text = std::fs::read_to_string(project.join(file)).unwrap();
                assert!(!text.contains("{{"), "{lang:?} {file}: {text}");
            }
        }
    }
}
