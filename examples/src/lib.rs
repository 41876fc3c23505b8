//! A custom capability, `acme:geo/lookup` (`wit/geo.wit`): the host looks
//! cities up in a gazetteer of its own, and an agent whose policy has a
//! `[capabilities.geo]` section may ask it. Everything about the capability
//! lives here — its WIT, its policy section, its decision, its host
//! function, its per-task state and usage counters — and one line
//! registers it: `Host::builder(config).capability(Geo::sample())`.
//!
//! The agent that uses it is `sample-agents/geo-lookup`.

use chimera_host::capability::{Capability, Counters, Decision, Interface, LoadContext, TaskContext};
use chimera_host::policy::{check_range, PolicySection};
use chimera_host::wasmtime::component::{HasSelf, Linker};
use chimera_host::{PolicyError, TaskData};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

mod bindings {
    chimera_host::wasmtime::component::bindgen!({
        path: "wit",
        world: "acme:geo/geo-agent",
        wasmtime_crate: chimera_host::wasmtime,
    });
}

use bindings::acme::geo::lookup::{self, Place};

/// `[capabilities.geo]`: how many lookups one task may make.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GeoGrant {
    /// Lookups per task; later ones find nothing.
    pub max_lookups: u32,
}

impl Default for GeoGrant {
    fn default() -> Self {
        GeoGrant { max_lookups: 8 }
    }
}

impl PolicySection for GeoGrant {
    const SECTION: &'static str = "capabilities.geo";
}

const INTERFACES: &[Interface] = &[Interface::new("acme:geo", "lookup", "0.1.0")];

const LOOKUPS: usize = 0;
const REFUSED: usize = 1;

/// The gazetteer capability.
pub struct Geo {
    places: Arc<BTreeMap<String, (f64, f64)>>,
}

impl Geo {
    /// A gazetteer of `places`: (name, latitude, longitude).
    pub fn new<'a>(places: impl IntoIterator<Item = (&'a str, f64, f64)>) -> Geo {
        let places = places.into_iter().map(|(name, lat, lon)| (name.to_lowercase(), (lat, lon))).collect();
        Geo { places: Arc::new(places) }
    }

    /// A few capitals.
    pub fn sample() -> Geo {
        Geo::new([("Paris", 48.8566, 2.3522), ("Rome", 41.9028, 12.4964), ("Tokyo", 35.6762, 139.6503)])
    }
}

/// The capability as one task sees it.
pub struct GeoTask {
    places: Arc<BTreeMap<String, (f64, f64)>>,
    left: u32,
    counters: Counters,
}

impl lookup::Host for GeoTask {
    fn find(&mut self, city: String) -> Option<Place> {
        self.counters.add(LOOKUPS, 1);
        if self.left == 0 {
            self.counters.add(REFUSED, 1);
            return None;
        }
        self.left -= 1;
        let &(latitude, longitude) = self.places.get(&city.to_lowercase())?;
        Some(Place { name: city, latitude, longitude })
    }
}

impl Capability for Geo {
    type Grant = GeoGrant;
    type AgentState = u32;
    type TaskState = GeoTask;

    fn name(&self) -> &'static str {
        "geo"
    }

    fn section(&self) -> &'static str {
        GeoGrant::SECTION
    }

    fn interfaces(&self) -> &[Interface] {
        INTERFACES
    }

    fn counters(&self) -> &'static [&'static str] {
        &["lookups", "refused"]
    }

    fn validate(&self, grant: &GeoGrant) -> Result<(), PolicyError> {
        check_range("capabilities.geo.max_lookups", grant.max_lookups.into(), 1, 1_000)
    }

    fn decide(&self, _: &Interface, grant: Option<&GeoGrant>) -> Decision {
        match grant {
            Some(g) => Decision::Granted(format!(
                "{} lookups per task in a gazetteer of {} places",
                g.max_lookups,
                self.places.len()
            )),
            None => Decision::Refused("not granted; add a [capabilities.geo] section to the policy".into()),
        }
    }

    fn describe(&self, grant: &GeoGrant, _agent: &str) -> Vec<String> {
        vec![format!("geo: {} lookups per task", grant.max_lookups)]
    }

    fn link(&self, _: &Interface, linker: &mut Linker<TaskData>) -> chimera_host::wasmtime::Result<()> {
        lookup::add_to_linker::<TaskData, HasSelf<GeoTask>>(linker, |task| task.state::<GeoTask>())
    }

    fn load(&self, grant: Option<&GeoGrant>, _: &LoadContext<'_>) -> Result<u32, String> {
        Ok(grant.cloned().unwrap_or_default().max_lookups)
    }

    fn instantiate(&self, max_lookups: &u32, cx: &TaskContext<'_>) -> GeoTask {
        GeoTask { places: self.places.clone(), left: *max_lookups, counters: cx.counters() }
    }
}

/// Built components the examples run (compiled from this repository by
/// the tests crate's build script).
pub use chimera_tests::artifacts;

/// A file of this repository, e.g. `sample-agents/echo/policy.toml`.
pub fn repo_file(path: &str) -> std::path::PathBuf {
    chimera_tests::repo_file(path)
}
