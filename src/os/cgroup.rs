//! Finds this process's cgroup limits: the CPU quota (v2 `cpu.max`, v1
//! `cpu.cfs_quota_us` / `cpu.cfs_period_us`), the memory limit and the
//! pids limit.
//!
//! The cgroup files are found the way the kernel lays them out, not by
//! guessing paths: `/proc/self/mountinfo` says where each hierarchy is
//! mounted and which part of it the mount shows, `/proc/self/cgroup` says
//! which cgroup we are in. This works on the host, in a container with its own
//! cgroup namespace (Kubernetes, podman), and on hybrid v1/v2 machines. The
//! effective limit is the tightest one from our cgroup up to the mount root.

use std::path::{Path, PathBuf};

/// A CPU bandwidth limit: `quota` microseconds of CPU every `period`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuQuota {
    pub quota_us: u64,
    pub period_us: u64,
}

impl CpuQuota {
    /// The limit in millicores (1000 = one full CPU).
    pub fn millicores(&self) -> u64 {
        self.quota_us * 1000 / self.period_us.max(1)
    }
}

/// One cgroup hierarchy as this process sees it: where it is mounted and the
/// directory of our own cgroup inside it.
#[derive(Debug, Clone, PartialEq)]
struct Hierarchy {
    mount_point: PathBuf,
    /// Our cgroup's directory; its ancestors up to `mount_point` also count.
    own_dir: PathBuf,
}

/// The CPU quota that applies to this process, or `None` when unlimited or
/// when no cgroup information can be read.
pub fn cpu_quota() -> Option<CpuQuota> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mut tightest: Option<CpuQuota> = None;
    let mut consider = |q: CpuQuota| {
        if tightest.is_none_or(|t| q.millicores() < t.millicores()) {
            tightest = Some(q);
        }
    };
    if let Some(v2) = find_hierarchy(&mountinfo, &cgroups, None) {
        for dir in dirs_up_to_mount(&v2) {
            if let Some(q) = read_file(&dir.join("cpu.max")).and_then(|s| parse_cpu_max(&s)) {
                consider(q);
            }
        }
    }
    if let Some(v1) = find_hierarchy(&mountinfo, &cgroups, Some("cpu")) {
        for dir in dirs_up_to_mount(&v1) {
            let quota = read_file(&dir.join("cpu.cfs_quota_us"));
            let period = read_file(&dir.join("cpu.cfs_period_us"));
            if let (Some(q), Some(p)) = (quota, period)
                && let Some(q) = parse_cfs(&q, &p)
            {
                consider(q);
            }
        }
    }
    tightest
}

/// The memory limit that applies to this process in bytes (v2 `memory.max`,
/// v1 `memory.limit_in_bytes`, the tightest from our cgroup up), or `None`
/// when unlimited. v1 writes "unlimited" as a page-rounded 2^63.
pub fn memory_limit() -> Option<u64> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mut tightest: Option<u64> = None;
    let mut consider = |limit: u64| {
        if limit < (1 << 62) && tightest.is_none_or(|t| limit < t) {
            tightest = Some(limit);
        }
    };
    for (hierarchy, file) in [
        (find_hierarchy(&mountinfo, &cgroups, None), "memory.max"),
        (
            find_hierarchy(&mountinfo, &cgroups, Some("memory")),
            "memory.limit_in_bytes",
        ),
    ] {
        let Some(h) = hierarchy else { continue };
        for dir in dirs_up_to_mount(&h) {
            if let Some(limit) = read_file(&dir.join(file)).and_then(|t| t.trim().parse::<u64>().ok()) {
                consider(limit);
            }
        }
    }
    tightest
}

/// The cgroup's task limit and count (v2 or v1 `pids.max`, `pids.current`):
/// the tightest limit from our cgroup up, and the count in our own cgroup.
/// `None` when unlimited or unreadable.
pub fn pids() -> (Option<u64>, Option<u64>) {
    let (Ok(mountinfo), Ok(cgroups)) = (
        std::fs::read_to_string("/proc/self/mountinfo"),
        std::fs::read_to_string("/proc/self/cgroup"),
    ) else {
        return (None, None);
    };
    let mut max: Option<u64> = None;
    let mut current: Option<u64> = None;
    for hierarchy in [
        find_hierarchy(&mountinfo, &cgroups, None),
        find_hierarchy(&mountinfo, &cgroups, Some("pids")),
    ] {
        let Some(h) = hierarchy else { continue };
        if current.is_none() {
            current = read_file(&h.own_dir.join("pids.current")).and_then(|t| t.trim().parse().ok());
        }
        for dir in dirs_up_to_mount(&h) {
            // "max" (unlimited) does not parse and is skipped.
            if let Some(limit) = read_file(&dir.join("pids.max")).and_then(|t| t.trim().parse::<u64>().ok()) {
                max = Some(max.map_or(limit, |m: u64| m.min(limit)));
            }
        }
    }
    (max, current)
}

fn read_file(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Parses v2 `cpu.max`: `"max 100000"` (unlimited) or `"50000 100000"`.
fn parse_cpu_max(text: &str) -> Option<CpuQuota> {
    let mut parts = text.split_whitespace();
    let quota = parts.next()?;
    let period = parts.next().map_or(Some(100_000), |p| p.parse().ok())?;
    let quota_us = quota.parse::<u64>().ok()?;
    (quota_us > 0 && period > 0).then_some(CpuQuota {
        quota_us,
        period_us: period,
    })
}

/// Parses v1 `cpu.cfs_quota_us` (-1 is unlimited) and `cpu.cfs_period_us`.
fn parse_cfs(quota: &str, period: &str) -> Option<CpuQuota> {
    let quota_us = quota.trim().parse::<i64>().ok()?;
    let period_us = period.trim().parse::<u64>().ok()?;
    (quota_us > 0 && period_us > 0).then_some(CpuQuota {
        quota_us: quota_us as u64,
        period_us,
    })
}

/// Our cgroup directory and every ancestor that the mount shows, leaf first.
fn dirs_up_to_mount(h: &Hierarchy) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let mut dir = h.own_dir.clone();
    loop {
        dirs.push(dir.clone());
        if dir == h.mount_point || !dir.pop() || !dir.starts_with(&h.mount_point) {
            break;
        }
    }
    dirs
}

/// Locates a hierarchy: the unified (v2) one when `v1_controller` is `None`,
/// else the v1 hierarchy that carries that controller.
fn find_hierarchy(mountinfo: &str, cgroups: &str, v1_controller: Option<&str>) -> Option<Hierarchy> {
    // /proc/self/cgroup lines: "hierarchy-id:controllers:path"; v2 is "0::path".
    let own_path = cgroups.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (id, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let matches = match v1_controller {
            None => id == "0" && controllers.is_empty(),
            Some(c) => controllers.split(',').any(|x| x == c),
        };
        matches.then_some(path)
    })?;
    // mountinfo lines: "id parent major:minor root mount-point opts ... - fstype source superopts".
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let left: Vec<&str> = left.split_whitespace().collect();
        let right: Vec<&str> = right.split_whitespace().collect();
        let (root, mount_point) = (*left.get(3)?, *left.get(4)?);
        let fstype = *right.first()?;
        let super_opts = right.get(2).copied().unwrap_or("");
        let wanted = match v1_controller {
            None => fstype == "cgroup2",
            Some(c) => fstype == "cgroup" && super_opts.split(',').any(|o| o == c),
        };
        if !wanted {
            return None;
        }
        // The mount shows the subtree at `root`; our path is inside it (with a
        // cgroup namespace both are usually "/").
        let relative = own_path.strip_prefix(root).unwrap_or(own_path);
        let mount_point = PathBuf::from(unescape_mountinfo(mount_point));
        let own_dir = mount_point.join(relative.trim_start_matches('/'));
        Some(Hierarchy { mount_point, own_dir })
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Ok(v) = u8::from_str_radix(&field[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTINFO: &str = "\
30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
35 30 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
36 30 0:32 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
";
    const HYBRID_CGROUP: &str = "\
4:memory:/user.slice
3:cpu,cpuacct:/kubepods/pod1/abc
0::/user.slice/session-1.scope
";

    #[test]
    fn finds_v1_cpu_hierarchy_on_hybrid_host() {
        let h = find_hierarchy(HYBRID_MOUNTINFO, HYBRID_CGROUP, Some("cpu")).unwrap();
        assert_eq!(h.mount_point, PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(h.own_dir, PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/kubepods/pod1/abc"));
        let dirs = dirs_up_to_mount(&h);
        assert_eq!(dirs.len(), 4, "{dirs:?}");
        assert_eq!(dirs.last().unwrap(), &h.mount_point);
    }

    #[test]
    fn finds_v2_hierarchy_with_namespace_root() {
        let mountinfo = "1 0 0:1 /kubepods/pod1/c1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let cgroups = "0::/kubepods/pod1/c1\n";
        let h = find_hierarchy(mountinfo, cgroups, None).unwrap();
        assert_eq!(h.own_dir, PathBuf::from("/sys/fs/cgroup"));
        assert_eq!(dirs_up_to_mount(&h), vec![PathBuf::from("/sys/fs/cgroup")]);
        let h2 = find_hierarchy(mountinfo, "0::/\n", None).unwrap();
        assert_eq!(h2.own_dir, PathBuf::from("/sys/fs/cgroup"));
    }

    #[test]
    fn no_v1_controller_means_none() {
        let mountinfo = "1 0 0:1 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert!(find_hierarchy(mountinfo, "0::/\n", Some("cpu")).is_none());
    }

    #[test]
    fn parses_quota_files() {
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        let q = parse_cpu_max("50000 100000\n").unwrap();
        assert_eq!(q.millicores(), 500);
        assert_eq!(parse_cfs("-1\n", "100000\n"), None);
        assert_eq!(parse_cfs("150000\n", "100000\n").unwrap().millicores(), 1500);
        assert_eq!(parse_cpu_max("garbage"), None);
    }

    #[test]
    fn unescapes_octal_in_mount_points() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }
}
