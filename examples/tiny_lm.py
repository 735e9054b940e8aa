"""A small byte-level language model built from generated Layers, trained on the Python standard library's source.

    python examples/tiny_lm.py specs/gla.yaml --steps 300            # on a GPU: a few minutes, loss falls to ~1.5
    python examples/tiny_lm.py specs/gla.yaml --device cpu --steps 5 # the CPU (Triton interpreter): a smoke run

The text is read from this Python's own `Lib/` folder, so nothing is downloaded.
"""

import argparse
import os
import sys
import time
from pathlib import Path


def corpus(limit_bytes: int) -> bytes:
    lib = Path(os.__file__).parent
    chunks, size = [], 0
    for path in sorted(lib.glob("*.py")):
        data = path.read_bytes()
        chunks.append(data)
        size += len(data)
        if size >= limit_bytes:
            break
    return b"\n".join(chunks)[:limit_bytes]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--device", default=None)
    parser.add_argument("--corpus-bytes", type=int, default=4_000_000)
    args = parser.parse_args(argv)

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"  # before the generated kernels are imported
    import torch.nn.functional as F

    from linattn_gen import load
    from linattn_gen.mqar import TokenModel

    data = torch.frombuffer(bytearray(corpus(args.corpus_bytes)), dtype=torch.uint8).long()
    split = int(0.95 * len(data))
    train, valid = data[:split], data[split:]
    torch.manual_seed(0)
    model = TokenModel(load(args.spec), 256, args.dim, args.layers, args.heads).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1)

    def batch(source):
        starts = torch.randint(0, len(source) - args.seq_len - 1, (args.batch,))
        x = torch.stack([source[s:s + args.seq_len + 1] for s in starts]).to(device)
        return x[:, :-1], x[:, 1:]

    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda"))
    start = time.time()
    losses = []
    for step in range(1, args.steps + 1):
        x, y = batch(train)
        with autocast:
            loss = F.cross_entropy(model(x).float().flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.detach().item())
        if step == 1 or step % max(1, args.steps // 10) == 0 or step == args.steps:
            print(f"step {step:5d}  train loss {losses[-1]:.3f} (nats/byte)  {time.time() - start:6.1f} s", flush=True)
    with torch.no_grad(), autocast:
        x, y = batch(valid)
        valid_loss = F.cross_entropy(model(x).float().flatten(0, 1), y.flatten()).item()
    print(f"validation loss {valid_loss:.3f} nats/byte")
    return losses, valid_loss


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
