//! Test support, shared by the unit tests and the integration tests: a child process is the running test binary
//! re-run on one test function, which reads its role from an environment variable. Not part of the API.

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The variable that carries a child's spec.
pub const CHILD_ENV: &str = "PYCONC_TEST_CHILD";

/// The spec this process was started with, if it is a child. A child-entry test returns at once without one, and
/// a parent test returns at once with one (so a child runs only its entry).
pub fn spec() -> Option<String> {
    std::env::var(CHILD_ENV).ok()
}

/// Runs this test binary's test `entry` (its full path, e.g. `sync::tests::child_entry`) as a child process with
/// `spec`. The child's stdout is discarded; its stderr (panics) shows in the parent's output.
pub fn spawn(entry: &str, spec: &str) -> Child {
    Command::new(std::env::current_exe().expect("the test binary's path"))
        .args(["--exact", entry, "--nocapture", "--test-threads=1", "-q"])
        .env(CHILD_ENV, spec)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the test binary as a child")
}

/// Waits for `child` at most `timeout`; a child still running then is killed, and the test fails.
pub fn wait(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait for a child") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child {} still running after {timeout:?}: killed", child.id());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// [`wait`]s for each child in turn, all within `timeout`, and asserts that each exited successfully.
pub fn wait_all_ok(children: &mut [Child], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    for child in children.iter_mut() {
        let left = deadline.saturating_duration_since(Instant::now());
        let status = wait(child, left);
        assert!(status.success(), "child {} failed: {status}", child.id());
    }
}
