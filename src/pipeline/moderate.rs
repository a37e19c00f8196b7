//! Stage 2 of a turn: the user's message passes moderation before the
//! model sees it. Failing closed: a message that cannot be checked is not
//! answered.

use super::gate::Gate;
use crate::moderation::Verdict;

/// What moderation made of the user's message.
#[derive(Debug, Clone, PartialEq)]
pub enum InputCheck {
    /// Answer it; the verdict (when moderation is on) is logged with it.
    Allowed(Option<Verdict>),
    /// Refuse it.
    Blocked(Verdict),
    /// Moderation could not run: apologise, do not answer.
    Unavailable(String),
}

pub async fn input(gate: &Gate, text: &str) -> InputCheck {
    match gate.check(text).await {
        Err(reason) => InputCheck::Unavailable(reason),
        Ok(Some(v)) if v.flagged => InputCheck::Blocked(v),
        Ok(v) => InputCheck::Allowed(v),
    }
}

#[cfg(test)]
mod tests {
    use super::super::gate::testing::WordChecker;
    use super::*;

    #[tokio::test]
    async fn test_input_check() {
        let gate = Gate::new(WordChecker::new("idiot"));
        assert!(matches!(
            input(&gate, "hello").await,
            InputCheck::Allowed(Some(_))
        ));
        assert!(matches!(
            input(&gate, "you idiot").await,
            InputCheck::Blocked(_)
        ));
        assert!(matches!(
            input(&gate, "fail").await,
            InputCheck::Unavailable(_)
        ));
        assert_eq!(input(&Gate::off(), "x").await, InputCheck::Allowed(None));
    }
}
