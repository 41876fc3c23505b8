//! geo-lookup: an agent that imports a custom capability, `acme:geo/lookup`
//! (see `examples/` and `examples/wit/geo.wit`). Input: city names, one per
//! line; output: `{"places": [{"name", "lat", "lon"} | null, ...]}`.
//! Grants needed: `[capabilities.geo]`, which only a host with the example's
//! capability registered understands.

wit_bindgen::generate!({ world: "geo-agent", path: "../../examples/wit" });

use acme::geo::lookup;

struct GeoLookup;

impl Guest for GeoLookup {
    fn run(input: String) -> Result<String, AgentError> {
        let places: Vec<serde_json::Value> = input
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|city| match lookup::find(city) {
                Some(p) => serde_json::json!({ "name": p.name, "lat": p.latitude, "lon": p.longitude }),
                None => serde_json::Value::Null,
            })
            .collect();
        if places.is_empty() {
            return Err(AgentError { message: "no city given: pass one name per line".into(), retryable: false });
        }
        Ok(serde_json::json!({ "places": places }).to_string())
    }
}

export!(GeoLookup);
