"""The model card of `mbm-world`: the command, the data, the learning curve and `eval --world`'s numbers.

`write_world_card(out, report, baseline)` reads what `train-clip --world` left in `out` (`open_clip_config.json`,
`curve.json`) and the reports of `mbm.evaluate_world.world_report` for the model and for `mbm-shapes`.
"""

from __future__ import annotations

import json
from pathlib import Path

from mbm.data.backgrounds import MIN_CONTRAST, MIN_VISIBLE

TARGETS = """Targets (issue 16): shapes joint zero-shot >= 90% on every background kind and >= 80% hand-drawn; shapes
retrieval within 5 points of `mbm-shapes`; >= 1,000 emoji concepts with a training-style text->image R@10 >= 70%
and a held-out-style R@10 >= 30% in English and >= 20% averaged over the other languages (chance: 10/N)."""


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def curve_table(rows: list[dict]) -> str:
    head = "| step | minutes | loss | R@10 training style | R@10 held-out style | shapes zero-shot (8) |\n"
    head += "|---:|---:|---:|---:|---:|---:|\n"
    return head + "".join(f"| {r['step']} | {r['seconds'] / 60:.1f} | {r['loss']:.3f} | {_pct(r['r10_train'])} | "
                          f"{_pct(r['r10_holdout'])} | {_pct(r['zs_shape'])} |\n" for r in rows)


def emoji_table(report: dict) -> str:
    rows = [report["emoji_train"], report["emoji_holdout"]]
    out = "| style | concepts | t->i R@1 (en) | t->i R@10 (en) | R@10, other 27 locales | i->t R@1 (en) |\n"
    out += "|---|---:|---:|---:|---:|---:|\n"
    for r in rows:
        out += (f"| {r['style']} | {r['concepts']} | {_pct(r['t2i_r1'])} | {_pct(r['t2i_r10'])} | "
                f"{_pct(r['t2i_r10_other_locales'])} | {_pct(r['i2t_r1'])} |\n")
    locales = list(rows[0]["per_locale"])
    out += "\nText->image R@10 per locale (training style / held-out style):\n\n| " + " | ".join(locales) + " |\n"
    out += "|" + "---:|" * len(locales) + "\n| " + " | ".join(
        f"{rows[0]['per_locale'][k]['t2i_r10'] * 100:.0f} / {rows[1]['per_locale'][k]['t2i_r10'] * 100:.0f}"
        for k in locales) + " |\n"
    groups = list(rows[0]["per_group_r10"])
    out += "\nText->image R@10 (English) per emoji group, training style / held-out style:\n\n"
    out += "".join(f"- {g}: {_pct(rows[0]['per_group_r10'][g])} / {_pct(rows[1]['per_group_r10'][g])}\n"
                   for g in groups)
    return out


def robustness_table(report: dict, baseline: dict | None) -> str:
    out = "| single shape, zero-shot | joint (80 names) | shape (8) | mbm-shapes joint | mbm-shapes shape |\n"
    out += "|---|---:|---:|---:|---:|\n"
    for name, r in report["robustness"].items():
        b = (baseline or {}).get("robustness", {}).get(name)
        out += (f"| {name} | {_pct(r['joint'])} | {_pct(r['shape'])} | "
                f"{_pct(b['joint']) if b else '-'} | {_pct(b['shape']) if b else '-'} |\n")
    return out


def shapes_table(report: dict, baseline: dict | None) -> str:
    cols = ("t2i_r1", "t2i_r5", "i2t_r1", "i2t_r5", "zs_colour", "zs_shape")
    out = "| model, split | " + " | ".join(cols) + " |\n" + "|---" * (len(cols) + 1) + "|\n"
    for who, rep in (("mbm-world", report), ("mbm-shapes", baseline)):
        for split, m in (rep or {}).get("shapes", {}).items():
            out += f"| {who}, {split} | " + " | ".join(_pct(m[c]) for c in cols) + " |\n"
    return out


def train_command(config: dict, out: str = "assets/mbm-world") -> str:
    """The `train-clip --world` command line that trains a model of this config."""
    mc, tc = config["model_cfg"], config["mbm_train_cfg"]
    budget = f"--steps {tc['steps']}" if tc["steps"] > 0 else f"--minutes {tc['minutes']:g}"
    for flag in ("background_weights", "locale_weights"):
        weights = ",".join(f"{k}={w:g}" for k, w in tc.get(flag, {}).items())
        budget += f" --{flag.replace('_', '-')} {weights}" if weights else ""
    budget += f" --vary-share {tc['vary_share']:g}" if tc.get("vary_share") else ""
    budget += f" --clutter-share {tc['clutter_share']:g}" if tc.get("clutter_share") else ""
    budget += f" --hard-share {tc['hard_share']:g}" if tc.get("hard_share") else ""
    budget += f" --precision {tc['precision']}" if tc.get("precision", "fp32") != "fp32" else ""
    budget += f" --device {tc['device']}" if tc.get("device", "cpu") != "cpu" else ""
    return (f"python -m mbm train-clip --world {budget} --emoji-fraction {tc['emoji_fraction']:g} "
            f"--holdout-style {tc['holdout_style']} --image-size {mc['vision_cfg']['image_size']} "
            f"--width {mc['vision_cfg']['width']} --embed-dim {mc['embed_dim']} --text-width {mc['text_cfg']['width']} "
            f"--text-layers {mc['text_cfg']['layers']} --batch-size {tc['batch_size']} --lr {tc['lr']:g} "
            f"--seed {tc['seed']} --threads 2 --out {out}")


def _looks(tc: dict) -> str:
    """The card's words for `--background-weights`, `--vary-share`, `--clutter-share` and `--hard-share`, when the run
    used them."""
    out = ""
    if tc.get("background_weights"):
        out += f"\n  Background kinds drawn unevenly: {_times(tc['background_weights'])} (the others 1x)."
    if tc.get("vary_share"):
        out += (f"\n  {tc['vary_share']:.0%} of the shapes' looks vary further, in training only: photo crops flipped,"
                " turned and recoloured, from scikit-image's other pictures too, and five more texture patterns"
                " (the evaluation's rows draw neither; its 'unseen' rows draw photos and patterns no run trains on).")
    if tc.get("clutter_share"):
        out += (f"\n  Of the varied photo backgrounds, {tc['clutter_share']:.0%} are collages: the training styles'"
                " emoji (less those named after a shape) heaped at every size on a photo crop or a colour, maybe"
                " blurred.")
    if tc.get("hard_share"):
        out += (f"\n  {tc['hard_share']:.0%} of the groups that change a shape change it first to the shape nearest in"
                " silhouette (circle and hexagon, square and circle): the hardest negative, in every batch.")
    return out


def _locales(tc: dict) -> str:
    weights = tc.get("locale_weights")
    return f"; among the others drawn unevenly: {_times(weights)}" if weights else ""


def _times(weights: dict[str, float]) -> str:
    """{"photo": 3.0, "texture": 2.0} -> "photo 3x, texture 2x"."""
    return ", ".join(f"{k} {w:g}x" for k, w in weights.items())


def write_world_card(out: Path, report: dict, baseline: dict | None, machine: str) -> Path:
    """Write `MODEL_CARD.md` and `metrics.json` into `out`."""
    config = json.loads((out / "open_clip_config.json").read_text())
    command = train_command(config)
    curve = json.loads((out / "curve.json").read_text())
    (out / "metrics.json").write_text(json.dumps({"report": report, "baseline_mbm_shapes": baseline,
                                                  "curve": curve["curve"]}, indent=1, ensure_ascii=False) + "\n")
    mc, tc = config["model_cfg"], config["mbm_train_cfg"]
    vc, xc = mc["vision_cfg"], mc["text_cfg"]
    last = curve["curve"][-1]
    text = f"""# mbm-world: a small CLIP for what people bring

Trained from scratch by

    {command}

on {machine}: {last['step']:,} steps of {tc['batch_size']} in {last['seconds'] / 60:.0f} minutes (the learning rate
follows the time budget; `--steps {last['step']}` instead of `--minutes` replays the same batches step for step).
Data first: `python -m mbm prepare-data` (see `mbm/data/emoji.py` for the pinned packages and hashes).

## Data
- **Widened shapes** ({100 - round(100 * tc['emoji_fraction'])}% of every batch): the scenes of `mbm-shapes`
  (half in groups of minimal variants) on any background (mid grey, light, white, black, saturated colours,
  gradients, textures, crops of the shipped photos and scikit-image's), single shapes from 10% to 90% of the
  side, rotated, filled, outlined or hand-drawn (wobbly strokes of varying width), a share through JPEG, blur
  and noise (`mbm/data/backgrounds.py`). Captions and questions as for `mbm-shapes`; no hue jitter. No background
  hides its object, in training or in the evaluation's rows: a flat one keeps {MIN_CONTRAST:g} RGB from every object's
  colour, a cluttered one (gradient, texture, photo) is drawn again until its mean over each object's box keeps
  {MIN_VISIBLE:g}.{_looks(tc)}
- **Emoji concepts** ({round(100 * tc['emoji_fraction'])}%): 1,570 emojibase concepts drawn in every style (skin
  tones folded into the base; Noto limited to Unicode 15.0), distinct within a batch, pasted at 55-100% of the
  side on random backgrounds, captioned by their label (a third of the time with up to 3 tags) in one of
  emojibase's 28 locales (English 30%{_locales(tc)}). Training styles: Noto Color Emoji and Fluent Emoji Flat.
  **{tc['holdout_style']} never appears in training.**

## Architecture
open_clip `CLIP`: ModifiedResNet image tower (layers {vc['layers']}, width {vc['width']}, {vc['image_size']} px),
text transformer ({xc['layers']} layers, width {xc['width']}, context {xc['context_length']}, open_clip's
byte-level BPE tokenizer: every script gets tokens), {mc['embed_dim']}-d embedding. fp16 safetensors.
Loss: open_clip `ClipLoss`, captions trimmed to the batch's longest; grid probe on shapes as for `mbm-shapes`
(weight {tc['aux_weight']:g} falling to 0 at {tc['aux_until']:g} of the run), AdamW lr {tc['lr']:g}.

## Learning curve
Text->image R@10 over 400 fixed concepts (English labels, on white; chance 2.5%), and 8-way shape zero-shot on
200 widened single shapes.

{curve_table(curve['curve'])}
## Emoji (`python -m mbm eval --world --model mbm-world`): every concept in the gallery, on white

{emoji_table(report)}
## Shapes, anywhere (zero-shot, single shapes; 200 per row)

{robustness_table(report, baseline)}
## Shapes retrieval (as `python -m mbm eval`)

{shapes_table(report, baseline)}
{TARGETS}

## Licences
See `LICENSE.md` beside this card: the weights are derived from emojibase-data (MIT), Noto Color Emoji
(SIL OFL 1.1), Fluent Emoji (MIT) and, for evaluation only, Twemoji (CC-BY 4.0).
"""
    path = out / "MODEL_CARD.md"
    path.write_text(text)
    return path
