//! The answers a newcomer sees first are right: `rlm run` with no key, on the local 0.5B model
//! (greedy decoding, two threads, so the same everywhere), answers plain questions about the
//! sample patient history, the README's first. `just test` fetches the model first; each
//! question takes about 10 s on two cores.
//!
//! These assert the answers' facts, not their wording: a prompt or loop change that makes the
//! small model copy a literal from its prompt's examples (it answered `2` and `A-` once) fails
//! here.

use rlm_integration_tests::ask_sample;

/// Answer `query` about the sample document offline and check that `facts` are all in the
/// answer (ignoring case).
fn answers_with(query: &str, facts: &[&str]) {
    let out = ask_sample(query, &["--local-threads", "2"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_lowercase();
    assert_eq!(out.status.code(), Some(0), "{query}: {answer:?}\n{stderr}");
    for fact in facts {
        assert!(
            answer.contains(&fact.to_lowercase()),
            "{query}: the answer {answer:?} lacks {fact:?}\n{stderr}"
        );
    }
}

#[test]
fn local_model_answers_the_readme_question() {
    answers_with(
        "Which new drug allergy was recorded for the patient, and what did the drug cause?",
        &["sulfamethoxazole", "rash"],
    );
}

#[test]
fn local_model_answers_the_record_number() {
    answers_with("What is the patient's record number?", &["SYN-0042-7781"]);
}

#[test]
fn local_model_answers_the_date_of_birth() {
    answers_with("What is the patient's date of birth?", &["1968-05-21"]);
}

#[test]
fn local_model_answers_the_clinic() {
    answers_with(
        "Which clinic provides the patient's primary care?",
        &["Riverside"],
    );
}

#[test]
fn local_model_answers_what_to_avoid() {
    answers_with(
        "Which antibiotics should the patient avoid?",
        &["sulfonamide"],
    );
}
