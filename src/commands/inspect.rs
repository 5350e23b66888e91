use std::path::PathBuf;

use ember_runtime::config::{Attention, ModelConfig, RopeScaling as Scaling};
use ember_runtime::format::{Activation, Architecture, HyperParams, RopePairing, RopeScaling};
use ember_runtime::tokenizer::TokenizerSpec;
use ember_runtime::Model;

use crate::report::{human_bytes, CliResult};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model file (.ember).
    model: PathBuf,
    /// Print everything as JSON.
    #[arg(long)]
    json: bool,
    /// List every tensor (default: the first 12 and a count).
    #[arg(long)]
    all_tensors: bool,
}

/// Prints the file's header, hyperparameters, tokenizer, metadata and tensors, as
/// text or (with `--json`) as one JSON object.
pub fn run(args: Args) -> CliResult {
    let model = super::args::load_model(&args.model)?;
    let names = TagNames::of(model.hparams());
    if args.json {
        let json = inspect_json(&args, &model, &names);
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    print_header_and_hparams(&args, &model, &names);
    print_tokenizer_and_metadata(&model);
    print_tensors(&model, args.all_tensors);
    Ok(())
}

/// Display names of the hyperparameters' enumerated ids (`?` for unknown ones).
struct TagNames {
    arch: &'static str,
    act: &'static str,
    pairing: &'static str,
    scaling: &'static str,
}

impl TagNames {
    /// The names of `hp`'s architecture, activation, RoPE pairing and scaling.
    fn of(hp: &HyperParams) -> Self {
        Self {
            arch: Architecture::from_u32(hp.architecture).map_or("?", |a| a.name()),
            act: Activation::from_u32(hp.activation).map_or("?", |a| a.name()),
            pairing: RopePairing::from_u32(hp.rope_pairing).map_or("?", |a| a.name()),
            scaling: RopeScaling::from_u32(hp.rope_scaling).map_or("?", |a| a.name()),
        }
    }
}

/// The piece of token `id`, if there is one.
fn token_name(spec: &TokenizerSpec, id: Option<u32>) -> Option<String> {
    id.and_then(|i| spec.tokens.get(i as usize).cloned())
}

/// Everything `inspect --json` prints.
fn inspect_json(args: &Args, model: &Model, names: &TagNames) -> serde_json::Value {
    let f = model.file();
    let h = &f.header;
    let hp = model.hparams();
    let spec = model.tokenizer().spec();
    let name_of = |id: Option<u32>| token_name(spec, id);
    let TagNames {
        arch,
        act,
        pairing,
        scaling,
    } = names;
    let tensors: Vec<_> = f
        .tensors
        .iter()
        .map(|t| {
            serde_json::json!({
                "name": t.name, "dtype": t.dtype.name(), "shape": t.shape,
                "offset": t.offset, "bytes": t.nbytes, "crc32": t.checksum,
            })
        })
        .collect();
    serde_json::json!({
        "file": args.model,
        "file_bytes": h.file_size,
        "version": format!("{}.{}", h.version_major, h.version_minor),
        "tensor_alignment": h.tensor_alignment,
        "data_offset": h.data.offset,
        "params": model.n_params(),
        "hparams": {
            "architecture": arch, "activation": act, "dim": hp.dim,
            "n_layers": hp.n_layers, "n_heads": hp.n_heads, "n_kv_heads": hp.n_kv_heads,
            "head_dim": hp.head_dim, "ffn_dim": hp.ffn_dim, "vocab_size": hp.vocab_size,
            "max_context": hp.max_context, "sliding_window": hp.sliding_window,
            "rope_pairing": pairing, "rope_dim": hp.rope_dim, "rope_theta": hp.rope_theta,
            "rope_scaling": scaling, "rope_scaling_factor": hp.rope_scaling_factor,
            "norm_eps": hp.norm_eps, "tied_output": hp.tied_output(),
            "qkv_bias": hp.qkv_bias(), "attn_out_bias": hp.attn_out_bias(), "mlp_bias": hp.mlp_bias(),
        },
        "block": block_json(model.config()),
        "tokenizer": {
            "kind": format!("{:?}", spec.kind), "pre_split": format!("{:?}", spec.pre_split),
            "tokens": spec.tokens.len(), "merges": spec.merges.len(),
            "bos": name_of(spec.bos), "eos": name_of(spec.eos), "add_bos": spec.add_bos,
        },
        "chat_template": model.chat_template(),
        "metadata": model.metadata().iter().map(|(k, v)| (k.clone(), serde_json::Value::from(v.clone()))).collect::<serde_json::Map<String, serde_json::Value>>(),
        "tensors": tensors,
    })
}

/// Prints the file line, the format line and the "hyperparameters" section.
fn print_header_and_hparams(args: &Args, model: &Model, names: &TagNames) {
    let f = model.file();
    let h = &f.header;
    let hp = model.hparams();
    let TagNames {
        arch,
        act,
        pairing,
        scaling,
    } = names;
    println!("{}", args.model.display());
    println!(
        "  format {}.{}, {} ({} tensors, data at {}, alignment {})",
        h.version_major,
        h.version_minor,
        human_bytes(h.file_size),
        f.tensors.len(),
        h.data.offset,
        h.tensor_alignment
    );
    println!("hyperparameters");
    println!(
        "  architecture {arch}, {:.2} M parameters",
        model.n_params() as f64 / 1e6
    );
    println!(
        "  dim {}, layers {}, heads {} (kv {}, head_dim {}), ffn {} ({act}), vocab {}, context {}",
        hp.dim,
        hp.n_layers,
        hp.n_heads,
        hp.n_kv_heads,
        hp.head_dim,
        hp.ffn_dim,
        hp.vocab_size,
        hp.max_context
    );
    println!(
        "  rope {pairing} over {} dims, theta {}, scaling {scaling} (x{}); {} eps {:e}",
        hp.rope_dim,
        hp.rope_theta,
        hp.rope_scaling_factor,
        model.config().norm.name(),
        hp.norm_eps
    );
    println!(
        "  tied output {}, qkv bias {}, sliding window {}",
        hp.tied_output(),
        hp.qkv_bias(),
        if hp.sliding_window == 0 {
            "none".to_string()
        } else {
            hp.sliding_window.to_string()
        }
    );
    println!("  block: {}", block_summary(model.config()));
}

/// Prints the "tokenizer" section, the chat template's size and the "metadata" section.
fn print_tokenizer_and_metadata(model: &Model) {
    let spec = model.tokenizer().spec();
    let name_of = |id: Option<u32>| token_name(spec, id);
    println!("tokenizer");
    println!(
        "  {:?} ({:?} split), {} tokens, {} merges, bos {}, eos {}, add_bos {}",
        spec.kind,
        spec.pre_split,
        spec.tokens.len(),
        spec.merges.len(),
        name_of(spec.bos).unwrap_or_else(|| "none".into()),
        name_of(spec.eos).unwrap_or_else(|| "none".into()),
        spec.add_bos
    );
    match model.chat_template() {
        Some(t) => println!("chat template: {} bytes", t.len()),
        None => println!("chat template: none"),
    }
    println!("metadata");
    for (k, v) in model.metadata() {
        println!("  {k} = {v}");
    }
}

/// Prints the "tensors" table: every tensor with `all`, else the first 12 and a count.
fn print_tensors(model: &Model, all: bool) {
    let tensors = &model.file().tensors;
    println!("tensors");
    println!(
        "  {:<32} {:>5} {:>16} {:>12} {:>10}",
        "name", "dtype", "shape", "offset", "size"
    );
    let n = if all { tensors.len() } else { 12 };
    for t in tensors.iter().take(n) {
        let shape = t
            .shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("x");
        println!(
            "  {:<32} {:>5} {:>16} {:>12} {:>10}",
            t.name,
            t.dtype.name(),
            shape,
            t.offset,
            human_bytes(t.nbytes)
        );
    }
    if tensors.len() > n {
        println!("  … {} more (use --all-tensors)", tensors.len() - n);
    }
}

/// The block's options in one line: what differs from a plain Llama layer.
fn block_summary(c: &ModelConfig) -> String {
    let mut parts = vec![format!(
        "{} {} MLP",
        c.norm.name(),
        if c.gated() { "gated" } else { "plain" }
    )];
    let flags = [
        (c.qk_norm, "QK norm"),
        (c.post_attn_norm, "post-attention norm"),
        (c.post_ffn_norm, "post-FFN norm"),
        (c.attn_out_bias, "output bias"),
        (c.mlp_bias, "MLP biases"),
    ];
    parts.extend(
        flags
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, n)| n.to_string()),
    );
    let sliding = c
        .layers
        .iter()
        .filter(|l| l.attention != Attention::Global)
        .count();
    if sliding > 0 {
        parts.push(format!("{sliding} of {} layers sliding", c.layers.len()));
    }
    if let Some(local) = c.ropes.get(1) {
        parts.push(format!("local RoPE theta {}", local.theta));
    }
    if let Scaling::Yarn { factor, low, high } = c.ropes[0].scaling {
        parts.push(format!(
            "YaRN x{factor} (ramp {low}..{high}, attention factor {})",
            c.ropes[0].attn_factor
        ));
    }
    if c.ropes[0].freq_factors {
        parts.push("RoPE frequency factors".into());
    }
    parts.push(format!("attention scale {}", c.attn_scale));
    if let Some(s) = c.embed_scale {
        parts.push(format!("embedding scale {s}"));
    }
    if let Some(s) = c.logit_softcap {
        parts.push(format!("logit soft-cap {s}"));
    }
    parts.join(", ")
}

fn block_json(c: &ModelConfig) -> serde_json::Value {
    serde_json::json!({
        "norm": c.norm.name(),
        "mlp": if c.gated() { "gated" } else { "plain" },
        "qk_norm": c.qk_norm,
        "post_attn_norm": c.post_attn_norm,
        "post_ffn_norm": c.post_ffn_norm,
        "sliding_layers": c.layers.iter().enumerate()
            .filter(|(_, l)| l.attention != Attention::Global)
            .map(|(i, _)| i).collect::<Vec<_>>(),
        "rope_theta_local": c.ropes.get(1).map(|r| r.theta),
        "rope_attn_factor": c.ropes[0].attn_factor,
        "rope_freq_factors": c.ropes[0].freq_factors,
        "attn_scale": c.attn_scale,
        "embed_scale": c.embed_scale,
        "logit_softcap": c.logit_softcap,
    })
}
