//! Loading components: bytes that are almost a component (a real one for
//! the `agent` world, with bytes flipped, inserted, cut or repeated) and
//! core modules made by `wasm-smith` are each either an agent or an error
//! that names the problem — never a panic, a backtrace or an unbounded
//! message. Compiles run in process here (the child-process compiler's own
//! budget is tested with the attack components).

use super::run;
use crate::compile::Compiler;
use crate::{Host, HostConfig, Policy};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use std::sync::LazyLock;

/// A component of the `agent` world, importing every capability.
fn agent_component() -> Vec<u8> {
    let mut resolve = wit_parser::Resolve::default();
    let (package, _) = resolve.push_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../wit")).unwrap();
    let world = resolve.select_world(&[package], Some("agent")).unwrap();
    let mangling = wit_parser::ManglingAndAbi::Legacy(wit_parser::LiftLowerAbi::Sync);
    let mut module = wit_component::dummy_module(&resolve, world, mangling);
    wit_component::embed_component_metadata(&mut module, &resolve, world, wit_component::StringEncoding::UTF8).unwrap();
    wit_component::ComponentEncoder::default().module(&module).unwrap().validate(true).encode().unwrap()
}

#[derive(Debug, Clone)]
enum Edit {
    Flip(prop::sample::Index, u8),
    Insert(prop::sample::Index, u8),
    Delete(prop::sample::Index),
    Truncate(prop::sample::Index),
    Repeat(prop::sample::Index, u8),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Flip(i, b)),
        2 => (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        2 => any::<prop::sample::Index>().prop_map(Edit::Delete),
        1 => any::<prop::sample::Index>().prop_map(Edit::Truncate),
        1 => (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, n)| Edit::Repeat(i, n)),
    ]
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for edit in edits {
        if bytes.is_empty() {
            break;
        }
        match edit {
            Edit::Flip(i, b) => {
                let i = i.index(bytes.len());
                bytes[i] ^= b | 1;
            }
            Edit::Insert(i, b) => bytes.insert(i.index(bytes.len() + 1), *b),
            Edit::Delete(i) => {
                bytes.remove(i.index(bytes.len()));
            }
            Edit::Truncate(i) => bytes.truncate(i.index(bytes.len())),
            Edit::Repeat(i, n) => {
                let at = i.index(bytes.len());
                let run: Vec<u8> = bytes[at..(at + usize::from(*n)).min(bytes.len())].to_vec();
                bytes.splice(at..at, run);
            }
        }
    }
    bytes
}

/// What is loaded: a mutated component, or a module `wasm-smith` built from
/// random bytes.
#[derive(Debug, Clone)]
enum Input {
    Mutated(Vec<Edit>),
    Generated(Vec<u8>),
}

struct Fixture {
    host: Host,
    policy: Policy,
    component: Vec<u8>,
    _dir: tempfile::TempDir,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let dir = tempfile::tempdir().unwrap();
    let config = HostConfig {
        data_dir: dir.path().into(),
        pooling: false,
        compiler: Compiler::InProcess,
        ..HostConfig::default()
    };
    let policy = "[capabilities.logging]\n[capabilities.kv]\n[capabilities.outbound_http]\n[capabilities.tasks]\n";
    Fixture {
        host: Host::new(config).unwrap(),
        policy: Policy::from_toml(policy).unwrap(),
        component: agent_component(),
        _dir: dir,
    }
});

fn check(input: Input) -> Result<(), TestCaseError> {
    let fixture = &*FIXTURE;
    let bytes = match &input {
        Input::Mutated(edits) => apply(fixture.component.clone(), edits),
        Input::Generated(seed) => {
            let mut u = arbitrary::Unstructured::new(seed);
            match wasm_smith::Module::new(wasm_smith::Config::default(), &mut u) {
                Ok(module) => module.to_bytes(),
                Err(_) => return Ok(()),
            }
        }
    };
    let load = || fixture.host.load("fuzzed", &bytes, fixture.policy.clone());
    let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(load));
    match loaded.map_err(|_| TestCaseError::fail("loading panicked"))? {
        Ok(_) => {}
        Err(e) => {
            let message = e.to_string();
            prop_assert!(!message.trim().is_empty(), "an empty error");
            prop_assert!(
                !message.contains("panicked") && !message.contains("backtrace") && !message.contains("RUST_BACKTRACE"),
                "{message}"
            );
            prop_assert!(message.len() <= 4096, "an error of {} bytes", message.len());
            if matches!(input, Input::Generated(_)) {
                prop_assert!(message.contains("not a component"), "a core module, refused as: {message}");
            }
        }
    }
    Ok(())
}

#[test]
fn fuzz_component_loading() {
    // The unchanged component loads: the mutations start from a real one.
    let fixture = &*FIXTURE;
    fixture.host.load("intact", &fixture.component, fixture.policy.clone()).unwrap();
    let corpus = [Input::Mutated(vec![]), Input::Generated(vec![0; 64])];
    let inputs = prop_oneof![
        4 => prop::collection::vec(edit(), 1..6).prop_map(Input::Mutated),
        1 => prop::collection::vec(any::<u8>(), 0..2048).prop_map(Input::Generated),
    ];
    run("component-loading", corpus, inputs, check);
}
