//! `ember detokenize`: print the text a sequence of token ids decodes to.

use std::io::Write;
use std::path::PathBuf;

use crate::report::CliResult;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model file (.ember).
    #[arg(short, long)]
    model: PathBuf,
    /// Token ids, as separate arguments or separated by commas / spaces
    /// (`1 2 3`, `1,2,3`, `[1, 2, 3]`).
    #[arg(required = true, num_args = 1..)]
    ids: Vec<String>,
    /// Print JSON: {"text": ...}.
    #[arg(long)]
    json: bool,
}

/// Parses ids written as numbers separated by commas, spaces or brackets.
fn parse_ids(args: &[String]) -> Result<Vec<u32>, String> {
    args.iter()
        .flat_map(|a| a.split(|c: char| c == ',' || c == '[' || c == ']' || c.is_whitespace()))
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<u32>()
                .map_err(|_| format!("{s:?} is not a token id (a non-negative integer)"))
        })
        .collect()
}

pub fn run(args: Args) -> CliResult {
    let ids = parse_ids(&args.ids)?;
    let model = super::args::load_model(&args.model)?;
    let tok = model.tokenizer();
    let n = tok.n_tokens();
    if let Some((pos, &id)) = ids.iter().enumerate().find(|(_, &id)| id as usize >= n) {
        return Err(format!(
            "token id {id} (position {pos}) is out of range: the vocabulary has {n} tokens (0..={})",
            n - 1
        )
        .into());
    }
    let text = tok.decode(&ids);
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::json!({ "text": text }))?;
    } else {
        writeln!(out, "{text}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_id_lists() {
        let a = |v: &[&str]| parse_ids(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(a(&["1", "2,3", "[4, 5]"]), Ok(vec![1, 2, 3, 4, 5]));
        assert!(a(&["-1"]).unwrap_err().contains("\"-1\""));
        assert!(a(&["x"]).is_err());
    }
}
