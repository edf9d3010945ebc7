//! Nothing outside the sandbox is reachable: files, processes, network, environment.

mod common;

use common::*;

/// Run `code`; it must fail (raise) or find nothing, and the host must be unharmed.
async fn contained(code: &str, expect_in_error: &[&str]) {
    let mut sb = sandbox("").await;
    ok(&mut sb, "kept = 1").await;
    let r = sb.exec(code).await.unwrap();
    let err = r.error.clone().unwrap_or_default();
    assert!(
        expect_in_error.iter().any(|e| err.contains(e)),
        "{code}\nexpected one of {expect_in_error:?}\ngot: {r:?}"
    );
    assert_eq!(
        out(&mut sb, "kept").await,
        "1",
        "REPL state survives {code}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn no_host_files() {
    contained(
        "open('/etc/passwd').read()",
        &["FileNotFoundError", "PermissionError", "OSError"],
    )
    .await;
    contained(
        "open('/tmp/x', 'w').write('x')",
        &["FileNotFoundError", "PermissionError", "OSError"],
    )
    .await;
    let mut sb = sandbox("").await;
    let listing = sb.exec("import os\nos.listdir('/')").await.unwrap();
    assert!(
        listing.error.is_some() || listing.stdout.trim() == "[]",
        "the root directory is empty or unreadable: {listing:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn no_network() {
    contained(
        "import socket\ns = socket.socket()\ns.connect(('127.0.0.1', 80))",
        &["Error", "error"],
    )
    .await;
    contained(
        "import urllib.request\nurllib.request.urlopen('http://127.0.0.1/')",
        &["Error"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_environment_or_arguments() {
    let mut sb = sandbox("").await;
    assert_eq!(
        out(&mut sb, "import os, sys\ndict(os.environ), sys.argv[1:]").await,
        "({}, [])"
    );
    let r = sb.exec("input('?')").await.unwrap();
    assert!(r.error.unwrap().contains("EOFError"));
}

#[tokio::test(flavor = "multi_thread")]
async fn no_processes_or_native_code() {
    contained("import subprocess\nsubprocess.run(['ls'])", &["Error"]).await;
    contained("import os\nos.system('ls')", &["Error"]).await;
    contained("import os\nos.fork()", &["Error"]).await;
    contained("import ctypes", &["ModuleNotFoundError", "ImportError"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exiting_the_process_only_ends_the_step() {
    let mut sb = sandbox("").await;
    ok(&mut sb, "kept = 'still here'").await;
    let r = sb.exec("import os\nos._exit(1)").await.unwrap();
    assert!(!r.reset);
    assert_eq!(out(&mut sb, "kept").await, "'still here'");
}
