//! A multi-turn session: the REPL and the conversation persist across questions, so a later
//! question can build on what earlier ones found (variables stay defined).
//!
//! ```text
//! cargo run -p rlm --example session -- notes.txt "First question?" "Follow-up?"
//! ```
//!
//! The model is `RLM_MODEL` (default `openai/gpt-5-mini`); for an OpenAI-compatible server use
//! `RLM_MODEL=compat/NAME RLM_BASE_URL=http://host:port/v1`.

use rlm::Rlm;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        return Err("usage: session FILE QUESTION...".into());
    };
    let questions: Vec<String> = args.collect();
    let model = std::env::var("RLM_MODEL").unwrap_or_else(|_| "openai/gpt-5-mini".into());

    let rlm = Rlm::builder(rlm::model(&model)?).build()?;
    let document = tokio::fs::read_to_string(&path).await?;
    let mut session = rlm.session(document).await?;
    for question in &questions {
        let result = session.ask(question).await;
        println!("Q: {question}");
        println!("A: {}", result.answer.as_deref().unwrap_or("(no answer)"));
    }
    let usage = session.usage();
    eprintln!(
        "{} questions, {} tokens, ${:.4}",
        session.questions(),
        usage.total.usage.total(),
        usage.total.cost_usd
    );
    Ok(())
}
