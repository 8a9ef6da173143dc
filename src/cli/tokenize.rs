//! `decache tokenize`: token ids of a text, as llama.cpp's llama-tokenize.
use super::args::{ModelArgs, TextArgs};
use super::load::load_model;
use clap::Args;

#[derive(Args, Debug)]
pub struct TokenizeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub text: TextArgs,
    /// Print only the ids, as a list: [1, 2, 3].
    #[arg(long = "ids")]
    pub ids: bool,
    /// Do not add BOS/EOS even if the model asks for them.
    #[arg(long = "no-bos")]
    pub no_bos: bool,
    /// Treat special-token text (e.g. <|im_start|>) as plain text.
    #[arg(long = "no-parse-special")]
    pub no_parse_special: bool,
    /// Print the token count only.
    #[arg(long = "show-count")]
    pub show_count: bool,
}

pub fn run(a: &TokenizeArgs) -> Result<(), decache::Error> {
    let text = a.text.text()?;
    let (model, _) = load_model(&a.model)?;
    let tok = &model.tokenizer;
    let ids = tok.encode(&text, !a.no_bos, !a.no_parse_special)?;
    if a.show_count {
        outln!("{}", ids.len());
    } else if a.ids {
        outln!("{ids:?}");
    } else {
        for id in &ids {
            outln!("{id:>6} -> '{}'", String::from_utf8_lossy(&tok.token_to_piece(*id, true)));
        }
    }
    Ok(())
}
