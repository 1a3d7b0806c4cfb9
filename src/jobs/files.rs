//! The files directory: the one place file jobs may read and write. Every path a client
//! gives is opened beneath the directory in one step (`openat2` with `RESOLVE_BENEATH`),
//! so there is no gap between a check and an open for a swapped symlink to slip through:
//! a path that escapes (an absolute path elsewhere, `..`, a symlink pointing out, at any
//! moment) fails to open. What was opened is then checked on the descriptor, not the name:
//! a regular file with one link only (a hard link to a file outside would otherwise pass),
//! opened non-blocking so a FIFO cannot hang the opener. Outputs are written to a new,
//! exclusively created temporary file beside the target and renamed into place.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use super::registry::ArgsError;

/// A canonical directory that file jobs are confined to.
#[derive(Debug)]
pub struct FilesDir {
    root: PathBuf,
    /// The directory itself, held open: paths are resolved beneath it, not by name.
    dir: OwnedFd,
}

/// A file created for writing beneath the files directory, not yet at its name.
#[derive(Debug)]
pub struct Output {
    pub file: File,
    dir: OwnedFd,
    temp: String,
    name: String,
}

impl Output {
    /// Moves the written file to its name (replacing a file there, never following a
    /// symlink there).
    pub fn persist(self) -> io::Result<()> {
        rustix::fs::renameat(&self.dir, &self.temp, &self.dir, &self.name).map_err(|e| {
            let _ = rustix::fs::unlinkat(&self.dir, &self.temp, rustix::fs::AtFlags::empty());
            io::Error::from(e)
        })
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        // After persist the name is gone and this fails quietly; otherwise it cleans up.
        let _ = rustix::fs::unlinkat(&self.dir, &self.temp, rustix::fs::AtFlags::empty());
    }
}

const BENEATH: ResolveFlags = ResolveFlags::BENEATH.union(ResolveFlags::NO_MAGICLINKS);

impl FilesDir {
    /// Creates the directory if needed and pins its canonical path.
    pub fn open(path: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(path)?;
        let root = path.canonicalize()?;
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let dir = rustix::fs::open(&root, flags, Mode::empty())?;
        Ok(FilesDir { root, dir })
    }

    /// The canonical root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Opens an existing regular file for reading.
    pub fn input(&self, field: &str, path: &str) -> Result<File, ArgsError> {
        let relative = self.relative(field, path)?;
        let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
        let fd = rustix::fs::openat2(&self.dir, &relative, flags, Mode::empty(), BENEATH)
            .map_err(|e| self.open_error(field, path, e))?;
        let stat = rustix::fs::fstat(&fd).map_err(|e| self.open_error(field, path, e))?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Err(ArgsError::invalid(
                field,
                format!("not a regular file: {path}"),
            ));
        }
        if stat.st_nlink > 1 {
            return Err(ArgsError::denied(
                field,
                format!(
                    "has {} hard links; only files with one are read",
                    stat.st_nlink
                ),
            ));
        }
        Ok(File::from(fd))
    }

    /// Checks that `path` can be written: its directory exists beneath the root, and it is
    /// not a directory. Nothing is created.
    pub fn check_output(&self, field: &str, path: &str) -> Result<(), ArgsError> {
        self.output_target(field, path).map(drop)
    }

    /// Creates a new temporary file beside `path` (exclusively: nothing already there,
    /// symlink or not, is opened), to be renamed into place by [`Output::persist`].
    pub fn output(&self, field: &str, path: &str, tag: &str) -> Result<Output, ArgsError> {
        let (dir, name) = self.output_target(field, path)?;
        let temp = format!(".{name}.partial-{tag}-{:016x}", rand_u64());
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW;
        let mode = Mode::from_raw_mode(0o644);
        let fd = rustix::fs::openat(&dir, &temp, flags | OFlags::CLOEXEC, mode)
            .map_err(|e| self.open_error(field, path, e))?;
        Ok(Output {
            file: File::from(fd),
            dir,
            temp,
            name,
        })
    }

    /// The output's directory (opened beneath the root) and file name, refusing a name
    /// that is a directory.
    fn output_target(&self, field: &str, path: &str) -> Result<(OwnedFd, String), ArgsError> {
        let (dir, name) = self.output_dir(field, path)?;
        match rustix::fs::statat(&dir, &name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::Directory => {
                Err(ArgsError::invalid(field, "names a directory"))
            }
            _ => Ok((dir, name)),
        }
    }

    /// The directory an output goes in (opened beneath the root) and its file name.
    fn output_dir(&self, field: &str, path: &str) -> Result<(OwnedFd, String), ArgsError> {
        let relative = self.relative(field, path)?;
        let name = relative
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| ArgsError::invalid(field, "must name a file"))?
            .to_string();
        let parent = match relative.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let dir = rustix::fs::openat2(&self.dir, &parent, flags, Mode::empty(), BENEATH).map_err(
            |e| match e {
                Errno::NOENT | Errno::NOTDIR => ArgsError::invalid(
                    field,
                    format!("directory does not exist: {}", parent.display()),
                ),
                e => self.open_error(field, path, e),
            },
        )?;
        Ok((dir, name))
    }

    /// A client path as a path relative to the root; NUL and empty paths are malformed,
    /// `..` is refused as a way out, an absolute path must lie under the root.
    fn relative(&self, field: &str, path: &str) -> Result<PathBuf, ArgsError> {
        if path.is_empty() {
            return Err(ArgsError::invalid(field, "must not be empty"));
        }
        if path.contains('\0') {
            return Err(ArgsError::invalid(field, "must not contain NUL"));
        }
        let path = Path::new(path);
        if path.components().any(|c| c == Component::ParentDir) {
            // A way out of the files folder, refused as every other way out is.
            return Err(ArgsError::denied(
                field,
                "must not contain '..': paths stay inside the server's files folder",
            ));
        }
        if path.is_absolute() {
            return match path.strip_prefix(&self.root) {
                Ok(rest) if !rest.as_os_str().is_empty() => Ok(rest.to_path_buf()),
                _ => Err(self.outside(field)),
            };
        }
        Ok(path.to_path_buf())
    }

    fn outside(&self, field: &str) -> ArgsError {
        let root = self.root.display();
        ArgsError::denied(
            field,
            format!("resolves outside the files directory {root}"),
        )
    }

    fn open_error(&self, field: &str, path: &str, e: Errno) -> ArgsError {
        match e {
            // The kernel's words for "that path leaves the directory".
            Errno::XDEV | Errno::LOOP => self.outside(field),
            Errno::NOENT => ArgsError::invalid(field, format!("no such file: {path}")),
            Errno::EXIST => ArgsError::denied(field, "a file appeared at the temporary name"),
            Errno::NOSYS => {
                ArgsError::invalid(field, "file jobs need Linux 5.6 or newer (openat2)")
            }
            e => ArgsError::invalid(field, format!("cannot open {path}: {e}")),
        }
    }
}

/// A random number for temporary names: a UUID v7's random bits.
fn rand_u64() -> u64 {
    uuid::Uuid::now_v7().as_u64_pair().1
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

    fn kind<T: std::fmt::Debug>(r: Result<T, ArgsError>) -> ArgsErrorKind {
        r.unwrap_err().kind
    }

    #[test]
    fn inside_paths_resolve() {
        let (_tmp, files) = setup();
        assert!(files.input("path", "a.txt").is_ok());
        let abs = files.root().join("a.txt");
        assert!(files.input("path", abs.to_str().unwrap()).is_ok());
        assert!(files.check_output("output", "new.png").is_ok());
    }

    #[test]
    fn escapes_are_refused() {
        let (tmp, files) = setup();
        assert_eq!(
            kind(files.input("path", "../secret.txt")),
            ArgsErrorKind::PermissionDenied
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
            kind(files.check_output("output", "/tmp/x.png")),
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
        std::os::unix::fs::symlink(tmp.path(), files.root().join("up")).unwrap();
        assert_eq!(
            kind(files.check_output("output", "up/x.png")),
            ArgsErrorKind::PermissionDenied
        );
    }
}
