//! Custom tools: host functions that model code calls like Python functions. Here the model
//! can look prices up in a catalogue the program holds (the file's products, priced by the
//! program), and every call shows in the run's events.
//!
//! ```text
//! cargo run -p rlm --example tools -- orders.txt "What do the orders in the file cost in total?"
//! ```
//!
//! The model is `RLM_MODEL` (default `openai/gpt-5-mini`); for an OpenAI-compatible server use
//! `RLM_MODEL=compat/NAME RLM_BASE_URL=http://host:port/v1`.

use std::collections::HashMap;
use std::sync::Arc;

use rlm::serde_json::json;
use rlm::{Event, Rlm, Tool};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(question)) = (args.next(), args.next()) else {
        return Err("usage: tools FILE QUESTION".into());
    };
    let model = std::env::var("RLM_MODEL").unwrap_or_else(|_| "openai/gpt-5-mini".into());

    let catalogue: Arc<HashMap<&str, f64>> =
        Arc::new([("A-100", 12.5), ("B-200", 3.75), ("C-300", 99.0)].into());
    let price_of = Tool::new(
        "price_of",
        "The catalogue price of a product, in euros.",
        json!({
            "type": "object",
            "properties": {"sku": {"type": "string", "description": "the product code, e.g. A-100"}},
            "required": ["sku"],
        }),
        move |args| {
            let catalogue = catalogue.clone();
            async move {
                let sku = args["sku"].as_str().ok_or("sku must be a string")?;
                match catalogue.get(sku) {
                    Some(price) => Ok(json!(price)),
                    None => Err(format!("no product {sku} in the catalogue")),
                }
            }
        },
    )?;

    let rlm = Rlm::builder(rlm::model(&model)?).tool(price_of).build()?;
    let document = tokio::fs::read_to_string(&path).await?;
    let result = rlm.run(document, &question).await?;
    let calls = result
        .events
        .iter()
        .filter(|e| matches!(e, Event::ToolCall { .. }))
        .count();
    println!("{}", result.answer.as_deref().unwrap_or("(no answer)"));
    eprintln!("{calls} tool calls, {} iterations", result.iterations);
    Ok(())
}
