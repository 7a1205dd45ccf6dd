//! Running the independent Python references (the gguf package, llama-cpp-python) from tests.

use std::process::Command;

/// True when `python3` can import every module in `modules` (comma-separated, as in an import
/// statement). Otherwise prints `skipped: ...` and returns false, or panics when CI is set:
/// CI installs the packages, so their absence there is a failure, not a skip.
pub fn python_ok(modules: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("python3 with {modules} is required when CI is set");
        }
        println!("skipped: python3 with {modules} is not available");
    }
    ok
}

/// Runs `script` with `args` and returns its stdout; a failing script fails the test with
/// its stderr.
pub fn python_stdout(script: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
