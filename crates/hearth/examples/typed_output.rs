//! Structured output: the answer is a Rust value, generated under its JSON
//! schema, first as a whole and then as growing snapshots.
//!
//! `cargo run -p hearth --example typed_output [MODEL]`

use hearth::{GenerationOptions, JsonSchema, Model, schemars};
use serde::Deserialize;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum Mood {
    Happy,
    Calm,
    Grumpy,
}

/// A fictional person.
#[derive(Debug, Deserialize, JsonSchema)]
struct Person {
    /// First and last name.
    #[schemars(length(max = 32))]
    name: String,
    age: u8,
    mood: Mood,
    /// One or two hobbies.
    #[schemars(length(min = 1, max = 2), inner(length(max = 24)))]
    hobbies: Vec<String>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let name = std::env::args()
        .nth(1)
        .unwrap_or_else(|| hearth::DEFAULT_MODEL.to_string());
    let model = Model::load(&name)?;
    let mut session = model.session().options(GenerationOptions {
        max_tokens: 128,
        ..GenerationOptions::default()
    });

    let person: Person = session.respond_as("Invent a person who likes the sea.")?;
    show(&person);

    println!("\nAnother one, as it is written:");
    let mut last = serde_json::Value::Null;
    for snapshot in session.stream_as::<Person>("Invent a person who lives in a city.")? {
        last = snapshot?;
        println!("  {last}");
    }
    let person: Person = serde_json::from_value(last)?;
    show(&person);
    Ok(())
}

fn show(person: &Person) {
    println!(
        "{}, {} years old, {:?}, likes {}",
        person.name,
        person.age,
        person.mood,
        person.hobbies.join(", ")
    );
}
