//! The Debian package and the systemd units.
//!
//! `packaging/build-deb` builds the package once per test process (or `TRUXE_TEST_DEB` names the
//! one ./scripts/test built before the tests). Its contents, modes, owners, conffiles,
//! dependencies and maintainer scripts are read with `dpkg-deb`; the units pass
//! `systemd-analyze verify` (which exits 0 on "…, ignoring" warnings, so any output fails here).
//! Then it is installed: `dpkg -i` when the tests run as root (as in CI), purged afterwards, and
//! the `truxe` user, the directories and their modes are checked; otherwise (or with
//! `TRUXE_TEST_DEB_INSTALL=extract`) it is unpacked into a throwaway root. The installed binaries
//! are started the way truxe-api.service starts them: its `Environment=` and `EnvironmentFile=`
//! (the template filled in: production mode on the test PostgreSQL and Redis), its
//! `ExecStartPre=` and `ExecStart=` as its `User=`, in its `WorkingDirectory=`, with a
//! `NOTIFY_SOCKET` that must receive `READY=1` before `/health/ready` is asked, and `STOPPING=1`
//! on SIGTERM.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::support::smtp::SmtpSink;
use crate::support::{Backend, TestDb, free_port, redis_url};

const UNITS: [&str; 3] = ["truxe-api.service", "truxe-backup.service", "truxe-backup.timer"];
const UNIT_DIR: &str = "/usr/lib/systemd/system";
const ENV_FILE: &str = "/etc/truxe/truxe.env";
/// What the template leaves for the operator to fill in: every line of it that is not a comment.
const REQUIRED: [&str; 7] =
    ["JWT_ISSUER", "DATABASE_URL", "JWT_PRIVATE_KEY_FILE", "SESSION_SECRET", "ADMIN_TOKEN", "SMTP_HOST", "EMAIL_FROM"];
const START_WAIT: Duration = Duration::from_secs(60);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace").to_path_buf()
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// Runs a tool the test needs, failing (never skipping) with what to install when it is missing.
fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program).args(args).stdin(Stdio::null()).output().unwrap_or_else(|e| {
        panic!("cannot run {program}: {e} (./scripts/test installs systemd and dpkg's tools when run as root)")
    })
}

fn run_ok(program: &str, args: &[&str]) -> String {
    let output = run(program, args);
    assert!(output.status.success(), "{program} {args:?} failed ({}):\n{}", output.status, text(&output));
    String::from_utf8(output.stdout).expect("utf-8")
}

fn is_root() -> bool {
    fs::metadata("/proc/self").expect("/proc/self").uid() == 0
}

/// The package: the one `TRUXE_TEST_DEB` names, else built by `packaging/build-deb` once for
/// the whole test process (its last line of output is the path; it prints nothing else on stdout).
fn deb() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        if let Ok(path) = std::env::var("TRUXE_TEST_DEB") {
            let path = PathBuf::from(path);
            assert!(path.is_file(), "TRUXE_TEST_DEB={} is not a file (did packaging/build-deb fail?)", path.display());
            eprintln!("packaging: using {} (TRUXE_TEST_DEB)", path.display());
            return path;
        }
        let started = Instant::now();
        let output = Command::new(workspace().join("packaging/build-deb"))
            .current_dir(workspace())
            .stdin(Stdio::null())
            .output()
            .expect("run packaging/build-deb");
        assert!(output.status.success(), "packaging/build-deb failed ({}):\n{}", output.status, text(&output));
        let stdout = String::from_utf8(output.stdout).expect("utf-8");
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 1, "packaging/build-deb prints only the path on stdout: {stdout:?}");
        let path = PathBuf::from(lines[0]);
        assert!(
            path.is_absolute() && path.extension().is_some_and(|e| e == "deb") && path.is_file(),
            "packaging/build-deb's last line is not the path of a .deb: {stdout:?}"
        );
        eprintln!(
            "packaging: packaging/build-deb took {:.1} s and wrote {}",
            started.elapsed().as_secs_f64(),
            path.display()
        );
        path
    })
}

// --- units ---------------------------------------------------------------------------------------

/// `(section, key)` → every value, in order, of a unit file; comments and blank lines skipped.
fn unit(text: &str) -> BTreeMap<(String, String), Vec<String>> {
    let mut section = String::new();
    let mut entries: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("not a unit line: {line:?}"));
        entries.entry((section.clone(), key.trim().to_string())).or_default().push(value.trim().to_string());
    }
    entries
}

fn values<'a>(unit: &'a BTreeMap<(String, String), Vec<String>>, section: &str, key: &str) -> &'a [String] {
    unit.get(&(section.to_string(), key.to_string())).map_or(&[], Vec::as_slice)
}

fn one<'a>(unit: &'a BTreeMap<(String, String), Vec<String>>, section: &str, key: &str) -> &'a str {
    match values(unit, section, key) {
        [value] => value,
        other => panic!("[{section}] {key}= should be set once, is {other:?}"),
    }
}

/// `systemd-analyze verify` on the unit files; Err with its output when it fails or says anything
/// at all (it exits 0 after "Failed to parse …, ignoring"). Man pages are checked separately,
/// against the package (`--man=no`): `man` may not know them where the units are checked.
fn verify_units(paths: &[PathBuf]) -> Result<(), String> {
    let mut args = vec!["verify".to_string(), "--man=no".to_string()];
    args.extend(paths.iter().map(|p| p.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = run("systemd-analyze", &args);
    let said = text(&output);
    if output.status.success() && said.trim().is_empty() { Ok(()) } else { Err(format!("{}: {said}", output.status)) }
}

/// Copies of the units with the absolute paths of their commands moved under `root`, for a
/// `systemd-analyze verify` that checks those commands exist where they are not installed.
fn units_under(root: &Path, sources: &[PathBuf], dir: &Path) -> Vec<PathBuf> {
    sources
        .iter()
        .map(|source| {
            let text = fs::read_to_string(source).expect("unit");
            let moved = text.replace("=/usr/bin/", &format!("={}/usr/bin/", root.display()));
            let path = dir.join(source.file_name().expect("name"));
            fs::write(&path, moved).expect("write unit");
            path
        })
        .collect()
}

fn source_units() -> Vec<PathBuf> {
    UNITS.iter().map(|name| workspace().join("systemd").join(name)).collect()
}

#[test]
fn the_units_pass_systemd_analyze_verify_and_run_the_server_sandboxed() {
    // Stubs where the package puts the binaries: verify checks that the commands exist.
    let root = tempfile::tempdir().expect("tmp");
    fs::create_dir_all(root.path().join("usr/bin")).expect("bin");
    for name in ["truxe-server", "truxectl"] {
        let stub = root.path().join("usr/bin").join(name);
        fs::write(&stub, "#!/bin/sh\nexit 0\n").expect("stub");
        fs::set_permissions(&stub, fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let dir = tempfile::tempdir().expect("tmp");
    let units = units_under(root.path(), &source_units(), dir.path());
    verify_units(&units).unwrap_or_else(|e| panic!("systemd-analyze verify: {e}"));

    // The check can fail: a typo systemd only warns about is caught.
    let broken = dir.path().join("broken.service");
    let api = fs::read_to_string(&units[0]).expect("unit");
    fs::write(&broken, api.replace("Type=notify", "Type=notfy")).expect("write");
    let err = verify_units(&[broken]).expect_err("a unit with Type=notfy must not verify");
    assert!(err.contains("notfy"), "{err}");

    let api = unit(&fs::read_to_string(workspace().join("systemd/truxe-api.service")).expect("unit"));
    for (key, value) in [
        ("Type", "notify"),
        ("User", "truxe"),
        ("Group", "truxe"),
        ("EnvironmentFile", ENV_FILE),
        ("ExecStartPre", "/usr/bin/truxectl migrate"),
        ("ExecStart", "/usr/bin/truxe-server"),
        ("Restart", "on-failure"),
        ("RestartPreventExitStatus", "78"),
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("ReadWritePaths", "/var/lib/truxe"),
        ("WorkingDirectory", "/var/lib/truxe"),
    ] {
        assert_eq!(one(&api, "Service", key), value, "truxe-api.service {key}=");
    }
    let env = values(&api, "Service", "Environment");
    assert!(env.iter().any(|e| e == "TRUXE_ENV=production"), "{env:?}");
    assert!(env.iter().any(|e| e == "TRUXE_DATA_DIR=/var/lib/truxe"), "{env:?}");
    assert_eq!(one(&api, "Install", "WantedBy"), "multi-user.target");

    let backup = unit(&fs::read_to_string(workspace().join("systemd/truxe-backup.service")).expect("unit"));
    assert_eq!(one(&backup, "Service", "Type"), "oneshot");
    assert_eq!(one(&backup, "Service", "User"), "truxe");
    assert_eq!(one(&backup, "Service", "EnvironmentFile"), ENV_FILE);
    assert_eq!(
        values(&backup, "Service", "ExecStart"),
        [
            "/usr/bin/truxectl backup create --verify --out /var/backups/truxe",
            "/usr/bin/truxectl backup prune --keep-days 30 --dir /var/backups/truxe"
        ]
    );
    assert!(one(&backup, "Service", "ReadWritePaths").split(' ').any(|p| p == "/var/backups/truxe"));
    assert_eq!(one(&backup, "Service", "ProtectSystem"), "strict");
    assert!(values(&backup, "Install", "WantedBy").is_empty(), "the timer starts the backup, nothing else");

    let timer = unit(&fs::read_to_string(workspace().join("systemd/truxe-backup.timer")).expect("unit"));
    assert_eq!(one(&timer, "Timer", "Unit"), "truxe-backup.service");
    assert_eq!(one(&timer, "Timer", "Persistent"), "true");
    let calendar = one(&timer, "Timer", "OnCalendar");
    let next = run_ok("systemd-analyze", &["calendar", "--iterations=2", calendar]);
    assert!(next.contains("Next elapse"), "{next}");
    assert_eq!(one(&timer, "Install", "WantedBy"), "timers.target");
}

// --- the package ---------------------------------------------------------------------------------

/// One line of `dpkg-deb -c`: `-rw-r----- root/root 3122 2026-12-04 19:23 ./etc/truxe/truxe.env`.
#[derive(Debug)]
struct Entry {
    mode: String,
    owner: String,
}

fn contents(deb: &Path) -> BTreeMap<String, Entry> {
    run_ok("dpkg-deb", &["-c", &deb.display().to_string()])
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert!(fields.len() >= 6, "dpkg-deb -c line {line:?}");
            let path = fields[5].trim_start_matches('.').trim_end_matches('/').to_string();
            (path, Entry { mode: fields[0].to_string(), owner: fields[1].to_string() })
        })
        .collect()
}

/// The package's control files (control, conffiles, md5sums, postinst, prerm, postrm).
fn control_files(deb: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tmp");
    let control = dir.path().join("DEBIAN");
    run_ok("dpkg-deb", &["-e", &deb.display().to_string(), &control.display().to_string()]);
    dir
}

fn man_pages(files: &BTreeMap<String, Entry>) -> Vec<String> {
    files
        .keys()
        .filter_map(|p| p.strip_prefix("/usr/share/man/man1/").and_then(|n| n.strip_suffix(".1.gz")))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_package_holds_binaries_units_template_completions_and_man_pages() {
    let deb = deb();
    let deb_text = deb.display().to_string();
    let field = |name: &str| run_ok("dpkg-deb", &["-f", &deb_text, name]).trim().to_string();
    assert_eq!(field("Package"), "truxe");
    assert_eq!(field("Version"), format!("{}-1", env!("CARGO_PKG_VERSION")));
    let depends = field("Depends");
    let depends: Vec<&str> = depends.split(',').map(|d| d.split_whitespace().next().unwrap_or_default()).collect();
    for needed in ["libc6", "libpq5", "libssl3", "adduser"] {
        assert!(depends.contains(&needed), "Depends lacks {needed}: {depends:?}");
    }

    let files = contents(deb);
    for (path, mode) in [
        ("/usr/bin/truxe-server", "-rwxr-xr-x"),
        ("/usr/bin/truxectl", "-rwxr-xr-x"),
        (ENV_FILE, "-rw-r-----"),
        ("/usr/lib/systemd/system/truxe-api.service", "-rw-r--r--"),
        ("/usr/lib/systemd/system/truxe-backup.service", "-rw-r--r--"),
        ("/usr/lib/systemd/system/truxe-backup.timer", "-rw-r--r--"),
        ("/usr/share/bash-completion/completions/truxectl", "-rw-r--r--"),
        ("/usr/share/zsh/vendor-completions/_truxectl", "-rw-r--r--"),
        ("/usr/share/fish/vendor_completions.d/truxectl.fish", "-rw-r--r--"),
        ("/usr/share/man/man1/truxectl.1.gz", "-rw-r--r--"),
        ("/usr/share/doc/truxe/README.md", "-rw-r--r--"),
        ("/usr/share/doc/truxe/copyright", "-rw-r--r--"),
    ] {
        let entry = files.get(path).unwrap_or_else(|| panic!("{path} is not in the package: {:?}", files.keys()));
        assert_eq!(entry.mode, mode, "{path}");
    }
    for (path, entry) in &files {
        // The group truxe does not exist where the package is built: the postinst sets it.
        assert!(entry.owner == "root/root" || entry.owner == "0/0", "{path} is owned by {}", entry.owner);
        assert_ne!(entry.mode.as_bytes()[8], b'w', "{path} is world-writable");
    }
    // One page per command, as `truxectl man --out` writes them.
    let pages = man_pages(&files);
    for page in ["truxectl", "truxectl-migrate", "truxectl-migrate-status", "truxectl-clients-create", "truxectl-man"] {
        assert!(pages.iter().any(|p| p == page), "no man page {page}: {pages:?}");
    }
    // Every man page a unit's Documentation= names is in the package.
    for name in UNITS {
        let unit = unit(&fs::read_to_string(workspace().join("systemd").join(name)).expect("unit"));
        for doc in values(&unit, "Unit", "Documentation").iter().flat_map(|d| d.split(' ')) {
            if let Some(page) = doc.strip_prefix("man:") {
                let page = page.strip_suffix("(1)").unwrap_or_else(|| panic!("{name}: {doc} is not in section 1"));
                assert!(pages.iter().any(|p| p == page), "{name} names {doc}, which the package lacks");
            }
        }
    }

    let control = control_files(deb);
    let read = |name: &str| fs::read_to_string(control.path().join("DEBIAN").join(name)).expect(name);
    assert_eq!(read("conffiles").lines().collect::<Vec<_>>(), [ENV_FILE], "the template is the one conffile");
    let postinst = read("postinst");
    assert_eq!(
        postinst.matches("Automatically added by cargo-deb").count(),
        4,
        "the systemd handling, once: {postinst}"
    );
    assert!(postinst.contains("adduser --system --group"), "{postinst}");
    assert!(postinst.contains("own root:truxe 0640 /etc/truxe/truxe.env"), "{postinst}");
    assert!(postinst.contains("own truxe:truxe 0750"), "{postinst}");
    // cargo-deb put its systemd handling where #DEBHELPER# was: never enabled or started on a
    // first install (the template must be filled in first), try-restart after an upgrade.
    assert!(!postinst.contains("#DEBHELPER#"), "{postinst}");
    for unit in ["truxe-api.service", "truxe-backup.timer"] {
        assert!(postinst.contains(&format!("deb-systemd-helper debian-installed {unit}")), "{unit}: {postinst}");
    }
    assert!(!postinst.contains("was-enabled defaults to true"), "no unit is enabled on install: {postinst}");
    assert!(!postinst.contains("deb-systemd-invoke start"), "no unit is started on install: {postinst}");
    assert!(postinst.contains("deb-systemd-invoke try-restart"), "a running server is restarted after an upgrade");
    assert!(read("prerm").contains("deb-systemd-invoke stop"), "the server stops when the package is removed");
    let postrm = read("postrm");
    assert!(postrm.contains("deb-systemd-helper purge"), "{postrm}");
    assert!(postrm.contains("rmdir"), "purge keeps data and backups: {postrm}");
}

// --- installed -----------------------------------------------------------------------------------

/// The package on this machine (`dpkg -i`, purged on drop, with the user and directories the test
/// caused removed) or unpacked into a throwaway root.
struct Installation {
    root: Option<tempfile::TempDir>,
    /// In the dpkg case: what existed before, so that only what the test made is removed.
    user_existed: bool,
    dirs_existed: Vec<(PathBuf, bool)>,
    /// Files the test put into /etc/truxe (removed before the purge).
    added: Vec<PathBuf>,
}

impl Installation {
    fn new(deb: &Path) -> Installation {
        let extract = match std::env::var("TRUXE_TEST_DEB_INSTALL").as_deref() {
            Ok("extract") => true,
            Ok("dpkg") | Err(_) => !is_root(),
            Ok(other) => panic!("TRUXE_TEST_DEB_INSTALL={other}: use `dpkg` or `extract`"),
        };
        let deb = deb.display().to_string();
        if extract {
            let root = tempfile::tempdir().expect("tmp");
            run_ok("dpkg-deb", &["-x", &deb, &root.path().display().to_string()]);
            // What the postinst does, apart from the owners (no truxe user here).
            for dir in ["var/lib/truxe", "var/backups/truxe"] {
                fs::create_dir_all(root.path().join(dir)).expect("dir");
                fs::set_permissions(root.path().join(dir), fs::Permissions::from_mode(0o750)).expect("chmod");
            }
            return Installation { root: Some(root), user_existed: false, dirs_existed: Vec::new(), added: Vec::new() };
        }
        let state = run("dpkg-query", &["-W", "-f=${db:Status-Abbrev}", "truxe"]);
        let state = String::from_utf8_lossy(&state.stdout).trim().to_string();
        assert!(
            state.is_empty() || state.starts_with("un"),
            "the package truxe is already on this machine ({state}): this test installs and purges it. Purge it \
             first (dpkg --purge truxe), or set TRUXE_TEST_DEB_INSTALL=extract"
        );
        let user_existed = run("getent", &["passwd", "truxe"]).status.success();
        let dirs_existed = ["/etc/truxe", "/var/lib/truxe", "/var/backups/truxe"]
            .map(|d| (PathBuf::from(d), Path::new(d).exists()))
            .to_vec();
        let installation = Installation { root: None, user_existed, dirs_existed, added: Vec::new() };
        let output = Command::new("dpkg")
            .args(["-i", &deb])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output()
            .expect("dpkg");
        assert!(output.status.success(), "dpkg -i {deb} failed:\n{}", text(&output));
        let state = run_ok("dpkg-query", &["-W", "-f=${Status}", "truxe"]);
        assert_eq!(state, "install ok installed");
        installation
    }

    fn is_dpkg(&self) -> bool {
        self.root.is_none()
    }

    /// Where an absolute path of the package is on this machine.
    fn path(&self, path: &str) -> PathBuf {
        match &self.root {
            None => PathBuf::from(path),
            Some(root) => root.path().join(path.trim_start_matches('/')),
        }
    }
}

impl Drop for Installation {
    fn drop(&mut self) {
        if !self.is_dpkg() {
            return;
        }
        for file in &self.added {
            let _ = fs::remove_file(file);
        }
        let purge = Command::new("dpkg").args(["--purge", "truxe"]).stdin(Stdio::null()).output();
        match purge {
            Ok(output) if output.status.success() => {}
            Ok(output) => eprintln!("packaging: dpkg --purge truxe failed:\n{}", text(&output)),
            Err(e) => eprintln!("packaging: cannot run dpkg --purge truxe: {e}"),
        }
        // What was not there before the test: its data directory, its backups, its user.
        for (dir, existed) in &self.dirs_existed {
            if !existed && dir.exists() {
                let _ = fs::remove_dir_all(dir);
            }
        }
        if !self.user_existed {
            let _ = Command::new("userdel").arg("truxe").stdin(Stdio::null()).output();
            let _ = Command::new("groupdel").arg("truxe").stdin(Stdio::null()).stderr(Stdio::null()).output();
        }
    }
}

/// `(uid, gid, permissions in octal)` of a path, e.g. `(0, 117, "0640")`.
fn stat(path: &Path) -> (u32, u32, String) {
    let meta = fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (meta.uid(), meta.gid(), format!("{:04o}", meta.mode() & 0o7777))
}

/// uid and gid of the `truxe` user the postinst made, after checking it is a system account.
fn truxe_user() -> (u32, u32) {
    let passwd = run_ok("getent", &["passwd", "truxe"]);
    let fields: Vec<&str> = passwd.trim().split(':').collect();
    assert_eq!(fields.len(), 7, "{passwd}");
    let (uid, gid): (u32, u32) = (fields[2].parse().expect("uid"), fields[3].parse().expect("gid"));
    assert!(uid > 0 && uid < 1000, "truxe is a system user: {passwd}");
    assert_eq!(fields[5], "/var/lib/truxe", "home: {passwd}");
    assert_eq!(fields[6], "/usr/sbin/nologin", "no login: {passwd}");
    let group = run_ok("getent", &["group", "truxe"]);
    assert_eq!(group.split(':').nth(2).and_then(|g| g.parse::<u32>().ok()), Some(gid), "the group truxe: {group}");
    (uid, gid)
}

/// Parses an EnvironmentFile= as systemd does, for the forms the template and this test use:
/// `NAME=value` lines, `#`/`;` comment lines, values in double quotes (where `\"`, `\\`, `` \` ``
/// and `\$` are unescaped and other backslashes kept), and unquoted values (a backslash escapes
/// the next character).
fn systemd_env_file(text: &str) -> Vec<(String, String)> {
    let mut vars = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let (name, raw) = line.split_once('=').unwrap_or_else(|| panic!("not an assignment: {line:?}"));
        let raw = raw.trim();
        let mut value = String::new();
        if let Some(inner) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                match (c, c == '\\') {
                    (_, true) => match chars.next() {
                        Some(next @ ('"' | '\\' | '`' | '$')) => value.push(next),
                        Some(next) => {
                            value.push('\\');
                            value.push(next);
                        }
                        None => value.push('\\'),
                    },
                    (c, false) => value.push(c),
                }
            }
        } else {
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        vars.push((name.trim().to_string(), value));
    }
    vars
}

/// The template with `NAME=` (or a commented `#NAME=…`) replaced by `NAME=value`: exactly one
/// such line must be there.
fn fill(template: &str, name: &str, value: &str) -> String {
    let matches = |line: &str| {
        let line = line.strip_prefix('#').unwrap_or(line);
        line.strip_prefix(name).is_some_and(|rest| rest.starts_with('='))
    };
    assert_eq!(template.lines().filter(|l| matches(l)).count(), 1, "{name} appears once in the template");
    let mut out: String = template
        .lines()
        .map(|line| if matches(line) { format!("{name}={value}") } else { line.to_string() })
        .collect::<Vec<_>>()
        .join("\n");
    out.push('\n');
    out
}

/// A command of truxe-api.service as systemd runs it: its environment, working directory and user.
struct ServiceContext {
    env: Vec<(String, String)>,
    cwd: PathBuf,
    /// uid and gid of `User=`/`Group=` (dpkg case); the test's own user otherwise.
    user: Option<(u32, u32)>,
}

impl ServiceContext {
    fn new(installation: &Installation, unit: &BTreeMap<(String, String), Vec<String>>) -> ServiceContext {
        let home = installation.path("/var/lib/truxe").display().to_string();
        // systemd's own: PATH, and HOME/USER/LOGNAME/SHELL of User=.
        let mut env: Vec<(String, String)> = vec![
            ("PATH".into(), "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()),
            ("HOME".into(), home),
            ("USER".into(), "truxe".into()),
            ("LOGNAME".into(), "truxe".into()),
            ("SHELL".into(), "/usr/sbin/nologin".into()),
        ];
        for assignment in values(unit, "Service", "Environment") {
            assert!(!assignment.contains(['"', '\'', ' ']), "this test reads one plain NAME=value: {assignment}");
            let (name, value) = assignment.split_once('=').expect("NAME=value");
            let value =
                if value.starts_with('/') { installation.path(value).display().to_string() } else { value.into() };
            env.push((name.to_string(), value));
        }
        // EnvironmentFile= after Environment=: the file's values win.
        for file in values(unit, "Service", "EnvironmentFile") {
            let path = installation.path(file.trim_start_matches('-'));
            let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("EnvironmentFile {}: {e}", path.display()));
            for (name, value) in systemd_env_file(&text) {
                env.retain(|(n, _)| *n != name);
                env.push((name, value));
            }
        }
        let cwd = installation.path(one(unit, "Service", "WorkingDirectory"));
        let user = installation.is_dpkg().then(|| {
            assert_eq!(one(unit, "Service", "User"), "truxe");
            assert_eq!(one(unit, "Service", "Group"), "truxe");
            truxe_user()
        });
        ServiceContext { env, cwd, user }
    }

    /// `ExecStart…=` line → a command for the installed binary.
    fn command(&self, installation: &Installation, line: &str) -> Command {
        let mut words = line.split_whitespace();
        let program = installation.path(words.next().expect("a command"));
        let mut command = Command::new(program);
        command.args(words).env_clear().envs(self.env.iter().map(|(k, v)| (k, v))).current_dir(&self.cwd);
        command.stdin(Stdio::null());
        if let Some((uid, gid)) = self.user {
            // As root, std also drops the supplementary groups before setuid.
            command.uid(uid).gid(gid);
        }
        command
    }
}

/// systemd's end of `NOTIFY_SOCKET`: a datagram socket in a directory the service user can reach.
struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    fn new() -> NotifySocket {
        let dir = tempfile::tempdir().expect("tmp");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o777)).expect("chmod");
        socket.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
        NotifySocket { socket, path, _dir: dir }
    }

    /// Waits for a message with the line `line` (e.g. `READY=1`) while `child` runs; returns
    /// every message received until then.
    fn wait_for(&self, line: &str, child: &mut Child, log: &Path) -> Vec<String> {
        let deadline = Instant::now() + START_WAIT;
        let mut messages = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match self.socket.recv(&mut buf) {
                Ok(n) => {
                    let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let done = message.lines().any(|l| l == line);
                    messages.push(message);
                    if done {
                        return messages;
                    }
                }
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) => panic!("notify socket: {e}"),
            }
            if line == "READY=1"
                && let Some(status) = child.try_wait().expect("wait")
            {
                panic!("truxe-server exited ({status}) before {line}; it printed:\n{}", read_log(log));
            }
            assert!(
                Instant::now() < deadline,
                "no {line} within {START_WAIT:?} ({messages:?}); it printed:\n{}",
                read_log(log)
            );
        }
    }
}

fn read_log(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_installed_package_starts_as_its_unit_starts_it() {
    let deb = deb();
    let mut installation = Installation::new(deb);
    let etc = installation.path("/etc/truxe");
    let env_file = installation.path(ENV_FILE);
    let truxectl = installation.path("/usr/bin/truxectl");

    // Files where the package put them, the same as in the source tree.
    for name in UNITS {
        let installed = fs::read_to_string(installation.path(&format!("{UNIT_DIR}/{name}"))).expect("installed unit");
        let source = fs::read_to_string(workspace().join("systemd").join(name)).expect("source unit");
        assert_eq!(installed, source, "{name}");
    }
    let template = fs::read_to_string(&env_file).expect("the template");
    assert_eq!(template, fs::read_to_string(workspace().join("packaging/debian/truxe.env")).expect("source"));
    let completions = [
        ("bash", "/usr/share/bash-completion/completions/truxectl"),
        ("zsh", "/usr/share/zsh/vendor-completions/_truxectl"),
        ("fish", "/usr/share/fish/vendor_completions.d/truxectl.fish"),
    ];
    for (shell, path) in completions {
        let installed = fs::read_to_string(installation.path(path)).expect("completions");
        let generated = run_ok(&truxectl.display().to_string(), &["completions", shell]);
        assert_eq!(installed, generated, "{path} is what the installed truxectl generates");
    }
    let page = run_ok("gzip", &["-dc", &installation.path("/usr/share/man/man1/truxectl.1.gz").display().to_string()]);
    assert!(page.contains(".TH truxectl 1") && page.contains("EXIT STATUS"), "{page}");

    let units: Vec<PathBuf> = UNITS.iter().map(|n| installation.path(&format!("{UNIT_DIR}/{n}"))).collect();
    if installation.is_dpkg() {
        // The installed units as they are: their commands exist, their user too.
        verify_units(&units).unwrap_or_else(|e| panic!("systemd-analyze verify (installed units): {e}"));
        let (uid, gid) = truxe_user();
        assert_eq!(stat(&etc), (0, gid, "0750".to_string()), "/etc/truxe: root:truxe 0750");
        assert_eq!(stat(&env_file), (0, gid, "0640".to_string()), "{ENV_FILE}: root:truxe 0640");
        assert_eq!(
            stat(Path::new("/var/lib/truxe")),
            (uid, gid, "0750".to_string()),
            "/var/lib/truxe: truxe:truxe 0750"
        );
        assert_eq!(
            stat(Path::new("/var/backups/truxe")),
            (uid, gid, "0750".to_string()),
            "/var/backups/truxe: truxe:truxe 0750"
        );
        for binary in ["/usr/bin/truxe-server", "/usr/bin/truxectl"] {
            assert_eq!(stat(Path::new(binary)), (0, 0, "0755".to_string()), "{binary}");
        }
    } else {
        let dir = tempfile::tempdir().expect("tmp");
        let root = installation.path("/");
        verify_units(&units_under(&root, &units, dir.path()))
            .unwrap_or_else(|e| panic!("systemd-analyze verify (unpacked units): {e}"));
        assert_eq!(stat(&env_file).2, "0640", "{ENV_FILE}: 0640");
    }

    // The template sets nothing: every line that is not a comment is a REQUIRED `NAME=`.
    let set: Vec<&str> = template.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')).collect();
    assert_eq!(set, REQUIRED.map(|name| format!("{name}=")), "the template's uncommented lines");

    let api_unit = unit(&fs::read_to_string(&units[0]).expect("unit"));
    let pre = one(&api_unit, "Service", "ExecStartPre").to_string();
    let start = one(&api_unit, "Service", "ExecStart").to_string();
    let logs = tempfile::tempdir().expect("tmp");
    let data_dir = installation.path("/var/lib/truxe");

    // Unfilled, both commands refuse with 78 (no restart), naming what is missing, and leave the
    // data directory empty (no stray SQLite database).
    let unfilled = ServiceContext::new(&installation, &api_unit);
    let output = unfilled.command(&installation, &pre).output().expect("ExecStartPre");
    assert_eq!(output.status.code(), Some(78), "ExecStartPre with the unfilled template:\n{}", text(&output));
    assert!(text(&output).contains("DATABASE_URL: required in production"), "{}", text(&output));
    let output = unfilled.command(&installation, &start).output().expect("ExecStart");
    assert_eq!(output.status.code(), Some(78), "ExecStart with the unfilled template:\n{}", text(&output));
    for name in
        ["JWT_ISSUER", "DATABASE_URL", "JWT_PRIVATE_KEY", "SESSION_SECRET", "ADMIN_TOKEN", "SMTP_HOST", "EMAIL_FROM"]
    {
        assert!(text(&output).contains(name), "{name} not named:\n{}", text(&output));
    }
    assert_eq!(fs::read_dir(&data_dir).expect("data dir").count(), 0, "the data directory stays empty");

    // Filled in as the template says: a key from `truxectl keys generate --out /etc/truxe`,
    // readable by the group truxe, secrets from `truxectl secrets generate`.
    let truxectl_text = truxectl.display().to_string();
    run_ok(&truxectl_text, &["keys", "generate", "--out", &etc.display().to_string()]);
    let key = etc.join("jwt-private.pem");
    installation.added.extend([key.clone(), etc.join("jwt-public.pem")]);
    if installation.is_dpkg() {
        std::os::unix::fs::chown(&key, Some(0), Some(truxe_user().1)).expect("chgrp truxe");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o640)).expect("chmod 0640");
    }
    let secret = || run_ok(&truxectl_text, &["secrets", "generate"]).trim().to_string();
    let (session_secret, admin_token) = (secret(), secret());
    let db = TestDb::new(Backend::Postgres);
    let sink = SmtpSink::start().await;
    let port = free_port();
    let mut filled = template.clone();
    for (name, value) in [
        ("JWT_ISSUER", "https://auth.truxe.test".to_string()),
        ("DATABASE_URL", db.url.clone()),
        ("JWT_PRIVATE_KEY_FILE", key.display().to_string()),
        ("SESSION_SECRET", session_secret.clone()),
        ("ADMIN_TOKEN", admin_token.clone()),
        ("SMTP_HOST", "127.0.0.1".to_string()),
        ("EMAIL_FROM", "noreply@truxe.test".to_string()),
        ("SMTP_PORT", sink.port().to_string()),
        ("REDIS_URL", redis_url()),
        ("PORT", port.to_string()),
    ] {
        filled = fill(&filled, name, &value);
    }
    fs::write(&env_file, &filled).expect("write the env file");
    if installation.is_dpkg() {
        assert_eq!(stat(&env_file), (0, truxe_user().1, "0640".to_string()), "writing it kept root:truxe 0640");
    }
    let service = ServiceContext::new(&installation, &api_unit);
    assert!(service.env.iter().any(|(k, v)| k == "TRUXE_ENV" && v == "production"), "{:?}", service.env);

    // ExecStartPre: the migrations, on the fresh database; on the next start, nothing to do.
    let output = service.command(&installation, &pre).output().expect("ExecStartPre");
    assert!(output.status.success(), "{pre}:\n{}", text(&output));
    assert!(text(&output).contains("applied"), "{}", text(&output));
    let output = service.command(&installation, &pre).output().expect("ExecStartPre");
    assert!(output.status.success() && text(&output).contains("up to date"), "{}", text(&output));

    // ExecStart, with systemd's NOTIFY_SOCKET.
    let notify = NotifySocket::new();
    let log = logs.path().join("truxe-server.log");
    let log_file = fs::File::create(&log).expect("log");
    let mut child = service
        .command(&installation, &start)
        .env("NOTIFY_SOCKET", &notify.path)
        .stdout(log_file.try_clone().expect("log"))
        .stderr(log_file)
        .spawn()
        .expect("spawn ExecStart");
    let messages = notify.wait_for("READY=1", &mut child, &log);
    assert!(messages.concat().contains(&format!("STATUS=listening on port {port}")), "{messages:?}");
    if let Some((uid, _)) = service.user {
        let status = fs::read_to_string(format!("/proc/{}/status", child.id())).expect("status");
        let line = status.lines().find(|l| l.starts_with("Uid:")).expect("Uid line");
        assert!(line.split_whitespace().skip(1).all(|id| id == uid.to_string()), "runs as truxe: {line}");
    }

    // Ready means ready: no retry.
    let client = reqwest::Client::new();
    let ready = client.get(format!("http://127.0.0.1:{port}/health/ready")).send().await.expect("GET /health/ready");
    let status = ready.status().as_u16();
    let body: serde_json::Value = ready.json().await.expect("json");
    assert_eq!(status, 200, "{body}\n{}", read_log(&log));
    assert_eq!(body["checks"]["database"]["backend"], "postgresql", "{body}");
    assert_eq!(body["checks"]["redis"]["status"], "ok", "{body}");

    // A verified backup, as truxe-backup.service makes it (as the unit's user), then the
    // installed `truxectl doctor` with the unit's environment passes (issue 9's "Done when"): no
    // FAIL line, exit 0.
    let backups = installation.path("/var/backups/truxe").display().to_string();
    let backup = service
        .command(&installation, &format!("/usr/bin/truxectl backup create --verify --out {backups}"))
        .output()
        .expect("truxectl backup create");
    assert!(backup.status.success(), "truxectl backup create --verify:\n{}", text(&backup));
    let doctor = service
        .command(
            &installation,
            &format!("/usr/bin/truxectl doctor --url http://127.0.0.1:{port} --backup-dir {backups}"),
        )
        .output()
        .expect("truxectl doctor");
    assert!(doctor.status.success(), "truxectl doctor:\n{}", text(&doctor));
    let report = String::from_utf8_lossy(&doctor.stdout);
    assert!(!report.lines().any(|l| l.starts_with("FAIL")), "{report}");
    assert!(report.lines().any(|l| l.starts_with("ok    discovery: ")), "{report}");

    // SIGTERM, as `systemctl stop` sends it: STOPPING=1, then a clean exit.
    let pid = child.id().to_string();
    run_ok("kill", &["-TERM", &pid]);
    notify.wait_for("STOPPING=1", &mut child, &log);
    let exit = child.wait().expect("wait");
    let output = read_log(&log);
    assert!(exit.success(), "exit after SIGTERM: {exit}\n{output}");
    for secret in [&session_secret, &admin_token] {
        assert!(!output.contains(secret.as_str()), "a secret in the log:\n{output}");
    }
    drop(installation);
}
