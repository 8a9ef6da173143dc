//! The agent's project folder: every path a tool names is resolved inside
//! it, with `..`, absolute paths and symlinks resolved first, so nothing
//! outside the folder is read or written.
use std::path::{Component, Path, PathBuf};

/// The folder the agent works in (canonical).
#[derive(Clone, Debug)]
pub struct Workspace {
    root: PathBuf,
}

impl Workspace {
    /// The folder `dir`, which must exist.
    pub fn new(dir: &Path) -> Result<Workspace, String> {
        let root = dir.canonicalize().map_err(|e| format!("{}: {e}", dir.display()))?;
        if !root.is_dir() {
            return Err(format!("{}: not a directory", dir.display()));
        }
        Ok(Workspace { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `path` (relative to the folder, or absolute inside it) as a real path
    /// inside the folder. It need not exist, but its nearest existing
    /// ancestor is resolved (symlinks followed) and must lie inside.
    pub fn resolve(&self, path: &str) -> Result<PathBuf, String> {
        if path.trim().is_empty() {
            return Err("the path is empty".into());
        }
        if path.contains('\0') {
            return Err(format!("{path:?}: a path cannot contain a NUL byte"));
        }
        let given = Path::new(path);
        let joined = if given.is_absolute() { given.to_path_buf() } else { self.root.join(given) };
        // Resolve `.` and `..` lexically first, then the longest existing
        // ancestor for real (symlinks), then append the rest.
        let mut lexical = PathBuf::new();
        for c in joined.components() {
            match c {
                Component::ParentDir => {
                    lexical.pop();
                }
                Component::CurDir => {}
                other => lexical.push(other),
            }
        }
        let mut existing = lexical.clone();
        let mut rest = Vec::new();
        while !existing.exists() {
            match existing.file_name() {
                Some(n) => rest.push(n.to_os_string()),
                None => break,
            }
            if !existing.pop() {
                break;
            }
        }
        let mut real = existing.canonicalize().map_err(|e| format!("{path}: {e}"))?;
        for n in rest.iter().rev() {
            real.push(n);
        }
        if !real.starts_with(&self.root) {
            return Err(format!(
                "{path}: outside the project folder {} (only paths inside it are allowed)",
                self.root.display()
            ));
        }
        Ok(real)
    }

    /// `p` relative to the folder, for display (`.` for the folder itself).
    pub fn show(&self, p: &Path) -> String {
        match p.strip_prefix(&self.root) {
            Ok(r) if r.as_os_str().is_empty() => ".".into(),
            Ok(r) => r.display().to_string(),
            Err(_) => p.display().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("proj");
        std::fs::create_dir_all(root.join("src")).unwrap();
        std::fs::write(root.join("src/a.rs"), "fn a() {}").unwrap();
        std::fs::write(dir.path().join("secret.txt"), "key").unwrap();
        let ws = Workspace::new(&root).unwrap();
        let real = root.canonicalize().unwrap();
        assert_eq!(ws.resolve("src/a.rs").unwrap(), real.join("src/a.rs"));
        assert_eq!(ws.resolve("./src/../src/a.rs").unwrap(), real.join("src/a.rs"));
        assert_eq!(ws.resolve("new/dir/file.txt").unwrap(), real.join("new/dir/file.txt"), "need not exist");
        assert_eq!(ws.resolve(real.join("src").to_str().unwrap()).unwrap(), real.join("src"), "absolute inside");
        for bad in
            ["../secret.txt", "src/../../secret.txt", "/etc/passwd", dir.path().join("secret.txt").to_str().unwrap()]
        {
            let e = ws.resolve(bad).unwrap_err();
            assert!(e.contains("outside the project folder"), "{bad}: {e}");
        }
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(dir.path().join("secret.txt"), root.join("link")).unwrap();
            std::os::unix::fs::symlink(dir.path(), root.join("up")).unwrap();
            assert!(ws.resolve("link").unwrap_err().contains("outside"), "a symlink out is followed first");
            assert!(ws.resolve("up/new.txt").unwrap_err().contains("outside"), "a new file under a symlinked dir");
        }
        assert!(ws.resolve("").is_err() && ws.resolve("a\0b").is_err());
        assert_eq!(ws.show(&real.join("src/a.rs")), "src/a.rs");
    }
}
