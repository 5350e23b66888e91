//! One module per subcommand.

pub mod args;
pub mod bench;
pub mod chat;
pub mod chat_template;
pub mod convert;
pub mod detokenize;
pub mod eval;
pub mod finetune;
pub mod inspect;
pub mod kld;
pub mod merge;
pub mod perplexity;
pub mod run;
pub mod signals;
pub mod tokenize;
pub mod verify;
