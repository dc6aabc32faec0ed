//! Tool calling: the model calls a Rust function, reads its result and
//! answers. The transcript shows every step.
//!
//! `cargo run -p hearth --example tools [MODEL]`

use hearth::{GenerationOptions, JsonSchema, Model, ToolChoice, ToolError, schemars};
use serde::Deserialize;
use serde_json::json;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum Unit {
    Celsius,
    Fahrenheit,
}

#[derive(Debug, Deserialize, JsonSchema)]
struct WeatherArgs {
    /// The city, e.g. "Oslo".
    city: String,
    unit: Unit,
}

fn main() -> Result<(), hearth::Error> {
    let name = std::env::args()
        .nth(1)
        .unwrap_or_else(|| hearth::DEFAULT_MODEL.to_string());
    let model = Model::load(&name)?;

    let weather = hearth::tool(
        "get_weather",
        "Get the current weather in a city",
        |args: WeatherArgs| {
            if args.city.trim().is_empty() {
                return Err(ToolError::InvalidArguments("the city is empty".into()));
            }
            let celsius = 4.0;
            let temperature = match args.unit {
                Unit::Celsius => celsius,
                Unit::Fahrenheit => celsius * 9.0 / 5.0 + 32.0,
            };
            Ok(json!({"city": args.city, "sky": "light rain", "temperature": temperature}))
        },
    );

    let mut agent = model
        .session()
        .options(GenerationOptions {
            max_tokens: 96,
            ..GenerationOptions::default()
        })
        .tool(weather)
        // Call a tool first; the second round must answer in text.
        .tool_choice(ToolChoice::Required)
        .max_rounds(2);
    let answer = agent.respond("What's the weather like in Oslo?")?;

    for message in agent.transcript() {
        println!("[{}] {}", message.role, message.content);
    }
    println!("\nAnswer: {answer}");
    Ok(())
}
