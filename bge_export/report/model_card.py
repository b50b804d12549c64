"""FOLDER/README.md: a Hugging Face Hub model card written from manifest.json, so the folder is ready to publish.

Front matter (YAML): `base_model` when the manifest's model reference is a Hub id (else left out, with a
comment saying why), `pipeline_tag: feature-extraction`, tags for the formats and precisions present, and the
source model's `license` when its own card gives one. No `library_name`: sentence-transformers cannot load
these graphs (they pool and L2-normalize inside, and its ONNX backend would pool their output again; the folder
holds no PyTorch weights), and the Hub would offer its snippet for it.

Body: which file to deploy (the manifest's recommendation), one row per artifact with its status and the
numbers of the check that decided it, formatted by the same rules as `bge-export inspect` (cosines 6 digits,
top-10 overlap 3, speed-ups 2, from the manifest's own records, never recomputed), and usage for the kinds
present only: each target's own (bge_export/report/model_card_usage.py), bge-export's loader, serving.

The card records the manifest seal it was written from; `bge-export verify` reports a card written from
another manifest. README.md is never hashed into the manifest's `files` (manifest.UNRECORDED_FILES).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from bge_export.files import write_atomic
from bge_export.folder.manifest import (
    MANIFEST_NAME,
    MODEL_CARD_NAME,
    SIGNATURE_NAME,
    Manifest,
    read_manifest,
    seal_state,
)
from bge_export.folder.recommend import deploy_runtimes, status_evidence
from bge_export.folder.target_folder import recorded_title
from bge_export.registry import targets
from bge_export.report.manifest_view import number_text, recommendation_of, size_text
from bge_export.report.model_card_usage import usage_sections
from bge_export.report.recommendation import render_markdown
from bge_export.report.reranker_card import reranker_card_parts

HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")
# Digits for every number the card shows: the same as `bge-export inspect` and the recommendation's reasons.
COSINE_DIGITS, OVERLAP_DIGITS, SPEED_DIGITS = 6, 3, 2
TABLE_HEADER = ("file", "format", "precision", "size MB", "status", "judged by", "cos mean", "cos min", "top-10",
                "speed-up")


def write_model_card(folder: str | Path, signed: bool | None = None) -> Path:
    """Write FOLDER/README.md from its manifest.json (atomically); returns its path. signed: whether the card
    says how to check model.sig (None: whether the folder holds one now; `bge-export build` passes True when it
    signs next, since the card is written before the signature that covers it)."""
    folder = Path(folder)
    text = render_model_card(folder, signed)
    return write_atomic(folder / MODEL_CARD_NAME, text)


def mark_card_signed(folder: str | Path) -> None:
    """Before signing: rewrite README.md to say how to check the signature, when it is the card bge-export
    writes for this folder, unedited (a card someone changed is left as it is: nothing of theirs is replaced)."""
    folder = Path(folder)
    card = folder / MODEL_CARD_NAME
    if card.is_file() and not card.is_symlink() and card.read_text(encoding="utf-8") == render_model_card(folder, False):
        write_model_card(folder, signed=True)


def render_model_card(folder: str | Path, signed: bool | None = None) -> str:
    """The card's text (see the module docstring)."""
    folder = Path(folder)
    signed = (folder / SIGNATURE_NAME).is_file() if signed is None else signed
    manifest = read_manifest(folder)
    seal = seal_state(json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8")))[2]
    if manifest.spec.is_reranker:
        body = reranker_card_parts(manifest, front_matter(folder, manifest), _verify_section(signed),
                                   hub_reference(manifest))
        body.insert(1, f"<!-- bge-export model card: generated from manifest.json manifest_sha256 {seal}; regenerate "
                       "it with bge_export.report.model_card.write_model_card after the folder changes -->\n")
        return "\n".join(body).rstrip() + "\n"
    parts = [front_matter(folder, manifest),
             f"<!-- bge-export model card: generated from manifest.json manifest_sha256 {seal}; regenerate it with "
             "bge_export.report.model_card.write_model_card after the folder changes -->", "",
             *_intro(manifest), *render_markdown(recommendation_of(manifest)[0]), *artifact_table(manifest),
             *_reports(folder), *usage_sections(folder, manifest), *_verify_section(signed)]
    return "\n".join(parts).rstrip() + "\n"


# --------------------------------------------------------------------------- front matter


def front_matter(folder: Path, manifest: Manifest) -> str:
    import yaml

    model = manifest.model
    meta: dict[str, Any] = {}
    comments = []
    hub_id = hub_reference(manifest)
    if hub_id:
        meta["base_model"] = hub_id
    else:
        name = Path(str(model["reference"])).name
        comments.append(f"# base_model: not set: the model was exported from a local folder ('{name}'), not from a "
                        "Hub id; add the id it came from")
    meta["pipeline_tag"] = "text-ranking" if manifest.spec.is_reranker else "feature-extraction"
    meta["tags"] = tags(manifest)
    license_fields = source_license(manifest)
    if license_fields:
        meta.update(license_fields)
    else:
        comments.append("# license: not set: the source model's card gives none; add the source model's license")
    comments.append("# library_name: not set: sentence-transformers' CrossEncoder cannot load these graphs (it would "
                    "apply the activation inside them again); see Usage" if manifest.spec.is_reranker else
                    "# library_name: not set: sentence-transformers cannot load these graphs (they pool and "
                    "normalize inside); see Usage")
    body = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000)
    return "---\n" + body + "\n".join(comments) + "\n---\n"


def hub_reference(manifest: Manifest) -> str | None:
    """The Hub id the model came from: the reference, when it has a Hub id's shape and was downloaded from
    the Hub (its recorded folder lies in a Hub cache, or a revision was recorded)."""
    model = manifest.model
    reference = str(model.get("reference", ""))
    if not HUB_ID.fullmatch(reference) or Path(reference).is_absolute():
        return None
    cached = "models--" + reference.replace("/", "--") in str(model.get("folder", ""))
    return reference if cached or model.get("revision") else None


def tags(manifest: Manifest) -> list[str]:
    found = ["bge-export", "reranker" if manifest.spec.is_reranker else "sentence-embeddings"]
    formats = {e.format for e in manifest.artifacts}
    found += [t.format for t in targets().values() if t.format in formats]
    precisions = {e.precision for e in manifest.artifacts}
    if any(p.startswith("int8") for p in precisions):
        found.append("int8")
    if "fp16" in precisions:
        found.append("fp16")
    return found


def source_license(manifest: Manifest) -> dict[str, str]:
    """license (and license_name / license_link for 'other') of the source model, as the export recorded it from
    the model's card (bge_export/folder/target_folder.py); {} when unknown. Nothing outside the folder is read."""
    recorded = manifest.model.get("license")
    if not isinstance(recorded, dict) or not isinstance(recorded.get("license"), str):
        return {}
    return {key: str(value)[:200] for key, value in recorded.items()
            if key in ("license", "license_name", "license_link") and isinstance(value, str)}


# --------------------------------------------------------------------------- body


def _intro(manifest: Manifest) -> list[str]:
    model = manifest.model
    spec = manifest.spec
    hub_id = hub_reference(manifest)
    title = recorded_title(model)
    source = f"[`{hub_id}`](https://huggingface.co/{hub_id})" if hub_id else f"`{title}`"
    revision = f" at revision `{model['revision']}`" if model.get("revision") else ""
    lines = [f"# {title}: deployable exports", "",
             f"Exports of {source}{revision} made by bge-export {manifest.toolkit_version} on {manifest.created}, "
             f"each checked against the model in PyTorch fp32 (what sentence-transformers computes). Every graph "
             f"takes token ids and returns the finished embedding: {spec.pooling} pooling"
             + (", L2-normalized" if spec.normalize else ", not normalized")
             + f", {spec.embedding_dim} dimensions"
             + (" (Matryoshka: the model's first values, cut inside the graph, then re-normalized)"
                if spec.truncate_dim else "")
             + f", up to {spec.max_seq_length} tokens (inputs: {', '.join(spec.input_names)}; output: "
             "`sentence_embedding`).", ""]
    if spec.query_prompt:
        lines += [f"Queries take the prompt {json.dumps(spec.query_prompt, ensure_ascii=False)} in front; "
                  "documents take none.", ""]
    lines += [f"Weights: {model['weights_format']} sha256 `{model['weights_sha256']}`. `manifest.json` records "
              "every file's sha256, each artifact's options, tool versions and checks.", ""]
    return lines


def artifact_table(manifest: Manifest) -> list[str]:
    """One row per artifact; the numbers are the manifest's, formatted as `bge-export inspect` formats them."""
    speeds, speed_note = recorded_speedups(manifest)
    lines = ["## Artifacts", "", "| " + " | ".join(TABLE_HEADER) + " |", "|" + "---|" * len(TABLE_HEADER)]
    for entry in manifest.artifacts:
        ev = status_evidence(entry, manifest.created)
        judged = f"{ev['label']}, {ev.get('texts', '?')} texts" if ev["source"] else "-"
        speed = speeds.get(entry.path)
        cells = [f"`{entry.path}`", entry.format, entry.precision, size_text(entry), entry.status, judged,
                 number_text(ev.get("cosine_mean"), COSINE_DIGITS), number_text(ev.get("cosine_min"), COSINE_DIGITS),
                 number_text(ev.get("top10_overlap"), OVERLAP_DIGITS),
                 f"{speed:.{SPEED_DIGITS}f}×" if isinstance(speed, (int, float)) else "-"]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    lines += ["", "Status: **pass** met the fidelity floors against the PyTorch fp32 baseline; **fail** missed one; "
              "**unverified** could not be run here (a Core ML package off macOS, a TensorRT engine without an "
              "NVIDIA GPU), with any stand-in check named in *judged by*. Cosines are per text against the "
              "baseline; top-10 is the share of nearest neighbours the artifact and the baseline agree on.", "",
              speed_note, ""]
    for entry in manifest.artifacts:
        lines.append(f"- `{entry.path}`: {entry.status}: {' '.join(entry.status_reason.split())}")
    return lines + [""]


def recorded_speedups(manifest: Manifest) -> tuple[dict[str, float], str]:
    """{artifact: median throughput ratio to the baseline} as the manifest's measured recommendations record
    them, and one sentence saying where they come from (or why there are none)."""
    speeds: dict[str, float] = {}
    where = []
    for runtime in deploy_runtimes():
        record = manifest.recommended.get(runtime)
        if not isinstance(record, dict) or record.get("basis") != "measured":
            continue
        for item in record.get("ranking") or []:
            if isinstance(item.get("speedup"), (int, float)):
                speeds.setdefault(item["artifact"], item["speedup"])
        cell = record.get("speedup") or {}
        where.append(f"{runtime} at batch {cell.get('batch', '?')} × {cell.get('seq_len', '?')} tokens "
                     f"(validate run at {record.get('decided_at', '?')})")
    if not speeds:
        return speeds, ("Speed-up: none recorded: no trustworthy `bge-export validate` speed measurement is in "
                        "manifest.json (an export alone measures no speed).")
    return speeds, ("Speed-up: median throughput ratio to the PyTorch fp32 baseline measured by `bge-export "
                    f"validate` on {'; '.join(where)}, for the passing artifacts it measured.")


def _reports(folder: Path) -> list[str]:
    """Links to the validation report `validate` wrote into the folder, when there is one."""
    present = [name for name in ("report.md", "report.html", "report.json") if (folder / name).is_file()]
    if not present:
        return []
    return ["The last `bge-export validate` report, with every metric, the worst texts and the speed grid: "
            + ", ".join(f"[{name}]({name})" for name in present) + ".", ""]


def _verify_section(signed: bool) -> list[str]:
    lines = ["## Check the download", "", "```bash", "bge-export verify .   # every file's sha256, the manifest's own "
             "seal, the tokenizer and config, every graph loads"]
    if not signed:
        return lines + ["```", "", f"Not signed: `bge-export sign . --private-key KEY.pem` (`pip install "
                        f"'bge-export[sign]'`) writes `{SIGNATURE_NAME}` over every file.", ""]
    return lines + ["bge-export verify . --public-key PUB.pem   # and model.sig: every file exactly as signed", "```",
                    "", f"`{SIGNATURE_NAME}` is an OpenSSF model-signing signature over every file of this folder, "
                    "this card included; PUB.pem is the publisher's public key. Without bge-export (`pip install "
                    "model-signing`):", "", "```bash",
                    f"model_signing verify key . --signature {SIGNATURE_NAME} --public_key PUB.pem", "```", "",
                    "Signed with a certificate or Sigstore instead of a key: see `bge-export verify --help`.", ""]
