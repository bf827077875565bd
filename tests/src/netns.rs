//! Network namespaces, veth links, addresses, routes and processes, owned by a [`Lab`] guard.
//!
//! Every name a lab creates starts with its tag `fe<pid hex>x<counter hex>`, so parallel labs and
//! parallel test processes never collide, and leftovers of a killed run can be recognised (the pid
//! in the name is dead) and reaped by the next [`Lab::new`]. Interface names are at most 15 bytes
//! (`IFNAMSIZ - 1`); wireguard-go UAPI sockets (`/var/run/wireguard/IF.sock`) are host-wide, so
//! tunnel interface names must be unique too: use [`Lab::ifname`].
//!
//! Dropping the lab (also while unwinding from a panic) stops every process it spawned, by PID
//! (SIGTERM, then SIGKILL after a grace period), deletes its namespaces (which destroys the links
//! inside them) and removes UAPI sockets it registered. While panicking it first prints the tail
//! of every process log, which is usually what explains a failed end-to-end test.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use nix::sched::{CloneFlags, setns};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Longest Linux interface name (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A handle to one network namespace (cheap to clone; the [`Lab`] owns its lifetime).
#[derive(Clone, Debug)]
pub struct Ns {
    name: String,
}

/// A process spawned inside a namespace; stopped when the lab drops or on [`Lab::stop`].
#[derive(Debug)]
struct Spawned {
    label: String,
    child: Child,
    log: PathBuf,
}

/// Identifies a process spawned by [`Lab::spawn`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcId(u32);

impl ProcId {
    /// The OS process id (the program itself: `ip netns exec` execs it).
    pub fn pid(self) -> u32 {
        self.0
    }
}

/// Owner of everything an end-to-end test creates on the host; cleans up on drop.
#[derive(Debug)]
pub struct Lab {
    tag: String,
    namespaces: Vec<Ns>,
    procs: Vec<Spawned>,
    sockets: Vec<PathBuf>,
    dir: tempfile::TempDir,
}

impl Lab {
    /// Creates an empty lab with a fresh unique tag, after reaping leftovers of dead test processes.
    pub fn new() -> Result<Self> {
        ensure!(
            nix::unistd::geteuid().is_root(),
            "network-namespace tests need root"
        );
        reap_stale();
        let n = LAB_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tag = format!("fe{:x}x{:x}", std::process::id(), n % 256);
        let dir = tempfile::Builder::new()
            .prefix(&format!("{tag}-"))
            .tempdir()
            .context("lab scratch dir")?;
        Ok(Self {
            tag,
            namespaces: Vec::new(),
            procs: Vec::new(),
            sockets: Vec::new(),
            dir,
        })
    }

    /// This lab's unique prefix (`fe<pid>x<n>`).
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Scratch directory for keys, configs and logs; removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A host-unique interface name `<tag><suffix>`; panics if it would exceed 15 bytes.
    pub fn ifname(&self, suffix: &str) -> String {
        let name = format!("{}{suffix}", self.tag);
        assert!(
            name.len() <= IFNAME_MAX,
            "interface name {name:?} longer than {IFNAME_MAX}"
        );
        name
    }

    /// Creates namespace `<tag>-<role>` with `lo` up.
    pub fn add_ns(&mut self, role: &str) -> Result<Ns> {
        let ns = Ns {
            name: format!("{}-{role}", self.tag),
        };
        run(Command::new("ip").args(["netns", "add", &ns.name]))?;
        self.namespaces.push(ns.clone());
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Creates a veth pair `a_if` (in `a`) <-> `b_if` (in `b`), both up.
    pub fn veth(&mut self, a: &Ns, a_if: &str, b: &Ns, b_if: &str) -> Result<()> {
        for n in [a_if, b_if] {
            ensure!(n.len() <= IFNAME_MAX, "interface name {n:?} too long");
        }
        run(Command::new("ip").args([
            "link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns",
            &b.name,
        ]))?;
        a.up(a_if)?;
        b.up(b_if)?;
        Ok(())
    }

    /// Spawns `argv` inside `ns`, stdout+stderr appended to `<dir>/<label>.log`.
    pub fn spawn(&mut self, ns: &Ns, label: &str, argv: &[&str]) -> Result<ProcId> {
        self.spawn_env(ns, label, argv, &[])
    }

    /// Like [`Lab::spawn`] with extra environment variables.
    pub fn spawn_env(
        &mut self,
        ns: &Ns,
        label: &str,
        argv: &[&str],
        env: &[(&str, &str)],
    ) -> Result<ProcId> {
        ensure!(!argv.is_empty(), "empty argv");
        let log = self.dir().join(format!("{label}.log"));
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let err = out.try_clone()?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns.name]).args(argv);
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("spawn {argv:?} in {}", ns.name))?;
        let id = ProcId(child.id());
        self.procs.push(Spawned {
            label: label.to_owned(),
            child,
            log,
        });
        Ok(id)
    }

    /// Whether the spawned process is still running (false once it exited).
    pub fn is_running(&mut self, id: ProcId) -> bool {
        self.procs
            .iter_mut()
            .find(|p| p.child.id() == id.0)
            .is_some_and(|p| matches!(p.child.try_wait(), Ok(None)))
    }

    /// Stops a spawned process (SIGTERM, SIGKILL after `grace`) and returns its exit status text.
    pub fn stop(&mut self, id: ProcId, grace: Duration) -> String {
        let Some(i) = self.procs.iter().position(|p| p.child.id() == id.0) else {
            return "unknown process".into();
        };
        let mut p = self.procs.remove(i);
        terminate(&mut p.child, grace)
    }

    /// The log written so far by the process spawned with `label`.
    pub fn log(&self, label: &str) -> String {
        fs::read_to_string(self.dir().join(format!("{label}.log"))).unwrap_or_default()
    }

    /// Remembers a host-wide UAPI socket path to delete on drop.
    pub fn register_socket(&mut self, path: PathBuf) {
        self.sockets.push(path);
    }

    fn dump_logs(&self) {
        let mut seen = std::collections::BTreeSet::new();
        for p in &self.procs {
            if !seen.insert(p.log.clone()) {
                continue;
            }
            eprintln!(
                "----- {} ({}) log tail -----\n{}",
                p.label,
                p.log.display(),
                tail(&p.log, 6000)
            );
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("FERRY_E2E_LOGS").is_some() {
            self.dump_logs();
        }
        for p in self.procs.iter_mut() {
            let _ = kill(Pid::from_raw(p.child.id() as i32), Signal::SIGTERM);
        }
        for mut p in self.procs.drain(..) {
            terminate(&mut p.child, Duration::from_secs(2));
        }
        for ns in self.namespaces.drain(..).rev() {
            let _ = Command::new("ip").args(["netns", "del", &ns.name]).output();
        }
        for s in self.sockets.drain(..) {
            let _ = fs::remove_file(s);
        }
        if std::env::var_os("FERRY_E2E_KEEP").is_some() {
            self.dir.disable_cleanup(true);
            eprintln!("kept lab dir {}", self.dir.path().display());
        }
    }
}

impl Ns {
    /// The namespace name (as in `ip netns list`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n <ns> <args>`, failing on a non-zero exit.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        run(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// Runs a program inside the namespace to completion, failing on a non-zero exit.
    pub fn exec(&self, argv: &[&str]) -> Result<String> {
        run(Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(argv))
    }

    /// Runs a program inside the namespace and returns its output whatever the exit status.
    pub fn exec_unchecked(&self, argv: &[&str]) -> Result<Output> {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(argv)
            .output()
            .with_context(|| format!("run {argv:?} in {}", self.name))
    }

    /// Sets a link up.
    pub fn up(&self, ifname: &str) -> Result<()> {
        self.ip(&["link", "set", ifname, "up"]).map(drop)
    }

    /// Adds an address (`a.b.c.d/len` or `v6/len`; IPv6 gets `nodad` so it is usable at once).
    pub fn addr(&self, ifname: &str, cidr: &str) -> Result<()> {
        if cidr.contains(':') {
            self.ip(&["-6", "addr", "add", cidr, "dev", ifname, "nodad"])
                .map(drop)
        } else {
            self.ip(&["addr", "add", cidr, "dev", ifname]).map(drop)
        }
    }

    /// Removes an address.
    pub fn del_addr(&self, ifname: &str, cidr: &str) -> Result<()> {
        self.ip(&["addr", "del", cidr, "dev", ifname]).map(drop)
    }

    /// `ip route add <args>` (`-6` is chosen from the first argument containing ':').
    pub fn route(&self, args: &[&str]) -> Result<()> {
        let mut v = vec![];
        if args.first().is_some_and(|a| a.contains(':')) {
            v.push("-6");
        }
        v.extend(["route", "add"]);
        v.extend(args);
        self.ip(&v).map(drop)
    }

    /// Writes a sysctl inside the namespace (`net.ipv4.ip_forward` style key).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        self.exec(&["sh", "-c", &format!("echo {value} > {path}")])
            .map(drop)
    }

    /// Runs `f` on a thread that has entered this namespace. Sockets created by `f` stay in the
    /// namespace when used from other threads afterwards.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let file = File::open(format!("/var/run/netns/{}", self.name))
            .with_context(|| format!("open netns {}", self.name))?;
        std::thread::scope(|s| {
            s.spawn(move || -> Result<T> {
                setns(&file, CloneFlags::CLONE_NEWNET).context("setns")?;
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow::anyhow!("thread inside netns panicked"))?
        })
    }
}

/// Runs a command, returning stdout, failing with its stderr on a non-zero exit.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn terminate(child: &mut Child, grace: Duration) -> String {
    if let Ok(Some(st)) = child.try_wait() {
        return st.to_string();
    }
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(st)) = child.try_wait() {
            return st.to_string();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child
        .wait()
        .map(|s| format!("{s} (SIGKILL after grace)"))
        .unwrap_or_default()
}

fn tail(path: &Path, max: u64) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(max)));
    let mut s = String::new();
    let _ = f.read_to_string(&mut s);
    s
}

/// The pid embedded in a lab name `fe<pid hex>x...`, if it is one.
fn tag_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("fe")?;
    let (hex, _) = rest.split_once('x')?;
    u32::from_str_radix(hex, 16).ok()
}

/// Deletes namespaces and UAPI sockets left behind by lab processes that no longer exist.
fn reap_stale() {
    let dead =
        |name: &str| tag_pid(name).is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists());
    if let Ok(list) = run(Command::new("ip").args(["netns", "list"])) {
        for line in list.lines() {
            let name = line.split_whitespace().next().unwrap_or_default();
            if name.contains('-') && dead(name) {
                let _ = Command::new("ip").args(["netns", "del", name]).output();
            }
        }
    }
    if let Ok(rd) = fs::read_dir("/var/run/wireguard") {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.ends_with(".sock") && dead(&n) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_pid_parses_lab_names_only() {
        assert_eq!(tag_pid("fe1a2bx0-client"), Some(0x1a2b));
        assert_eq!(tag_pid("fe1a2bx3wc.sock"), Some(0x1a2b));
        assert_eq!(tag_pid("ferry0"), None);
        assert_eq!(tag_pid("wgbA"), None);
    }
}
