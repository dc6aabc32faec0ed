//! A short conversation: one answer at once, then one streamed.
//!
//! `cargo run -p hearth --example chat_session [MODEL]` (default: the
//! default model, pulled on first use).

use std::io::Write;

use hearth::{GenerationOptions, Model};

fn main() -> Result<(), hearth::Error> {
    let name = std::env::args()
        .nth(1)
        .unwrap_or_else(|| hearth::DEFAULT_MODEL.to_string());
    let model = Model::load(&name)?;
    let mut session = model
        .session()
        .system("You are a helpful assistant. Answer in one or two sentences.")
        .options(GenerationOptions {
            max_tokens: 96,
            ..GenerationOptions::default()
        });

    let question = "What is the capital of France?";
    println!("> {question}");
    println!("{}", session.respond(question)?);

    let follow_up = "Tell me one fact about it.";
    println!("> {follow_up}");
    for delta in session.stream(follow_up)? {
        print!("{}", delta?);
        std::io::stdout().flush().ok();
    }
    println!();

    println!(
        "\n({} messages in the transcript)",
        session.transcript().len()
    );
    Ok(())
}
