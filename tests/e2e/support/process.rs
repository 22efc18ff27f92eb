//! Spawned `truxe-server` and `truxectl` processes with a clean environment.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::binary;

/// A command with nothing inherited but PATH and HOME, so the developer's environment
/// (NODE_ENV, DATABASE_URL …) cannot change what a test sees.
pub fn clean_command(program: &str, cwd: &Path, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(binary(program));
    cmd.env_clear().current_dir(cwd).envs(env.iter().copied());
    for name in ["PATH", "HOME"] {
        if let Ok(value) = std::env::var(name) {
            cmd.env(name, value);
        }
    }
    cmd
}

pub fn truxectl(cwd: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    clean_command("truxectl", cwd, env).args(args).stdin(Stdio::null()).output().expect("run truxectl")
}

/// Runs `truxe-server` expecting it to refuse to start; returns its output.
pub fn server_fails(cwd: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut child = clean_command("truxe-server", cwd, env)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn truxe-server");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().expect("output");
            panic!(
                "truxe-server did not exit within 30 s\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// Everything a spawned process printed so far, stdout and stderr interleaved by line, and a
/// condition variable that is notified on every new line (and when both pipes close).
#[derive(Default)]
struct Log {
    text: std::sync::Mutex<(String, usize)>,
    changed: std::sync::Condvar,
}

impl Log {
    /// Reads `pipe` line by line into the log until it closes.
    fn collect(log: std::sync::Arc<Log>, pipe: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut reader = std::io::BufReader::new(pipe);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let mut guard = log.text.lock().expect("log");
                        guard.0.push_str(&String::from_utf8_lossy(&line));
                        drop(guard);
                        log.changed.notify_all();
                    }
                }
            }
            log.text.lock().expect("log").1 += 1;
            log.changed.notify_all();
        })
    }

    fn text(&self) -> String {
        self.text.lock().expect("log").0.clone()
    }
}

/// A running `truxe-server` process; killed on drop if still running.
pub struct ServerProcess {
    pub child: Child,
    pub port: u16,
    log: std::sync::Arc<Log>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl ServerProcess {
    /// Starts the binary and waits until `/health` answers (or the process exits).
    pub async fn start(cwd: &Path, env: &[(&str, &str)], port: u16) -> Self {
        Self::start_with_args(cwd, env, port, &[]).await
    }

    /// [`ServerProcess::start`] with command-line arguments (`--env-file FILE`).
    pub async fn start_with_args(cwd: &Path, env: &[(&str, &str)], port: u16, args: &[&str]) -> Self {
        let port_text = port.to_string();
        let mut env = env.to_vec();
        env.push(("PORT", &port_text));
        // As in `config_from`: limits off unless the test sets them.
        if !env.iter().any(|(name, _)| *name == "RATE_LIMIT_ENABLED") {
            env.push(("RATE_LIMIT_ENABLED", "false"));
        }
        let mut child = clean_command("truxe-server", cwd, &env)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn truxe-server");
        let log = std::sync::Arc::new(Log::default());
        let readers = vec![
            Log::collect(log.clone(), child.stdout.take().expect("stdout")),
            Log::collect(log.clone(), child.stderr.take().expect("stderr")),
        ];
        let mut server = ServerProcess { child, port, log, readers };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = server.child.try_wait().expect("wait") {
                let output = server.finish();
                panic!("truxe-server exited early ({status}):\n{output}");
            }
            if let Ok(r) = client.get(format!("http://127.0.0.1:{port}/health")).send().await
                && r.status().is_success()
            {
                return server;
            }
            assert!(Instant::now() < deadline, "truxe-server did not answer /health within 30 s");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// What the process printed so far.
    pub fn output(&self) -> String {
        self.log.text()
    }

    /// Waits (without polling: woken by every line) until the process printed a line containing
    /// `needle`, and returns that line; panics after `timeout` with everything printed.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut guard = self.log.text.lock().expect("log");
        loop {
            if let Some(line) = guard.0.lines().find(|line| line.contains(needle)) {
                return line.to_string();
            }
            let now = Instant::now();
            if now >= deadline || guard.1 == 2 {
                panic!("truxe-server never printed {needle:?}; it printed:\n{}", guard.0);
            }
            guard = self.log.changed.wait_timeout(guard, deadline - now).expect("log").0;
        }
    }

    /// Waits for the readers (the pipes close when the process has exited) and returns the output.
    fn finish(&mut self) -> String {
        let _ = self.child.wait();
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        self.log.text()
    }

    /// Sends SIGTERM and returns the exit status and everything the process printed.
    pub fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
        assert!(status.success());
        let status = self.child.wait().expect("wait");
        (status, self.finish())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
