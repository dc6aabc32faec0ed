//! Parameter checks shared by the generation endpoints.
//!
//! Ranges are OpenAI's (temperature `0..=2`, `top_p` in `(0, 1]`, penalties
//! `-2..=2`, `max_tokens >= 1`); a value outside its range is a 400 whose
//! `param` names the field, so clients learn which one to fix.

use std::collections::BTreeMap;

use hearth_engine::SamplingParams;

use crate::error::ApiError;
use crate::filter::LogitBias;
use crate::openai::{StreamOptions, fresh_u64};

/// The sampling fields of a request, as sent.
#[derive(Debug, Clone, Copy, Default)]
pub struct SamplingInput {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub top_k: Option<i64>,
    pub min_p: Option<f64>,
    pub repeat_penalty: Option<f64>,
}

/// OpenAI's default temperature when a request gives none.
pub const DEFAULT_TEMPERATURE: f64 = 1.0;

/// Checks the sampling fields and builds the engine's parameters. Without a
/// `seed`, each request draws a fresh one.
pub fn sampling(input: SamplingInput) -> Result<SamplingParams, ApiError> {
    let temperature = input.temperature.unwrap_or(DEFAULT_TEMPERATURE);
    in_range("temperature", temperature, 0.0, 2.0)?;
    let top_p = input.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::invalid(
            "top_p",
            format!("top_p must be greater than 0 and at most 1, got {top_p}"),
        ));
    }
    let presence_penalty = input.presence_penalty.unwrap_or(0.0);
    in_range("presence_penalty", presence_penalty, -2.0, 2.0)?;
    let frequency_penalty = input.frequency_penalty.unwrap_or(0.0);
    in_range("frequency_penalty", frequency_penalty, -2.0, 2.0)?;
    let top_k = input.top_k.unwrap_or(0);
    let top_k = usize::try_from(top_k).map_err(|_| {
        ApiError::invalid("top_k", format!("top_k must be at least 0, got {top_k}"))
    })?;
    let min_p = input.min_p.unwrap_or(0.0);
    in_range("min_p", min_p, 0.0, 1.0)?;
    let repeat_penalty = input.repeat_penalty.unwrap_or(1.0);
    if !(repeat_penalty.is_finite() && repeat_penalty > 0.0) {
        return Err(ApiError::invalid(
            "repeat_penalty",
            format!("repeat_penalty must be greater than 0, got {repeat_penalty}"),
        ));
    }
    Ok(SamplingParams {
        temperature: temperature as f32,
        top_k,
        top_p: top_p as f32,
        min_p: min_p as f32,
        repeat_penalty: repeat_penalty as f32,
        presence_penalty: presence_penalty as f32,
        frequency_penalty: frequency_penalty as f32,
        // Any 64-bit pattern is a seed; negative values keep their bits.
        seed: input.seed.map_or_else(fresh_u64, |seed| seed as u64),
        ..SamplingParams::default()
    })
}

fn in_range(param: &str, value: f64, low: f64, high: f64) -> Result<(), ApiError> {
    if (low..=high).contains(&value) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            param,
            format!("{param} must be between {low} and {high}, got {value}"),
        ))
    }
}

/// `max_tokens` (or `max_completion_tokens`, named by `param`): at least 1.
pub fn max_tokens(value: Option<i64>, param: &str) -> Result<Option<usize>, ApiError> {
    match value {
        None => Ok(None),
        Some(n) if n >= 1 => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
        Some(n) => Err(ApiError::invalid(
            param,
            format!("{param} must be at least 1, got {n}"),
        )),
    }
}

/// `(stream, include_usage)`: `stream_options` only with `stream`.
pub fn streaming(
    stream: Option<bool>,
    options: Option<&StreamOptions>,
) -> Result<(bool, bool), ApiError> {
    let stream = stream.unwrap_or(false);
    if options.is_some() && !stream {
        return Err(ApiError::invalid(
            "stream_options",
            "stream_options is only allowed when stream is true",
        ));
    }
    Ok((
        stream,
        options.and_then(|o| o.include_usage).unwrap_or(false),
    ))
}

/// `n` / `best_of`: only one choice per request is served.
pub fn single_choice(value: Option<i64>, param: &str) -> Result<(), ApiError> {
    match value {
        None | Some(1) => Ok(()),
        Some(n) => Err(ApiError::invalid(
            param,
            format!("{param} must be 1 (this server returns one choice per request), got {n}"),
        )),
    }
}

/// The request's `model` must be the served one, spelled exactly.
pub fn model(requested: &str, served: &str) -> Result<(), ApiError> {
    if requested == served {
        Ok(())
    } else {
        Err(ApiError::model_not_found(requested, served))
    }
}

/// `logit_bias`: token id (as a string) → bias in `-100..=100`.
pub fn logit_bias(
    bias: Option<&BTreeMap<String, f64>>,
    vocab_size: usize,
) -> Result<Option<LogitBias>, ApiError> {
    let Some(bias) = bias.filter(|b| !b.is_empty()) else {
        return Ok(None);
    };
    let mut entries = Vec::with_capacity(bias.len());
    for (key, &value) in bias {
        let token = key
            .parse::<u32>()
            .ok()
            .filter(|&t| (t as usize) < vocab_size)
            .ok_or_else(|| {
                ApiError::invalid(
                    "logit_bias",
                    format!(
                        "logit_bias key '{key}' is not a token id of this model (0..{vocab_size})"
                    ),
                )
            })?;
        if !(-100.0..=100.0).contains(&value) {
            return Err(ApiError::invalid(
                "logit_bias",
                format!("logit_bias values must be between -100 and 100, got {value} for '{key}'"),
            ));
        }
        entries.push((token, value as f32));
    }
    Ok(Some(LogitBias::new(entries)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param_of(result: Result<impl std::fmt::Debug, ApiError>) -> String {
        match result {
            Err(ApiError::InvalidRequest { param: Some(p), .. }) => p,
            other => panic!("expected a 400 with a param, got {other:?}"),
        }
    }

    #[test]
    fn out_of_range_values_name_their_field() {
        let cases = [
            (
                SamplingInput {
                    temperature: Some(2.5),
                    ..Default::default()
                },
                "temperature",
            ),
            (
                SamplingInput {
                    temperature: Some(-0.1),
                    ..Default::default()
                },
                "temperature",
            ),
            (
                SamplingInput {
                    top_p: Some(0.0),
                    ..Default::default()
                },
                "top_p",
            ),
            (
                SamplingInput {
                    top_p: Some(1.5),
                    ..Default::default()
                },
                "top_p",
            ),
            (
                SamplingInput {
                    presence_penalty: Some(2.1),
                    ..Default::default()
                },
                "presence_penalty",
            ),
            (
                SamplingInput {
                    frequency_penalty: Some(-3.0),
                    ..Default::default()
                },
                "frequency_penalty",
            ),
            (
                SamplingInput {
                    top_k: Some(-1),
                    ..Default::default()
                },
                "top_k",
            ),
            (
                SamplingInput {
                    min_p: Some(1.5),
                    ..Default::default()
                },
                "min_p",
            ),
            (
                SamplingInput {
                    repeat_penalty: Some(0.0),
                    ..Default::default()
                },
                "repeat_penalty",
            ),
        ];
        for (input, param) in cases {
            assert_eq!(param_of(sampling(input)), param);
        }
    }

    #[test]
    fn bounds_are_inclusive() {
        let input = SamplingInput {
            temperature: Some(2.0),
            top_p: Some(1.0),
            presence_penalty: Some(-2.0),
            frequency_penalty: Some(2.0),
            seed: Some(-1),
            ..Default::default()
        };
        let params = sampling(input).unwrap();
        assert_eq!(params.temperature, 2.0);
        assert_eq!(params.seed, u64::MAX);
        params.validate().unwrap();
    }

    #[test]
    fn max_tokens_must_be_positive() {
        assert_eq!(param_of(max_tokens(Some(0), "max_tokens")), "max_tokens");
        assert_eq!(
            param_of(max_tokens(Some(-4), "max_completion_tokens")),
            "max_completion_tokens"
        );
        assert_eq!(max_tokens(Some(7), "max_tokens").unwrap(), Some(7));
    }

    #[test]
    fn logit_bias_keys_must_be_token_ids() {
        let map: BTreeMap<String, f64> = [("abc".to_string(), 1.0)].into();
        assert_eq!(param_of(logit_bias(Some(&map), 100)), "logit_bias");
        let map: BTreeMap<String, f64> = [("100".to_string(), 1.0)].into();
        assert_eq!(param_of(logit_bias(Some(&map), 100)), "logit_bias");
        let map: BTreeMap<String, f64> = [("5".to_string(), 101.0)].into();
        assert_eq!(param_of(logit_bias(Some(&map), 100)), "logit_bias");
        let map: BTreeMap<String, f64> = [("5".to_string(), -100.0)].into();
        assert!(logit_bias(Some(&map), 100).unwrap().is_some());
        assert!(logit_bias(Some(&BTreeMap::new()), 100).unwrap().is_none());
    }
}
