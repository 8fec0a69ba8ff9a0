//! The projected ServiceAccount token, as an `authorization: Bearer …` value.
//!
//! The kubelet rotates the token by swapping the volume's `..data` symlink, so the file is
//! checked (one `stat`) before every report and read again when its identity, size or mtime
//! changed, when the controller refused it, or at least every [`MAX_AGE`].

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use tonic::metadata::{Ascii, MetadataValue};

use crate::Error;

/// A token read longer ago than this is read again even if the file looks unchanged.
pub const MAX_AGE: Duration = Duration::from_secs(60);

/// What identifies one version of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    modified: Option<SystemTime>,
}

impl Stamp {
    fn of(meta: &fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            modified: meta.modified().ok(),
        }
    }
}

#[derive(Debug)]
pub struct TokenFile {
    path: PathBuf,
    cached: Option<(Stamp, Instant, MetadataValue<Ascii>)>,
}

impl TokenFile {
    pub fn new(path: PathBuf) -> Self {
        Self { path, cached: None }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `Bearer <token>`, read again if the file changed.
    pub fn bearer(&mut self) -> Result<MetadataValue<Ascii>, Error> {
        let read_error = |source| Error::ReadToken {
            path: self.path.clone(),
            source,
        };
        let stamp = Stamp::of(&fs::metadata(&self.path).map_err(read_error)?);
        if let Some((cached, at, value)) = &self.cached
            && *cached == stamp
            && at.elapsed() < MAX_AGE
        {
            return Ok(value.clone());
        }
        let text = fs::read_to_string(&self.path).map_err(read_error)?;
        let token = text.trim();
        if token.is_empty() {
            return Err(Error::EmptyToken {
                path: self.path.clone(),
            });
        }
        let value =
            MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| Error::BadToken {
                path: self.path.clone(),
            })?;
        self.cached = Some((stamp, Instant::now(), value.clone()));
        Ok(value)
    }

    /// Forgets the token (the controller refused it): the next report reads the file again.
    pub fn invalidate(&mut self) {
        self.cached = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir()
                .join(format!("triton-agent-token-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        /// Replaces `token` atomically, as the kubelet's symlink swap does.
        fn write(&self, content: &str) -> PathBuf {
            let tmp = self.0.join("token.tmp");
            fs::write(&tmp, content).unwrap();
            let path = self.0.join("token");
            fs::rename(&tmp, &path).unwrap();
            path
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn the_token_becomes_a_bearer_value_without_its_newline() {
        let dir = Dir::new("bearer");
        let mut t = TokenFile::new(dir.write("abc.def\n"));
        assert_eq!(t.bearer().unwrap(), "Bearer abc.def");
    }

    #[test]
    fn a_replaced_file_is_read_again() {
        let dir = Dir::new("replaced");
        let mut t = TokenFile::new(dir.write("first"));
        assert_eq!(t.bearer().unwrap(), "Bearer first");
        // Same length: the new inode tells it apart.
        dir.write("secnd");
        assert_eq!(t.bearer().unwrap(), "Bearer secnd");
    }

    #[test]
    fn an_unchanged_file_is_not_read_again_until_invalidated() {
        let dir = Dir::new("cached");
        let path = dir.write("one");
        let mut t = TokenFile::new(path.clone());
        assert_eq!(t.bearer().unwrap(), "Bearer one");
        // Rewrite in place, then put the old mtime back: only invalidate() notices.
        let mtime = fs::metadata(&path).unwrap().modified().unwrap();
        fs::write(&path, "two").unwrap();
        fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        assert_eq!(t.bearer().unwrap(), "Bearer one");
        t.invalidate();
        assert_eq!(t.bearer().unwrap(), "Bearer two");
    }

    #[test]
    fn missing_empty_and_unprintable_tokens_are_errors_naming_the_file() {
        let dir = Dir::new("errors");
        let mut missing = TokenFile::new(dir.0.join("absent"));
        let err = missing.bearer().unwrap_err().to_string();
        assert!(err.contains("absent"), "{err}");
        let mut empty = TokenFile::new(dir.write(" \n"));
        assert!(matches!(empty.bearer(), Err(Error::EmptyToken { .. })));
        let mut bad = TokenFile::new(dir.write("a\u{7}b"));
        assert!(matches!(bad.bearer(), Err(Error::BadToken { .. })));
    }
}
