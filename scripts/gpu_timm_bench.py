#!/usr/bin/env python3
"""PyTorch side of scripts/gpu-check's ViT training-step comparison (GPU machine only; needs torch and timm there).

The same step as bench_gpu_vit: timm's CLIP-layout ViT (vit_base_patch32_clip_quickgelu_224, and
vit_large_patch14_clip_quickgelu_336 at the largest of 192/128/64 that fits), bf16 autocast, an ArcFace head
(s=64, m=0.5) over 10,000 classes, AdamW (lr 1e-4, weight decay 0.05), random images resident on the GPU.
Eager and torch.compile side by side for ViT-B/32; eager only for ViT-L/14 (its compile would not fit the budget).
Writes one JSON object to the path given as the first argument.

Usage: gpu_timm_bench.py OUT.json [--steps 20] [--no-compile] [--dry-run]
--dry-run: CPU, a tiny ViT and batch 4, to check the script itself without a GPU (figures meaningless).
"""
import argparse
import json
import sys
import time


def arcface_loss(torch, emb, weight, labels, s=64.0, m=0.5):
    cos = torch.nn.functional.linear(torch.nn.functional.normalize(emb.float()),
                                     torch.nn.functional.normalize(weight)).clamp(-1, 1)
    target = torch.cos(torch.acos(cos.gather(1, labels[:, None])) + m)
    logits = cos.scatter(1, labels[:, None], target) * s
    return torch.nn.functional.cross_entropy(logits, labels)


def time_steps(torch, model, head, images, labels, device, steps, fused_adamw):
    params = list(model.parameters()) + [head]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05, fused=fused_adamw if device == "cuda" else None)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            emb = model(images)
        loss = arcface_loss(torch, emb, head, labels)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    sync(torch, device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(torch, device)
    return (time.perf_counter() - t0) / steps


def sync(torch, device):
    if device == "cuda":
        torch.cuda.synchronize()


def vit_forward_flops(width, layers, tokens, patch, grid2, out_dim, mlp_ratio=4):
    block = tokens * width * 3 * width + 2 * tokens * tokens * width + tokens * width * width + \
        2 * tokens * width * width * mlp_ratio
    return 2.0 * (grid2 * width * 3 * patch * patch + layers * block + width * out_dim)


def run_model(torch, timm, name, batches, device, steps, compile_too, dry):
    result = {"model": name}
    for batch in batches:
        model = None
        try:
            if dry:
                model = timm.models.vision_transformer.VisionTransformer(
                    img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, num_classes=64,
                    pre_norm=True, class_token=True, global_pool="token", act_layer="quick_gelu")
                size, width, layers, patch, out_dim = 32, 64, 2, 8, 64
            else:
                model = timm.create_model(name, pretrained=False, num_classes=512)
                size = model.patch_embed.img_size[0]
                patch = model.patch_embed.patch_size[0]
                width, layers, out_dim = model.embed_dim, len(model.blocks), 512
            model = model.to(device).train()
            head = torch.nn.Parameter(torch.randn(10000 if not dry else 100, out_dim, device=device) * 0.01)
            images = torch.randn(batch, 3, size, size, device=device)
            labels = torch.randint(0, head.shape[0], (batch,), device=device)
            eager = time_steps(torch, model, head, images, labels, device, steps, fused_adamw=False)
            fused = time_steps(torch, model, head, images, labels, device, steps, fused_adamw=True) \
                if device == "cuda" else eager
            grid2 = (size // patch) ** 2
            flops = 3 * vit_forward_flops(width, layers, grid2 + 1, patch, grid2, out_dim)
            result.update(batch=batch, eager_step_ms=1e3 * eager, eager_images_per_s=batch / eager,
                          eager_fused_adamw_images_per_s=batch / fused, model_tflops_eager=flops * batch / eager / 1e12)
            if compile_too:
                t0 = time.perf_counter()
                compiled = torch.compile(model)
                step_s = time_steps(torch, compiled, head, images, labels, device, steps, fused_adamw=False)
                result.update(compile_s=time.perf_counter() - t0 - (steps + 3) * step_s,
                              compiled_images_per_s=batch / step_s)
            return result
        except torch.cuda.OutOfMemoryError:
            del model
            torch.cuda.empty_cache()
            result.setdefault("oom_batches", []).append(batch)
    result["error"] = "out of memory at every batch size tried"
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args()
    import torch
    try:
        import timm
    except ImportError as e:
        json.dump({"error": f"timm is not importable: {e}"}, open(args.out, "w"))
        print(f"gpu_timm_bench: timm missing ({e})", file=sys.stderr)
        return 1
    device = "cuda" if torch.cuda.is_available() and not args.dry_run else "cpu"
    if device == "cpu" and not args.dry_run:
        print("gpu_timm_bench: no CUDA device (use --dry-run to check the script on a CPU)", file=sys.stderr)
        return 1
    out = {"torch": torch.__version__, "timm": timm.__version__, "device":
           torch.cuda.get_device_name(0) if device == "cuda" else "cpu (dry run)", "dry_run": args.dry_run}
    steps = 2 if args.dry_run else args.steps
    out["vit_b32"] = run_model(torch, timm, "vit_base_patch32_clip_quickgelu_224", [4] if args.dry_run else [256],
                               device, steps, not args.no_compile and not args.dry_run, args.dry_run)
    print(json.dumps(out["vit_b32"]), flush=True)
    out["vit_l14_336"] = run_model(torch, timm, "vit_large_patch14_clip_quickgelu_336",
                                   [4] if args.dry_run else [192, 128, 64], device, max(3, steps // 4), False,
                                   args.dry_run)
    print(json.dumps(out["vit_l14_336"]), flush=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
