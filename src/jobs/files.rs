//! The files directory: the one place file jobs may read and write. Every path a client
//! gives is resolved inside it, and one that escapes it (an absolute path elsewhere, `..`,
//! a symlink pointing out) is refused before the job is queued, and again when it runs.

use std::io;
use std::path::{Component, Path, PathBuf};

use super::registry::ArgsError;

/// A canonical directory that file jobs are confined to.
#[derive(Debug, Clone)]
pub struct FilesDir {
    root: PathBuf,
}

impl FilesDir {
    /// Creates the directory if needed and pins its canonical path.
    pub fn open(path: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(path)?;
        Ok(FilesDir {
            root: path.canonicalize()?,
        })
    }

    /// The canonical root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Resolves an existing regular file for reading.
    pub fn input(&self, field: &str, path: &str) -> Result<PathBuf, ArgsError> {
        let joined = self.join(field, path)?;
        let real = joined.canonicalize().map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ArgsError::invalid(field, format!("no such file: {path}")),
            _ => ArgsError::invalid(field, format!("cannot open {path}: {e}")),
        })?;
        self.confine(field, &real)?;
        if !real.is_file() {
            return Err(ArgsError::invalid(
                field,
                format!("not a regular file: {path}"),
            ));
        }
        Ok(real)
    }

    /// Resolves a file to write: its directory must exist inside the root, and if the file
    /// exists it must resolve inside the root too (no writing through a symlink out).
    pub fn output(&self, field: &str, path: &str) -> Result<PathBuf, ArgsError> {
        let joined = self.join(field, path)?;
        let name = joined
            .file_name()
            .ok_or_else(|| ArgsError::invalid(field, "must name a file"))?;
        let parent = joined.parent().unwrap_or(&self.root);
        let real_parent = parent.canonicalize().map_err(|_| {
            ArgsError::invalid(
                field,
                format!("directory does not exist: {}", parent.display()),
            )
        })?;
        self.confine(field, &real_parent)?;
        let target = real_parent.join(name);
        if let Ok(real) = target.canonicalize() {
            self.confine(field, &real)?;
            if real.is_dir() {
                return Err(ArgsError::invalid(field, "names a directory"));
            }
        } else if target.symlink_metadata().is_ok() {
            return Err(ArgsError::denied(field, "is a dangling symlink"));
        }
        Ok(target)
    }

    /// Joins a client path onto the root, refusing `..` and empty paths outright.
    fn join(&self, field: &str, path: &str) -> Result<PathBuf, ArgsError> {
        if path.is_empty() {
            return Err(ArgsError::invalid(field, "must not be empty"));
        }
        if path.contains('\0') {
            return Err(ArgsError::invalid(field, "must not contain NUL"));
        }
        let path = Path::new(path);
        if path.components().any(|c| c == Component::ParentDir) {
            return Err(ArgsError::invalid(field, "must not contain '..'"));
        }
        Ok(self.root.join(path))
    }

    fn confine(&self, field: &str, real: &Path) -> Result<(), ArgsError> {
        if real.starts_with(&self.root) {
            Ok(())
        } else {
            Err(ArgsError::denied(
                field,
                format!(
                    "resolves outside the files directory {}",
                    self.root.display()
                ),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::registry::ArgsErrorKind;

    fn setup() -> (tempfile::TempDir, FilesDir) {
        let tmp = tempfile::tempdir().unwrap();
        let files = FilesDir::open(&tmp.path().join("files")).unwrap();
        std::fs::write(files.root().join("a.txt"), b"a").unwrap();
        std::fs::write(tmp.path().join("secret.txt"), b"s").unwrap();
        (tmp, files)
    }

    fn kind(r: Result<PathBuf, ArgsError>) -> ArgsErrorKind {
        r.unwrap_err().kind
    }

    #[test]
    fn inside_paths_resolve() {
        let (_tmp, files) = setup();
        assert!(files.input("path", "a.txt").is_ok());
        let abs = files.root().join("a.txt");
        assert!(files.input("path", abs.to_str().unwrap()).is_ok());
        assert!(files.output("output", "new.png").is_ok());
    }

    #[test]
    fn escapes_are_refused() {
        let (tmp, files) = setup();
        assert_eq!(
            kind(files.input("path", "../secret.txt")),
            ArgsErrorKind::Invalid
        );
        let outside = tmp.path().join("secret.txt");
        assert_eq!(
            kind(files.input("path", outside.to_str().unwrap())),
            ArgsErrorKind::PermissionDenied
        );
        assert_eq!(
            kind(files.input("path", "/etc/passwd")),
            ArgsErrorKind::PermissionDenied
        );
        assert_eq!(
            kind(files.input("path", "missing.txt")),
            ArgsErrorKind::Invalid
        );
        assert_eq!(kind(files.input("path", "")), ArgsErrorKind::Invalid);
        assert_eq!(
            kind(files.output("output", "/tmp/x.png")),
            ArgsErrorKind::PermissionDenied
        );
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_out_are_refused() {
        let (tmp, files) = setup();
        let link = files.root().join("link.txt");
        std::os::unix::fs::symlink(tmp.path().join("secret.txt"), &link).unwrap();
        assert_eq!(
            kind(files.input("path", "link.txt")),
            ArgsErrorKind::PermissionDenied
        );
        assert_eq!(
            kind(files.output("output", "link.txt")),
            ArgsErrorKind::PermissionDenied
        );
        std::os::unix::fs::symlink(tmp.path(), files.root().join("up")).unwrap();
        assert_eq!(
            kind(files.output("output", "up/x.png")),
            ArgsErrorKind::PermissionDenied
        );
    }
}
