//! WIT interface names and the version rule imports are matched by.

use std::fmt;

/// One WIT interface a capability provides, at the version the host
/// implements: `package/name@version`, e.g. `chimera:agent/kv@0.1.0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Interface {
    /// `namespace:package`, e.g. `chimera:agent`.
    pub package: &'static str,
    /// The interface, e.g. `kv`.
    pub name: &'static str,
    /// The version the host implements, e.g. `0.1.0`.
    pub version: &'static str,
}

impl Interface {
    /// An interface at a version.
    pub const fn new(package: &'static str, name: &'static str, version: &'static str) -> Interface {
        Interface { package, name, version }
    }

    /// The name the host's linker defines: `package/name@version`.
    pub fn qualified(&self) -> String {
        format!("{}/{}@{}", self.package, self.name, self.version)
    }

    /// Whether an import asking for `version` is served by this interface.
    pub(crate) fn serves(&self, version: &semver::Version) -> bool {
        semver::Version::parse(self.version).is_ok_and(|provided| compatible(&provided, version))
    }
}

impl fmt::Display for Interface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}@{}", self.package, self.name, self.version)
    }
}

/// An import's name, split: `package/interface@version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ImportName<'a> {
    pub package: &'a str,
    pub interface: &'a str,
    /// The version as written, if any.
    pub version: Option<&'a str>,
}

impl<'a> ImportName<'a> {
    /// Splits an interface import's name; `None` for anything else (a bare
    /// function or a name without a package).
    pub fn parse(name: &'a str) -> Option<ImportName<'a>> {
        let (path, version) = match name.split_once('@') {
            Some((p, v)) => (p, Some(v)),
            None => (name, None),
        };
        let (package, interface) = path.split_once('/')?;
        (package.contains(':') && !interface.is_empty()).then_some(ImportName { package, interface, version })
    }
}

/// wasmtime's rule for which definition serves an import: the same version
/// exactly, or one of the same semver-compatible series — same major for
/// 1.x and later, same minor for 0.x, same patch for 0.0.x. A pre-release
/// on either side matches only itself.
pub(crate) fn compatible(provided: &semver::Version, wanted: &semver::Version) -> bool {
    if !provided.pre.is_empty() || !wanted.pre.is_empty() {
        return provided == wanted;
    }
    match (provided.major, provided.minor) {
        (0, 0) => wanted.major == 0 && wanted.minor == 0 && wanted.patch == provided.patch,
        (0, minor) => wanted.major == 0 && wanted.minor == minor,
        (major, _) => wanted.major == major,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_match_like_wasmtime_s_linker() {
        let v = |s: &str| semver::Version::parse(s).unwrap();
        assert!(compatible(&v("0.1.0"), &v("0.1.0")));
        assert!(compatible(&v("0.1.0"), &v("0.1.7")));
        assert!(compatible(&v("0.2.6"), &v("0.2.0")));
        assert!(!compatible(&v("0.1.0"), &v("0.2.0")));
        assert!(!compatible(&v("0.1.0"), &v("1.1.0")));
        assert!(!compatible(&v("0.1.0"), &v("0.1.0-rc")));
        assert!(!compatible(&v("0.1.0"), &v("0.1.1-rc.1")));
        assert!(compatible(&v("0.1.0-rc"), &v("0.1.0-rc")));
        assert!(compatible(&v("1.2.0"), &v("1.9.3")));
        assert!(!compatible(&v("1.2.0"), &v("2.0.0")));
        assert!(!compatible(&v("0.0.3"), &v("0.0.4")));
    }

    #[test]
    fn import_names_split() {
        let n = ImportName::parse("wasi:cli/stdout@0.2.6").unwrap();
        assert_eq!((n.package, n.interface, n.version), ("wasi:cli", "stdout", Some("0.2.6")));
        assert_eq!(ImportName::parse("chimera:agent/kv").unwrap().version, None);
        assert!(ImportName::parse("run").is_none());
        assert!(ImportName::parse("evil/x").is_none());
    }
}
