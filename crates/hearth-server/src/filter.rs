//! Token filters the server builds from request fields.
//!
//! The engine takes one [`TokenFilter`] per request; a request may need
//! several (a `logit_bias` and a `response_format` constraint), so
//! [`FilterChain`] applies them in order: biases first, then the constraint's
//! mask, which has the last word on what may be sampled.

use hearth_engine::TokenFilter;

/// OpenAI's `logit_bias`: adds a bias to the logits of chosen tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct LogitBias {
    entries: Vec<(u32, f32)>,
}

impl LogitBias {
    /// `entries` are `(token id, bias)`; ids beyond the logits are ignored.
    pub fn new(entries: Vec<(u32, f32)>) -> Self {
        Self { entries }
    }
}

impl TokenFilter for LogitBias {
    fn mask_logits(&mut self, logits: &mut [f32]) -> Result<(), String> {
        for &(token, bias) in &self.entries {
            if let Some(logit) = logits.get_mut(token as usize) {
                *logit += bias;
            }
        }
        Ok(())
    }

    fn commit(&mut self, _token: u32) -> Result<(), String> {
        Ok(())
    }

    fn is_finished(&self) -> bool {
        false
    }
}

/// Several filters applied as one, in order.
#[derive(Default)]
pub struct FilterChain {
    filters: Vec<Box<dyn TokenFilter>>,
}

impl std::fmt::Debug for FilterChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilterChain")
            .field("filters", &self.filters.len())
            .finish()
    }
}

impl FilterChain {
    pub fn push(&mut self, filter: Box<dyn TokenFilter>) {
        self.filters.push(filter);
    }

    /// The chain as the engine's one filter: `None` when empty, the filter
    /// itself when alone.
    pub fn into_filter(mut self) -> Option<Box<dyn TokenFilter>> {
        match self.filters.len() {
            0 => None,
            1 => self.filters.pop(),
            _ => Some(Box::new(self)),
        }
    }
}

impl TokenFilter for FilterChain {
    fn mask_logits(&mut self, logits: &mut [f32]) -> Result<(), String> {
        self.filters
            .iter_mut()
            .try_for_each(|filter| filter.mask_logits(logits))
    }

    fn commit(&mut self, token: u32) -> Result<(), String> {
        self.filters
            .iter_mut()
            .try_for_each(|filter| filter.commit(token))
    }

    fn is_finished(&self) -> bool {
        self.filters.iter().any(|filter| filter.is_finished())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Allows only token 0 and finishes after one commit.
    struct OnlyZero {
        done: bool,
    }

    impl TokenFilter for OnlyZero {
        fn mask_logits(&mut self, logits: &mut [f32]) -> Result<(), String> {
            logits
                .iter_mut()
                .skip(1)
                .for_each(|l| *l = f32::NEG_INFINITY);
            Ok(())
        }
        fn commit(&mut self, _token: u32) -> Result<(), String> {
            self.done = true;
            Ok(())
        }
        fn is_finished(&self) -> bool {
            self.done
        }
    }

    #[test]
    fn bias_adds_to_chosen_logits_and_ignores_unknown_ids() {
        let mut bias = LogitBias::new(vec![(1, 5.0), (2, -100.0), (99, 1.0)]);
        let mut logits = [0.5, 0.5, 0.5];
        bias.mask_logits(&mut logits).unwrap();
        assert_eq!(logits, [0.5, 5.5, -99.5]);
    }

    #[test]
    fn chain_applies_every_filter_in_order() {
        let mut chain = FilterChain::default();
        chain.push(Box::new(LogitBias::new(vec![(0, 1.0), (1, 10.0)])));
        chain.push(Box::new(OnlyZero { done: false }));
        let mut filter = chain.into_filter().unwrap();
        let mut logits = [0.0, 0.0, 0.0];
        filter.mask_logits(&mut logits).unwrap();
        assert_eq!(logits, [1.0, f32::NEG_INFINITY, f32::NEG_INFINITY]);
        assert!(!filter.is_finished());
        filter.commit(0).unwrap();
        assert!(filter.is_finished());
    }

    #[test]
    fn empty_chain_is_no_filter() {
        assert!(FilterChain::default().into_filter().is_none());
    }
}
