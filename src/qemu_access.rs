//! Whether libvirt's QEMU user can reach the data dir. libvirt's system daemon runs
//! QEMU as its own user (`libvirt-qemu`, `qemu`), which must traverse every parent of
//! the instance files; a `0700` home makes every start fail with "Permission denied".
//! `doctor`, `/api/health` and the launch check all ask here.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Parents of the data dir that QEMU's user cannot traverse, and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessProblem {
    pub qemu_user: String,
    pub blocked: Vec<PathBuf>,
}

impl AccessProblem {
    fn dirs(&self) -> Vec<String> {
        self.blocked.iter().map(|d| d.display().to_string()).collect()
    }
    /// The command that grants the access, as virt-manager does.
    pub fn fix(&self) -> String {
        format!("setfacl -m u:{}:x {}   (or choose another --data-dir)", self.qemu_user, self.dirs().join(" "))
    }
}

impl fmt::Display for AccessProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "QEMU (run by libvirt as {}) cannot traverse {}: instances would fail to start",
            self.qemu_user,
            self.dirs().join(", ")
        )
    }
}

/// Looks at the data dir's parents now (their modes, and `getfacl` for those that lack
/// `o+x`). None when QEMU can reach it.
pub fn problem(data_dir: &Path, qemu_user: &str) -> Option<AccessProblem> {
    use std::os::unix::fs::PermissionsExt;
    let getfacl = |p: &Path| {
        let command = crate::exec::ToolCommand::new("getfacl", Duration::from_secs(5)).arg("-cp").arg(p);
        crate::exec::run_blocking(&command).map(|out| out.stdout).unwrap_or_default()
    };
    let blocked = untraversable_ancestors(
        data_dir,
        |p| std::fs::metadata(p).ok().map(|m| m.permissions().mode()),
        getfacl,
        qemu_user,
    );
    (!blocked.is_empty()).then(|| AccessProblem { qemu_user: qemu_user.to_string(), blocked })
}

/// Ancestors of `dir` that libvirt's QEMU user cannot traverse: no `o+x` in the mode and
/// no ACL entry granting it search (`acl_of` gives `getfacl -cp` output). libvirt's
/// system daemon runs QEMU as its own user, which must reach the disks under the data dir.
pub fn untraversable_ancestors(
    dir: &Path,
    mode_of: impl Fn(&Path) -> Option<u32>,
    acl_of: impl Fn(&Path) -> String,
    qemu_user: &str,
) -> Vec<PathBuf> {
    dir.ancestors()
        .skip(1)
        .filter(|a| mode_of(a).is_some_and(|mode| mode & 0o001 == 0))
        .filter(|a| !acl_grants_search(&acl_of(a), qemu_user))
        .map(Path::to_path_buf)
        .collect()
}

/// Whether `getfacl -cp` output gives `user` search (x) permission, after the mask.
pub fn acl_grants_search(getfacl: &str, user: &str) -> bool {
    let entry = |prefix: &str| getfacl.lines().find_map(|l| l.trim().strip_prefix(prefix).map(str::to_string));
    let has_x = |perms: &str| perms.chars().nth(2) == Some('x');
    let granted = entry(&format!("user:{user}:")).is_some_and(|perms| has_x(&perms));
    granted && entry("mask::").is_none_or(|mask| has_x(&mask))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_without_other_execute_are_reported() {
        let modes = |p: &Path| match p.to_str()? {
            "/" => Some(0o755),
            "/home" => Some(0o755),
            "/home/alice" => Some(0o750),
            _ => None,
        };
        let no_acl = |_: &Path| String::new();
        let data = Path::new("/home/alice/.ec2-as-service");
        let blocked = untraversable_ancestors(data, modes, no_acl, "libvirt-qemu");
        assert_eq!(blocked, [PathBuf::from("/home/alice")]);
        let open = |_: &Path| Some(0o711);
        assert!(untraversable_ancestors(Path::new("/var/lib/x/data"), open, no_acl, "libvirt-qemu").is_empty());
        // An ACL entry for QEMU's user is enough, as virt-manager sets it.
        let acl = |p: &Path| {
            if p == Path::new("/home/alice") {
                "user::rwx\nuser:libvirt-qemu:--x\ngroup::r-x\nmask::r-x\nother::---\n".into()
            } else {
                String::new()
            }
        };
        assert!(untraversable_ancestors(data, modes, acl, "libvirt-qemu").is_empty());
        assert_eq!(untraversable_ancestors(data, modes, acl, "qemu"), [PathBuf::from("/home/alice")]);
    }

    #[test]
    fn acl_search_permission_honours_the_mask() {
        let acl = "user::rwx\nuser:libvirt-qemu:--x\ngroup::---\nmask::--x\nother::---\n";
        assert!(acl_grants_search(acl, "libvirt-qemu"));
        assert!(!acl_grants_search(&acl.replace("mask::--x", "mask::r--"), "libvirt-qemu"), "masked out");
        assert!(!acl_grants_search(&acl.replace("user:libvirt-qemu:--x", "user:libvirt-qemu:r--"), "libvirt-qemu"));
        assert!(!acl_grants_search("user::rwx\ngroup::---\nother::---\n", "libvirt-qemu"));
    }
}
