//! Finding and loading the ONNX Runtime shared library (ort's
//! `load-dynamic`): `ORT_DYLIB_PATH`, then the set-up cache, then the
//! system's loader path. Loaded once per process.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::{Error, Result};

const LIB_NAME: &str = "libonnxruntime.so";

/// Where the library came from and what it is.
#[derive(Debug, Clone)]
pub struct OrtLibrary {
    pub path: PathBuf,
    /// How the path was found: `ORT_DYLIB_PATH`, `cache` or `system`.
    pub source: &'static str,
    /// Version from the library's real file name (`libonnxruntime.so.1.32.0`),
    /// when the name carries one.
    pub version: Option<String>,
    /// ONNX Runtime's build string (commit, flags).
    pub build_info: String,
}

/// `libonnxruntime.so` is a link to `libonnxruntime.so.<version>` in the
/// wheels; the version is the suffix of the file it resolves to.
fn version_of(path: &Path) -> Option<String> {
    let real = std::fs::canonicalize(path).ok()?;
    let name = real.file_name()?.to_str()?;
    let v = name.strip_prefix(LIB_NAME)?.strip_prefix('.')?;
    (!v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || c == '.')).then(|| v.to_string())
}

/// `$CHATFORGE_HOME`, default `~/.cache/chatforge`: where set-up puts the
/// library and the corpora.
pub fn chatforge_home() -> PathBuf {
    if let Some(h) = std::env::var_os("CHATFORGE_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("chatforge")
}

/// The candidate library path, in the documented order of preference.
pub fn locate() -> Result<(PathBuf, &'static str)> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            return Err(Error::Library(format!(
                "ORT_DYLIB_PATH points to {}, which does not exist",
                p.display()
            )));
        }
        return Ok((p, "ORT_DYLIB_PATH"));
    }
    let cached = chatforge_home()
        .join("onnxruntime")
        .join("lib")
        .join(LIB_NAME);
    if cached.is_file() {
        return Ok((cached, "cache"));
    }
    for dir in ["/usr/local/lib", "/usr/lib", "/usr/lib/x86_64-linux-gnu"] {
        let p = Path::new(dir).join(LIB_NAME);
        if p.is_file() {
            return Ok((p, "system"));
        }
    }
    Err(Error::Library(format!(
        "ONNX Runtime not found: set ORT_DYLIB_PATH to libonnxruntime.so, or run ./scripts/setup.sh \
         to fetch it into {}",
        cached.display()
    )))
}

type Loaded = std::result::Result<(OrtLibrary, ort::environment::Environment), String>;

static LOADED: OnceLock<Loaded> = OnceLock::new();

fn loaded() -> Result<&'static (OrtLibrary, ort::environment::Environment)> {
    LOADED
        .get_or_init(|| {
            let (path, source) = locate().map_err(|e| e.to_string())?;
            let builder = ort::init_from(&path).map_err(|e| {
                format!(
                    "cannot load ONNX Runtime from {} ({source}): {e}",
                    path.display()
                )
            })?;
            let env = builder
                .with_name("chatforge")
                .with_telemetry(false)
                .build()
                .map_err(|e| format!("cannot start ONNX Runtime: {e}"))?;
            let build_info = ort::info().to_string();
            tracing::debug!("ONNX Runtime {build_info} from {}", path.display());
            Ok((
                OrtLibrary {
                    version: version_of(&path),
                    path,
                    source,
                    build_info,
                },
                env,
            ))
        })
        .as_ref()
        .map_err(|e| Error::Library(e.clone()))
}

/// Loads the library and creates ort's environment (once per process);
/// later calls return the first outcome.
pub fn load() -> Result<OrtLibrary> {
    Ok(loaded()?.0.clone())
}

/// The process-wide environment sessions are created in.
pub fn environment() -> Result<ort::environment::Environment> {
    Ok(loaded()?.1.clone())
}
