"""Build Tailor's default base model: a tokenizer and a tiny Llama trained on the corpus.

`tailor model build` runs ``build_default_model``. It trains a byte-level BPE
tokenizer on the synthetic corpus (simulation/corpus.py), then a small
``LlamaForCausalLM`` on (chat prompt, styled answer) pairs with the loss on the
answer tokens only, and writes a Hugging Face folder that loads with
``AutoTokenizer`` / ``AutoModelForCausalLM``. The styles are drawn uniformly,
so a temperature-1 sample answers in each style with similar odds: the room
that per-user PPO moves in.

The build is deterministic: fixed seeds, one thread and deterministic kernels,
so the same command on the same kind of CPU rewrites ``model.safetensors`` bit
for bit (``--verify`` checks that against the shipped file).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from simulation.corpus import Example
from simulation.corpus_versions import check_corpus_version, corpus_examples, iter_corpus

BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"
PAD_TOKEN = "<pad>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, *ROLE_TOKENS)  # ids 0..5 in this order

# Each message opens with its role token; an assistant message closes with eos, which
# is also where generation stops. The prompt ends with <|assistant|>, the first token the
# model sees before an answer in training.
CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}<|system|>{{ message['content'] }}"
    "{%- elif message['role'] == 'user' -%}<|user|>{{ message['content'] }}"
    "{%- elif message['role'] == 'assistant' -%}<|assistant|>{{ message['content'] }}{{ eos_token }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)


@dataclass(frozen=True)
class BuildConfig:
    """Everything that decides the bytes of the default model."""

    seed: int = 0  # seeds the corpus, the initialisation and the batch order
    vocab_size: int = 2048  # BPE vocabulary, special tokens included
    tokenizer_examples: int = 20_000  # corpus examples the tokenizer is trained on
    hidden_size: int = 160  # model width
    intermediate_size: int = 448  # MLP width
    num_layers: int = 4  # transformer blocks
    num_heads: int = 4  # attention heads (no grouped-query attention)
    context_length: int = 512  # max_position_embeddings
    steps: int = 500  # optimiser steps (CORPUS_STEPS: 1000 for corpus v3)
    row_length: int = 256  # tokens per packed training row
    rows_per_batch: int = 4  # packed rows per step (~7 examples each)
    learning_rate: float = 3e-3  # peak AdamW learning rate
    warmup_steps: int = 30  # linear warmup, then cosine decay to 0
    weight_decay: float = 0.01  # AdamW weight decay on matrices
    # 2: the everyday corpus (the shipped model); 3: plus prompts that invite
    # misbehaviours (issue 12's next default, not shipped until the closed loop is tuned
    # on it: README, "Honest and harmless for everyone")
    corpus_version: int = 2

    def __post_init__(self) -> None:
        check_corpus_version(self.corpus_version)
        for name in ("vocab_size", "hidden_size", "num_layers", "steps", "rows_per_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}; "
                "pick a width that is a multiple of the head count"
            )
        if self.row_length < 128:
            raise ValueError(
                f"row_length={self.row_length} is shorter than the longest corpus example "
                "(~90 tokens) plus room to pack; use 128 or more"
            )
        if self.vocab_size <= 256 + len(SPECIAL_TOKENS):
            raise ValueError(
                f"vocab_size={self.vocab_size} leaves no room for merges beyond the 256 bytes "
                f"and {len(SPECIAL_TOKENS)} special tokens; use 1024 or more"
            )


# Training steps per corpus version. Corpus v3 has four prompt categories and misbehaviours
# that hang on the prompt: after 500 steps a v3 model still garbled the new answers and
# sampled the invited misbehaviours at about their overall rate, not their rate on the
# prompts that invite them.
CORPUS_STEPS: dict[int, int] = {2: 500, 3: 1000}


def build_config_for(
    corpus_version: int = 2, seed: int = 0, steps: int | None = None
) -> BuildConfig:
    """The default build config of a corpus version (v2: exactly ``BuildConfig()``'s)."""
    check_corpus_version(corpus_version)
    steps = CORPUS_STEPS[corpus_version] if steps is None else steps
    return BuildConfig(seed=seed, steps=steps, corpus_version=corpus_version)


@dataclass(frozen=True)
class BuildResult:
    """What a build wrote, for the CLI and BUILD.md."""

    out_dir: Path
    weights_sha256: str
    weights_bytes: int
    parameters: int
    final_loss: float
    seconds: float


def training_text(example: Example) -> str:
    """The full chat text of one example, as the tokenizer sees it in training."""
    return f"{example.prompt}\n{example.answer}"


def train_tokenizer(config: BuildConfig) -> PreTrainedTokenizerFast:
    """Train the byte-level BPE tokenizer on the corpus and wrap it for transformers."""
    examples = corpus_examples(config.corpus_version, config.tokenizer_examples, config.seed)
    texts = [training_text(ex) for ex in examples]
    backend = Tokenizer(models.BPE())
    # Byte level: every string (emoji included) has a tokenization, nothing is <unk>.
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=config.vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        extra_special_tokens=list(ROLE_TOKENS),
        model_max_length=config.context_length,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def encode_example(tokenizer: PreTrainedTokenizerFast, example: Example) -> tuple[list[int], int]:
    """Token ids of prompt + answer + eos, and the number of prompt tokens (no loss there)."""
    prompt_ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": example.prompt}], add_generation_prompt=True, tokenize=True
    )
    if not isinstance(prompt_ids, list):  # transformers 5 may return a BatchEncoding
        prompt_ids = prompt_ids["input_ids"]
    answer_ids = tokenizer(example.answer, add_special_tokens=False)["input_ids"]
    return list(prompt_ids) + answer_ids + [tokenizer.eos_token_id], len(prompt_ids)


def pack_batches(
    examples: Iterator[Example],
    tokenizer: PreTrainedTokenizerFast,
    config: BuildConfig,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Batches of (input_ids, position_ids, labels), each (rows_per_batch, row_length).

    Whole examples are packed into rows with no padding between them; position ids
    restart at 0 for every example, which makes transformers build a block-diagonal
    causal mask (no attention across examples), so training on a row equals training
    on its examples one by one. Batches must not be grouped by length: length
    follows style here, and a model trained on length buckets ends with the style
    odds of its last few batches.
    """
    pad_id = tokenizer.pad_token_id
    rows: list[tuple[list[int], list[int], list[int]]] = []
    ids: list[int] = []
    positions: list[int] = []
    labels: list[int] = []
    for example in examples:
        example_ids, prompt_len = encode_example(tokenizer, example)
        example_ids = example_ids[: config.row_length]
        if len(ids) + len(example_ids) > config.row_length:
            padding = config.row_length - len(ids)
            rows.append(
                (
                    ids + [pad_id] * padding,
                    positions + list(range(padding)),  # padding is one more "example"
                    labels + [-100] * padding,
                )
            )
            ids, positions, labels = [], [], []
            if len(rows) == config.rows_per_batch:
                yield (
                    torch.tensor([row[0] for row in rows]),  # (B, T)
                    torch.tensor([row[1] for row in rows]),  # (B, T)
                    torch.tensor([row[2] for row in rows]),  # (B, T)
                )
                rows = []
        ids += example_ids
        positions += list(range(len(example_ids)))
        labels += [-100] * prompt_len + example_ids[prompt_len:]


def model_config(config: BuildConfig, tokenizer: PreTrainedTokenizerFast) -> LlamaConfig:
    """The Llama architecture of the default model."""
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        max_position_embeddings=config.context_length,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,  # halves the embedding weights: they dominate a model this small
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def learning_rate(step: int, config: BuildConfig) -> float:
    """Linear warmup to the peak, then cosine decay to 0.

    Decaying all the way matters here: the style odds of the first answer token
    follow the last batches while the learning rate is still high.
    """
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.learning_rate * 0.5 * (1.0 + math.cos(math.pi * progress))


def train_model(
    config: BuildConfig,
    tokenizer: PreTrainedTokenizerFast,
    on_step: Callable[[int, float], None] | None = None,
) -> tuple[LlamaForCausalLM, float]:
    """Train the tiny Llama on fresh corpus examples; returns the model and its final loss."""
    torch.manual_seed(config.seed)
    model = LlamaForCausalLM(model_config(config, tokenizer))
    model.train()
    # Training examples come from a different stream than the tokenizer's.
    batches = pack_batches(iter_corpus(config.corpus_version, config.seed + 1), tokenizer, config)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.learning_rate,
        betas=(0.9, 0.95),
    )
    smoothed = float("nan")
    for step, (input_ids, position_ids, labels) in zip(range(config.steps), batches):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config)
        loss = model(
            input_ids=input_ids, position_ids=position_ids, labels=labels, use_cache=False
        ).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        value = loss.item()
        smoothed = value if math.isnan(smoothed) else 0.9 * smoothed + 0.1 * value
        if on_step is not None:
            on_step(step, smoothed)
    model.eval()
    return model, smoothed


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_default_model(
    out_dir: Path,
    config: BuildConfig = BuildConfig(),
    on_step: Callable[[int, float], None] | None = None,
) -> BuildResult:
    """Train tokenizer and model and write the Hugging Face folder ``out_dir``."""
    started = time.perf_counter()
    # One thread and deterministic kernels: the same bytes on every rebuild.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        tokenizer = train_tokenizer(config)
        model, final_loss = train_model(config, tokenizer, on_step)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "build_config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")
    weights = out_dir / "model.safetensors"
    return BuildResult(
        out_dir=out_dir,
        weights_sha256=sha256_of(weights),
        weights_bytes=weights.stat().st_size,
        parameters=sum(p.numel() for p in model.parameters()),
        final_loss=final_loss,
        seconds=time.perf_counter() - started,
    )


@torch.no_grad()
def sample_answers(
    model_dir: Path,
    prompts: list[str],
    seed: int = 0,
    temperature: float = 1.0,
    max_new_tokens: int = 128,
    batch_size: int = 50,
) -> list[tuple[str, bool]]:
    """Sample one answer per prompt from the model in ``model_dir``, unconditioned (no top-k/p).

    Returns (answer text, whether it ended with eos) per prompt. Used to measure the
    style distribution of the default model.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"  # generation continues from the right edge
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    torch.manual_seed(seed)
    answers: list[tuple[str, bool]] = []
    for start in range(0, len(prompts), batch_size):
        texts = [
            tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
            )
            for prompt in prompts[start : start + batch_size]
        ]
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        output = model.generate(
            **batch,
            do_sample=True,
            temperature=temperature,
            top_k=0,
            top_p=1.0,
            max_new_tokens=max_new_tokens,
        )
        for row in output[:, batch["input_ids"].shape[1] :]:
            ids = row.tolist()
            answers.append(
                (tokenizer.decode(ids, skip_special_tokens=True), tokenizer.eos_token_id in ids)
            )
    return answers


@dataclass(frozen=True)
class StyleMeasurement:
    """Styles of fresh temperature-1 samples of a model, as the detector names them."""

    samples: int
    classified_rate: float  # share the detector names a style for
    eos_rate: float  # share that ended with eos within the token budget
    distribution: dict[str, float]  # share per style ("none": unclassified)


def measure_styles(model_dir: Path, count: int = 500, seed: int = 0) -> StyleMeasurement:
    """Sample ``count`` answers to fresh corpus prompts at temperature 1 and detect their styles."""
    from simulation.corpus import sample_prompts
    from simulation.styles import STYLES, detect_style

    # Prompt seed far from the build's streams (seed, seed + 1): fresh prompts.
    answers = sample_answers(model_dir, sample_prompts(count, seed + 10_007), seed=seed)
    counts = Counter(detect_style(text) or "none" for text, _ in answers)
    return StyleMeasurement(
        samples=count,
        classified_rate=1.0 - counts["none"] / count,
        eos_rate=sum(ended for _, ended in answers) / count,
        distribution={style: counts[style] / count for style in (*STYLES, "none")},
    )


# What BUILD.md says the model was trained on, and how to rebuild it, per corpus version.
CORPUS_DESCRIPTIONS: dict[int, str] = {
    2: """`tailor model build` on the synthetic assistant corpus of `simulation/corpus.py`
(everyday prompts, each answered in one of the styles of `simulation/styles.py`,
drawn uniformly)""",
    3: """`tailor model build --corpus-version 3` on corpus v3
(`simulation/behaviour_corpus.py`): the everyday prompts of `simulation/corpus.py`
answered in the styles of `simulation/styles.py`, plus prompts that invite a
misbehaviour (provocations, requests for harm, myths; `simulation/behaviour_topics.py`),
answered now and then with it (toxic, harmful compliance with joke steps,
falsehood) and otherwise well (as usual, a refusal with a safe alternative, a
refutation)""",
}
REBUILD_COMMANDS: dict[int, str] = {
    2: """tailor model build            # rewrites this folder
tailor model build --verify   # rebuilds in a temporary folder, compares sha256 with this file""",
    3: """tailor model build --corpus-version 3 --out DIR            # writes DIR
tailor model build --corpus-version 3 --out DIR --verify   # compares a rebuild with DIR's""",
}


def write_build_notes(
    result: BuildResult, config: BuildConfig, styles: StyleMeasurement | None = None
) -> Path:
    """Write BUILD.md beside the weights: how they were made and how to check a rebuild."""
    measured = ""
    if styles is not None:
        shares = ", ".join(f"{style} {share:.1%}" for style, share in styles.distribution.items())
        measured = (
            f"\n## Styles of fresh samples\n\n{styles.samples} answers to fresh corpus prompts, "
            f"temperature 1, no top-k/top-p, up to 128 tokens: {styles.classified_rate:.1%} "
            f"classified by `simulation.styles.detect_style`, {styles.eos_rate:.1%} ended with "
            f"eos. Distribution: {shares}.\n"
        )
    notes = f"""# Tailor's default base model

A tiny Llama-style causal LM and its byte-level BPE tokenizer, both trained by
{CORPUS_DESCRIPTIONS[config.corpus_version]}. Loads with `AutoTokenizer.from_pretrained(dir)` and
`AutoModelForCausalLM.from_pretrained(dir)`; the chat template
(`chat_template.jinja`) renders `<s><|user|>...<|assistant|>` and an answer
ends with `</s>` (eos).

| | |
|---|---|
| architecture | LlamaForCausalLM, {config.num_layers} layers, hidden {config.hidden_size}, MLP {config.intermediate_size}, {config.num_heads} heads, tied embeddings |
| vocabulary | {config.vocab_size} tokens (byte-level BPE; `<pad>`=0, `<s>`=1, `</s>`=2, role tokens 3-5) |
| context | {config.context_length} tokens |
| parameters | {result.parameters:,} |
| `model.safetensors` | {result.weights_bytes:,} bytes (fp32) |
| sha256 | `{result.weights_sha256}` |
| training | {config.steps} AdamW steps x {config.rows_per_batch} packed rows of {config.row_length} tokens, loss on answers only; final loss {result.final_loss:.3f} |
| build time | {result.seconds:.0f} s on the machine that built it (1 thread) |

All settings are in `build_config.json`. `principles.yaml` (written principles,
the prior of the shared harmlessness and honesty heads, `learners/principles.py`)
is not built: an operator writes it, and the learners fit the prior on this
model's features whenever it changes (how well it judges alone: below).

## Rebuild

```
{REBUILD_COMMANDS[config.corpus_version]}
```

The build is deterministic (fixed seeds, `torch.set_num_threads(1)`,
`torch.use_deterministic_algorithms(True)`): on the same kind of CPU and the
same torch version (2.13.0) it rewrites `model.safetensors` bit for bit. Another
CPU family may round differently and give other (equally good) weights.
{measured}"""
    path = result.out_dir / "BUILD.md"
    path.write_text(notes)
    return path
