#!/usr/bin/env python3
"""Turns scripts/gpu-check's work folder into OUTDIR/summary.md (one table of figures against their targets, plus
the stages) and OUTDIR/results.json (every raw figure). Standard library only."""
import argparse
import glob
import json
import os
import re


def load_benchmarks(work):
    runs = {}
    for path in sorted(glob.glob(os.path.join(work, "json", "bench_gpu_*.json"))):
        try:
            data = json.load(open(path))
        except (OSError, ValueError) as e:
            runs[os.path.basename(path)] = {"error": str(e)}
            continue
        for b in data.get("benchmarks", []):
            runs[b["name"]] = b
    return runs


def fmt(v, spec=".3g"):
    return "n/a" if v is None else format(v, spec)


DRY_RUN = False


def verdict(value, target, higher_is_better):
    if DRY_RUN:
        return "dry run"
    if value is None:
        return "not measured"
    ok = value >= target if higher_is_better else value <= target
    return "met" if ok else "MISSED"


def main_job_stages(path):
    """Wall seconds per stage of the main job, from its time-stamped output. taxon-unicom writes a stage's progress
    line when the stage finishes, so each stage runs from the previous stage's finish to its own."""
    if not os.path.exists(path):
        return {}
    marks = []
    for line in open(path, errors="replace"):
        m = re.match(r"\s*(\d+\.\d)\s(.*)", line)
        if m:
            marks.append((float(m.group(1)), m.group(2).lower()))
    if not marks:
        return {}

    def finished(word, after=0.0):
        return next((t for t, text in marks if word in text and t >= after), None)
    embed_train = finished("embed train")
    kmeans = finished("clusters in", embed_train or 0.0)
    train = finished("train round", kmeans or 0.0)
    ends = [("setup + eval before", max([t for t, _ in marks if embed_train is None or t < embed_train], default=0.0)),
            ("embed train", embed_train), ("k-means", kmeans), ("train", train), ("evaluate after", marks[-1][0])]
    spans, previous = {}, 0.0
    for name, end in ends:
        if end is not None:
            spans[name] = round(end - previous, 1)
            previous = end
    spans["total"] = marks[-1][0]
    return spans


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--total", type=int, required=True)
    ap.add_argument("--dry-run", type=int, default=0)
    ap.add_argument("--torch", default="?")
    ap.add_argument("--main-note", default="")
    a = ap.parse_args()
    global DRY_RUN
    DRY_RUN = bool(a.dry_run)
    work = a.work
    machine = open(os.path.join(work, "machine.txt")).read() if os.path.exists(os.path.join(work, "machine.txt")) else ""
    stages = [l.rstrip("\n").split("|") for l in open(os.path.join(work, "stages.txt")) if l.strip()]
    bench = load_benchmarks(work)
    timm_path = os.path.join(work, "json", "timm.json")
    timm = json.load(open(timm_path)) if os.path.exists(timm_path) else {}
    tests_log = os.path.join(work, "logs", "gpu_tests.log")
    tests = open(tests_log, errors="replace").read() if os.path.exists(tests_log) else ""
    main_stages = main_job_stages(os.path.join(work, "logs", "main_job.log"))

    def c(name, key):
        b = bench.get(name, {})
        return None if "error_occurred" in b and b["error_occurred"] else b.get(key)

    rows = []  # figure, value, target, verdict
    for dt in ("fp32", "bf16"):
        n = f"BM_FusedVsUnfused_{dt}/iterations:3/manual_time"
        rows.append((f"fused vs unfused head, ArcFace B=1024 D=512 C=1,048,576, {dt}: speedup (unfused/fused fwd+bwd)",
                     fmt(c(n, "speedup")) + f" ({fmt(c(n, 'fused_ms'))} vs {fmt(c(n, 'unfused_ms'))} ms)", ">= 3x",
                     verdict(c(n, "speedup"), 3, True)))
        rows.append((f"  extra memory fused/unfused, {dt}",
                     fmt(c(n, "memory_ratio")) + f" ({fmt(c(n, 'fused_extra_MiB'), '.0f')} vs "
                     f"{fmt(c(n, 'unfused_extra_MiB'), '.0f')} MiB)", "<= 1/20", verdict(c(n, "memory_ratio"), 0.05, False)))
    for arg, dt in ((0, "fp32"), (1, "bf16")):
        n = f"BM_FusedHead_10M/bf16:{arg}/iterations:2/manual_time"
        rows.append((f"fused head C=10,000,000, {dt}: time per step / peak memory",
                     f"{fmt(c(n, 'real_time'))} ms / {fmt(c(n, 'peak_MiB'), '.0f')} MiB", "report", "-"))
    vit_b = None
    for fused in (0, 1):
        n = f"BM_TrainStep_ViT_B32/fused_adamw:{fused}/iterations:20/manual_time"
        if n in bench:
            vit_b = c(n, "images_per_s") if vit_b is None or (c(n, "images_per_s") or 0) > vit_b else vit_b
            rows.append((f"ViT-B/32 bf16 train step, batch 256, AdamW{' (fused)' if fused else ''}: images/s, "
                         "fraction of bf16 matmul rate",
                         f"{fmt(c(n, 'images_per_s'), '.0f')} img/s, {fmt(c(n, 'fraction_of_matmul'))} of "
                         f"{fmt(c(n, 'matmul_TFLOPs'), '.0f')} TFLOP/s", ">= 0.30",
                         verdict(c(n, "fraction_of_matmul"), 0.30, True)))
    tb = timm.get("vit_b32", {})
    if tb:
        eager = tb.get("eager_images_per_s")
        rows.append(("PyTorch eager (timm vit_base_patch32_clip_quickgelu_224) / torch.compile, img/s",
                     f"{fmt(eager, '.0f')} / {fmt(tb.get('compiled_images_per_s'), '.0f')}", "report", "-"))
        ratio = vit_b / eager if vit_b and eager else None
        rows.append(("taxon / PyTorch eager, ViT-B/32 train step", fmt(ratio), ">= 1.0x", verdict(ratio, 1.0, True)))
    elif timm:
        rows.append(("PyTorch timm comparison", timm.get("error", "no result"), "report", "-"))
    n = "BM_TrainStep_ViT_L14_336/fused_adamw:1/iterations:5/manual_time"
    if n not in bench:
        n = "BM_TrainStep_ViT_L14_336/fused_adamw:0/iterations:5/manual_time"
    rows.append(("ViT-L/14@336 bf16 train step, largest batch that fits: batch, img/s, fraction of matmul",
                 f"{fmt(c(n, 'batch'), '.0f')}, {fmt(c(n, 'images_per_s'), '.0f')} img/s, "
                 f"{fmt(c(n, 'fraction_of_matmul'))}", "report", "-"))
    tl = timm.get("vit_l14_336", {})
    if tl:
        rows.append(("PyTorch eager ViT-L/14@336 (timm): batch, img/s",
                     f"{tl.get('batch', 'n/a')}, {fmt(tl.get('eager_images_per_s'), '.0f')}", "report", "-"))
    for model in ("ViT_B32_224", "ViT_L14_336"):
        n = f"BM_Embed_{model}/iterations:1/manual_time"
        bound = c(n, "loader_bound")
        rows.append((f"embedding {model}, bf16, batch 256, Loader from JPEGs: loader / GPU / end-to-end img/s",
                     f"{fmt(c(n, 'loader_images_per_s'), '.0f')} / {fmt(c(n, 'gpu_images_per_s'), '.0f')} / "
                     f"{fmt(c(n, 'end_to_end_images_per_s'), '.0f')}", "report bottleneck",
                     "n/a" if bound is None else ("loader-bound" if bound else "GPU-bound")))
    n = "BM_KMeans_1M_x_256_k20000/iterations:1/manual_time"
    rows.append(("k-means 1M x 256 -> 20,000 clusters, 20 iterations (LibTorch backend): seconds",
                 fmt(c(n, "seconds")), "<= 10 s", verdict(c(n, "seconds"), 10, False)))
    rows.append((f"main job taxon-unicom, ViT-B/32, 1 round, 1 epoch ({a.main_note}): wall s per stage",
                 ", ".join(f"{k} {v}" for k, v in main_stages.items()) or "n/a", "report", "-"))
    passed = re.search(r"(\d+) passed", tests) or re.search(r"All tests passed \((\d+) assertions? in (\d+)", tests)
    failed = re.search(r"(\d+) failed", tests)
    rows.append(("[cuda] tests (taxon_gpu_tests)",
                 "refused without a GPU, as required" if a.dry_run and "taxon.cuda.no-device" in tests
                 else (tests.strip().splitlines() or ["no output"])[-1][:160], "all pass",
                 "-" if a.dry_run else ("failed" if failed and failed.group(1) != "0" else ("met" if passed else "?"))))

    title = "DRY RUN on a CPU machine: no GPU figure below means anything" if a.dry_run else "GPU figures"
    md = [f"# taxon gpu-check: {title}", "", "```", machine.strip(), f"LibTorch {a.torch}; total {a.total} s", "```", "",
          "| figure | measured | target | verdict |", "|---|---|---|---|"]
    md += [f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} |" for r in rows]
    md += ["", "| stage | status | seconds | note |", "|---|---|---|---|"]
    md += [f"| {' | '.join((s + ['', '', '', ''])[:4])} |" for s in stages]
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "summary.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump({"machine": machine, "torch": a.torch, "dry_run": bool(a.dry_run), "total_s": a.total,
                   "stages": stages, "benchmarks": bench, "timm": timm, "main_job_stages": main_stages,
                   "gpu_tests_tail": tests[-4000:]}, f, indent=1)


if __name__ == "__main__":
    main()
