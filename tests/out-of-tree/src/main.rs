//! `rlm-out-of-tree FILE QUESTION`: answer a question about a file with the model `RLM_MODEL`
//! (an OpenAI-compatible server's with `RLM_MODEL=compat/NAME RLM_BASE_URL=...`).

use rlm::{Budget, Rlm};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path, question] = args.as_slice() else {
        return Err("usage: rlm-out-of-tree FILE QUESTION".into());
    };
    let model = std::env::var("RLM_MODEL")?;
    let rlm = Rlm::builder(rlm::model(&model)?)
        .max_iterations(10)
        .budget(Budget { max_usd: Some(1.0), ..Budget::default() })
        .build()?;
    let document = tokio::fs::read_to_string(path).await?;
    let result = rlm.run(document, question).await?;
    println!("{}", result.answer.ok_or("no answer")?);
    Ok(())
}
