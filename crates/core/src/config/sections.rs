//! A tier's own config section, registered by its crate: core layers it like its own sections
//! and hands it back typed, without knowing the type.

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{ConfigError, Flag};

/// Settings a tier crate owns: a section of the config file with its flags, defaults and
/// validation. Register it with `Tier::settings::<S>()`; read it with `Config::section`.
pub trait Settings:
    Serialize + DeserializeOwned + Default + Clone + Send + Sync + std::fmt::Debug + 'static
{
    /// The section name: `[SECTION]` in the file, `--SECTION.key` flags,
    /// `<BINARY>__SECTION__KEY` environment variables.
    const SECTION: &'static str;
    /// Flags of the section's keys.
    const FLAGS: &'static [Flag];
    /// Checks beyond types, as `key: why` (the section name is prepended).
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

/// How core handles a tier's section without knowing its type.
#[derive(Clone)]
pub struct SectionSpec {
    pub name: &'static str,
    pub flags: &'static [Flag],
    pub(super) defaults: fn() -> serde_json::Value,
    pub(super) load: fn(&config::Config) -> Result<Section, ConfigError>,
}

impl SectionSpec {
    /// The section's embedded defaults, as JSON.
    pub fn defaults(&self) -> serde_json::Value {
        (self.defaults)()
    }

    pub fn of<S: Settings>() -> SectionSpec {
        SectionSpec {
            name: S::SECTION,
            flags: S::FLAGS,
            defaults: || serde_json::to_value(S::default()).unwrap_or_default(),
            load: |c| {
                let settings: S = match c.get(S::SECTION) {
                    Ok(s) => s,
                    // An empty section (every key at its default, all optional) is absent.
                    Err(config::ConfigError::NotFound(_)) => S::default(),
                    Err(e) => {
                        return Err(ConfigError::Invalid(format!("invalid configuration: {e}")))
                    }
                };
                settings
                    .validate()
                    .map_err(|e| ConfigError::Invalid(format!("{}.{e}", S::SECTION)))?;
                Ok(Section::new(settings))
            },
        }
    }
}

/// One loaded tier section: the typed value and its JSON form for printing and comparing.
#[derive(Clone)]
pub struct Section {
    pub(super) value: Arc<dyn Any + Send + Sync>,
    pub(super) shown: serde_json::Value,
}

impl Section {
    fn new<S: Settings>(settings: S) -> Section {
        Section {
            shown: serde_json::to_value(&settings).unwrap_or_default(),
            value: Arc::new(settings),
        }
    }
}

/// The loaded tier sections by name.
#[derive(Clone, Default)]
pub struct Sections(pub(super) BTreeMap<&'static str, Section>);

impl Sections {
    /// Each section's name and JSON form.
    pub(crate) fn shown(&self) -> impl Iterator<Item = (&'static str, &serde_json::Value)> {
        self.0.iter().map(|(name, s)| (*name, &s.shown))
    }
}

impl PartialEq for Sections {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len()
            && self
                .0
                .iter()
                .zip(&other.0)
                .all(|((a, x), (b, y))| a == b && x.shown == y.shown)
    }
}

impl std::fmt::Debug for Sections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| (k, &v.shown)))
            .finish()
    }
}
