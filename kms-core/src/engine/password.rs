//! GetRandomPassword: from the OS CSPRNG, each character drawn uniformly (rejection sampling, no
//! modulo bias) from the allowed alphabet; with RequireEachIncludedType one character of each
//! included class is placed first and the result is shuffled (Fisher–Yates, also unbiased).

use rand::seq::SliceRandom;
use rand::Rng;

use super::authz::Resource;
use super::{Caller, Engine};
use crate::api::{GetRandomPasswordRequest, GetRandomPasswordResponse, SecretString};
use crate::error::{KmsError, Result};

const LOWER: &str = "abcdefghijklmnopqrstuvwxyz";
const UPPER: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const DIGITS: &str = "0123456789";
const PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

impl Engine {
    pub fn get_random_password(
        &self,
        caller: &Caller,
        req: GetRandomPasswordRequest,
    ) -> Result<GetRandomPasswordResponse> {
        self.view()?;
        self.allow(caller, "kms:GetRandomPassword", Resource::Any)?;
        let len = req.password_length.unwrap_or(32);
        if !(8..=128).contains(&len) {
            return Err(KmsError::invalid("PasswordLength", "it must lie between 8 and 128"));
        }
        let excluded: Vec<char> = req.exclude_characters.as_deref().unwrap_or("").chars().collect();
        let classes: Vec<Vec<char>> = [
            (LOWER, req.exclude_lowercase),
            (UPPER, req.exclude_uppercase),
            (DIGITS, req.exclude_numbers),
            (PUNCTUATION, req.exclude_punctuation),
        ]
        .iter()
        .filter(|(_, ex)| !ex.unwrap_or(false))
        .map(|(set, _)| set.chars().filter(|c| !excluded.contains(c)).collect::<Vec<char>>())
        .filter(|set| !set.is_empty())
        .collect();
        let alphabet: Vec<char> = classes.iter().flatten().copied().collect();
        if alphabet.is_empty() {
            return Err(KmsError::invalid("ExcludeCharacters", "every character class is excluded"));
        }
        let mut rng = rand::rngs::OsRng;
        let mut out: Vec<char> = Vec::with_capacity(len as usize);
        if req.require_each_included_type.unwrap_or(true) {
            for set in &classes {
                out.push(set[rng.gen_range(0..set.len())]);
            }
        }
        while out.len() < len as usize {
            out.push(alphabet[rng.gen_range(0..alphabet.len())]);
        }
        out.shuffle(&mut rng);
        Ok(GetRandomPasswordResponse { random_password: SecretString::new(out.into_iter().collect()) })
    }
}
