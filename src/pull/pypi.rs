//! Finding a package's wheel through the PyPI JSON API (`<base>/pypi/<name>/json`).

use serde::Deserialize;
use ureq::Agent;

use super::error::{PullError, Result};
use super::http::get_json;

/// The public PyPI index.
pub const PYPI_BASE: &str = "https://pypi.org";

/// One wheel of a package's latest release, with what is needed to fetch and verify it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WheelInfo {
    /// PyPI project name.
    pub package: String,
    /// Release version, when the metadata states it.
    pub version: Option<String>,
    /// File name of the wheel (`*.whl`).
    pub filename: String,
    /// Where to download it.
    pub url: String,
    /// Size in bytes, when stated.
    pub size: Option<u64>,
    /// SHA-256 (lower-case hex) published for the file.
    pub sha256: String,
}

#[derive(Deserialize)]
struct ProjectJson {
    #[serde(default)]
    info: Option<InfoJson>,
    urls: Vec<FileJson>,
}

#[derive(Deserialize)]
struct InfoJson {
    #[serde(default)]
    version: Option<String>,
}

#[derive(Deserialize)]
struct FileJson {
    #[serde(default)]
    packagetype: String,
    filename: String,
    url: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    digests: DigestsJson,
    #[serde(default)]
    yanked: bool,
}

#[derive(Deserialize, Default)]
struct DigestsJson {
    #[serde(default)]
    sha256: Option<String>,
}

/// The metadata URL of `package` under `base` (e.g. `https://pypi.org`).
pub fn project_url(base: &str, package: &str) -> String {
    format!("{}/pypi/{}/json", base.trim_end_matches('/'), package)
}

/// Looks up the latest release of `package` and picks its wheel, preferring a
/// pure-Python (`-none-any.whl`) one.
pub fn latest_wheel(agent: &Agent, base: &str, package: &str) -> Result<WheelInfo> {
    let url = project_url(base, package);
    let bad = |reason: String| PullError::BadPypiJson { package: package.to_string(), url: url.clone(), reason };
    let project: ProjectJson = get_json(agent, &url, bad)?;
    let wheels: Vec<&FileJson> = project
        .urls
        .iter()
        .filter(|f| !f.yanked && f.filename.ends_with(".whl"))
        .filter(|f| f.packagetype.is_empty() || f.packagetype == "bdist_wheel")
        .collect();
    let chosen = wheels
        .iter()
        .find(|f| f.filename.ends_with("-none-any.whl"))
        .or_else(|| wheels.first())
        .ok_or_else(|| PullError::NoWheel { package: package.to_string(), url: url.clone() })?;
    if chosen.filename.contains(['/', '\\']) || chosen.filename.starts_with('.') {
        return Err(bad(format!("unsafe wheel file name {:?}", chosen.filename)));
    }
    let sha256 = chosen
        .digests
        .sha256
        .as_deref()
        .ok_or_else(|| bad(format!("no sha256 digest for {}", chosen.filename)))
        .and_then(|d| {
            super::verify::normalize_sha256(d)
                .map_err(|_| bad(format!("malformed sha256 digest {d:?} for {}", chosen.filename)))
        })?;
    Ok(WheelInfo {
        package: package.to_string(),
        version: project.info.and_then(|i| i.version),
        filename: chosen.filename.clone(),
        url: chosen.url.clone(),
        size: chosen.size,
        sha256,
    })
}
