//! Answer a question about a file of any size.
//!
//! ```text
//! cargo run -p rlm --example ask_file -- data/synthetic_patient_data.md "Which drug is the patient allergic to?"
//! ```
//!
//! The model is `RLM_MODEL` (default `openai/gpt-5-mini`, key from `OPENAI_API_KEY`); for an
//! OpenAI-compatible server use `RLM_MODEL=compat/NAME RLM_BASE_URL=http://host:port/v1`.

use rlm::{Budget, Rlm, StopReason};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(question)) = (args.next(), args.next()) else {
        return Err("usage: ask_file FILE QUESTION".into());
    };
    let model = std::env::var("RLM_MODEL").unwrap_or_else(|_| "openai/gpt-5-mini".into());

    let rlm = Rlm::builder(rlm::model(&model)?)
        .max_iterations(10)
        .budget(Budget {
            max_usd: Some(0.50),
            ..Budget::default()
        })
        .build()?;
    let document = tokio::fs::read_to_string(&path).await?;
    let result = rlm.run(document, &question).await?;

    match (&result.answer, &result.stop) {
        (Some(answer), StopReason::Final) => println!("{answer}"),
        (answer, stop) => {
            eprintln!("stopped early ({stop:?}); best answer: {answer:?}");
            std::process::exit(1);
        }
    }
    eprintln!(
        "{} iterations, {} tokens, ${:.4}",
        result.iterations,
        result.usage.total.usage.total(),
        result.usage.total.cost_usd
    );
    Ok(())
}
