//! `rlm-mock`: the mock provider as a standalone server, answering with the scripted eval model
//! (see `rlm_testkit::scripted`). It lets `rlm eval`, `rlm run` and `rlm serve` run end to end
//! with no hosted model: point them at `--base-url http://127.0.0.1:PORT/v1` with
//! `--model compat/scripted`.
//!
//! Usage: `rlm-mock [--port N] [--url-file PATH] [--delay-ms MS]`. Prints the base URL on
//! stdout (and writes it to PATH), then serves until killed; `--delay-ms` makes every reply
//! take that long (to watch a run stream live).

use std::net::SocketAddr;

use rlm_testkit::{MockProvider, Reply};

#[tokio::main]
async fn main() {
    let mut port = 0u16;
    let mut url_file = None;
    let mut delay = std::time::Duration::ZERO;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--port", Some(p)) => match p.parse() {
                Ok(p) => port = p,
                Err(_) => fail(&format!("--port {p:?} is not a port number")),
            },
            ("--url-file", Some(f)) => url_file = Some(f),
            ("--delay-ms", Some(d)) => match d.parse() {
                Ok(ms) => delay = std::time::Duration::from_millis(ms),
                Err(_) => fail(&format!("--delay-ms {d:?} is not a number")),
            },
            _ => fail("usage: rlm-mock [--port N] [--url-file PATH] [--delay-ms MS]"),
        }
    }
    let mock = match MockProvider::start_on(SocketAddr::from(([127, 0, 0, 1], port))).await {
        Ok(m) => m,
        Err(e) => fail(&format!("cannot listen on 127.0.0.1:{port}: {e}")),
    };
    mock.set_recording(false);
    mock.respond_with(move |request| {
        let messages = request.messages();
        let text = rlm_testkit::scripted::respond(&messages);
        let input: usize = messages.iter().map(|(_, t)| t.chars().count()).sum();
        let reply = Reply::TextWithUsage {
            input: (input / 4).max(1) as u64,
            output: (text.chars().count() / 4).max(1) as u64,
            cached: 0,
            text,
        };
        if delay.is_zero() {
            reply
        } else {
            Reply::delayed(delay, reply)
        }
    });
    let url = mock.openai_base_url();
    println!("{url}");
    if let Some(f) = url_file
        && let Err(e) = std::fs::write(&f, &url)
    {
        fail(&format!("cannot write {f}: {e}"));
    }
    std::future::pending::<()>().await;
}

fn fail(message: &str) -> ! {
    eprintln!("rlm-mock: {message}");
    std::process::exit(2);
}
