//! `synapse generate`: stream a continuation of a prompt.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use synapse::engine::gpu::{GpuContext, GpuOptions};
use synapse::generate::generate;
use synapse::model::ModelDir;
use synapse::sampling::SamplingParams;

/// Which engine runs the shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// The plain-Rust reference engine.
    Cpu,
    /// WGSL compute shaders through wgpu (Vulkan, Metal, DX12; lavapipe without a GPU).
    Gpu,
}

/// Arguments of `synapse generate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model directory made by `synapse split`; the default model (fetched on first use) when omitted.
    #[arg(long)]
    model: Option<PathBuf>,
    /// The text to continue.
    #[arg(long)]
    prompt: String,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Sample only among the K most likely tokens (0: all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Sample only among the most likely tokens whose probabilities add up to P.
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Penalise tokens already seen (1: off; 1.1 is a common choice).
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
    /// Seed of the sampler: the same seed gives the same text.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Engine that runs the shards.
    #[arg(long, value_enum, default_value_t = Backend::Cpu)]
    backend: Backend,
    /// After the text, print one JSON line: {"prompt_ids": [...], "ids": [...], "text": "..."}.
    #[arg(long)]
    json: bool,
    /// Treat the prompt as a user message and render it with the model's chat template (as
    /// /v1/chat/completions does) instead of continuing it as plain text.
    #[arg(long)]
    chat: bool,
    /// Generate through a running coordinator (`http://HOST:PORT`) instead of in this process
    /// (its API key, if it has one, is read from SYNAPSE_API_KEY).
    #[arg(long)]
    coordinator: Option<String>,
}

pub fn run(args: Args) -> Result<()> {
    let params = SamplingParams {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        repetition_penalty: args.repetition_penalty,
        seed: args.seed,
    };
    params.validate().map_err(anyhow::Error::msg)?;
    if let Some(url) = &args.coordinator {
        if args.chat {
            anyhow::bail!(
                "--chat works in this process only; through a coordinator use its /v1/chat/completions"
            );
        }
        return remote(url, &args, params);
    }
    let dir = synapse::fetch::resolve_model(args.model.as_deref())?;
    let model = ModelDir::open(&dir)?;
    let tok = model.tokenizer()?;
    let prompt = if args.chat {
        chat_prompt(&model, &tok, &args.prompt)?
    } else {
        args.prompt.clone()
    };
    let prompt_ids = tok.encode(&prompt)?;
    let ctx = model.manifest.config.context_length;
    if prompt_ids.len() >= ctx {
        anyhow::bail!(
            "the prompt is {} tokens; the model's context is {ctx}",
            prompt_ids.len()
        );
    }
    let max_tokens = args.max_tokens.min(ctx - prompt_ids.len());
    let mut pipe = match args.backend {
        Backend::Cpu => model.cpu_pipeline()?,
        Backend::Gpu => {
            let gpu = GpuContext::new(&GpuOptions::default())?;
            eprintln!("synapse: {}", gpu.describe().replace('\n', "\nsynapse: "));
            model.gpu_pipeline(&gpu)?
        }
    };
    let mut out = std::io::stdout().lock();
    let eos = model.manifest.config.eos_token_ids.clone();
    let g = generate(
        &mut pipe,
        &tok,
        &prompt_ids,
        &params,
        max_tokens,
        &eos,
        |piece| {
            let _ = out.write_all(piece.as_bytes());
            let _ = out.flush();
        },
    )?;
    writeln!(out)?;
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&g)?)?;
    }
    let secs = |d: std::time::Duration| d.as_secs_f64().max(1e-9);
    eprintln!(
        "synapse: {} prompt tokens in {:.2} s ({:.1} tok/s), {} generated in {:.2} s ({:.1} tok/s)",
        g.prompt_ids.len(),
        g.prefill_time.as_secs_f64(),
        g.prompt_ids.len() as f64 / secs(g.prefill_time),
        g.ids.len(),
        g.decode_time.as_secs_f64(),
        g.ids.len() as f64 / secs(g.decode_time),
    );
    Ok(())
}

/// Streams a generation from a coordinator's `/api/generate` (NDJSON).
fn remote(url: &str, args: &Args, sampling: SamplingParams) -> Result<()> {
    use futures_util::StreamExt;
    use synapse::coordinator::session::{GenerateEvent, GenerateRequest};
    let req = GenerateRequest {
        stream: !args.json,
        prompt: args.prompt.clone(),
        max_tokens: args.max_tokens,
        sampling,
        speculate: None,
    };
    let endpoint = format!("{}/api/generate", url.trim_end_matches('/'));
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let mut post = reqwest::Client::new().post(&endpoint);
        // A coordinator started with --api-key wants it on /api/generate too.
        if let Ok(key) = std::env::var("SYNAPSE_API_KEY") {
            post = post.bearer_auth(key);
        }
        let resp = post
            .header("content-type", "application/json")
            .body(serde_json::to_string(&req)?)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach the coordinator at {endpoint}: {e}"))?;
        if !resp.status().is_success() {
            let status = resp.status();
            anyhow::bail!("the coordinator answered {status}: {}", resp.text().await.unwrap_or_default());
        }
        let mut out = std::io::stdout().lock();
        let mut prompt_ids = Vec::new();
        let mut body = resp.bytes_stream();
        let mut buf: Vec<u8> = Vec::new();
        while let Some(chunk) = body.next().await {
            buf.extend_from_slice(&chunk?);
            while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                let event: GenerateEvent = serde_json::from_slice(&line)
                    .map_err(|e| anyhow::anyhow!("bad line from the coordinator: {e}"))?;
                match event {
                    GenerateEvent::Start { prompt_ids: p, .. } => prompt_ids = p,
                    GenerateEvent::Token { text, .. } => {
                        out.write_all(text.as_bytes())?;
                        out.flush()?;
                    }
                    GenerateEvent::Done { ids, text, tokens_per_second, .. } => {
                        writeln!(out)?;
                        if args.json {
                            writeln!(out, "{}", serde_json::json!({"prompt_ids": prompt_ids, "ids": ids, "text": text}))?;
                        }
                        eprintln!("synapse: {} tokens at {tokens_per_second:.1} tok/s through {url}", ids.len());
                        return Ok(());
                    }
                    GenerateEvent::Error { message } | GenerateEvent::Unavailable { message, .. } => {
                        anyhow::bail!("the coordinator: {message}")
                    }
                }
            }
        }
        anyhow::bail!("the coordinator closed the stream before the generation ended")
    })
}

/// `prompt` as the single user turn of the model's chat template, ready for the assistant.
fn chat_prompt(
    model: &ModelDir,
    tok: &synapse::tokenizer::Tokenizer,
    prompt: &str,
) -> Result<String> {
    use synapse::coordinator::openai::template::{ChatTemplate, TemplateMessage};
    let m = &model.manifest;
    let Some(src) = &m.chat_template else {
        anyhow::bail!("--chat: this model has no chat template (a base model); drop --chat");
    };
    let token = |id: Option<u32>| {
        id.and_then(|i| tok.inner().id_to_token(i))
            .unwrap_or_default()
    };
    let t = ChatTemplate::new(
        src,
        &token(m.config.bos_token_id),
        &token(m.config.eos_token_ids.first().copied()),
    )?;
    Ok(t.render(
        &[TemplateMessage {
            role: "user".into(),
            content: prompt.into(),
        }],
        true,
    )?)
}
