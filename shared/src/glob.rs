//! Key and path globs, compiled one way everywhere: `*` and `?` never cross a `/`; `**` does.

use globset::{Glob, GlobBuilder, GlobMatcher};

/// Compiles a key glob. `*` and `?` never cross a `/`; `**` does.
pub fn compile_glob(pattern: &str) -> Result<GlobMatcher, globset::Error> {
    let glob: Glob = GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .empty_alternates(true)
        .build()?;
    Ok(glob.compile_matcher())
}
