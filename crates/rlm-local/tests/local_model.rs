//! The local model for real: chat template, greedy determinism, token counts, prefix reuse.
//! Needs the 0.5B weights (fetched on first use into ~/.cache/rlm/models).

use rlm_llm::{CallTag, ChatModel, ChatRequest, FinishReason, Message};
use rlm_local::{LocalModel, LocalOptions};

fn model() -> LocalModel {
    LocalModel::load(
        "local/qwen2.5-coder-0.5b",
        LocalOptions {
            n_ctx: 4096,
            ..LocalOptions::default()
        },
    )
    .expect("load local/qwen2.5-coder-0.5b")
}

fn ask(q: &str) -> ChatRequest {
    let mut r = ChatRequest::new(vec![
        Message::system("You are a helpful assistant. Be brief."),
        Message::user(q),
    ]);
    r.params.max_output_tokens = Some(48);
    r.tag = CallTag::sub_call(1);
    r
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_through_the_models_own_chat_template_deterministically() {
    let m = model();
    let a = m
        .chat(ask("What is 2 + 3? Reply with the number only."))
        .await
        .unwrap();
    assert!(a.text.contains('5'), "{:?}", a.text);
    assert_eq!(
        a.finish_reason,
        FinishReason::Stop,
        "ended with the end-of-turn token"
    );
    assert!(
        !a.text.contains("<|im_end|>") && !a.text.contains("<|im_start|>"),
        "template tokens are not text: {:?}",
        a.text
    );
    let b = m
        .chat(ask("What is 2 + 3? Reply with the number only."))
        .await
        .unwrap();
    assert_eq!(a.text, b.text, "greedy decoding repeats exactly");
    assert_eq!(a.cost_usd, Some(0.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn counts_tokens_and_reuses_the_cached_prefix() {
    let m = model();
    let first = m.chat(ask("Name one colour.")).await.unwrap();
    let u1 = first.usage;
    assert!(u1.input_tokens > 10 && u1.output_tokens > 0, "{u1:?}");
    assert!(u1.output_tokens <= 48);
    // The same conversation, one turn longer: only the new tokens are evaluated.
    let mut next = ask("Name one colour.");
    next.messages.push(Message::assistant(first.text.clone()));
    next.messages.push(Message::user("Name another."));
    let second = m.chat(next).await.unwrap();
    let u2 = second.usage;
    assert!(u2.input_tokens > u1.input_tokens);
    assert!(
        u2.cached_input_tokens >= u1.input_tokens - 1,
        "prefix reused: {u1:?} then {u2:?}"
    );
    // A different conversation shares only the system prompt.
    let other = m.chat(ask("Say yes.")).await.unwrap();
    assert!(
        other.usage.cached_input_tokens < u2.input_tokens / 2,
        "{:?}",
        other.usage
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn root_replies_end_after_their_first_code_block() {
    let m = model();
    let mut r = ChatRequest::new(vec![
        Message::system("Reply with one Python code block in ```repl fences that prints 1 + 1."),
        Message::user("Go."),
    ]);
    r.params.max_output_tokens = Some(120);
    r.tag = CallTag::ROOT;
    let a = m.chat(r).await.unwrap();
    if let Some(open) = a.text.find("```") {
        let rest = &a.text[open + 3..];
        assert!(
            rest.trim_end().ends_with("```"),
            "cut after the closing fence: {:?}",
            a.text
        );
    }
}

#[test]
fn unknown_names_and_non_gguf_files_are_refused() {
    let err = LocalModel::load("local/not-a-model", LocalOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("local/qwen2.5-coder-0.5b"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("fake.gguf");
    std::fs::write(&fake, b"not a model at all").unwrap();
    let err = LocalModel::load(
        &format!("local/{}", fake.display()),
        LocalOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("is not a GGUF model file"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_conversation_longer_than_the_context_is_an_error_not_a_crash() {
    let m = LocalModel::load(
        "local/qwen2.5-coder-0.5b",
        LocalOptions {
            n_ctx: 256,
            ..LocalOptions::default()
        },
    )
    .unwrap();
    let long = "word ".repeat(600);
    let err = m.chat(ask(&long)).await.unwrap_err().to_string();
    assert!(
        err.contains("more than the local model's context of 256 tokens"),
        "{err}"
    );
    // The model still answers short requests afterwards.
    assert!(!m.chat(ask("Say yes.")).await.unwrap().text.is_empty());
}
