//! A directory that really cannot be written: a read-only bind mount when
//! the tests run as root (chmod does not stop root), else the permission
//! bits. Every constructor proves that a write fails before a test relies
//! on it, so a test cannot pass vacuously.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `dir` made unwritable until dropped (then writable again).
pub(crate) struct ReadOnlyDir {
    path: PathBuf,
    mounted: bool,
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn set_writable(dir: &Path, writable: bool) {
    for e in walk(dir) {
        let mut p = std::fs::metadata(&e).unwrap().permissions();
        p.set_readonly(!writable);
        std::fs::set_permissions(&e, p).unwrap();
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    if dir.is_dir() {
        for e in std::fs::read_dir(dir).unwrap() {
            out.extend(walk(&e.unwrap().path()));
        }
    }
    out
}

impl ReadOnlyDir {
    /// Makes `dir` read-only in place; panics if that cannot be done for
    /// real (a write would still succeed).
    pub(crate) fn new(dir: &Path) -> ReadOnlyDir {
        let mounted = if is_root() {
            let ok = |c: &mut Command| c.status().is_ok_and(|s| s.success());
            assert!(
                ok(Command::new("mount").arg("--bind").arg(dir).arg(dir)),
                "mount --bind {} failed: run these tests with mount privileges",
                dir.display()
            );
            if !ok(Command::new("mount")
                .args(["-o", "remount,bind,ro"])
                .arg(dir))
            {
                let _ = Command::new("umount").arg(dir).status();
                panic!("remounting {} read-only failed", dir.display());
            }
            true
        } else {
            set_writable(dir, false);
            false
        };
        let ro = ReadOnlyDir {
            path: dir.to_path_buf(),
            mounted,
        };
        // The test must not pass vacuously: a write really fails.
        let probe = dir.join("write-probe");
        assert!(
            std::fs::write(&probe, b"x").is_err(),
            "{} is still writable",
            dir.display()
        );
        ro
    }
}

impl Drop for ReadOnlyDir {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(&self.path).status();
        } else {
            set_writable(&self.path, true);
        }
    }
}
