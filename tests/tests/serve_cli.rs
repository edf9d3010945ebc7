//! `rlm serve` as a process: every endpoint over real HTTP, with the scripted model behind the
//! mock provider.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rlm_integration_tests::rlm_bin;
use rlm_testkit::{MockProvider, Reply};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DOC: &str = "Filler line one.\nFiller line two.\nThe access code for project Falcon-12 is 48213.\nFiller line three.\n";
const Q: &str = "What is the access code for project Falcon-12?";

async fn scripted(delay_ms: u64) -> MockProvider {
    let mock = MockProvider::start().await;
    mock.respond_with(move |r| {
        let reply = Reply::text(rlm_testkit::scripted::respond(&r.messages()));
        Reply::delayed(Duration::from_millis(delay_ms), reply)
    });
    mock
}

struct Serve {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
    traces: std::path::PathBuf,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(mock: &MockProvider, extra: &[&str]) -> Serve {
    let dir = tempfile::tempdir().unwrap();
    let traces = dir.path().join("traces");
    let mut child = Command::new(rlm_bin())
        .args([
            "serve",
            "--port",
            "0",
            "--model",
            "compat/scripted",
            "--base-url",
            &mock.openai_base_url(),
            "--trace-dir",
            traces.to_str().unwrap(),
        ])
        .args(extra)
        .env_remove("OPENAI_API_KEY")
        .env_remove("RLM_SERVE_API_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start rlm serve");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let base = loop {
        let line = lines
            .next()
            .expect("rlm serve printed its address")
            .unwrap();
        if let Some(rest) = line.strip_prefix("rlm serve: ") {
            break rest.split('/').take(3).collect::<Vec<_>>().join("/");
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Serve {
        child,
        base,
        _dir: dir,
        traces,
    }
}

impl Serve {
    /// `127.0.0.1:PORT`.
    fn addr(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    /// The port.
    fn port(&self) -> &str {
        self.addr().rsplit(':').next().unwrap()
    }

    /// Send `request` as it is over a fresh connection (so any `Host` and `Origin` can be sent)
    /// and read the whole answer: (status, text). The request should say `Connection: close`.
    async fn raw(&self, request: &str) -> (u16, String) {
        let mut c = TcpStream::connect(self.addr()).await.unwrap();
        c.write_all(request.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), c.read_to_end(&mut out))
            .await
            .expect("the server answers")
            .unwrap();
        let text = String::from_utf8_lossy(&out).to_string();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
        (status, text)
    }

    /// GET `path` (with the bearer `key`, if any) and parse the JSON body.
    async fn get_json(&self, path: &str, key: Option<&str>) -> Value {
        let mut req = client().get(format!("{}{path}", self.base));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        req.send().await.unwrap().json().await.unwrap()
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// Every SSE message of a run, up to `done`: (event, data).
async fn follow(base: &str, id: &str) -> Vec<(String, Value)> {
    let resp = client()
        .get(format!("{base}/api/runs/{id}/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut stream = resp.bytes_stream();
    let (mut buf, mut out) = (String::new(), Vec::new());
    while let Some(chunk) = stream.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(i) = buf.find("\n\n") {
            let block: String = buf.drain(..i + 2).collect();
            let (mut ev, mut data) = (String::new(), String::new());
            for l in block.lines() {
                if let Some(e) = l.strip_prefix("event: ") {
                    ev = e.into();
                }
                if let Some(d) = l.strip_prefix("data: ") {
                    data.push_str(d);
                }
            }
            if data.is_empty() {
                continue;
            }
            let done = ev == "done";
            out.push((ev, serde_json::from_str(&data).unwrap()));
            if done {
                return out;
            }
        }
    }
    out
}

async fn start(base: &str, body: Value) -> reqwest::Response {
    client()
        .post(format!("{base}/api/runs"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn page_runs_stream_list_and_traces() {
    let mock = scripted(0).await;
    let s = serve(&mock, &["--allow-model", "openai/*"]);
    let page = client().get(format!("{}/", s.base)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("id=\"run\"") && !html.contains("https://"),
        "one self-contained page"
    );
    let info: Value = s.get_json("/api/info", None).await;
    assert_eq!(info["defaults"]["model"], "compat/scripted");
    let sample = client()
        .get(format!("{}/api/sample", s.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(sample.len() > 100_000);

    let r: Value = start(&s.base, json!({"context": DOC, "query": Q}))
        .await
        .json()
        .await
        .unwrap();
    let id = r["id"].as_str().unwrap().to_string();
    let msgs = follow(&s.base, &id).await;
    let kinds: Vec<&str> = msgs
        .iter()
        .map(|(e, d)| {
            if e == "rlm" {
                d["type"].as_str().unwrap()
            } else {
                e.as_str()
            }
        })
        .collect();
    assert_eq!(kinds.first(), Some(&"run_started"));
    assert!(
        kinds.contains(&"iteration") && kinds.contains(&"code_executed"),
        "{kinds:?}"
    );
    let (_, done) = msgs.last().unwrap();
    assert_eq!(
        (done["status"].as_str(), done["answer"].as_str()),
        (Some("answered"), Some("48213"))
    );
    assert!(
        done["usage"]["total"]["usage"]["input_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
    // Following a finished run replays it whole.
    assert_eq!(follow(&s.base, &id).await.len(), msgs.len());

    let runs: Value = s.get_json("/api/runs", None).await;
    assert_eq!(runs[0]["status"], "answered");
    let run: Value = s.get_json(&format!("/api/runs/{id}"), None).await;
    assert_eq!(run["events"].as_array().unwrap().len(), msgs.len() - 1);
    assert_eq!(run["summary"]["answer"], "48213");

    // The run's trace is served by name, and nothing outside the directory is.
    let traces: Value = s.get_json("/api/traces", None).await;
    let name = traces[0]["name"].as_str().unwrap().to_string();
    assert_eq!(run["trace"], name.as_str());
    let t: Value = s.get_json(&format!("/api/traces/{name}"), None).await;
    assert_eq!(t["events"].as_array().unwrap().len(), msgs.len() - 1);
    std::fs::write(s.traces.parent().unwrap().join("secret.jsonl"), "{}").unwrap();
    for bad in [
        "..%2Fsecret.jsonl",
        "%2E%2E%2Fsecret.jsonl",
        "..%5Csecret.jsonl",
        "missing.jsonl",
        "x.txt",
    ] {
        let r = client()
            .get(format!("{}/api/traces/{bad}", s.base))
            .send()
            .await
            .unwrap();
        assert!(
            r.status() == 400 || r.status() == 404,
            "{bad}: {}",
            r.status()
        );
        let e: Value = r.json().await.unwrap();
        assert!(e["error"]["message"].as_str().unwrap().len() > 10);
    }
    // A trace file with a negative time budget is a bad trace (400 with the line), not a panic.
    std::fs::write(
        s.traces.join("negative-time.jsonl"),
        format!(
            r#"{{"type":"run_started","rlm":"root","depth":0,"query":"q","settings":{{"root_model":"m","sub_model":"m","max_iterations":1,"max_depth":1,"max_output_chars":100,"budget":{{"max_time":-1}},"seed":"{}"}}}}"#,
            "0".repeat(64)
        ),
    )
    .unwrap();
    let r = client()
        .get(format!("{}/api/traces/negative-time.jsonl", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert!(
        e["error"]["message"].as_str().unwrap().contains("max_time"),
        "{e}"
    );

    // Bad input gets a message a person understands.
    for (body, says) in [
        (json!({"context": "", "query": Q}), "document is empty"),
        (json!({"context": DOC, "query": " "}), "question is empty"),
        (
            json!({"context": "{", "context_json": true, "query": Q}),
            "not valid JSON",
        ),
        (
            json!({"context": DOC, "query": Q, "model": "openai/gpt-5-mini"}),
            "OPENAI_API_KEY",
        ),
        (
            json!({"context": DOC, "query": Q, "budget_usd": -1}),
            "positive",
        ),
        // Numbers no duration holds are refused, not a panic in the handler.
        (
            json!({"context": DOC, "query": Q, "budget_seconds": 1e300}),
            "time budget must be a positive number",
        ),
        (
            json!({"context": DOC, "query": Q, "budget_seconds": -1}),
            "time budget must be a positive number",
        ),
    ] {
        let r = start(&s.base, body.clone()).await;
        assert_eq!(r.status(), 400, "{body}");
        let e: Value = r.json().await.unwrap();
        assert!(
            e["error"]["message"].as_str().unwrap().contains(says),
            "{e}"
        );
    }
    let r = client()
        .get(format!("{}/api/runs/r999", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // A spent budget ends the run with its reason, not a blank.
    let r: Value = start(
        &s.base,
        json!({"context": DOC, "query": Q, "budget_tokens": 10}),
    )
    .await
    .json()
    .await
    .unwrap();
    let msgs = follow(&s.base, r["id"].as_str().unwrap()).await;
    let (_, done) = msgs.last().unwrap();
    assert_eq!(done["status"], "exhausted");
    assert!(
        done["message"].as_str().unwrap().contains("token budget"),
        "{done}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_auth_cancel_and_disconnect() {
    let mock = scripted(1_000).await;
    let s = serve(
        &mock,
        &[
            "--api-key",
            "sekret",
            "--max-runs",
            "1",
            "--max-body-mb",
            "1",
        ],
    );
    let auth = |rb: reqwest::RequestBuilder| rb.bearer_auth("sekret");
    let r = start(&s.base, json!({"context": DOC, "query": Q})).await;
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("--api-key"));
    let r = client()
        .get(format!("{}/v1/models", s.base))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // The page itself loads without the key (it asks for it); nothing else answers without it.
    assert_eq!(
        client()
            .get(format!("{}/", s.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    for path in [
        "/api/info",
        "/api/sample",
        "/api/runs",
        "/api/traces",
        "/v1/models",
    ] {
        let r = client()
            .get(format!("{}{path}", s.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path} without the key");
        let r = auth(client().get(format!("{}{path}", s.base)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path} with the key");
    }

    let big = "x".repeat(2 << 20);
    let r = auth(client().post(format!("{}/api/runs", s.base)))
        .json(&json!({"context": big, "query": Q}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413, "body limit");

    let r: Value = auth(client().post(format!("{}/api/runs", s.base)))
        .json(&json!({"context": DOC, "query": Q}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = r["id"].as_str().unwrap().to_string();
    let r = auth(client().post(format!("{}/api/runs", s.base)))
        .json(&json!({"context": DOC, "query": Q}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429, "one run at a time");
    assert!(r.text().await.unwrap().contains("--max-runs"));
    let c: Value = auth(client().post(format!("{}/api/runs/{id}/cancel", s.base)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(c["cancelled"], true);
    let run: Value = s.get_json(&format!("/api/runs/{id}"), Some("sekret")).await;
    assert_eq!(run["status"], "cancelled");

    // A page run whose page goes away is cancelled; the slot frees.
    let r: Value = auth(client().post(format!("{}/api/runs", s.base)))
        .json(&json!({"context": DOC, "query": Q, "cancel_on_disconnect": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = r["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
        .to_string();
    let resp = auth(client().get(format!("{}/api/runs/{id}/events", s.base)))
        .send()
        .await
        .unwrap();
    let mut stream = resp.bytes_stream();
    let _ = stream.next().await;
    drop(stream);
    let mut status = String::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let run: Value = s.get_json(&format!("/api/runs/{id}"), Some("sekret")).await;
        status = run["status"].as_str().unwrap().to_string();
        if status != "running" {
            break;
        }
    }
    assert_eq!(status, "cancelled");
    let r = auth(client().post(format!("{}/api/runs", s.base)))
        .json(&json!({"context": DOC, "query": Q}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the slot was freed");
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_endpoint_answers_and_streams() {
    let mock = scripted(0).await;
    let s = serve(&mock, &[]);
    let models: Value = s.get_json("/v1/models", None).await;
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["rlm", "rlm:compat/scripted"]);
    let body = json!({"model": "rlm", "messages": [{"role": "system", "content": DOC}, {"role": "user", "content": Q}]});
    let r: Value = client()
        .post(format!("{}/v1/chat/completions", s.base))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["object"], "chat.completion");
    assert_eq!(r["choices"][0]["message"]["content"], "48213");
    assert_eq!(r["choices"][0]["finish_reason"], "stop");
    assert!(r["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        r["usage"]["total_tokens"].as_u64(),
        Some(
            r["usage"]["prompt_tokens"].as_u64().unwrap()
                + r["usage"]["completion_tokens"].as_u64().unwrap()
        )
    );

    let mut body = body;
    body["stream"] = json!(true);
    body["model"] = json!("rlm:compat/scripted");
    let text = client()
        .post(format!("{}/v1/chat/completions", s.base))
        .json(&body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let chunks: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(chunks.last(), Some(&"[DONE]"));
    let parsed: Vec<Value> = chunks[..chunks.len() - 1]
        .iter()
        .map(|c| serde_json::from_str(c).unwrap())
        .collect();
    let content: String = parsed
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "48213");
    assert!(
        parsed
            .iter()
            .any(|c| c["choices"][0]["delta"]["reasoning_content"]
                .as_str()
                .is_some_and(|p| p.contains("iteration"))),
        "progress streams"
    );
    let last = &parsed[parsed.len() - 1];
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert!(last["usage"]["prompt_tokens"].as_u64().unwrap() > 0);

    let r = client()
        .post(format!("{}/v1/chat/completions", s.base))
        .json(&json!({"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = client()
        .post(format!("{}/v1/chat/completions", s.base))
        .json(&json!({"model": "rlm", "messages": [{"role": "system", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("no user message"));
}

/// DNS rebinding: a page on another name pointed at 127.0.0.1 reaches the server with its own
/// name in `Host`; the server answers only to its address, `localhost` and allowed names.
#[tokio::test(flavor = "multi_thread")]
async fn foreign_host_names_are_refused() {
    let mock = scripted(0).await;
    let s = serve(&mock, &["--allow-host", "rlm.example"]);
    let port = s.port().to_string();
    let get = |host: &str, path: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
    };
    for host in [
        format!("evil.example:{port}"),
        "evil.example".to_string(),
        format!("10.9.8.7:{port}"),
        format!("localhost.evil.example:{port}"),
        format!("127.0.0.1.nip.io:{port}"),
    ] {
        for path in ["/", "/api/info", "/api/runs", "/v1/models"] {
            let (status, text) = s.raw(&get(&host, path)).await;
            assert_eq!(status, 403, "{host}{path}: {text}");
            assert!(text.contains("--allow-host"), "{text}");
        }
    }
    let post = format!(
        "POST /api/runs HTTP/1.1\r\nHost: evil.example:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    );
    assert_eq!(s.raw(&post).await.0, 403);
    let no_host = "GET /api/info HTTP/1.0\r\n\r\n";
    assert_eq!(s.raw(no_host).await.0, 400, "a request without Host");
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        "rlm.example".to_string(),
        "RLM.EXAMPLE:8443".to_string(),
    ] {
        let (status, text) = s.raw(&get(&host, "/api/info")).await;
        assert_eq!(status, 200, "{host}: {text}");
    }
}

/// Cross-site requests: a page on another site may not change the server's state (cancel a
/// run, start one), whatever the body; the server's own page and non-browser clients may.
#[tokio::test(flavor = "multi_thread")]
async fn cross_site_state_changes_are_refused() {
    let mock = scripted(1_000).await;
    let s = serve(&mock, &[]);
    let port = s.port().to_string();
    let r: Value = start(&s.base, json!({"context": DOC, "query": Q}))
        .await
        .json()
        .await
        .unwrap();
    let id = r["id"].as_str().unwrap().to_string();
    let cancel = |extra: &str| {
        format!(
            "POST /api/runs/{id}/cancel HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}\
             Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
    };
    for extra in [
        "Origin: http://evil.example\r\n".to_string(),
        format!("Origin: http://evil.example:{port}\r\n"),
        "Origin: http://127.0.0.1:1\r\n".to_string(),
        "Origin: null\r\n".to_string(),
        "Sec-Fetch-Site: cross-site\r\n".to_string(),
    ] {
        let (status, text) = s.raw(&cancel(&extra)).await;
        assert_eq!(status, 403, "{extra}: {text}");
        assert!(text.contains("cross-site"), "{text}");
    }
    let run: Value = s.get_json(&format!("/api/runs/{id}"), None).await;
    assert_eq!(run["status"], "running", "the refused cancels did nothing");
    let body = json!({"model": "rlm", "messages": [{"role": "user", "content": Q}]}).to_string();
    for path in ["/v1/chat/completions", "/api/runs"] {
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: http://evil.example\r\n\
             Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        assert_eq!(s.raw(&req).await.0, 403, "{path}");
    }
    // The page's own origin (what a browser sends from the page) may cancel.
    let (status, text) = s
        .raw(&cancel(&format!(
            "Origin: http://127.0.0.1:{port}\r\nSec-Fetch-Site: same-origin\r\n"
        )))
        .await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"cancelled\":true"), "{text}");
}

/// Slowloris: a client that sends its headers slower than the header timeout, or nothing at
/// all, is disconnected; other clients are still served.
#[tokio::test(flavor = "multi_thread")]
async fn stalled_connections_are_dropped() {
    let mock = scripted(0).await;
    let s = serve(&mock, &["--header-timeout-secs", "1"]);
    let mut slow = TcpStream::connect(s.addr()).await.unwrap();
    let mut idle = TcpStream::connect(s.addr()).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let t0 = Instant::now();
    let mut buf = [0u8; 1024];
    let dropped = loop {
        if t0.elapsed() > Duration::from_secs(8) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        if slow.write_all(b"X-Slow: 1\r\n").await.is_err() {
            break Some(t0.elapsed());
        }
        let read = tokio::time::timeout(Duration::from_millis(5), slow.read(&mut buf)).await;
        if let Ok(Ok(0) | Err(_)) = read {
            break Some(t0.elapsed());
        }
    };
    let dropped = dropped.expect("a connection trickling its headers is dropped");
    assert!(
        dropped < Duration::from_secs(4),
        "dropped after {dropped:?}"
    );
    let r = tokio::time::timeout(Duration::from_secs(4), idle.read(&mut buf)).await;
    assert!(
        matches!(r, Ok(Ok(0) | Err(_))),
        "a connection that sends nothing is dropped"
    );
    let info = s.get_json("/api/info", None).await;
    assert!(info["version"].is_string(), "others are still served");
}

/// `POST` headers declaring a body of `len` bytes, with `extra` headers; the body is not sent.
fn post_head(s: &Serve, path: &str, extra: &str, len: usize) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n{extra}\
         Content-Length: {len}\r\nConnection: close\r\n\r\n",
        s.addr()
    )
}

/// Slow clients cannot hold the server: connections that send a request's headers and then no
/// body fill the connection cap, and a newcomer still gets `/api/info` (the connection waiting
/// the longest is closed to make room); a client trickling its body is answered 408 once the
/// request timeout has passed since its first byte.
#[tokio::test(flavor = "multi_thread")]
async fn slow_clients_cannot_hold_the_server() {
    let mock = scripted(0).await;
    let s = serve(
        &mock,
        &["--max-connections", "32", "--request-timeout-secs", "2"],
    );
    let mut held = Vec::new();
    for _ in 0..100 {
        let mut c = TcpStream::connect(s.addr()).await.unwrap();
        c.write_all(post_head(&s, "/api/runs", "", 100).as_bytes())
            .await
            .unwrap();
        held.push(c);
    }
    // The newcomer comes after the moment a new connection gets to send its first bytes
    // (250 ms): while every open connection is younger than that and not yet read (a loaded
    // machine), a newcomer is answered 503 by design, and this test failed so once in CI.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let get = format!(
        "GET /api/info HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        s.addr()
    );
    for _ in 0..5 {
        let t0 = Instant::now();
        let (status, text) = s.raw(&get).await;
        assert_eq!(status, 200, "{text}");
        eprintln!("/api/info with 100 header-only clients: {:?}", t0.elapsed());
    }
    // At most the cap of them is still held: the others were closed (or, arriving while every
    // other connection was brand new, answered 503 and closed).
    let mut cut = 0;
    for c in &mut held {
        let mut buf = [0u8; 256];
        if tokio::time::timeout(Duration::from_millis(20), c.read(&mut buf))
            .await
            .is_ok()
        {
            cut += 1;
        }
    }
    assert!(cut >= 60, "only {cut} of 100 held connections were cut off");

    // A trickled body: the whole request must arrive within 2 s of its first byte.
    let mut trickle = TcpStream::connect(s.addr()).await.unwrap();
    trickle
        .write_all(post_head(&s, "/api/runs", "", 1_000).as_bytes())
        .await
        .unwrap();
    let t0 = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while t0.elapsed() < Duration::from_secs(10) {
        let _ = trickle.write_all(b" ").await;
        match tokio::time::timeout(Duration::from_millis(200), trickle.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 408") && answer.contains("--request-timeout-secs"),
        "a trickled body is cut off: {answer:?} after {:?}",
        t0.elapsed()
    );
    assert!(t0.elapsed() < Duration::from_secs(6), "{:?}", t0.elapsed());
}

/// Refusals come before the body is read: a missing key (401), a declared body over the limit
/// (413) and a full server (429) are answered to a client that has sent only headers.
#[tokio::test(flavor = "multi_thread")]
async fn refusals_come_before_the_body() {
    let mock = scripted(1_000).await;
    let s = serve(
        &mock,
        &["--api-key", "k", "--max-body-mb", "1", "--max-runs", "1"],
    );
    let key = "Authorization: Bearer k\r\n";
    for path in ["/api/runs", "/v1/chat/completions"] {
        let (status, text) = s.raw(&post_head(&s, path, "", 500_000)).await;
        assert_eq!(status, 401, "{path}: {text}");
        let (status, text) = s.raw(&post_head(&s, path, key, 2 << 20)).await;
        assert_eq!(status, 413, "{path}: {text}");
        assert!(text.contains("--max-body-mb"), "{text}");
    }
    let r = client()
        .post(format!("{}/api/runs", s.base))
        .bearer_auth("k")
        .json(&json!({"context": DOC, "query": Q}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the only run slot is taken");
    for path in ["/api/runs", "/v1/chat/completions"] {
        let (status, text) = s.raw(&post_head(&s, path, key, 500_000)).await;
        assert_eq!(status, 429, "{path}: {text}");
    }
}

/// VmHWM (peak resident memory) of a process, in KiB.
fn hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A request costs at most about three times its body until it is refused: bodies are parsed
/// into typed structures, the model checked before the conversation or document is read, and a
/// JSON document counted before it is built. 16 MiB bodies built to amplify a generic JSON parse
/// (a content of 8 M numbers, 1.2 M tiny messages, a JSON document of 8 M numbers); before,
/// the first raised the server's peak by about 590 MiB.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_costs_about_its_body() {
    let mock = scripted(0).await;
    let mb = 16 << 20;
    let numbers = format!("[{}0]", "0,".repeat(mb / 2 - 2));
    let bodies = [
        (
            "/v1/chat/completions",
            format!(
                r#"{{"model":"rlm:other/model","messages":[{{"role":"user","content":{numbers}}}]}}"#
            ),
            403,
        ),
        (
            "/v1/chat/completions",
            format!(
                r#"{{"model":"rlm","messages":[{}{{"role":"user","content":"q"}}]}}"#,
                r#"{"role":"u"},"#.repeat(mb / 13)
            ),
            400,
        ),
        (
            "/api/runs",
            json!({"query": "q", "model": "other/model", "context_json": true, "context": numbers})
                .to_string(),
            403,
        ),
        (
            "/api/runs",
            json!({"query": "q", "context_json": true, "context": numbers}).to_string(),
            413,
        ),
    ];
    for (path, body, status) in bodies {
        // A server of its own for each, so one peak does not hide another.
        let s = serve(&mock, &["--max-body-mb", "20"]);
        let pid = s.child.id();
        let before = hwm_kib(pid);
        let size = body.len() as u64;
        let r = client()
            .post(format!("{}{path}", s.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{path}");
        let grew = hwm_kib(pid) - before;
        eprintln!(
            "{path} ({status}): a {} MiB body raised the peak by {} MiB",
            size >> 20,
            grew / 1024
        );
        assert!(
            grew * 1024 < 3 * size,
            "{path}: a {} MiB body raised the peak by {} MiB",
            size >> 20,
            grew / 1024
        );
    }
}

/// Followers of runs' event streams cannot take every connection: at most a quarter of
/// `--max-connections` streams are open at once.
#[tokio::test(flavor = "multi_thread")]
async fn event_streams_are_capped() {
    let mock = scripted(1_000).await;
    let s = serve(&mock, &["--max-connections", "8"]);
    let r: Value = start(&s.base, json!({"context": DOC, "query": Q}))
        .await
        .json()
        .await
        .unwrap();
    let id = r["id"].as_str().unwrap().to_string();
    let url = format!("{}/api/runs/{id}/events", s.base);
    let a = client().get(&url).send().await.unwrap();
    let b = client().get(&url).send().await.unwrap();
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    let c = client().get(&url).send().await.unwrap();
    assert_eq!(c.status(), 429);
    drop((a, b));
    let mut status = 0;
    for _ in 0..50 {
        status = client().get(&url).send().await.unwrap().status().as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 200, "a closed stream frees its place");
}

/// Requests name only the models the operator allowed: a `local/<path>.gguf` id never makes the
/// server look at that path (a missing file and a junk one get the same refusal), and a
/// `local/NAME` id never starts a download.
#[tokio::test(flavor = "multi_thread")]
async fn requests_name_only_allowed_models() {
    let mock = scripted(0).await;
    let s = serve(&mock, &["--allow-model", "compat/other"]);
    let junk = s._dir.path().join("junk.gguf");
    std::fs::write(&junk, "not a model").unwrap();
    let missing = s._dir.path().join("missing.gguf");
    let mut refusals = Vec::new();
    for (field, id) in [
        ("model", format!("local/{}", junk.display())),
        ("model", format!("local/{}", missing.display())),
        ("sub_model", format!("local/{}", junk.display())),
        ("model", "local/qwen2.5-coder-0.5b".to_string()),
        ("model", "openai/gpt-5-mini".to_string()),
    ] {
        let mut body = json!({"context": DOC, "query": Q});
        body[field] = json!(id);
        let r = start(&s.base, body).await;
        assert_eq!(r.status(), 403, "{field} {id}");
        let e: Value = r.json().await.unwrap();
        let msg = e["error"]["message"].as_str().unwrap().to_string();
        assert!(
            msg.contains("not allowed") && msg.contains("--allow-model"),
            "{msg}"
        );
        refusals.push(msg.replace(&id, "ID"));
    }
    assert_eq!(
        refusals[0], refusals[1],
        "a junk file and a missing one look the same"
    );
    let r = client()
        .post(format!("{}/v1/chat/completions", s.base))
        .json(&json!({"model": format!("rlm:local/{}", junk.display()),
                      "messages": [{"role": "user", "content": Q}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // The allowed ones run, and are listed.
    let r = start(
        &s.base,
        json!({"context": DOC, "query": Q, "model": "compat/other"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let info = s.get_json("/api/info", None).await;
    assert_eq!(info["models"], json!(["compat/scripted", "compat/other"]));
    let models = s.get_json("/v1/models", None).await;
    assert_eq!(models["data"].as_array().unwrap().len(), 3);
    // A wildcard for local files is refused at start.
    let out = rlm_integration_tests::rlm(&["serve", "--port", "0", "--allow-model", "local/*"], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("one by one"));
}

/// Only the newest finished runs stay in memory (`--keep-runs`); an older one is read back from
/// its trace file, whole.
#[tokio::test(flavor = "multi_thread")]
async fn old_runs_move_out_to_their_traces() {
    let mock = scripted(0).await;
    let s = serve(&mock, &["--keep-runs", "2"]);
    let mut ids = Vec::new();
    for _ in 0..4 {
        let r: Value = start(&s.base, json!({"context": DOC, "query": Q}))
            .await
            .json()
            .await
            .unwrap();
        let id = r["id"].as_str().unwrap().to_string();
        let msgs = follow(&s.base, &id).await;
        assert_eq!(msgs.last().unwrap().1["answer"], "48213");
        ids.push(id);
    }
    let runs = s.get_json("/api/runs", None).await;
    let listed: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        [ids[3].as_str(), ids[2].as_str()],
        "only the newest two are kept"
    );
    let old = s.get_json(&format!("/api/runs/{}", ids[0]), None).await;
    assert_eq!(old["status"], "answered", "{old}");
    assert_eq!(old["summary"]["answer"], "48213");
    assert!(
        old["summary"]["message"]
            .as_str()
            .unwrap()
            .contains("trace")
    );
    assert!(old["events"].as_array().unwrap().len() > 3);
    let replay = follow(&s.base, &ids[0]).await;
    assert_eq!(replay.last().unwrap().0, "done");
    let r = client()
        .get(format!("{}/api/runs/r999", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// VmRSS of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Soak: 2,000 runs through the API (on loopback, 4 at a time, each with a 40 KB document and
/// large outputs) and the server's memory levels off. Minutes long: run it with
/// `cargo nextest run -p rlm-integration-tests --test serve_cli --run-ignored only soak`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "minutes long; run on purpose"]
async fn soak_2000_runs_memory_levels_off() {
    let mock = scripted(0).await;
    let s = serve(&mock, &["--max-runs", "8"]);
    let pid = s.child.id();
    let doc = format!("{}{DOC}", "Some filler text for the soak.\n".repeat(1_300));
    let started = Instant::now();
    let claimed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut figures = Vec::new();
    let total = 2_000;
    let mut next_mark = 250;
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (base, doc) = (s.base.clone(), doc.clone());
        let (claimed, done) = (claimed.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            let c = client();
            loop {
                let n = claimed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if n >= total {
                    return;
                }
                let body = json!({"model": "rlm", "messages": [
                    {"role": "system", "content": doc},
                    {"role": "user", "content": format!("{Q} (soak {n})")}]});
                let r: Value = c
                    .post(format!("{base}/v1/chat/completions"))
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                assert_eq!(r["choices"][0]["message"]["content"], "48213", "{r}");
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }));
    }
    while next_mark <= total {
        let n = done.load(std::sync::atomic::Ordering::SeqCst);
        if n >= next_mark {
            let kib = rss_kib(pid);
            eprintln!(
                "soak: {next_mark} runs, RSS {} MiB, {:.0} s",
                kib / 1024,
                started.elapsed().as_secs_f64()
            );
            figures.push((next_mark, kib));
            next_mark += 250;
        }
        assert!(
            started.elapsed() < Duration::from_secs(40 * 60),
            "the soak took too long"
        );
        if claimed.load(std::sync::atomic::Ordering::SeqCst) < total
            && workers.iter().any(|w| w.is_finished())
        {
            for w in workers {
                w.await.unwrap();
            }
            panic!("a soak worker stopped early");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for w in workers {
        w.await.unwrap();
    }
    let at = |n: usize| figures.iter().find(|f| f.0 == n).unwrap().1;
    let (at500, at1000, at2000) = (at(500), at(1000), at(2000));
    eprintln!(
        "soak: RSS at 500 / 1000 / 2000 runs: {} / {} / {} MiB",
        at500 / 1024,
        at1000 / 1024,
        at2000 / 1024
    );
    // Levelled off: the second thousand runs add less than a tenth of the first 500's level.
    assert!(
        at2000 < at1000 + at500 / 10 + 16 * 1024,
        "RSS still grows: {figures:?}"
    );
}

/// Soak through `rlm serve` on loopback: for `RLM_SERVE_SOAK_SECS` (default 45) seconds, normal
/// clients run questions through the OpenAI endpoint and the page's API while 300 clients send
/// request headers and trickle their bodies, 100 send headers and nothing (all of them
/// reconnecting 1 s after they are closed), and 1 sends 4 MiB
/// bodies built to amplify a JSON parse. The connection cap (256) is below the hostile
/// clients, so the server closes waiting connections all along. `/api/info`, asked every 200 ms
/// on a fresh connection (asked again if that connection was closed unread), answers within 1 s
/// (99 in 100; every one within 2 s), normal runs answer, and the server's memory stays level (the second half's peak
/// RSS within 64 MiB of the first half's).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_slow_and_amplifying_clients_mixed_into_traffic() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    let secs: u64 = std::env::var("RLM_SERVE_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(45);
    let mock = scripted(0).await;
    let s = serve(
        &mock,
        &[
            "--max-connections",
            "256",
            "--request-timeout-secs",
            "3",
            "--header-timeout-secs",
            "2",
            "--max-body-mb",
            "8",
            "--max-runs",
            "4",
        ],
    );
    let pid = s.child.id();
    let addr = s.addr().to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let (answered, busy, hostile_closed) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let mut tasks = Vec::new();

    // Hostile: header-only and trickling clients, reconnecting whenever they are closed.
    for i in 0..400 {
        let (addr, stop, closed) = (addr.clone(), stop.clone(), hostile_closed.clone());
        tasks.push(tokio::spawn(async move {
            let head = format!(
                "POST /api/runs HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
                 Content-Length: 4096\r\n\r\n"
            );
            while !stop.load(Ordering::SeqCst) {
                let Ok(mut c) = TcpStream::connect(&addr).await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                if c.write_all(head.as_bytes()).await.is_err() {
                    continue;
                }
                let mut buf = [0u8; 512];
                while !stop.load(Ordering::SeqCst) {
                    // 300 trickle a byte every 500 ms; 100 send nothing more.
                    if i < 300 && c.write_all(b" ").await.is_err() {
                        break;
                    }
                    let read = tokio::time::timeout(Duration::from_millis(500), c.read(&mut buf));
                    if let Ok(Ok(0) | Err(_)) = read.await {
                        break;
                    }
                }
                closed.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }));
    }

    // Hostile: 4 MiB bodies built to amplify a generic JSON parse, one after another.
    let numbers = format!("[{}0]", "0,".repeat((2 << 20) - 2));
    let amplifying = [
        (
            "/v1/chat/completions",
            format!(
                r#"{{"model":"rlm:other/model","messages":[{{"role":"user","content":{numbers}}}]}}"#
            ),
        ),
        (
            "/api/runs",
            json!({"query": "q", "context_json": true, "context": numbers}).to_string(),
        ),
        (
            "/v1/chat/completions",
            format!(
                r#"{{"model":"rlm","messages":[{}{{"role":"user","content":"q"}}]}}"#,
                r#"{"role":"u"},"#.repeat(300_000)
            ),
        ),
    ];
    let amplifying = Arc::new(amplifying);
    for k in 0..1 {
        let (base, stop, bodies) = (s.base.clone(), stop.clone(), amplifying.clone());
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut n = k;
            while !stop.load(Ordering::SeqCst) {
                let (path, body) = &bodies[n % bodies.len()];
                n += 1;
                if let Ok(r) = c
                    .post(format!("{base}{path}"))
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                {
                    let status = r.status().as_u16();
                    assert!(
                        [400, 403, 413, 429, 503].contains(&status),
                        "{path}: an amplifying body got {status}"
                    );
                }
            }
        }));
    }

    // Normal traffic: questions through both APIs. The server closes idle kept-alive
    // connections when it must make room, as HTTP allows: a request whose connection was closed
    // under it is sent again on a new one, as clients do (counted).
    let resent = Arc::new(AtomicU64::new(0));
    for k in 0..2 {
        let (base, stop, answered, busy, resent) = (
            s.base.clone(),
            stop.clone(),
            answered.clone(),
            busy.clone(),
            resent.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let c = client();
            while !stop.load(Ordering::SeqCst) {
                let sent = if k == 0 {
                    c.post(format!("{base}/v1/chat/completions"))
                        .json(&json!({"model": "rlm", "messages": [
                            {"role": "system", "content": DOC}, {"role": "user", "content": Q}]}))
                        .send()
                        .await
                } else {
                    c.post(format!("{base}/api/runs"))
                        .json(&json!({"context": DOC, "query": Q}))
                        .send()
                        .await
                };
                let Ok(r) = sent else {
                    resent.fetch_add(1, Ordering::SeqCst);
                    continue;
                };
                match r.status().as_u16() {
                    200 => {
                        let v: Value = r.json().await.unwrap();
                        if k == 0 {
                            assert_eq!(v["choices"][0]["message"]["content"], "48213", "{v}");
                        } else {
                            let id = v["id"].as_str().unwrap().to_string();
                            let status = loop {
                                let run = c.get(format!("{base}/api/runs/{id}")).send().await;
                                let Ok(run) = run else {
                                    resent.fetch_add(1, Ordering::SeqCst);
                                    continue;
                                };
                                let run: Value = run.json().await.unwrap();
                                if run["status"] != "running" {
                                    break run;
                                }
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            };
                            assert_eq!(status["answer"], "48213", "{status}");
                        }
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                    429 | 503 => {
                        busy.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    other => panic!("a normal run got {other}: {}", r.text().await.unwrap()),
                }
            }
        }));
    }

    // The probe and the memory samples.
    let started = Instant::now();
    let get = format!("GET /api/info HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let (mut latencies, mut rss, mut probe_retries) = (Vec::new(), Vec::new(), 0);
    while started.elapsed() < Duration::from_secs(secs) {
        // Asked on a new connection each time; one closed before it was read (in a burst of
        // arrivals) or refused busy is asked again, all within the same second.
        let t0 = Instant::now();
        let mut answer = None;
        while answer.is_none() && t0.elapsed() < Duration::from_secs(5) {
            let got = tokio::time::timeout(Duration::from_secs(5), async {
                let mut c = TcpStream::connect(&addr).await?;
                c.write_all(get.as_bytes()).await?;
                let mut out = Vec::new();
                c.read_to_end(&mut out).await?;
                Ok::<_, std::io::Error>(out)
            })
            .await;
            match got {
                Ok(Ok(out)) if out.starts_with(b"HTTP/1.1 200") => answer = Some(out),
                Ok(Ok(out)) if out.starts_with(b"HTTP/1.1 503") || out.is_empty() => {
                    probe_retries += 1;
                }
                Ok(Err(_)) => probe_retries += 1,
                other => panic!(
                    "/api/info did not answer 200 ({:?}): {other:?}",
                    t0.elapsed()
                ),
            }
        }
        let took = t0.elapsed();
        assert!(answer.is_some(), "/api/info did not answer in {took:?}");
        latencies.push(took);
        rss.push((started.elapsed(), rss_kib(pid)));
        if let Some(t) = tasks.iter().find(|t| t.is_finished()) {
            panic!("a soak client stopped early: {t:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    latencies.sort();
    let pct = |p: usize| latencies[(latencies.len() - 1) * p / 100];
    let half = rss.len() / 2;
    let peak = |r: &[(Duration, u64)]| r.iter().map(|x| x.1).max().unwrap_or(0);
    let (first, second) = (peak(&rss[..half]), peak(&rss[half..]));
    eprintln!(
        "soak {secs} s: /api/info p50 {:?} p99 {:?} max {:?} over {} probes ({probe_retries} \
         asked again); {} runs answered, {} refused busy, {} sent again; hostile connections \
         closed {}; peak RSS first half {} MiB, second half {} MiB",
        pct(50),
        pct(99),
        pct(100),
        latencies.len(),
        answered.load(Ordering::SeqCst),
        busy.load(Ordering::SeqCst),
        resent.load(Ordering::SeqCst),
        hostile_closed.load(Ordering::SeqCst),
        first / 1024,
        second / 1024
    );
    // Within 1 s: 99 probes in 100, and every one within 2 s (the test's own connect may wait
    // a SYN retransmission, 1 s, when loopback ports churn on a loaded machine).
    assert!(
        pct(99) < Duration::from_secs(1),
        "/api/info p99 {:?}",
        pct(99)
    );
    assert!(
        pct(100) < Duration::from_secs(2),
        "/api/info took {:?}",
        pct(100)
    );
    assert!(
        answered.load(Ordering::SeqCst) > 0,
        "no normal run answered"
    );
    assert!(
        hostile_closed.load(Ordering::SeqCst) > 400,
        "the hostile clients were not cut off"
    );
    assert!(
        second <= first + 64 * 1024,
        "RSS still grows: {first} KiB, then {second} KiB"
    );
}
