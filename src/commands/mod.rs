//! One module per subcommand.

pub mod bench;
pub mod chat;
pub mod chat_template;
pub mod convert;
pub mod detokenize;
pub mod inspect;
pub mod kld;
pub mod perplexity;
pub mod run;
pub mod tokenize;
pub mod verify;
