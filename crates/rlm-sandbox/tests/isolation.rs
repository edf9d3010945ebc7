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

/// Model code cannot reach a server the test itself listens on: connecting over TCP (raw, and
/// through http.client), name lookup, and UDP all fail inside the sandbox, and the listener sees no
/// connection and no datagram. (A refused connection to a closed port would be an error too,
/// so the test proves isolation against a port that is open.)
#[tokio::test(flavor = "multi_thread")]
async fn no_network() {
    use std::io::ErrorKind;

    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    tcp.set_nonblocking(true).unwrap();
    let port = tcp.local_addr().unwrap().port();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_nonblocking(true).unwrap();
    let udp_port = udp.local_addr().unwrap().port();
    // The listener is really there: the host itself can connect to it.
    drop(std::net::TcpStream::connect(("127.0.0.1", port)).unwrap());
    let (probe, _) = loop {
        match tcp.accept() {
            Ok(c) => break c,
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::yield_now(),
            Err(e) => panic!("{e}"),
        }
    };
    drop(probe);

    for code in [
        format!(
            "import socket\ns = socket.socket()\ns.settimeout(5)\ns.connect(('127.0.0.1', {port}))\nprint('CONNECTED')"
        ),
        format!(
            "import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=5)\nprint('CONNECTED')"
        ),
        format!(
            "import http.client\nc = http.client.HTTPConnection('127.0.0.1', {port}, timeout=5)\nc.request('GET', '/')\nprint('CONNECTED')"
        ),
        format!("import socket\nprint('CONNECTED', socket.getaddrinfo('127.0.0.1', {port}))"),
        format!(
            "import socket\nu = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nu.sendto(b'x', ('127.0.0.1', {udp_port}))\nprint('CONNECTED')"
        ),
    ] {
        let mut sb = sandbox("").await;
        ok(&mut sb, "kept = 1").await;
        let r = sb.exec(&code).await.unwrap();
        assert!(
            r.error.is_some() && !r.stdout.contains("CONNECTED"),
            "{code}\nreached the network: {r:?}"
        );
        match tcp.accept() {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            other => panic!("{code}\nthe listener got a connection: {other:?}"),
        }
        let mut buf = [0u8; 16];
        match udp.recv_from(&mut buf) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            other => panic!("{code}\nthe UDP socket got a datagram: {other:?}"),
        }
        assert_eq!(
            out(&mut sb, "kept").await,
            "1",
            "REPL state survives {code}"
        );
    }
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
