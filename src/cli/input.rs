//! Reading a command's `--input FILE` (`-` for stdin) line by line.

use std::io::BufRead;
use std::path::Path;

use anyhow::{Context, Result};

/// The lines of `path`, or of stdin for `-`.
pub fn lines(path: &Path) -> Result<Box<dyn BufRead>> {
    Ok(if path.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
        ))
    })
}
