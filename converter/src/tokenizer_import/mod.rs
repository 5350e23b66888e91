//! Builds `TokenizerSpec`s from the tokenizer formats found next to checkpoints.
