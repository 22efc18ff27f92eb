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

/// A running `truxe-server` process; killed on drop if still running.
pub struct ServerProcess {
    pub child: Child,
    pub port: u16,
}

impl ServerProcess {
    /// Starts the binary and waits until `/health` answers (or the process exits).
    pub async fn start(cwd: &Path, env: &[(&str, &str)], port: u16) -> Self {
        let port_text = port.to_string();
        let mut env = env.to_vec();
        env.push(("PORT", &port_text));
        let child = clean_command("truxe-server", cwd, &env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn truxe-server");
        let mut server = ServerProcess { child, port };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = server.child.try_wait().expect("wait") {
                let output = std::mem::replace(&mut server.child, Command::new("true").spawn().expect("true"))
                    .wait_with_output()
                    .expect("output");
                panic!("truxe-server exited early ({status}):\n{}", text(&output));
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

    /// Sends SIGTERM and returns the exit status and everything the process printed.
    pub fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
        assert!(status.success());
        let child = std::mem::replace(&mut self.child, Command::new("true").spawn().expect("true"));
        let output = child.wait_with_output().expect("output");
        (output.status, text(&output))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
